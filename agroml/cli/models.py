"""Commands: runs, status, evaluate, predict (the life of a trained model after `agroml train`)."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from agroml.cli import output
from agroml.cli.compare_view import render_comparison
from agroml.cli.options import (
    JsonOpt,
    ModelAllOpt,
    ModelOpt,
    ModelType,
    ModelTypeOrAll,
    SinceOpt,
    SourceOpt,
    UntilOpt,
)
from agroml.core import config, schema
from agroml.core.errors import UsageError
from agroml.core.progress import time_left_text
from agroml.data.analysis import check_window
from agroml.data.sources import open_source
from agroml.lifecycle.comparison import compare_runs
from agroml.lifecycle.evaluation import EvalResult
from agroml.lifecycle.evaluation import evaluate as run_evaluation
from agroml.lifecycle.performance import PerformanceReport, model_performance
from agroml.lifecycle.predicting import PredictResult
from agroml.lifecycle.predicting import predict as run_predict
from agroml.lifecycle.registry import Registry, RunInfo

RunArg = Annotated[
    str | None,
    typer.Argument(
        help="Run id, `production`, or a model folder \\[default: the newest succeeded run].", show_default=False
    ),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per model call.")]


def _settings() -> Any:

    return config.resolve({})


def _fmt(value: Any, digits: int = 3) -> str:
    return "" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def runs(
    model: Annotated[ModelType | None, typer.Option("--model", "-m", help="Only this model type.")] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="Compare the RUNS named: settings that differ, data, metrics.")
    ] = False,
    run_refs: Annotated[
        list[str] | None,
        typer.Argument(metavar="[RUNS]...", help="With --compare: run ids or run folders, the first is the baseline."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="Only the newest N runs.")] = None,
    json_: JsonOpt = False,
) -> None:
    """List every training run, newest first: state, time taken, test accuracy and macro F1, folder.

    A run whose process died without finishing (killed, power loss) is shown as interrupted.

    With --compare RUN_A RUN_B [...]: the config fields that differ, the data (same fingerprint or
    not, rows more, rows added / removed, same test split), val and test metrics and per-class F1
    side by side, each run against the first.

    Example: agroml runs --model pest

    Example: agroml runs --compare 20261126T130501Z-mobilenetv2 20261201T090000Z-mobilenetv2
    """

    if run_refs and not compare:
        raise UsageError(f"unexpected run ids {' '.join(run_refs)}", fix="compare runs with: agroml runs --compare A B")
    if compare:
        with Registry(_settings().models_dir, create=False) as registry:
            comparison = compare_runs(registry, run_refs or [], model.value if model else None)
        output.emit(comparison, json_, render_comparison)
        return
    with Registry(_settings().models_dir, create=False) as registry:
        found = registry.runs(model.value if model else None)[:limit]
    if not found and not json_:
        output.hint("no runs yet: start one with `agroml train --model pest`")
        return
    output.emit(output.Listing(found), json_, _runs_table)


def _runs_table(listing: output.Listing) -> None:
    """Run ids and paths are copied into other commands: they are never cut or folded.

    On a terminal: the whole table if it fits; else the table without the path column (the hint says
    where the paths are); else, on a very narrow one, each run as a line of its own with its details
    wrapped beneath. Piped to a file: the whole table, as wide as it needs to be.
    """
    found: list[RunInfo] = listing.items
    console = output.stdout
    table = _runs_rows(found, with_path=True)
    if not console.is_terminal:
        width = console.width
        console.width = max(width, _natural_width(table))
        try:
            console.print(table)
        finally:
            console.width = width
        return
    if _natural_width(table) <= console.width:
        console.print(table)
        return
    table = _runs_rows(found, with_path=False)
    if _natural_width(table) <= console.width:
        console.print(table)
    else:
        for r in found:
            console.print(r.run_id, soft_wrap=True, highlight=False, markup=False)
            model, arch, state, started, duration, accuracy, macro_f1 = _run_details(r)
            console.print(
                f"  {model} · {arch} · {state} · started {started} UTC · {duration} · "
                f"test acc {accuracy or '-'} · macro F1 {macro_f1 or '-'}",
                highlight=False,
                markup=False,
            )
    output.hint("run folders: <models dir>/<model>/<run id>/ (each path is in `agroml runs --json`)")


def _natural_width(table: Table) -> int:
    console = output.stdout
    return console.measure(table, options=console.options.update_width(100_000)).maximum


def _run_details(r: RunInfo) -> list[str]:
    """model, arch, state, start, duration, test accuracy, macro F1 of a run, as table cells."""
    return [
        r.model_type,
        r.arch or "",
        r.state + (" production" if r.production else ""),
        (r.to_dict()["started_at"] or "")[:16],
        _duration(r.duration_s),
        _fmt(r.test_metric("accuracy")),
        _fmt(r.test_metric("macro_f1")),
    ]


def _runs_rows(found: list[RunInfo], with_path: bool) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("run id", no_wrap=True, min_width=max(len(r.run_id) for r in found))
    for name in ("model", "arch", "state", "started (UTC)", "duration", "test acc", "macro F1"):
        table.add_column(name, no_wrap=True)
    if with_path:
        table.add_column("path", no_wrap=True, min_width=max(len(r.path or "") for r in found))
    colors = {"succeeded": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}
    for r in found:
        model, arch, _, started, duration, accuracy, macro_f1 = _run_details(r)
        state = f"[{colors.get(r.state, 'white')}]{r.state}[/]" + (" [bold]production[/]" if r.production else "")
        row = [r.run_id, model, arch, state, started, duration, accuracy, macro_f1]
        table.add_row(*row, *([r.path or ""] if with_path else []))
    return table


def status(json_: JsonOpt = False) -> None:
    """Show the training(s) running now with their epoch and latest metrics.

    Runs whose process is gone are marked interrupted first, so a killed training never looks alive.

    Example: agroml status --json
    """

    with Registry(_settings().models_dir, create=False) as registry:
        running = registry.status()
    output.emit(output.Listing(running, key="running"), json_, _running)


def _running(listing: output.Listing) -> None:
    if not listing.items:
        output.stdout.print("no training running")
    for r in listing.items:
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in r.metrics.items() if isinstance(v, int | float))
        output.stdout.print(
            f"[bold]{r.model_type}[/] run {r.run_id} ({r.arch or '?'}), pid {r.pid} on {r.host}, "
            f"running for {_duration(r.duration_s)}, {_where(r)}" + (f": {shown}" if shown else ""),
            soft_wrap=True,
        )


def _where(r: RunInfo) -> str:
    """``epoch 17/150 (scratch 17/150), ~12m left``; ``epoch -`` before the first epoch ends."""
    epoch = f"epoch {_fmt(r.epoch) or '-'}" + (f"/{r.total_epochs}" if r.total_epochs else "")
    if r.phase:
        epoch += f" ({r.phase} {r.phase_epoch}/{r.phase_epochs})"
    left = time_left_text(r.seconds_left_now)
    return epoch + (f", {left}" if left else "")


def evaluate(
    run: RunArg = None,
    model: ModelOpt = ModelType("pest"),
    newer: Annotated[
        bool, typer.Option("--newer", help="Rows created after the run's data instead of its test split.")
    ] = False,
    batch_size: BatchOpt = 32,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for the report \\[default: RUN/eval_TIME].")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Measure a saved model on rows it never trained on: its recorded test split, or rows newer than its data.

    Shows accuracy, top-3, macro F1, per-class precision / recall / F1 / support and the confusion matrix.

    Also expected calibration error, latency per image (p50 / p95 of single-image calls) and model size.

    metrics.json, predictions.csv and confusion_matrix.png are written to `RUN/eval_<time>/` (or --out).

    Example: agroml evaluate production --model pest
    """

    with output.progress() as progress:
        result = run_evaluation(
            _settings(), model.value, run, newer=newer, batch_size=batch_size, out=out, progress=progress
        )
    output.emit(result, json_, _render_evaluation)
    if not json_:
        output.hint(f"report written to {result.out_dir}")


