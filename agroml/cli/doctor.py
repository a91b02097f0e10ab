"""Command: `agroml doctor` (checks with ok / warn / fail, their detail and fix)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from agroml.cli import output
from agroml.cli.options import JsonOpt
from agroml.ops import doctor as lib

_STYLE = {"ok": ("✔", "green"), "warn": ("!", "yellow"), "fail": ("✘", "bold red")}


def doctor(
    json_: JsonOpt = False,
    offline: Annotated[bool, typer.Option("--offline", help="Skip the checks that need the network.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 on warnings too, not only failures.")] = False,
) -> None:
    """Check that this machine is ready: Python, packages, TensorFlow, folders, store, settings, Supabase key.

    Each line says ok, warn or fail, what was found and how to fix it. The Supabase key is never
    shown: only its role, the variable it came from and its last 4 characters. Exit code 1 on any
    failure (and on warnings with --strict), so CI can run it as a smoke check.

    Example: agroml doctor --offline --strict
    """

    report = lib.diagnose(offline=offline)
    output.emit(report, json_, _render)
    raise typer.Exit(lib.doctor_exit_code(report.checks, strict))


def _render(report: lib.Report) -> None:

    table = Table(title="agroml doctor", title_justify="left")
    for column in ("", "check", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        symbol, colour = _STYLE.get(check.status, ("?", "magenta"))
        table.add_row(f"[{colour}]{symbol}[/]", check.name, check.detail, check.fix, style=None)
    output.stdout.print(table, highlight=False)
    if report.settings:
        settings = Table(title="settings", title_justify="left")
        for column in ("name", "value", "origin"):
            settings.add_column(column, overflow="fold")
        for row in report.settings:
            settings.add_row(row["name"], row["value"], row["origin"])
        output.stdout.print(settings, highlight=False)
    counts = report.counts()
    verdict = "[green]ready[/]" if report.ok else "[bold red]not ready[/]"
    output.stdout.print(
        f"{verdict}: {counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed", highlight=False
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("doctor")(doctor)
