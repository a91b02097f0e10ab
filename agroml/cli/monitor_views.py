"""Text views of the feedback series (``stats --by``) and of where the deployed model is wrong.

Kept apart from cli/stats.py so each command module stays short; they only render library results.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from agroml.cli import output
from agroml.data.timeline import TimelineReport


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def interval(block: dict[str, Any]) -> str:
    """``[lo–hi]`` of a block's Wilson interval, or a dash without answers."""
    if block.get("ci_low") is None:
        return "—"
    return f"{block['ci_low']:.0%}–{block['ci_high']:.0%}"


def _table(title: str, columns: list[tuple[str, str]]) -> Table:
    table = Table(title=escape(title), title_justify="left")
    for name, justify in columns:
        table.add_column(name, justify=output.justify(justify))
    return table


def timeline_tables(report: TimelineReport) -> None:
    """Per model type: the series (one row per period), then accuracy per predicted class and period."""
    for model, block in report.models.items():
        table = _table(
            f"{model}: feedback per {report.by} · the deployed model's accuracy · local time {report.timezone}",
            [
                (report.by, "left"),
                ("predictions", "right"),
                ("answered", "right"),
                ("feedback rate", "right"),
                ("accuracy", "right"),
                ("95% interval", "right"),
                ("", "left"),
                ("trainable added", "right"),
                ("new production model", "left"),
            ],
        )
        for p in block["periods"]:
            table.add_row(
                p["period"],
                str(p["predictions"]),
                str(p["answered"]),
                pct(p["feedback_rate"]),
                pct(p["feedback_accuracy"]),
                interval(p),
                output.bar(p["feedback_accuracy"] or 0, 1, width=10),
                str(p["trainable"]),
                escape(", ".join(str(d["run_id"]) for d in p["deployments"])),
            )
        output.stdout.print(table)
        outside = [d for d in block["deployments"] if d["period"] not in {p["period"] for p in block["periods"]}]
        for d in outside:
            output.stdout.print(
                f"{model}: production model {escape(str(d['run_id']))} went live {d['promoted_at']} (outside the rows)",
                highlight=False,
            )
        if block["classes"] and block["periods"]:
            per = _table(
                f"{model}: accuracy per predicted class and {report.by} (answers)",
                [(report.by, "left"), *((escape(c), "right") for c in block["classes"])],
            )
            for p in block["periods"]:
                cells = []
                for c in block["classes"]:
                    got = p["classes"].get(c)
                    cells.append("" if got is None else f"{got['feedback_accuracy']:.0%} ({got['answered']})")
                per.add_row(p["period"], *cells)
            output.stdout.print(per)
    output.stdout.print(f"[dim]source {report.source} · generated {report.generated_at}[/]", highlight=False)


def where_wrong_tables(model: str, wrong: dict[str, Any], top: int = 8) -> None:
    """The most confused pairs from corrections, then accuracy per crop and per region (worst first)."""
    if not wrong or not wrong.get("answered"):
        return
    if wrong["most_confused"]:
        pairs = _table(
            f"{model}: most confused (predicted → farmer's answer, from {wrong['corrected']} corrections)",
            [("predicted", "left"), ("farmer's answer", "left"), ("rows", "right")],
        )
        for pair in wrong["most_confused"][:top]:
            pairs.add_row(escape(pair["predicted"]), escape(pair["actual"]), str(pair["n"]))
        output.stdout.print(pairs)
    for key, title in (("by_crop", "crop"), ("by_region", "region")):
        rows = wrong[key]
        table = _table(
            f"{model}: deployed model's accuracy per {title}, worst first"
            + (f" (the worst {top} of {len(rows)})" if len(rows) > top else ""),
            [
                (title, "left"),
                ("answered", "right"),
                ("accuracy", "right"),
                ("95% interval", "right"),
                ("corrected", "right"),
                ("rejected", "right"),
                ("most confused", "left"),
            ],
        )
        for b in rows[:top]:
            worst = b["most_confused"][0] if b["most_confused"] else None
            table.add_row(
                escape(b["key"]),
                str(b["answered"]),
                pct(b["feedback_accuracy"]),
                interval(b),
                str(b["corrected"]),
                str(b["rejected"]),
                "" if worst is None else escape(f"{worst['predicted']} → {worst['actual']} ({worst['n']})"),
            )
        output.stdout.print(table)
