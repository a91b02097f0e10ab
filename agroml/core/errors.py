"""Typed errors: the only way the library reports failure.

Each error carries a one-line message that names the bad value and, where there is one, the command
or setting that fixes it. The CLI turns them into a single stderr line and an exit code; nothing
else in the library decides how a failure is shown.
"""

from __future__ import annotations


class AgromlError(Exception):
    """Base class. ``exit_code`` 1 = failed operation, 2 = bad usage."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} ({self.fix})" if self.fix else self.message


class UsageError(AgromlError):
    """The caller asked for something that cannot be: a bad flag value, an unknown name."""

    exit_code = 2


class ConfigError(AgromlError):
    """A setting is missing or malformed."""


class NoDataError(AgromlError):
    """The source holds no rows for what was asked."""

    def __init__(self, message: str = "no data: run `agroml demo` or `agroml pull`", fix: str | None = None):
        super().__init__(message, fix)


class StoreError(AgromlError):
    """The local store cannot be opened, is corrupt, foreign or from a newer agroml."""


class OutputError(AgromlError):
    """An output folder or file cannot be written."""


class SourceError(AgromlError):
    """A remote source (Supabase) failed in a way retrying does not fix."""


class UnreachableError(SourceError):
    """The remote host refused the connection or its name did not resolve: retrying longer would not help."""


class ImageError(AgromlError):
    """An image could not be fetched, decoded or cached."""


class NotEnoughDataError(AgromlError):
    """Too few trainable rows to train or evaluate honestly."""


class TrainingError(AgromlError):
    """Training could not start or complete."""


class RunBusyError(AgromlError):
    """Another training of the same model type is running."""


class ModelNotFoundError(AgromlError):
    """The run id, ``production`` or path names no saved model."""
