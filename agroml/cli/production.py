"""Commands: promote, rollback, publish, history (what serves as each type's production model, and its story)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from agroml.cli import output
from agroml.cli.options import JsonOpt, ModelOpt, ModelType
from agroml.core import config
from agroml.lifecycle.promotion import PromotionResult
from agroml.lifecycle.promotion import history as promotion_history
from agroml.lifecycle.promotion import promote as promote_run
from agroml.lifecycle.publishing import publish as publish_production
from agroml.lifecycle.registry import PromotionEvent, Registry
from agroml.lifecycle.rollback import RollbackResult
from agroml.lifecycle.rollback import rollback as rollback_production
from agroml.ops import alerts


def _fmt(value: Any) -> str:
    return "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def promote(
    run: Annotated[str, typer.Argument(help="The run id to serve (see `agroml runs`).", show_default=False)],
    model: ModelOpt = ModelType("pest"),
    force: Annotated[
        bool, typer.Option("--force", help="Skip the gate (recorded as forced in `agroml history`).")
    ] = False,
    publish: Annotated[
        bool,
        typer.Option("--publish", help="Then upload the production model to the Storage bucket (`agroml publish`)."),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Make a run the production model: copied to `models/<type>/production/`, the previous one archived.

    The gate first measures the run and the production model on the same rows, those neither trained
    on, and promotes only if macro F1 is not lower (AGROML_GATE_MIN_F1_GAIN), accuracy is at most
    AGROML_GATE_MAX_ACCURACY_DROP lower and no class's recall is more than AGROML_GATE_MAX_RECALL_DROP
    lower; with fewer than AGROML_GATE_MIN_ROWS such rows it refuses. A refusal prints both models'
    figures side by side and exits 1; production is untouched. --force skips the gate (recorded).

    The first promotion needs no gate; promoting the run that already serves does nothing.

    A kill at any point leaves a whole production model; the next command finishes or undoes the step.

    --publish then uploads the production model as `agroml publish` does (not when refused).

    Exit codes: 0 promoted (or already production), 1 refused or failed, 2 bad usage.

    Example: agroml promote 20260301T101500Z-mobilenetv2 --model pest --publish
    """
    settings = config.resolve({})
    what = f"agroml promote {run} --model {model.value}"
    with (
        alerts.alert_on_failure(settings, what, notice=output.warn),
        Registry(settings.models_dir) as registry,
        output.progress() as progress,
    ):
        result = promote_run(
            registry, model.value, run, settings=settings, force=force, publish=publish, progress=progress
        )
    output.emit(result, json_, _render_promotion)
    alert = alerts.promotion_alert(settings, what, result.refused, result.promoted, result.reason)
    if alert is not None and alert.warning:
        output.warn(alert.warning)
    if result.refused:
        raise typer.Exit(1)


def comparison_table(comparison: dict[str, Any]) -> Table:
    """The gate's side-by-side: one line per figure, both models, the change, and the rule's verdict."""
    champion, challenger = comparison["champion"], comparison["challenger"]
    table = Table(title=f"gate: {comparison['rows']} rows neither model trained on")
    table.add_column("figure")
    table.add_column(f"production {champion['run_id']}", justify="right")
    table.add_column(f"challenger {challenger['run_id']}", justify="right")
    table.add_column("change", justify="right")
    table.add_column("gate")
    verdicts = {rule["rule"]: rule["passed"] for rule in comparison["rules"]}
    lines = [("accuracy", "accuracy", champion["accuracy"], challenger["accuracy"])]
    lines.append(("macro F1", "macro_f1", champion["macro_f1"], challenger["macro_f1"]))
    for name, before in champion["recall"].items():
        lines.append((f"recall {name}", f"recall:{name}", before, challenger["recall"].get(name, 0.0)))
    for label, rule, before, after in lines:
        change = "" if before is None or after is None else f"{after - before:+.3f}"
        passed = verdicts.get(rule)
        verdict = "" if passed is None else ("[green]ok[/]" if passed else "[red]FAIL[/]")
        table.add_row(label, _fmt(before), _fmt(after), change, verdict)
    return table


def _render_promotion(result: PromotionResult) -> None:
    if result.recovered:
        output.notice(result.recovered)
    if result.comparison is not None and result.comparison["rows"]:
        output.stdout.print(comparison_table(result.comparison))
    if result.noop:
        output.stdout.print(result.reason or "", soft_wrap=True, highlight=False)
    elif result.refused:
        output.stdout.print(f"not promoted: {result.run_id} {result.reason}", soft_wrap=True, highlight=False)
        output.hint(f"production stays {result.champion_run_id}; `--force` promotes anyway (recorded as forced)")
    else:
        forced = " (forced: gate skipped)" if result.forced else ""
        output.stdout.print(f"promoted {result.run_id} to {result.path}{forced}", soft_wrap=True, highlight=False)
        if result.previous_run_id:
            output.hint(f"previous production {result.previous_run_id} archived to {result.archived_to}")
    if result.published is not None:
        _render_publish(result.published)


