"""A persistent store of the frozen base's features, so a retrain computes only what it has not seen.

Why: a monthly retrain sees mostly the same images, and on the fast path the base's forward passes
(phase 1, "feature extraction") are most of the training time. The base's output for an image depends
only on the pixels, the network and its weights, the input size and the view, so that tuple is the key:

- image: the content hash (cached images are named by their sha256, so the file name is the hash);
- model: the extractor's name (backbone), the input size and a fingerprint of the extractor's actual
  weights (sha256 over every variable's name, shape, dtype and bytes). ImageNet weights of another Keras
  version, a user's weights file, another MobileNetV2 width: any difference in the weights is another
  fingerprint, so features are never reused across different weights;
- view: ``clean`` (the plain image), or ``aug<k>-seed<s>-<augmentation digest>`` for the k-th
  augmented view drawn with seed s and those augmentation settings (the digest covers the drawing
  scheme too). An augmented view is a fixed function of (image hash, k, seed) (views.py), so the view a
  retrain reads is the one a run with the store cleared would compute: both train on the same features.

Storage: one SQLite file, ``<AGROML_DATA_DIR>/features/features.db`` (WAL, busy timeout: two trainings
can read and fill it at once; each fill is one transaction, so a kill leaves whole entries only). Rows
hold float32 vectors with their length and a digest of their bytes: an entry whose size, dimension or
digest is wrong is deleted and computed again, never used. The file is a cache: deleting the folder
loses nothing but time, and a damaged file is replaced by an empty one (with a warning).
Size: ``AGROML_FEATURE_STORE_MB`` (0 turns the store off; ``agroml train --no-feature-store`` too); past
it, the least recently used entries are removed after each run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agroml.core.errors import StoreError
from agroml.core.sqlite import Connection, connect, transaction

if TYPE_CHECKING:
    import keras

FOLDER = "features"
FILE = "features.db"
SETTING = "AGROML_FEATURE_STORE_MB"
CLEAN_VIEW = "clean"
#: Entries read or written per SQL statement (SQLite's default limit is 32,766 parameters).
_CHUNK = 500
_DTYPE = "float32"
#: SQLite's result codes for a damaged file and a file that is not a database.
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    model TEXT NOT NULL,      -- extractor name, input size, weights fingerprint
    view TEXT NOT NULL,       -- clean | aug<k>-seed<s>-<augmentation digest>
    image TEXT NOT NULL,      -- sha256 of the image file
    dim INTEGER NOT NULL,
    dtype TEXT NOT NULL,
    digest TEXT NOT NULL,     -- blake2b of data: a damaged or partial entry is detected, not used
    data BLOB NOT NULL,
    used REAL NOT NULL,       -- last run that read or wrote it (least recently used goes first)
    PRIMARY KEY (model, view, image)
);
CREATE INDEX IF NOT EXISTS features_used ON features (used);
CREATE TABLE IF NOT EXISTS fingerprints (
    source TEXT PRIMARY KEY,  -- the extractor's structure, the weights file's identity (fingerprint_source)
    fingerprint TEXT NOT NULL
);
"""


def store_path(data_dir: Path) -> Path:
    return Path(data_dir) / FOLDER / FILE


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 of every weight's name, shape, dtype and bytes: equal only for the same network and weights."""
    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(np.asarray(variable))
        digest.update(f"{variable.path}|{value.shape}|{value.dtype}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def fingerprint_source(extractor: keras.Model, weights_file: str | None) -> str | None:
    """What the weights fingerprint of ``extractor`` is a function of, when its base was loaded from a file.

    Why: hashing the weights reads every variable (260 for MobileNetV2: 0.1 s of CPU, 0.3-0.5 s of wall
    time on a busy machine), on every training, for the same file. The values of the base are the file's
    (backbones.build_base loads every variable from it); the rest of the extractor (its preprocessing
    layers) is built by code, so their values are hashed here. So the fingerprint is a function of: the
    extractor's name and every variable's path, shape and dtype; the file's path, size, modification
    time and inode (any rewrite of the file changes them); and the values of the variables outside the
    nested model(s). None (hash the weights) for ImageNet weights, ``none`` or a file that is gone.
    """
    import keras

    if not weights_file or weights_file.strip().lower() in ("imagenet", "none"):
        return None
    try:
        path = Path(weights_file).resolve()
        stat = path.stat()
    except OSError:
        return None
    loaded = {id(v) for layer in extractor.layers if isinstance(layer, keras.Model) for v in layer.weights}
    digest = hashlib.sha256(f"{extractor.name}|{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}\n".encode())
    for variable in extractor.weights:
        digest.update(f"{variable.path}|{tuple(variable.shape)}|{variable.dtype}\n".encode())
        if id(variable) not in loaded:
            digest.update(np.ascontiguousarray(np.asarray(variable)).tobytes())
    return digest.hexdigest()


def augmented_view(k: int, seed: int, settings: dict[str, Any]) -> str:
    """The key of the k-th augmented view: its seed and what the augmentation does are part of it."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return f"aug{k}-seed{seed}-{digest}"


def image_key(path: str) -> str | None:
    """The content hash of a cached image (its file name), or None for a file not named by its sha256."""
    stem = Path(path).stem.lower()
    return stem if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem) else None


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass
class StoreCounts:
    """What one run did with the store, per image view: saved as config.json's "feature_store"."""

    path: str = ""
    model: str = ""
    hits: int = 0
    computed: int = 0
    #: entries found damaged (size, dimension or digest wrong): deleted and computed again
    damaged: int = 0
    #: entries removed to keep the store under its size
    evicted: int = 0
    size_mb: float = 0.0
    budget_mb: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "path": self.path,
            "model": self.model,
            "hits": self.hits,
            "computed": self.computed,
            "damaged": self.damaged,
            "evicted": self.evicted,
            "size_mb": round(self.size_mb, 3),
            "budget_mb": self.budget_mb,
        }

    def summary(self) -> str:
        total = self.hits + self.computed
        return f"{self.hits} of {total} image views reused from the feature store, {self.computed} computed"


