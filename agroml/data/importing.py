"""Import an existing folder-per-class image collection into the store as confirmed rows.

The layout is the one Keras' ``image_dataset_from_directory`` reads: ``DIR/<class>/**/<image>``,
the folder name being the label. Why import at all: a team that already has labelled photos (a
PlantVillage subset, a field survey) can train on them together with the farmers' feedback, and
every command (stats, export, train) sees them like any other source.

Rows are idempotent: the id is a uuid5 of the model type and the file's path relative to the
folder's parent (``<folder name>/<class>/<file>``), so importing the same collection twice changes
nothing and moving it only refreshes ``image_url``. A file that cannot be read or is not a complete
image is skipped, counted by reason and listed; it never stops the import.

A collection is data from someone else, so nothing is silent and nothing escapes DIR: a symbolic
link is followed only when it points inside DIR (``follow_links`` to follow any), hidden folders
(``.git``, ``.thumbnails``) are skipped, and every skipped folder is listed with its reason like a
skipped file; a file's size is read from the file system before any byte is (AGROML_IMAGE_MAX_MB),
and at most that many bytes are ever held; a folder name that is not already its label (``Fall
Armyworm`` -> ``fall_armyworm``) is reported with the label it became.
"""

from __future__ import annotations

import json
import os
import stat
import time
import uuid
from collections import Counter
from collections.abc import Callable
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
from agroml.images.cache import TOO_LARGE, ImageCache, ImageRejected

_NAMESPACE = uuid.UUID("0c7c1f3e-3a0e-4f4e-8f3e-5d1b8a6c2e90")
#: Reasons a file is skipped, besides images.ImageRejected's (not_an_image, truncated, too_large, ...).
UNREADABLE, NOT_IN_CLASS_FOLDER, NOT_A_FILE = "unreadable", "not_in_class_folder", "not_a_regular_file"
#: Reasons a folder is skipped (LINK_OUTSIDE applies to a linked file too).
HIDDEN, LINK_OUTSIDE, LINK_LOOP, UNREADABLE_FOLDER = "hidden_folder", "link_outside_folder", "link_loop", "unreadable"
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
    skipped_folders: list[tuple[str, str]]
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
            "skipped_folders": [{"path": p, "reason": r} for p, r in self.skipped_folders],
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


