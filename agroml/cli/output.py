"""Everything the CLI shows: data to stdout (Rich tables or --json), messages and progress to stderr.

One module, so every command renders errors, hints, JSON and progress bars the same way, and so
tests can rely on stdout being pure data.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast, get_args

from rich.console import Console, JustifyMethod
from rich.markup import escape
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


class Result(Protocol):
    """What a library call returns for a command to show: its JSON form and warnings for the user."""

    @property
    def warnings(self) -> list[str]: ...

    def to_dict(self) -> Any: ...


R = TypeVar("R", bound=Result)


def emit(result: R, json_: bool, render: Callable[[R], object]) -> None:
    """Show a command's result: its warnings on stderr, then ``--json`` (one document) or ``render``'s tables.

    Why one function: every command shows warnings the same way whichever the format, and its JSON is
    exactly the library's ``to_dict()`` (the API returns the same), so no command branches on it.
    """
    for message in result.warnings:
        warn(message)
    if json_:
        print_json(result.to_dict())
    else:
        render(result)


@dataclass
class Listing:
    """Library records (each with ``to_dict()``) listed by a command: JSON ``[...]``, or ``{key: [...]}``."""

    items: list[Any]
    key: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> Any:
        data = [item.to_dict() for item in self.items]
        return data if self.key is None else {self.key: data}


def justify(name: str) -> JustifyMethod:
    """A column alignment named in a table spec, checked (Rich would silently ignore a misspelt one)."""
    if name not in get_args(JustifyMethod):
        raise ValueError(f"not a Rich alignment: {name!r}")
    return cast(JustifyMethod, name)


def error(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/] {message}", highlight=False)


def hint(message: str) -> None:
    stderr.print(f"[dim]{message}[/]", highlight=False)


def notice(message: str) -> None:
    """A library notice (e.g. a retry) as one stderr line; above the progress bars when they are drawn."""
    stderr.print(escape(message), highlight=False)


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