def publish(model: ModelOpt = ModelType("pest"), json_: JsonOpt = False) -> None:
    """Upload the production model to Supabase Storage, then point `<type>/production.json` at it.

    Files (model.keras, model.tflite when made, labels.json, MODEL_CARD.md) go to
    `<AGROML_MODEL_BUCKET>/<type>/<run id>/`; production.json (run id, each file's sha256 and size,
    metrics, time) is written last, so a backend polling it never sees a half-uploaded model. After a
    failure or a kill it still names the model published before: run the command again.

    Needs SUPABASE_URL and the service_role key; the bucket (default `models`) must exist.

    Example: agroml publish --model pest
    """
    settings = config.resolve({})
    with Registry(settings.models_dir) as registry, output.progress() as progress:
        result = publish_production(settings, registry, model.value, progress=progress, notice=output.notice)
    output.emit(result, json_, lambda r: _render_publish(r.to_dict()))


def _render_publish(published: dict[str, Any]) -> None:
    size = sum(f["size"] for f in published["files"].values())
    output.stdout.print(
        f"published {published['run_id']} ({len(published['files'])} files, {size / 1e6:.1f} MB) to "
        f"{published['bucket']}/{published['prefix']}/; {published['production_json']} now names it",
        soft_wrap=True,
        highlight=False,
    )


def rollback(model: ModelOpt = ModelType("pest"), json_: JsonOpt = False) -> None:
    """Put the previous production model back, byte for byte, from `models/<type>/archive/`.

    "Previous" is the model that served before the current one; rolling back twice goes two models
    back (a rollback never undoes a rollback). The current production is archived in turn, and the
    rollback is recorded in `agroml history`. A kill at any point leaves a whole production model.

    Example: agroml rollback --model pest
    """
    settings = config.resolve({})
    with Registry(settings.models_dir) as registry:
        result = rollback_production(registry, model.value)
    output.emit(result, json_, _render_rollback)


def _render_rollback(result: RollbackResult) -> None:
    if result.recovered:
        output.notice(result.recovered)
    output.stdout.print(
        f"rolled back {result.model_type} to {result.run_id} (from {result.restored_from})",
        soft_wrap=True,
        highlight=False,
    )
    if result.previous_run_id:
        output.hint(f"{result.previous_run_id} archived to {result.archived_to}")


def history(
    model: Annotated[ModelType | None, typer.Option("--model", "-m", help="Only this model type.")] = None,
    json_: JsonOpt = False,
) -> None:
    """List every promotion, refusal, no-op and rollback: when, which runs, the figures compared, by which command.

    Oldest first. `forced` marks a promotion that skipped the gate (--force); the gate's side-by-side
    figures of each decision are in --json (`comparison`).

    Example: agroml history --model pest --json
    """
    settings = config.resolve({})
    with Registry(settings.models_dir, create=False) as registry:
        events = promotion_history(registry, model.value if model else None)
    if not events and not json_:
        output.hint("no promotions yet: promote a run with `agroml promote RUN_ID --model pest`")
        return
    output.emit(output.Listing(events), json_, _render_history)


def _render_history(listing: output.Listing) -> None:
    table = Table("when (UTC)", "model", "event", "run", "production before", "figures", "command")
    for e in listing.items:
        assert isinstance(e, PromotionEvent)
        event = e.event + (" (forced)" if e.forced else "")
        figures = ""
        if e.comparison and e.comparison.get("rows"):
            new, old = e.comparison["challenger"], e.comparison["champion"]
            figures = f"F1 {_fmt(new['macro_f1'])} vs {_fmt(old['macro_f1'])}, acc {_fmt(new['accuracy'])} vs " + _fmt(
                old["accuracy"]
            )
        if e.event == "refused" and e.reason:
            figures = (figures + "; " if figures else "") + e.reason.removeprefix("refused by the gate: ")
        before = e.champion_run_id or e.previous_run_id or "-"
        table.add_row(e.to_dict()["at"], e.model_type, event, e.run_id, before, figures, e.command or "-")
    output.stdout.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("promote")(promote)
    app.command("rollback")(rollback)
    app.command("publish")(publish)
    app.command("history")(history)
