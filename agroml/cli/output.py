"""Everything the CLI shows: data to stdout (Rich tables or --json), messages and progress to stderr.

One module, so every command renders errors, hints, JSON and progress bars the same way, and so
tests can rely on stdout being pure data.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from agroml.core.files import json_text
from agroml.core.progress import ProgressFn, no_progress

# Width fixed when not a terminal so CliRunner output and logs from cron are stable.
stdout = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 120)
stderr = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 120)


def to_json(data: Any) -> str:
    """The one JSON encoding (agroml.core.files): NaN -> null, numpy scalars, paths and times made plain."""
    return json_text(data)


def print_json(data: Any) -> None:
    """Machine output: exactly one JSON document on stdout."""
    sys.stdout.write(to_json(data) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/] {message}", highlight=False)


def hint(message: str) -> None:
    stderr.print(f"[dim]{message}[/]", highlight=False)


def bar(value: float, maximum: float, width: int = 24) -> str:
    """A text bar for tables: ``████▌`` proportional to value / maximum."""
    if maximum <= 0 or value <= 0:
        return ""
    eighths = round(width * 8 * value / maximum)
    full, part = divmod(eighths, 8)
    return "█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")


@contextlib.contextmanager
def progress(enabled: bool | None = None) -> Iterator[ProgressFn]:
    """A progress callback drawing Rich bars on stderr; silent when stderr is not a terminal (cron, CI)."""
    if enabled is None:
        enabled = stderr.is_terminal
    if not enabled:
        yield no_progress
        return
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=stderr,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def update(task: str, done: int, total: int | None = None, info: str = "") -> None:
        if task not in tasks:
            tasks[task] = bars.add_task(task, total=total, info=info)
        bars.update(tasks[task], completed=done, total=total, info=info)

    with bars:
        yield update