def _render_evaluation(result: EvalResult) -> None:

    m, lat = result.metrics, result.latency_ms
    output.stdout.print(
        f"[bold]{result.model_type}[/] run {result.run_id} on {m['n']} {result.rows} rows: accuracy "
        f"{m['accuracy']:.3f}, top-{m['top_k']} {m['top3_accuracy']:.3f}, macro F1 {m['macro_f1']:.3f}, "
        f"ECE {m['ece']:.3f}; latency p50 {_fmt(lat['p50'], 1)} ms, p95 {_fmt(lat['p95'], 1)} ms per image; "
        f"model {result.model_size_bytes / 1e6:.1f} MB",
        highlight=False,
        soft_wrap=True,
    )
    per_class = Table("class", "precision", "recall", "F1", "support")
    for name, row in m["per_class"].items():
        per_class.add_row(name, _fmt(row["precision"]), _fmt(row["recall"]), _fmt(row["f1"]), str(row["support"]))
    output.stdout.print(per_class)
    names = m["class_names"]
    short = len(names) > 6  # many classes: number the columns so the matrix still fits a terminal
    cm = Table("true \\ predicted", *(str(i) for i in range(len(names))) if short else names, title="confusion matrix")
    for i, (name, counts) in enumerate(zip(names, m["confusion_matrix"], strict=True)):
        cm.add_row(f"{i} {name}" if short else name, *[str(c) if c else "." for c in counts])
    output.stdout.print(cm)


