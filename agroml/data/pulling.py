"""``agroml pull``: copy Supabase rows into the local store and their images into the cache.

Why every pull re-reads the rows (unless ``since`` narrows it): AgroShield has no ``updated_at``, and
a farmer's confirm/correct feedback arrives after the row was created, so "rows newer than the last
pull" would miss exactly the feedback that makes rows trainable. Re-reading costs one request per
1000 rows (25 requests for 25,000 rows); ``--since`` limits the refresh to recent rows when the
table is large and old feedback no longer changes. Rows deleted in Supabase stay in the store.

Why a kill at any moment is safe: each page is upserted in one SQLite transaction (by (source, id):
a repeated page inserts nothing twice), images are written to a temporary file and renamed, and
image hashes are recorded only after the file is in place. Running the pull again reads the same
rows, upserts them as "unchanged", finds the fetched images in the cache without a request, and
finishes the rest: the same store and cache as one uninterrupted pull.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from agroml.core import schema
from agroml.core.config import Settings
from agroml.core.progress import NoticeFn, ProgressFn, no_notice, no_progress
from agroml.data.analysis import check_window
from agroml.data.store import Store, UpsertResult
from agroml.data.supabase import SupabaseSource
from agroml.images.cache import ImageCache
from agroml.images.fetch import FetchSummary, fetch_images

#: Unique image URLs fetched per batch: hashes are recorded after each, so a killed pull keeps them.
IMAGE_BATCH = 2000
#: Pages are normalized and upserted together up to this many rows, or after this many seconds: one
#: call per 1000-row page costs 3-4x more (pandas and SQLite overhead per call), and the time bound keeps
#: a slow link's progress committed.
UPSERT_ROWS, UPSERT_SECONDS = 10_000, 2.0


@dataclass
class ModelPull:
    """What one model type's pull changed in the store."""

    model_type: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    invalid: dict[str, int] = field(default_factory=dict)

    def add(self, result: UpsertResult, invalid: dict[str, int]) -> None:
        self.inserted += result.inserted
        self.updated += result.updated
        self.unchanged += result.unchanged
        self.rows += result.inserted + result.updated + result.unchanged
        for reason, n in invalid.items():
            self.invalid[reason] = self.invalid.get(reason, 0) + n


@dataclass
class PullResult:
    """Per model type counts, the image summary (None with images=False), warnings for the user."""

    models: dict[str, ModelPull]
    images: FetchSummary | None
    hashes_recorded: int = 0
    rows_without_image: int = 0
    requests: int = 0
    retries: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": {
                m: {
                    "rows": p.rows,
                    "inserted": p.inserted,
                    "updated": p.updated,
                    "unchanged": p.unchanged,
                    "invalid": p.invalid,
                }
                for m, p in self.models.items()
            },
            "images": None if self.images is None else self.images.to_dict(),
            "hashes_recorded": self.hashes_recorded,
            "rows_without_image": self.rows_without_image,
            "rest_requests": self.requests,
            "rest_retries": self.retries,
            "warnings": self.warnings,
        }


def pull(
    settings: Settings,
    model_type: str = "all",
    since: Any = None,
    until: Any = None,
    *,
    images: bool = True,
    progress: ProgressFn = no_progress,
    notice: NoticeFn = no_notice,
) -> PullResult:
    """Upsert every row of ``model_type`` (or all) created in [since, until) and fetch its images.

    ``notice`` hears of every retry (the CLI prints each on stderr): a slow network is never silent.
    """

    since, until = check_window(since, until)  # before any request: an empty window is a mistake
    types = schema.expand_model_types(model_type)
    with Store(settings.db_path, create=True) as store, SupabaseSource(settings, notice) as source:
        source.use_salt(store.salt(settings.hash_salt))
        models: dict[str, ModelPull] = {}
        wanted: dict[str, list[str]] = {}  # image url -> ids of the rows showing it
        for mt in types:
            models[mt] = ModelPull(mt)
            buffer: list[dict[str, Any]] = []
            flushed = time.monotonic()
            for page in source.fetch_rows(mt, since, until, progress):
                buffer.extend(page)
                if len(buffer) >= UPSERT_ROWS or time.monotonic() - flushed >= UPSERT_SECONDS:
                    _upsert(source, store, mt, buffer, models[mt], wanted)
                    buffer, flushed = [], time.monotonic()
            _upsert(source, store, mt, buffer, models[mt], wanted)
        result = PullResult(
            models, None, requests=source.requests, retries=source.policy.retries, warnings=list(source.warnings)
        )
        if images:
            result.images, result.hashes_recorded = _pull_images(settings, store, source.name, wanted, progress, notice)
    if result.images is not None and result.images.failed:
        reasons = ", ".join(f"{n} {r}" for r, n in result.images.reasons.items())
        result.rows_without_image = sum(len(wanted[url]) for url in result.images.failures)
        result.warnings.append(
            f"{result.images.failed} images not fetched ({reasons}); their "
            f"{result.rows_without_image} rows stay without an image hash and out of training"
        )
    return result


def _upsert(
    source: Any,
    store: Store,
    model_type: str,
    rows: list[dict[str, Any]],
    counts: ModelPull,
    wanted: dict[str, list[str]],
) -> None:
    """Normalize and upsert one batch of raw rows (one transaction); note each row's image URL."""
    if not rows:
        return
    normalized = source.normalize(rows, model_type)
    counts.add(store.upsert(normalized.records), normalized.invalid)
    frame = normalized.records[normalized.records["image_url"].notna()]
    for row_id, url in zip(frame["id"], frame["image_url"], strict=True):
        wanted.setdefault(url, []).append(row_id)


def _pull_images(
    settings: Settings,
    store: Store,
    source: str,
    wanted: dict[str, list[str]],
    progress: ProgressFn,
    notice: NoticeFn,
) -> tuple[FetchSummary, int]:
    """Fetch in batches, recording each batch's hashes in the store as soon as its files exist."""
    summary = FetchSummary()
    recorded = 0
    urls = list(wanted)
    with ImageCache(settings.image_dir, max_bytes=int(settings.image_max_mb * 1_000_000)) as cache:
        for start in range(0, len(urls), IMAGE_BATCH):
            batch = urls[start : start + IMAGE_BATCH]

            def batch_progress(
                task: str, done: int, total: int | None = None, info: str = "", offset: int = start
            ) -> None:
                progress("images", offset + done, len(urls), info)

            part = fetch_images(batch, cache, settings, batch_progress, notice)
            summary.add(part)
            pairs = [(source, row_id, sha) for url, sha in part.hashes().items() for row_id in wanted[url]]
            recorded += store.set_image_hashes(pairs)
    progress("images", summary.total, len(urls))
    return summary, recorded
