"""Progress reporting without printing: the library calls a callback, the CLI draws Rich bars.

A callback gets (task, done, total, info): ``task`` names the work ("rows", "images", "epoch 3/10"),
``done`` is the absolute count so far (absolute, so a repeated call is harmless), ``total`` may be None
when unknown, ``info`` is a short free text such as live metrics.
"""

from __future__ import annotations

from typing import Protocol


class ProgressFn(Protocol):
    def __call__(self, task: str, done: int, total: int | None = None, info: str = "") -> None: ...


def no_progress(task: str, done: int, total: int | None = None, info: str = "") -> None:
    """The default callback: does nothing (library calls never need a None check)."""
