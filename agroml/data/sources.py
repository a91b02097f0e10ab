"""Where records come from: the local store (the default) and Supabase, behind one interface.

Commands that read (stats, distribution, export) take a :class:`RecordSource`, so ``--source``
switches between the store and a live read without the analysis code knowing which it got.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypedDict, Unpack

import pandas as pd

from agroml.core.config import Settings
from agroml.core.progress import NoticeFn, no_notice
from agroml.data.store import Store
from agroml.data.supabase import SupabaseSource
from agroml.images.cache import ImageCache


class ReadOptions(TypedDict, total=False):
    """How records are read, beyond which ones: every source takes these keywords (defaults: all columns,
    invalid rows too, no personal data, 100,000 rows per chunk)."""

    columns: Sequence[str] | None
    valid_only: bool
    include_personal: bool
    chunk_rows: int


class RecordSource(Protocol):
    """What analysis and export need from a source."""

    name: str  # "local" or "supabase": reported in outputs

    def iter_records(
        self,
        model_type: str | None = None,
        since: Any = None,
        until: Any = None,
        **options: Unpack[ReadOptions],
    ) -> Iterator[pd.DataFrame]:
        """Record frames (the schema of agroml.data.records), a chunk at a time."""
        ...

    def feedback_counts(self, model_type: str | None = None, since: Any = None, until: Any = None) -> pd.DataFrame:
        """Rows per (model_type, predicted_label, feedback, label, actual_label, invalid_reason) as ``n``."""
        ...

    def model_types(self) -> list[str]:
        """Model types that have rows."""
        ...

    def missing_images(self, model_type: str, since: Any = None, until: Any = None) -> dict[str, int]:
        """{training label: trainable rows whose image training could not use}: readiness leaves them out."""
        ...

    def close(self) -> None: ...


class LocalSource:
    """The local store as a RecordSource; opening fails with "no data" if the store does not exist."""

    name = "local"

    def __init__(self, settings: Settings) -> None:

        self.store = Store(settings.db_path, create=False)
        self.image_dir = Path(settings.image_dir)

    def iter_records(
        self, model_type: str | None = None, since: Any = None, until: Any = None, **kw: Any
    ) -> Iterator[pd.DataFrame]:
        return self.store.iter_records(model_type, since, until, **kw)

    def feedback_counts(self, model_type: str | None = None, since: Any = None, until: Any = None) -> pd.DataFrame:
        return self.store.feedback_counts(model_type, since, until)

    def model_types(self) -> list[str]:
        return self.store.model_types()

    def missing_images(self, model_type: str, since: Any = None, until: Any = None) -> dict[str, int]:
        return missing_images(self.store, self.image_dir, model_type, since, until)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> LocalSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(settings: Settings, notice: NoticeFn = no_notice) -> RecordSource:
    """The source ``settings.source`` names (flag --source > AGROML_SOURCE > auto: Supabase when configured,
    else the local store); ``notice`` hears of every retry a remote source makes."""
    if settings.effective_source == "supabase":
        return SupabaseSource(settings, notice)
    return LocalSource(settings)


def missing_images(
    store: Store, image_dir: str | Path, model_type: str, since: Any = None, until: Any = None
) -> dict[str, int]:
    """{training label: valid, labelled rows of ``model_type`` whose image is not in the cache}.

    Why: readiness must count what ``train`` can use, and training takes only rows whose image is
    cached (cached images get deleted, a pull may not have fetched them). The lookup is training's
    (agroml.training.data.resolve_images): the file named by the row's image hash, else the cache
    index entry for its URL. Reads only: a missing cache folder or index is not created.
    """
    root = Path(image_dir)
    missing: Counter[str] = Counter()
    with ImageCache(root) as cache:
        stored = cache.stored_hashes()  # one listing, not a stat per row (many rows, many photos)
        indexed = (root / "index.db").is_file()
        for chunk in store.iter_records(
            model_type, since, until, columns=["label", "image_hash", "image_url"], valid_only=True
        ):
            rows = chunk[chunk["label"].notna()]
            lost = []
            for label, sha, url in rows.itertuples(index=False, name=None):
                if not (sha and sha in stored):
                    lost.append((label, url))
            urls = [u for _, u in lost if u]
            in_index = cache.lookup_many(urls) if indexed and urls else {}
            missing.update(label for label, url in lost if url not in in_index)
    return dict(missing)
