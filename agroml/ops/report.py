"""The monitoring page: one self-contained HTML file that a static web server can serve as the dashboard.

Why one file: ``agroml report --out /var/www/agroml/index.html`` from cron, and the people who run
AgroShield open it in a browser with no account, no server process and no network (charts are PNG
data URIs, the style is inline, there is no script). It is written atomically, so the web server
never serves half a page.

What it shows, per model type: data growth and feedback per month, the deployed model's feedback
accuracy over time (Wilson 95% band) with its deployments marked, class x season, where the deployed
model is wrong (from farmers' corrections), and readiness; then the training runs with their
metrics, each production model's card, and when the page was generated. Everything is computed by
the same library calls as ``stats``, ``stats --by month``, ``distribution`` and ``runs``, so the page
and the commands agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agroml.core import schema
from agroml.core.config import Settings
from agroml.core.errors import OutputError
from agroml.core.files import write_text
from agroml.core.progress import ProgressFn, no_progress
from agroml.data import analysis
from agroml.data.analysis import SEASONS, readiness_verdict
from agroml.data.sources import RecordSource
from agroml.lifecycle.promotion import PRODUCTION
from agroml.lifecycle.registry import Registry, RunInfo
from agroml.ops import charts
from agroml.ops import report_html as h
from agroml.ops.monitor import feedback_over_time

#: A model card longer than this is cut (a page is for reading; the file is in production/).
CARD_LIMIT = 100_000
#: Rows of the per-crop / per-region tables and of the confused pairs shown per model type.
TOP = 10


@dataclass
class ReportResult:
    """What ``agroml report`` wrote: where, how big, how long it took, and its sections."""

    path: str
    bytes: int
    seconds: float
    generated_at: str
    model_types: list[str]
    sections: list[str]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        keys = ("path", "bytes", "seconds", "generated_at", "model_types", "sections", "warnings")
        return {k: getattr(self, k) for k in keys}


def _readiness(stats: dict[str, dict[str, Any]]) -> str:
    rows = []
    for model, s in stats.items():
        rows.append(
            [
                model,
                readiness_verdict(s["ready"]),
                s["total"],
                s["trainable"],
                h.pct(s["feedback_rate"]),
                h.pct(s["feedback_accuracy"]),
                ", ".join(s["ready"]["short_classes"]) or "—",
            ]
        )
    headers = ["model", "readiness", "rows", "trainable", "feedback rate", "feedback accuracy", "short classes"]
    return h.table(headers, rows, left=2)


def _growth(model: str, block: dict[str, Any]) -> str:
    if not block["periods"]:
        return f"<p>No {h.esc(model)} rows.</p>"
    total = 0
    rows = []
    for p in block["periods"]:
        total += p["trainable"]
        rows.append([p["period"], p["predictions"], p["answered"], h.pct(p["feedback_rate"]), p["trainable"], total])
    png = charts.volume_png(block, f"{model}: predictions, trainable rows added, feedback rate per month")
    headers = ["month", "predictions", "answered", "feedback rate", "trainable added", "trainable so far"]
    return h.image(png, f"{model} data growth and feedback per month") + (
        f"<details><summary>the numbers</summary>{h.table(headers, rows)}</details>"
    )


def _accuracy(model: str, block: dict[str, Any]) -> str:
    if not block["periods"]:
        return f"<p>No {h.esc(model)} rows.</p>"
    png = charts.accuracy_png(block, f"{model}: the deployed model's feedback accuracy per month (95% band)")
    marks = [
        [d["run_id"], d["promoted_at"], d.get("previous_run_id") or "—", d["period"], d.get("from", "")]
        for d in block["deployments"]
    ]
    deployed = (
        h.table(["production run", "went live (UTC)", "replaced", "month", "recorded in"], marks, left=5)
        if marks
        else '<p class="muted">No promotion recorded: no deployment to mark.</p>'
    )
    rows = [
        [
            p["period"],
            p["answered"],
            h.pct(p["feedback_accuracy"]),
            h.interval(p),
            ", ".join(d["run_id"] for d in p["deployments"]),
        ]
        for p in block["periods"]
    ]
    table = h.table(["month", "answered", "accuracy", "95% interval", "new production model"], rows)
    return (
        h.image(png, f"{model} feedback accuracy over time")
        + deployed
        + (f"<details><summary>the numbers</summary>{table}</details>")
    )


def _season(report: analysis.DistributionReport) -> str:
    rows = report.class_season["rows"]
    if not rows:
        return "<p>No rows.</p>"
    return (
        f'<p class="muted">rows by predicted class (trainable rows by training label in brackets), season from the '
        f"month in local time {h.esc(report.timezone)}</p>"
        + h.heatmap(rows, list(SEASONS), report.class_season["trainable"])
    )


def _wrong(wrong: dict[str, Any]) -> str:
    if not wrong.get("answered"):
        return "<p>No feedback yet: nothing to say where the model is wrong.</p>"
    pairs = (
        h.table(
            ["predicted", "farmer's answer", "rows"],
            [[p["predicted"], p["actual"], p["n"]] for p in wrong["most_confused"][:TOP]],
            left=2,
        )
        if wrong["most_confused"]
        else '<p class="muted">No corrections: farmers confirmed or rejected, none named another class.</p>'
    )
    parts = [
        f"<p>{wrong['answered']} answers: {wrong['confirmed']} confirmed, {wrong['corrected']} corrected, "
        f"{wrong['rejected']} rejected without an answer; accuracy {h.pct(wrong['feedback_accuracy'])} "
        f"({h.interval(wrong)}).</p><h3>Most confused pairs (from corrections)</h3>{pairs}"
    ]
    for key, title in (("by_crop", "crop"), ("by_region", "region")):
        rows = [
            [
                b["key"],
                b["answered"],
                h.pct(b["feedback_accuracy"]),
                h.interval(b),
                b["corrected"],
                b["rejected"],
                "; ".join(f"{p['predicted']} → {p['actual']} ({p['n']})" for p in b["most_confused"][:3]) or "—",
            ]
            for b in wrong[key][:TOP]
        ]
        headers = [title, "answered", "accuracy", "95% interval", "corrected", "rejected", "most confused"]
        parts.append(f"<h3>Per {title}, worst first</h3>" + h.table(headers, rows))
    return "".join(parts)


def _runs(runs: list[RunInfo]) -> str:
    if not runs:
        return "<p>No training runs yet (`agroml train --model pest`).</p>"
    rows = []
    for r in runs:
        d = r.to_dict()
        acc, f1 = r.test_metric("accuracy"), r.test_metric("macro_f1")
        rows.append(
            [
                r.run_id,
                r.model_type,
                r.arch or "",
                r.state + (" · production" if r.production else ""),
                (d["started_at"] or "")[:16],
                "" if r.duration_s is None else f"{r.duration_s / 60:.1f} min",
                "" if not isinstance(acc, int | float) else f"{acc:.3f}",
                "" if not isinstance(f1, int | float) else f"{f1:.3f}",
                r.error or "",
            ]
        )
    headers = ["run id", "model", "arch", "state", "started (UTC)", "took", "test acc", "macro F1", "error"]
    return h.table(headers, rows, left=5)


def _cards(models_dir: Path, model_types: list[str]) -> str:
    parts = []
    for model in model_types:
        card = models_dir / model / PRODUCTION / "MODEL_CARD.md"
        try:
            text = card.read_text(encoding="utf-8", errors="replace")
        except OSError:
            parts.append(f"<h3>{h.esc(model)}</h3><p>No production model card ({h.esc(card)}).</p>")
            continue
        cut = f"\n… (cut at {CARD_LIMIT:,} characters; the whole card is {card})" if len(text) > CARD_LIMIT else ""
        parts.append(f"<h3>{h.esc(model)}</h3><pre>{h.esc(text[:CARD_LIMIT] + cut)}</pre>")
    return "".join(parts)


def build_report(
    source: RecordSource, settings: Settings, model_types: list[str], progress: ProgressFn = no_progress
) -> tuple[str, list[str], list[str], str]:
    """(the page's HTML, its section keys in order, warnings, when it was generated) for ``model_types``."""
    for m in model_types:
        schema.check_model_type(m)
    steps = 3 + len(model_types)
    progress("report", 0, steps)
    stats = analysis.stats_report(
        source, model_types, min_total=settings.min_total, min_per_class=settings.min_per_class
    )
    progress("report", 1, steps)
    series = feedback_over_time(source, settings.models_dir, model_types, "month", tz=settings.timezone)
    progress("report", 2, steps)
    with Registry(settings.models_dir, create=False) as registry:
        runs = registry.runs()
    warnings = list(dict.fromkeys([*stats.warnings, *series.warnings]))
    sections = [("readiness", "Data readiness per model type", _readiness(stats.models))]
    for i, m in enumerate(model_types):
        dist = analysis.distribution_report(source, m, "class", tz=settings.timezone)
        block = series.models[m]
        sections += [
            (f"growth-{m}", f"{m}: data growth and feedback per month", _growth(m, block)),
            (f"accuracy-{m}", f"{m}: feedback accuracy over time, deployments marked", _accuracy(m, block)),
            (f"season-{m}", f"{m}: class x season", _season(dist)),
            (f"wrong-{m}", f"{m}: where the deployed model is wrong", _wrong(stats.models[m]["where_wrong"])),
        ]
        progress("report", 3 + i, steps)
    sections += [
        ("runs", "Training runs and their metrics", _runs(runs)),
        ("model-card", "Production model cards", _cards(Path(settings.models_dir), model_types)),
    ]
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    sections.append(
        (
            "generated",
            "Generated",
            f"<p>Generated {h.esc(generated)} from the {h.esc(source.name)} source by agroml.</p>",
        )
    )
    body = h.warnings_block(warnings) + "".join(h.section(k, t, b) for k, t, b in sections)
    nav = [
        ("readiness", "readiness"),
        *((f"growth-{m}", m) for m in model_types),
        ("runs", "runs"),
        ("model-card", "model cards"),
        ("generated", "generated"),
    ]
    html = h.page("agroml monitoring", f"{', '.join(model_types)} · generated {generated}", nav, body)
    progress("report", steps, steps)
    return html, [k for k, _, _ in sections], warnings, generated


def write_report(
    source: RecordSource,
    settings: Settings,
    model_types: list[str],
    out: str | Path,
    progress: ProgressFn = no_progress,
) -> ReportResult:
    """``agroml report``: build the page and write it to ``out`` atomically (folders made as needed)."""
    started = time.perf_counter()
    path = Path(out)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder", fix="give a file name, e.g. --out report.html")
    blocker = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:  # before the work, not after it
        raise OutputError(f"cannot write {path}: {blocker} is not a folder", fix="choose a writable --out file")
    html, sections, warnings, generated = build_report(source, settings, model_types, progress)
    data = html.encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, html)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}", fix="choose a writable --out file") from None
    return ReportResult(
        path=str(path),
        bytes=len(data),
        seconds=round(time.perf_counter() - started, 3),
        generated_at=generated,
        model_types=model_types,
        sections=sections,
        warnings=warnings,
    )


__all__ = ["ReportResult", "build_report", "write_report"]