def predict(
    images: Annotated[list[str], typer.Argument(help="Image files or URLs.", show_default=False)],
    model: ModelOpt = ModelType("pest"),
    run: Annotated[
        str | None,
        typer.Option("--run", help="Run id, `production` or a model folder \\[default: the newest succeeded run]."),
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Classes shown per image.")] = 3,
    batch_size: BatchOpt = 32,
    json_: JsonOpt = False,
) -> None:
    """Name the pest, disease or storage condition in photos with a saved model, with probabilities.

    Each run answers with its own class list (its labels.json), whatever classes were added since.

    An image that cannot be read is reported on its own line, the others are still predicted (exit 1).

    Example: agroml predict leaf1.jpg leaf2.jpg --model pest --run production --top 3
    """

    result = run_predict(_settings(), model.value, images, ref=run, top=top, batch_size=batch_size)
    if not json_:
        # the text names each failed image on its own line: the counts of them would say it twice
        result = dataclasses.replace(result, warnings=[w for w in result.warnings if w not in result.counts])
    output.emit(result, json_, _predictions)
    if result.failed:
        raise typer.Exit(1)


def _predictions(result: PredictResult) -> None:
    for p in result.predictions:
        if not p.ok:
            # the library's reason may already start with the image ("x.jpg: no such file"): say it once
            reason = p.error or "unreadable image"
            output.error(reason if reason.startswith(f"{p.image}:") else f"{p.image}: {reason}")
            continue
        ranked = ", ".join(f"{t['label']} {t['probability']:.1%}" for t in p.top)
        output.stdout.print(f"{p.image}: {ranked}", highlight=False, soft_wrap=True)
    output.hint(f"model: {result.run_id} ({result.model_path})")


def performance(
    model: ModelAllOpt = ModelTypeOrAll("all"),
    since: SinceOpt = None,
    until: UntilOpt = None,
    source: SourceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The deployed model's feedback accuracy from farmers, next to its production run's test figures.

    Feedback accuracy = confirmed / (confirmed + corrected + rejected) of the rows the deployed model
    predicted, overall and per predicted class; test figures come from `models/<type>/production/`.

    Example: agroml performance --model pest --since 2026-01-01
    """

    since, until = check_window(since, until)
    settings = config.resolve({"source": source})
    with contextlib.closing(open_source(settings, output.notice)) as src:
        report = model_performance(src, settings.models_dir, schema.expand_model_types(model.value), since, until)
    output.emit(report, json_, _render_performance)


def _render_performance(report: PerformanceReport) -> None:
    table = Table("model", "feedback", "feedback accuracy", "production run", "test accuracy", "test macro F1")
    for model, block in report.models.items():
        feedback, prod = block["feedback"], block["production"] or {}
        test = prod.get("test") or {}
        answered = feedback["confirmed"] + feedback["corrected"] + feedback["rejected"]
        table.add_row(
            model,
            str(answered),
            _fmt(feedback["feedback_accuracy"]),
            prod.get("run_id") or "-",
            _fmt(test.get("accuracy")),
            _fmt(test.get("macro_f1")),
        )
    output.stdout.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("runs")(runs)
    app.command("status")(status)
    app.command("evaluate")(evaluate)
    app.command("predict")(predict)
    app.command("performance")(performance)
