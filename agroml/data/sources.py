"""Where records come from: the local store (the default) and Supabase, behind one interface.

Commands that read (stats, distribution, export) take a :class:`RecordSource`, so ``--source``
switches between the store and a live read without the analysis code knowing which it got.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import pandas as pd

from agroml.core.config import Settings
from agroml.data.store import Store
from agroml.data.supabase import SupabaseSource


class RecordSource(Protocol):
    """What analysis and export need from a source."""

    name: str  # "local" or "supabase": reported in outputs

    def iter_records(
        self,
        model_type: str | None = None,
        since: Any = None,
        until: Any = None,
        *,
        columns: Sequence[str] | None = None,
        valid_only: bool = False,
        include_personal: bool = False,
        chunk_rows: int = 100_000,
    ) -> Iterator[pd.DataFrame]:
        """Record frames (the schema of agroml.data.records), a chunk at a time."""
        ...

    def feedback_counts(self, model_type: str | None = None, since: Any = None, until: Any = None) -> pd.DataFrame:
        """Rows per (model_type, predicted_label, feedback, label, actual_label, invalid_reason) as ``n``."""
        ...

    def model_types(self) -> list[str]:
        """Model types that have rows."""
        ...

    def close(self) -> None: ...


class LocalSource:
    """The local store as a RecordSource; opening fails with "no data" if the store does not exist."""

    name = "local"

    def __init__(self, settings: Settings) -> None:

        self.store = Store(settings.db_path, create=False)

    def iter_records(
        self, model_type: str | None = None, since: Any = None, until: Any = None, **kw: Any
    ) -> Iterator[pd.DataFrame]:
        return self.store.iter_records(model_type, since, until, **kw)

    def feedback_counts(self, model_type: str | None = None, since: Any = None, until: Any = None) -> pd.DataFrame:
        return self.store.feedback_counts(model_type, since, until)

    def model_types(self) -> list[str]:
        return self.store.model_types()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> LocalSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(settings: Settings) -> RecordSource:
    """The source ``settings.source`` names (flag --source > AGROML_SOURCE > local)."""
    if settings.source == "supabase":
        return SupabaseSource(settings)
    return LocalSource(settings)
