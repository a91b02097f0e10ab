"""Import an existing folder-per-class image collection into the store as confirmed rows.

The layout is the one Keras' ``image_dataset_from_directory`` reads: ``DIR/<class>/**/<image>``,
the folder name being the label. Why import at all: a team that already has labelled photos (a
PlantVillage subset, a field survey) can train on them together with the farmers' feedback, and
every command (stats, export, train) sees them like any other source.

Rows are idempotent: the id is a uuid5 of the model type and the file's path relative to the
folder's parent (``<folder name>/<class>/<file>``), so importing the same collection twice changes
nothing and moving it only refreshes ``image_url``. A file that cannot be read or is not a complete
image is skipped, counted by reason and listed; it never stops the import.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agroml.core import schema
from agroml.core.config import Settings
from agroml.core.errors import UsageError
from agroml.core.progress import ProgressFn, no_progress
from agroml.data import records as rec
from agroml.data.store import Store, UpsertResult
from agroml.images.cache import ImageCache, ImageRejected

_NAMESPACE = uuid.UUID("0c7c1f3e-3a0e-4f4e-8f3e-5d1b8a6c2e90")
#: Reasons a file is skipped, besides images.ImageRejected's (not_an_image, truncated, too_large, ...).
UNREADABLE, NOT_IN_CLASS_FOLDER = "unreadable", "not_in_class_folder"
UNKNOWN_LABEL = rec.UNKNOWN_LABEL
#: Rows per store transaction: bounded memory for large collections, few commits for small ones.
BATCH = 500


@dataclass
class ImportSummary:
    """What :func:`import_folder` did: rows written, per class counts, and every skipped file with its reason."""

    model_type: str
    folder: Path
    files_seen: int
    upsert: UpsertResult
    images: int
    classes: dict[str, int]
    skipped: dict[str, int]
    skipped_files: list[tuple[str, str]]
    seconds: float
    store_path: Path
    image_dir: Path
    warnings: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.upsert.inserted + self.upsert.updated + self.upsert.unchanged

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "folder": str(self.folder),
            "files_seen": self.files_seen,
            "rows": self.rows,
            "inserted": self.upsert.inserted,
            "updated": self.upsert.updated,
            "unchanged": self.upsert.unchanged,
            "images": self.images,
            "classes": self.classes,
            "skipped": self.skipped,
            "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped_files],
            "seconds": round(self.seconds, 3),
            "store": str(self.store_path),
            "image_dir": str(self.image_dir),
            "warnings": self.warnings,
        }


def class_folders(folder: Path) -> list[Path]:
    """The class subfolders of ``folder`` (hidden ones excluded), sorted; errors for a missing or flat folder."""
    if not folder.exists():
        raise UsageError(
            f"import folder not found: {folder}",
            fix="give a folder with one subfolder per class, e.g. DIR/aphids/*.jpg",
        )
    if not folder.is_dir():
        raise UsageError(
            f"import folder is not a folder: {folder}",
            fix="give a folder with one subfolder per class, e.g. DIR/aphids/*.jpg",
        )
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise UsageError(
            f"no class folders in {folder}: the images must sit in one subfolder per class",
            fix="arrange them as DIR/<class>/<image>, e.g. DIR/aphids/001.jpg",
        )
    return subdirs


def _files(folder: Path) -> list[Path]:
    """Every file under ``folder`` (broken links too, so they are counted), sorted for a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() or (p.is_symlink() and not p.exists()))


def import_folder(
    settings: Settings, folder: Path, model_type: str, progress: ProgressFn = no_progress
) -> ImportSummary:
    """Import ``folder``'s images as confirmed ``model_type`` rows (source "import") into the store and cache."""
    schema.check_model_type(model_type)
    started = time.perf_counter()
    subdirs = class_folders(Path(folder).expanduser())  # errors name the path as the user gave it
    folder = Path(folder).expanduser().resolve()
    subdirs = [folder / sub.name for sub in subdirs]
    vocabulary = schema.DEFAULT_SPECS[model_type].vocabulary
    skipped: Counter[str] = Counter()
    skipped_files: list[tuple[str, str]] = []
    classes: Counter[str] = Counter()

    def skip(path: Path, reason: str) -> None:
        skipped[reason] += 1
        skipped_files.append((str(path.relative_to(folder)), reason))

    loose = [p for p in folder.iterdir() if p.is_file()]
    for path in sorted(loose):  # files beside the class folders have no label
        skip(path, NOT_IN_CLASS_FOLDER)
    work = [(sub, path) for sub in subdirs for path in _files(sub)]
    total = len(work)
    upsert, images, pending = UpsertResult(0, 0, 0), 0, []
    max_bytes = int(settings.image_max_mb * 1_000_000)
    with Store(settings.db_path, create=True) as store, ImageCache(settings.image_dir, max_bytes=max_bytes) as cache:
        progress("import", 0, total)
        for done, (sub, path) in enumerate(work, 1):
            label = rec.normalize_label(sub.name)
            if label is None or (vocabulary is not None and label not in vocabulary):
                skip(path, UNKNOWN_LABEL)
            else:
                row = _import_file(cache, folder, path, model_type, label, skip)
                if row is not None:
                    pending.append(row)
                    classes[label] += 1
                    images += 1
            if len(pending) >= BATCH:
                upsert += store.upsert(rec.make_records(pending))
                pending = []
            progress("import", done, total)
        if pending:
            upsert += store.upsert(rec.make_records(pending))
    warnings = []
    if skipped:
        warnings.append(
            f"skipped {sum(skipped.values())} file(s): "
            + ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        )
    if vocabulary is not None and skipped.get(UNKNOWN_LABEL):
        warnings.append(f"{model_type} classes must be one of {', '.join(vocabulary)}")
    return ImportSummary(
        model_type,
        folder,
        total + len(loose),
        upsert,
        images,
        dict(sorted(classes.items())),
        dict(sorted(skipped.items())),
        skipped_files,
        time.perf_counter() - started,
        Path(settings.db_path),
        Path(settings.image_dir),
        warnings,
    )


def _import_file(
    cache: ImageCache, folder: Path, path: Path, model_type: str, label: str, skip: Any
) -> dict[str, Any] | None:
    """One file -> a record dict, or None after counting why it was skipped."""
    try:
        data = path.read_bytes()
        mtime = path.stat().st_mtime
    except OSError:  # permission denied, vanished, a broken link
        skip(path, UNREADABLE)
        return None
    url = path.as_uri()
    try:
        cached = cache.put(data, url=url)
    except ImageRejected as exc:
        skip(path, exc.reason)
        return None
    relative = path.relative_to(folder.parent).as_posix()
    return {
        "id": str(uuid.uuid5(_NAMESPACE, f"{model_type}:{relative}")),
        "source": "import",
        "model_type": model_type,
        "image_url": url,
        "image_hash": cached.sha256,
        "predicted_label": label,
        "confidence": 1.0,
        "user_confirmed": True,
        "actual_label": None,
        "created_at": datetime.fromtimestamp(mtime, tz=UTC),
        "extra": json.dumps(
            {"relative_path": relative, "width": cached.width, "height": cached.height}, sort_keys=True
        ),
    }