class FeatureStore:
    """The store's file: look up, fill and trim features of one extractor (see the module docstring)."""

    def __init__(self, path: Path, budget_mb: float) -> None:
        self.path = Path(path)
        self.budget_mb = budget_mb
        self.counts = StoreCounts(path=str(self.path), budget_mb=budget_mb)
        self.model = ""
        self.run_time = time.time()
        self.con = self._open()

    def _open(self) -> Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the feature store folder {self.path.parent}: {exc.strerror}",
                fix=f"make {self.path.parent.parent} writable, set AGROML_DATA_DIR, or {SETTING}=0 to train without it",
            ) from None
        try:
            return self._connect()
        except StoreError as exc:
            cause = exc.__cause__
            code = getattr(cause, "sqlite_errorcode", None)
            if code is None or code & 0xFF not in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise
        # a cache: a damaged file is replaced by an empty one rather than stopping the training
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.counts.warnings.append(f"feature store {self.path} was damaged: started an empty one")
        return self._connect()

    def _connect(self) -> Connection:
        con = connect(
            self.path,
            setting="AGROML_DATA_DIR",
            damaged_fix=f"delete {self.path.parent} (a cache: nothing is lost but time)",
        )
        try:
            con.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            con.close()
            raise con.storage_error(exc) from exc
        return con

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def bind(self, extractor: keras.Model, image_size: int, weights_file: str | None = None) -> None:
        """Use the features of this extractor (its name, input size and weights fingerprint) from now on.

        ``weights_file``: the file its base was loaded from (TrainConfig.weights); the fingerprint is then
        taken once per version of that file and read from the store after (see fingerprint_source).
        """
        source = fingerprint_source(extractor, weights_file)
        row = (
            self.con.execute("SELECT fingerprint FROM fingerprints WHERE source = ?", (source,)).fetchone()
            if source
            else None
        )
        fingerprint = row[0] if row else weights_fingerprint(extractor)
        if source and not row:
            with transaction(self.con):
                self.con.execute("INSERT OR REPLACE INTO fingerprints VALUES (?, ?)", (source, fingerprint))
        self.model = f"{extractor.name}-{image_size}px-{fingerprint[:24]}"
        self.counts.model = self.model

    # --- entries --------------------------------------------------------------------------------------
    def get(self, view: str, images: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        """The valid stored features of ``images`` in ``view``; damaged entries are deleted and counted."""
        found: dict[str, np.ndarray] = {}
        damaged: list[str] = []
        unique = sorted(set(images))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self.con.execute(
                "SELECT image, dim, dtype, digest, data FROM features"
                f" WHERE model = ? AND view = ? AND image IN ({marks})",
                (self.model, view, *chunk),
            ).fetchall()
            for image, row_dim, dtype, digest, data in rows:
                data = bytes(data)
                ok = row_dim == dim and dtype == _DTYPE and len(data) == dim * 4 and _digest(data) == digest
                if ok:
                    vector = np.frombuffer(data, dtype=_DTYPE)
                    ok = bool(np.isfinite(vector).all())
                if ok:
                    found[image] = vector
                else:
                    damaged.append(image)
        if damaged:
            with transaction(self.con):
                self.con.executemany(
                    "DELETE FROM features WHERE model = ? AND view = ? AND image = ?",
                    [(self.model, view, image) for image in damaged],
                )
            self.counts.damaged += len(damaged)
            self.counts.warnings.append(
                f"feature store: {len(damaged)} damaged entr{'y' if len(damaged) == 1 else 'ies'} "
                f"({view} view) deleted and computed again"
            )
        self._touch(view, list(found))
        return found

    def put(self, view: str, features: dict[str, np.ndarray]) -> None:
        """Store ``features`` ({image hash: vector}) in one transaction: all of them or none after a kill."""
        rows = []
        for image, vector in features.items():
            if not np.isfinite(vector).all():  # a base that gives NaN for an image: never worth keeping
                continue
            data = np.ascontiguousarray(vector, dtype=_DTYPE).tobytes()
            rows.append((self.model, view, image, int(vector.shape[-1]), _DTYPE, _digest(data), data, self.run_time))
        for start in range(0, len(rows), _CHUNK):
            with transaction(self.con):
                self.con.executemany(
                    "INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows[start : start + _CHUNK]
                )

    def _touch(self, view: str, images: list[str]) -> None:
        for start in range(0, len(images), _CHUNK):
            chunk = images[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            with transaction(self.con):
                self.con.execute(
                    f"UPDATE features SET used = ? WHERE model = ? AND view = ? AND image IN ({marks})",
                    (self.run_time, self.model, view, *chunk),
                )

    def size_bytes(self) -> int:
        return int(self.con.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM features").fetchone()[0])

    def trim(self) -> int:
        """Remove the least recently used entries until the vectors fit the budget; returns how many went.

        Entries of this run go last: a store smaller than one run's features keeps as many as fit.
        """
        budget = self.budget_mb * 2**20
        removed = 0
        if self.size_bytes() > budget:
            with transaction(self.con):
                kept = 0
                doomed = []
                for rowid, size in self.con.execute(
                    "SELECT rowid, LENGTH(data) FROM features ORDER BY used DESC, rowid DESC"
                ).fetchall():
                    kept += size
                    if kept > budget:
                        doomed.append((rowid,))
                self.con.executemany("DELETE FROM features WHERE rowid = ?", doomed)
                removed = len(doomed)
        self.counts.evicted += removed
        self.counts.size_mb = self.size_bytes() / 2**20
        if removed and self.counts.hits + self.counts.computed > 0:
            mine = self.con.execute("SELECT COUNT(*) FROM features WHERE used = ?", (self.run_time,)).fetchone()[0]
            if mine < self.counts.hits + self.counts.computed:
                self.counts.warnings.append(
                    f"feature store: this run's features ({self.counts.hits + self.counts.computed} image views) "
                    f"do not fit {SETTING}={self.budget_mb:g}; the next run computes some again"
                )
        return removed

    # --- the one call the fast path makes -------------------------------------------------------------
    def views(
        self, views: Sequence[str], paths: Sequence[str], dim: int, compute: Callable[[list[str]], np.ndarray]
    ) -> np.ndarray:
        """Every view of ``paths`` (len(views), n, dim): stored ones read, the rest computed and stored.

        ``compute`` gets the paths that miss any of the views, in their order, and returns all the views
        of them (len(views), m, dim): one pass over the new images decodes each once and runs the base
        once per batch for all views. With an empty store it is called once with every path: the same
        call, the same result as without a store.
        """
        keys = [image_key(p) for p in paths]
        known = [k for k in keys if k is not None]
        found = [self.get(view, known, dim) for view in views]
        missing = [i for i, k in enumerate(keys) if k is None or any(k not in f for f in found)]
        fresh = compute([paths[i] for i in missing]) if missing else np.zeros((len(views), 0, dim), dtype=_DTYPE)
        out = np.empty((len(views), len(paths), dim), dtype=_DTYPE)
        missed = set(missing)
        hit = [i for i in range(len(paths)) if i not in missed]
        for v, (view, stored) in enumerate(zip(views, found, strict=True)):
            if hit:
                out[v, hit] = np.stack([stored[keys[i]] for i in hit])  # type: ignore[index]
            out[v, missing] = fresh[v]
            self.put(view, {key: fresh[v, j] for j, i in enumerate(missing) if (key := keys[i]) is not None})
        self.counts.hits += len(views) * len(hit)
        self.counts.computed += len(views) * len(missing)
        return out

    def features(
        self, view: str, paths: Sequence[str], dim: int, compute: Callable[[list[str]], np.ndarray]
    ) -> np.ndarray:
        """One view of ``paths`` (n, dim); ``compute`` returns that view (m, dim) of the paths that missed."""
        return self.views([view], paths, dim, lambda missed: compute(missed)[None])[0]


def open_store(data_dir: Path, budget_mb: float, fast_path: bool) -> FeatureStore | None:
    """The store under ``data_dir``, or None when it is off (budget 0) or unused (not the fast path)."""
    return FeatureStore(store_path(data_dir), budget_mb) if budget_mb > 0 and fast_path else None


def off_record(fast_path: bool) -> dict[str, Any]:
    """config.json's "feature_store" for a run that did not use it, with the reason."""
    reason = (
        "the base trains (--weights none, or the slow path): nothing to store"
        if not fast_path
        else f"{SETTING}=0 or --no-feature-store"
    )
    return {"enabled": False, "reason": reason}


def finish(store: FeatureStore | None, fast_path: bool) -> tuple[dict[str, Any], list[str]]:
    """Trim the store to its budget and close it: (config.json's "feature_store", warnings for the run)."""
    if store is None:
        return off_record(fast_path), []
    try:
        store.trim()
    finally:
        store.close()
    return store.counts.to_dict(), store.counts.warnings