def _text(path: Path | str) -> str:
    """A path as text a database, JSON and a terminal take: bytes that are not UTF-8 (a name from another
    system's encoding, kept by Python as surrogates) become ``\\xNN`` escapes. A UTF-8 name is unchanged,
    so row ids made from it stay the same."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root)


def _files(
    root: Path, class_dir: Path, follow_links: bool, skip_folder: Callable[[Path, str], None], skip: Callable
) -> list[Path]:
    """Every file under ``class_dir`` (broken links too, so they are counted), sorted for a stable order.

    Links are followed only to places inside ``root`` (anywhere with ``follow_links``), each folder
    once (a link back up is a loop, not an endless walk); hidden folders and links that leave ``root``
    are reported through ``skip_folder`` / ``skip``, never dropped in silence.
    """
    files: list[Path] = []
    seen: set[Path] = set()
    stack = [class_dir]
    while stack:
        folder = stack.pop()
        real = folder.resolve()
        if not follow_links and not real.is_relative_to(root):
            skip_folder(folder, LINK_OUTSIDE)
            continue
        if real in seen:
            skip_folder(folder, LINK_LOOP)
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            skip_folder(folder, UNREADABLE_FOLDER)
            continue
        for entry in entries:
            path = Path(entry.path)
            if entry.is_dir():
                if entry.name.startswith("."):
                    skip_folder(path, HIDDEN)
                else:
                    stack.append(path)
            elif entry.is_file():
                if entry.is_symlink() and not follow_links and not _inside(path, root):
                    skip(path, LINK_OUTSIDE)
                else:
                    files.append(path)
            elif entry.is_symlink():  # broken link: counted as unreadable when it is read
                files.append(path)
            else:  # a pipe, socket or device named like a photo: never opened
                skip(path, NOT_A_FILE)
    return sorted(files)


def import_folder(
    settings: Settings,
    folder: Path,
    model_type: str,
    progress: ProgressFn = no_progress,
    follow_links: bool = False,
) -> ImportSummary:
    """Import ``folder``'s images as confirmed ``model_type`` rows (source "import") into the store and cache.

    ``follow_links``: follow symbolic links that point outside ``folder`` too (by default such links
    are skipped and reported).
    """
    schema.check_model_type(model_type)
    started = time.perf_counter()
    given = Path(folder).expanduser()
    subdirs = class_folders(given)  # errors name the path as the user gave it
    folder = given.resolve()
    subdirs = [folder / sub.name for sub in subdirs]
    vocabulary = schema.DEFAULT_SPECS[model_type].vocabulary
    skipped: Counter[str] = Counter()
    skipped_files: list[tuple[str, str]] = []
    skipped_folders: list[tuple[str, str]] = []
    classes: Counter[str] = Counter()

    def skip(path: Path, reason: str) -> None:
        skipped[reason] += 1
        skipped_files.append((_text(path.relative_to(folder)), reason))

    def skip_folder(path: Path, reason: str) -> None:
        skipped_folders.append((_text(path.relative_to(folder)), reason))

    for path in sorted(folder.iterdir()):
        if path.is_dir() and path.name.startswith("."):
            skip_folder(path, HIDDEN)
        elif not path.is_dir():  # files beside the class folders have no label
            skip(path, NOT_IN_CLASS_FOLDER)
    work = [(sub, path) for sub in subdirs for path in _files(folder, sub, follow_links, skip_folder, skip)]
    total = len(work)
    labels = {sub.name: rec.normalize_label(sub.name) for sub in subdirs}
    upsert, images, pending = UpsertResult(0, 0, 0), 0, []
    max_bytes = int(settings.image_max_mb * 1_000_000)
    with Store(settings.db_path, create=True) as store, ImageCache(settings.image_dir, max_bytes=max_bytes) as cache:
        swept = cache.sweep_stale_temps()
        progress("import", 0, total)
        for done, (sub, path) in enumerate(work, 1):
            label = labels[sub.name]
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
    warnings = _warnings(skipped, skipped_folders, labels, swept)
    if vocabulary is not None and skipped.get(UNKNOWN_LABEL):
        warnings.append(f"{model_type} classes must be one of {', '.join(vocabulary)}")
    return ImportSummary(
        model_type,
        folder,
        images + sum(skipped.values()),  # every file found: imported, or skipped with its reason
        upsert,
        images,
        dict(sorted(classes.items())),
        dict(sorted(skipped.items())),
        skipped_files,
        skipped_folders,
        time.perf_counter() - started,
        Path(settings.db_path),
        Path(settings.image_dir),
        warnings,
    )


def _warnings(
    skipped: Counter[str], skipped_folders: list[tuple[str, str]], labels: dict[str, str | None], swept: int
) -> list[str]:
    """One line per kind of thing left out or changed: skipped files, skipped folders, renamed labels."""

    def counted(counts: Counter[str]) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))

    warnings = []
    if skipped:
        warnings.append(f"skipped {sum(skipped.values())} file(s): {counted(skipped)}")
    if skipped_folders:
        listed = ", ".join(f"{path} ({reason})" for path, reason in skipped_folders[:10])
        more = f" and {len(skipped_folders) - 10} more (see --json)" if len(skipped_folders) > 10 else ""
        warnings.append(f"skipped {len(skipped_folders)} folder(s): {listed}{more}")
    renamed = {name: label for name, label in labels.items() if label is not None and label != name}
    if renamed:
        warnings.append(
            "folder names normalized to labels: " + ", ".join(f"{n!r} -> {lb!r}" for n, lb in renamed.items())
        )
    if swept:
        warnings.append(f"removed {swept} temporary file(s) that a killed run left in the image cache")
    return warnings


def _read_capped(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, its size checked on the file system first: never more than ``max_bytes`` read.

    Opened non-blocking so a pipe swapped in for a photo cannot hang the import; the size comes from
    the open file (fstat), so the file checked is the file read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageRejected(NOT_A_FILE, f"{path} is not a regular file")
        if info.st_size > max_bytes:
            raise ImageRejected(TOO_LARGE, f"{info.st_size} bytes is over the {max_bytes}-byte cap")
        data = fh.read(max_bytes + 1)  # the file may have grown since fstat
    if len(data) > max_bytes:
        raise ImageRejected(TOO_LARGE, f"more than the {max_bytes}-byte cap")
    return data


def _import_file(
    cache: ImageCache, folder: Path, path: Path, model_type: str, label: str, skip: Any
) -> dict[str, Any] | None:
    """One file -> a record dict, or None after counting why it was skipped."""
    try:
        data = _read_capped(path, cache.max_bytes if cache.max_bytes is not None else 1 << 62)
        mtime = path.stat().st_mtime
        cached = cache.put(data, url=path.as_uri())
    except ImageRejected as exc:
        skip(path, exc.reason)
        return None
    except OSError:  # permission denied, vanished, a broken link
        skip(path, UNREADABLE)
        return None
    url = path.as_uri()
    relative = _text(path.relative_to(folder.parent).as_posix())
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
