"""The text view of `agroml runs --compare`: one column per run, the baseline (the first run) leftmost."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table

from agroml.cli import output
from agroml.lifecycle.comparison import Comparison


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2g}"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def _signed(value: int) -> str:
    return f"{value:+d}" if value else "0"


def _table(title: str, first: str, run_ids: list[str]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column(first, no_wrap=True)
    for i, run_id in enumerate(run_ids):
        # run ids are copied into other commands: folded on a narrow terminal, never cut with "…"
        table.add_column(run_id + (" (baseline)" if i == 0 else ""), justify="right", overflow="fold")
    return table


def _print(table: Table) -> None:
    """On a terminal, as wide as it is; piped (a file, CI), as wide as the table needs: nothing folded."""
    console = output.stdout
    if console.is_terminal:
        console.print(table)
        return
    width = console.width
    console.width = max(width, console.measure(table, options=console.options.update_width(100_000)).maximum)
    try:
        console.print(table)
    finally:
        console.width = width


def render_comparison(c: Comparison) -> None:
    if c.settings:
        table = _table("settings that differ", "setting", c.run_ids)
        for key, values in c.settings.items():
            table.add_row(key, *(_cell(v) for v in values))
        _print(table)
    else:
        output.stdout.print("settings: the same (config.json differs only in run id, data and versions)")
    d = c.data
    table = _table("data", "", c.run_ids)
    table.add_row("fingerprint", *(f[:12] if f else "-" for f in d["fingerprints"]))
    table.add_row("same data as baseline", *(_cell(v) for v in d["same_data"]))
    for split in ("train", "val", "test", "total"):
        table.add_row(f"rows {split}", *(str(r[split]) for r in d["rows"]))
    table.add_row("rows more", *(_signed(v) for v in d["rows_more"]))
    for key, label in (("rows_added", "rows added"), ("rows_removed", "rows removed")):
        if key in d:
            table.add_row(label, *(str(v) for v in d[key]))
    if "same_test_split" in d:
        table.add_row("same test split", *(_cell(v) for v in d["same_test_split"]))
    _print(table)
    table = _table("metrics", "", c.run_ids)
    for split, figures in c.metrics.items():
        for name, values in figures.items():
            table.add_row(f"{split} {name}", *(_cell(v) for v in values))
    _print(table)
    if c.per_class_f1:
        table = _table("test F1 per class", "class", c.run_ids)
        for name, values in c.per_class_f1.items():
            table.add_row(name, *(_cell(v) for v in values))
        _print(table)
    if c.versions:
        output.hint(
            "package versions differ: "
            + "; ".join(f"{k} {' / '.join(_cell(v) for v in values)}" for k, values in c.versions.items())
        )
