"""Training data: trainable rows of one model type, their cached images, a grouped stratified split,
and a tf.data pipeline that decodes files lazily.

Why each piece:
- a seeded, stratified train/val/test split keeps identical photos (same content hash) in one split,
  so a duplicate upload cannot leak from train into test, and the figures are measured on unseen rows;
- files are decoded in parallel, resized and kept as uint8 batch by batch, so memory does not grow
  with the data set;
- nothing is silent: every row left out (image not cached, corrupt, class too small) is counted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agroml.core.config import Settings
from agroml.core.errors import NotEnoughDataError, UsageError
from agroml.core.progress import ProgressFn, no_progress
from agroml.data.store import Store
from agroml.images.cache import ImageCache
from agroml.images.pixels import check_image, decode_resize

if TYPE_CHECKING:
    import tensorflow as tf

SPLITS: tuple[str, ...] = ("train", "val", "test")
# reasons an image is left out, counted in TrainingData.skipped (with pixels.CORRUPT, pixels.UNSUPPORTED)
NOT_CACHED = "image_not_cached"


@dataclass(frozen=True)
class Example:
    """One trainable row: its id, class name, content hash and cached file."""

    row_id: str
    label: str
    image_hash: str
    path: Path


@dataclass
class TrainingData:
    """The examples of one model type, split, with everything that was left out counted."""

    model_type: str
    classes: list[str]
    splits: dict[str, list[Example]]
    skipped: dict[str, int] = field(default_factory=dict)
    dropped_classes: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def arrays(self, split: str) -> tuple[list[str], np.ndarray]:
        """(file paths, integer labels in class order) of one split."""
        index = {c: i for i, c in enumerate(self.classes)}
        rows = self.splits[split]
        return [str(e.path) for e in rows], np.asarray([index[e.label] for e in rows], dtype="int32")

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class: n}} (every class listed, zeros included)."""
        return {s: {c: sum(1 for e in self.splits[s] if e.label == c) for c in self.classes} for s in SPLITS}

    def class_weights(self) -> dict[int, float]:
        """Balanced weights n / (k * n_c) from the training split: rare classes count as much as common ones."""
        counts = Counter(e.label for e in self.splits["train"])
        total, k = sum(counts.values()), len(self.classes)
        return {i: (total / (k * counts[c]) if counts[c] else 0.0) for i, c in enumerate(self.classes)}

    def fingerprint(self) -> str:
        """sha256 of the sorted (row id, label, image hash) list: same data, same fingerprint."""
        rows = sorted((e.row_id, e.label, e.image_hash) for s in SPLITS for e in self.splits[s])
        return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()

    def split_ids(self) -> dict[str, list[str]]:
        return {s: sorted(e.row_id for e in self.splits[s]) for s in SPLITS}


# --- rows and images ------------------------------------------------------------------------------
def read_labelled_rows(settings: Settings, model_type: str) -> list[tuple[str, str, str | None, str | None]]:
    """(row id, label, image hash, image url) of every valid, labelled row of ``model_type``."""

    with Store(settings.db_path, create=False) as store:
        frame = store.read(model_type, valid_only=True, columns=["id", "label", "image_hash", "image_url"])
    frame = frame[frame["label"].notna()]
    return list(frame[["id", "label", "image_hash", "image_url"]].itertuples(index=False, name=None))


def resolve_images(
    settings: Settings, rows: Sequence[tuple[str, str, str | None, str | None]], progress: ProgressFn = no_progress
) -> tuple[list[Example], Counter]:
    """Examples whose image is cached and decodes; the rest counted by reason."""
    skipped: Counter = Counter()
    found: list[tuple[str, str, Path]] = []
    with ImageCache(settings.image_dir) as cache:
        for row_id, label, image_hash, url in rows:
            path = cache.find(image_hash) if image_hash else None
            if path is None and url:
                path = cache.lookup(url)
            if path is None:
                skipped[NOT_CACHED] += 1
            else:
                found.append((str(row_id), str(label), path))
    examples: list[Example] = []
    with ThreadPoolExecutor(max_workers=8) as pool:  # PIL releases the GIL while decoding
        reasons = pool.map(check_image, [f[2] for f in found])
        for i, ((row_id, label, path), reason) in enumerate(zip(found, reasons, strict=True)):
            if reason:
                skipped[reason] += 1
            else:
                examples.append(Example(row_id, label, path.stem, path))
            if i % 50 == 0 or i == len(found) - 1:
                progress("checking images", i + 1, len(found))
    return examples, skipped


