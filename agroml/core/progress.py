"""Progress reporting without printing: the library calls a callback, the CLI draws Rich bars (and prints
notices, one line each, such as a retry).

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


class NoticeFn(Protocol):
    """A one-line message for the user while work goes on ("retrying in 2.1 s ..."); the CLI prints it
    on stderr, the API may log it. The library never prints: it calls this."""

    def __call__(self, message: str) -> None: ...


def no_notice(message: str) -> None:
    """The default notice callback: does nothing."""


def time_left_text(seconds: float | None) -> str:
    """An estimate of the time left as people read it: ``~40s left``, ``~12m left``, ``~1h05m left``.

    Rounded up to whole minutes past 90 s (an estimate from a few epochs is not worth more digits).
    """
    if seconds is None or seconds != seconds or seconds < 0:  # None or NaN: nothing to estimate from
        return ""
    if seconds < 90:
        return f"~{round(seconds)}s left"
    minutes = -(-int(seconds) // 60)
    return f"~{minutes}m left" if minutes < 60 else f"~{minutes // 60}h{minutes % 60:02d}m left"