# --- class minimums and the split -----------------------------------------------------------------
def apply_minimums(
    examples: list[Example],
    model_type: str,
    min_per_class: int,
    min_total: int,
    strict: bool,
    skipped: Counter | None = None,
) -> tuple[list[Example], dict[str, int], list[str]]:
    """Drop classes under ``min_per_class`` (or fail with --strict); fail under ``min_total`` or < 2 classes."""
    counts = Counter(e.label for e in examples)
    short = {c: n for c, n in sorted(counts.items()) if n < min_per_class}
    listed = ", ".join(f"{c} ({n})" for c, n in short.items())
    if short and strict:
        raise NotEnoughDataError(
            f"{model_type}: classes under the minimum of {min_per_class} images: {listed}",
            fix="add images, lower --min-per-class, or drop --strict to leave them out",
        )
    warnings = (
        [f"left out {len(short)} {model_type} class(es) under the minimum of {min_per_class} images: {listed}"]
        if short
        else []
    )
    kept = [e for e in examples if e.label not in short]
    kept_classes = {e.label for e in kept}
    if len(kept) < min_total or len(kept_classes) < 2:
        why = (
            (
                f"only {len(kept)} trainable {model_type} images with a cached, readable image "
                f"(minimum {min_total}, AGROML_MIN_TOTAL)"
            )
            if len(kept) < min_total
            else f"only {len(kept_classes)} {model_type} class(es) with at least {min_per_class} images (need 2)"
        )
        if short:
            why += f"; classes under the minimum of {min_per_class}: {listed}"
        if skipped:
            why += "; skipped: " + ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(skipped.items()))
        raise NotEnoughDataError(
            why, fix="collect more feedback (agroml pull) or lower --min-per-class / AGROML_MIN_TOTAL"
        )
    return kept, short, warnings


def split_examples(
    examples: list[Example], seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> dict[str, list[Example]]:
    """Stratified train/val/test split, fixed by ``seed``, identical images (same hash) kept together.

    Groups of identical images are assigned as a unit, class by class (a group's class is its most
    common label), so every class gets its share of val and test as long as it has 3+ groups.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise UsageError(f"split fractions {fractions} must be non-negative and sum to 1")
    groups: dict[str, list[Example]] = defaultdict(list)
    for e in sorted(examples, key=lambda e: e.row_id):
        groups[e.image_hash].append(e)
    by_class: dict[str, list[str]] = defaultdict(list)
    for key, members in sorted(groups.items()):
        label = Counter(m.label for m in members).most_common(1)[0][0]
        by_class[label].append(key)
    rng = np.random.default_rng(seed)
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for label in sorted(by_class):
        keys = list(by_class[label])
        rng.shuffle(keys)
        n = len(keys)
        n_val = max(1, round(fractions[1] * n)) if n >= 3 and fractions[1] > 0 else 0
        n_test = max(1, round(fractions[2] * n)) if n >= 3 and fractions[2] > 0 else 0
        parts = {"val": keys[:n_val], "test": keys[n_val : n_val + n_test], "train": keys[n_val + n_test :]}
        for split, part in parts.items():
            out[split].extend(m for k in part for m in groups[k])
    return out


def load_training_data(
    settings: Settings,
    model_type: str,
    *,
    min_per_class: int | None = None,
    strict: bool = False,
    seed: int = 0,
    progress: ProgressFn = no_progress,
) -> TrainingData:
    """Everything ``train`` needs to know about the data of ``model_type``, split and counted."""
    rows = read_labelled_rows(settings, model_type)
    if not rows:
        raise NotEnoughDataError(
            f"no labelled {model_type} rows in {settings.db_path}",
            fix="run `agroml demo` or `agroml pull`; only confirmed or corrected rows train",
        )
    examples, skipped = resolve_images(settings, rows, progress)
    min_per_class = settings.min_per_class if min_per_class is None else min_per_class
    kept, dropped, warnings = apply_minimums(examples, model_type, min_per_class, settings.min_total, strict, skipped)
    for reason, n in sorted(skipped.items()):
        warnings.append(f"skipped {n} {model_type} row(s): {reason.replace('_', ' ')}")
    classes = sorted({e.label for e in kept})
    return TrainingData(model_type, classes, split_examples(kept, seed), dict(skipped), dropped, warnings)


# --- tf.data --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CachePlan:
    """Where training keeps its decoded images after the first epoch (memory, a folder on disk, or
    nowhere), and why.

    Why a budget: from scratch a run makes tens of passes over the same files, and decoding a PNG /
    JPEG again each time is most of an epoch's work on a small model; kept decoded and resized, the
    images cost ``size x size x 3`` bytes each. A shuffled split counts twice in memory: tf.data's
    shuffle buffer holds up to one more copy of a whole epoch while it draws from the cache. Over the
    budget, tf.data's file cache on disk (``disk_path``, under the data folder, keyed by the images and
    the size, removed with the run) still spares the decoding, with a bounded shuffle buffer.
    """

    used: bool  # in memory
    needed_mb: float
    budget_mb: float
    reason: str
    disk_path: str | None = None  # the run's folder of tf.data cache files, when on disk

    def to_dict(self) -> dict[str, Any]:
        return {
            "used": self.used,
            "needed_mb": self.needed_mb,
            "budget_mb": self.budget_mb,
            "disk_path": self.disk_path,
            "reason": self.reason,
        }


#: Images tf.data's shuffle buffer holds when the cache is on disk (224 px: about 150 MB).
DISK_SHUFFLE_IMAGES = 1024
#: Free space kept on the disk besides the cache files (MB).
DISK_MARGIN_MB = 512


def plan_cache(
    n_shuffled: int, n_in_order: int, image_size: int, budget_mb: float, disk_dir: Path | None = None
) -> CachePlan:
    """In memory when ``(2 x n_shuffled + n_in_order) x size x size x 3`` bytes fit ``budget_mb`` (MB);
    else in ``disk_dir`` when given and its disk has room for one copy plus :data:`DISK_MARGIN_MB`;
    else decoded every epoch."""
    per_image = image_size * image_size * 3 / 2**20
    needed = round((2 * n_shuffled + n_in_order) * per_image, 1)
    why = (
        "AGROML_TRAIN_CACHE_MB is 0"
        if budget_mb <= 0
        else f"decoded images need {needed:g} MB, over AGROML_TRAIN_CACHE_MB={budget_mb:g}"
    )
    if budget_mb > 0 and needed <= budget_mb:
        return CachePlan(True, needed, budget_mb, f"decoded images kept in memory: {needed:g} of {budget_mb:g} MB")
    if disk_dir is not None:
        on_disk = round((n_shuffled + n_in_order) * per_image, 1)
        free = _free_mb(disk_dir)
        if free >= on_disk + DISK_MARGIN_MB:
            return CachePlan(
                False,
                needed,
                budget_mb,
                f"{why}: decoded images cached on disk ({on_disk:g} MB in {disk_dir}, removed after the run)",
                str(disk_dir),
            )
        why += f", and {free:.0f} MB free on disk is under the {on_disk + DISK_MARGIN_MB:.0f} MB a disk cache needs"
    return CachePlan(False, needed, budget_mb, f"{why}: decoded every epoch (raise it to cache them)")


def _free_mb(folder: Path) -> float:
    """Free MB on the disk of ``folder`` (or of its nearest existing parent)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free / 2**20
    return 0.0


def make_dataset(
    paths: Sequence[str],
    labels: Sequence[int] | np.ndarray | None,
    image_size: int,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    repeat: bool = False,
    cache: bool | str = False,
) -> tf.data.Dataset:
    """A batched, prefetched tf.data.Dataset of uint8 images (and labels, when given) read from files.

    Decoding is parallel and lazy: at most a few batches are decoded at any time. Without
    ``shuffle`` the order is the order of ``paths`` (evaluation relies on it). Augmentation is not
    done here but in the model (or the fast path's traced feature call): Keras' random layers mapped
    over a tf.data pipeline are not guaranteed to draw a new transform per batch.

    With ``cache`` the decoded, resized uint8 images are kept in memory after the first full pass
    (see :class:`CachePlan` for the size) and shuffled after the cache, so each epoch still draws a
    new order: the first pass decodes in path order, later ones only shuffle and batch.

    With ``cache`` a text, the file prefix of tf.data's cache on disk (:class:`CachePlan`): the same,
    but the shuffle buffer holds :data:`DISK_SHUFFLE_IMAGES`, so the paths are put in one seeded
    random order first (a split lists its images class by class, and a small buffer over that order
    would give batches of one class).
    """
    import tensorflow as tf

    paths = [str(p) for p in paths]
    if labels is None:
        ds = tf.data.Dataset.from_tensor_slices(paths)
        ds = ds.map(lambda p: decode_resize(p, image_size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, dtype="int32")))
        if cache:
            buffer = len(paths)
            if isinstance(cache, str) and shuffle:
                order = np.random.default_rng(seed).permutation(len(paths))
                paths, labels = [paths[i] for i in order], np.asarray(labels)[order]
                buffer = min(buffer, DISK_SHUFFLE_IMAGES)
                ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, dtype="int32")))
            ds = ds.map(
                lambda p, y: (decode_resize(p, image_size), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
            )
            ds = ds.cache(cache) if isinstance(cache, str) else ds.cache()
            if shuffle:
                ds = ds.shuffle(max(1, buffer), seed=seed, reshuffle_each_iteration=True)
            if repeat:
                ds = ds.repeat()
            return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
        if shuffle:
            ds = ds.shuffle(max(1, len(paths)), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(
            lambda p, y: (decode_resize(p, image_size), y),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=not shuffle,
        )
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
