"""The demo data set: a deterministic, AgroShield-like set of predictions, feedback and photos.

Why: every command must be tryable with no Supabase account, and tests and benchmarks need data
that looks like the real thing: imbalanced classes, seasonal peaks, Kenyan farms, a deployed model
that is sometimes wrong, and farmers who mostly do not answer. The photo always shows the TRUE
class (the farmer's answer when there is one), so corrections are real training signal.

Determinism: row ids are uuid5 of (seed, model type, index) and every random draw comes from a
generator seeded by (seed, model type, index), so the same seed gives identical rows and identical
JPEG bytes, and running `agroml demo` twice changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from agroml.core import schema
from agroml.core.config import Settings
from agroml.core.errors import UsageError
from agroml.core.progress import ProgressFn, no_progress
from agroml.data import records as rec
from agroml.data.store import Store, UpsertResult
from agroml.demo.leaves import DISEASE_CLASSES, PEST_CLASSES, draw_photo
from agroml.images.cache import ImageCache

_NAMESPACE = uuid.UUID("6f1f3d0e-6a8b-4c53-9a57-2f0c3e0d7a11")
MODEL_INDEX = {"pest": 1, "disease": 2, "storage": 3}
#: Two full years of data, fixed (not "the last two years") so the same seed always gives the same rows.
START = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 731
NAIROBI_OFFSET_H = 3

CLASSES: dict[str, tuple[str, ...]] = {
    "pest": PEST_CLASSES,
    "disease": DISEASE_CLASSES,
    "storage": schema.STORAGE_CONDITIONS,
}
#: Relative class frequency: real feedback is imbalanced (the largest ~2.5x the smallest).
CLASS_WEIGHTS: dict[str, tuple[float, ...]] = {
    "pest": (0.30, 0.20, 0.15, 0.12, 0.23),
    "disease": (0.27, 0.18, 0.15, 0.12, 0.28),
    "storage": (0.16, 0.30, 0.25, 0.17, 0.12),
}
SEASONS = ("transition", "long_rains", "dry_season", "short_rains")
_MONTH_SEASON = (0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3)  # Jan..Dec -> index into SEASONS
#: Seasonal weight per class, in SEASONS order (fall armyworm and the leaf diseases peak with the rains).
SEASON_WEIGHTS: dict[str, tuple[float, ...]] = {
    "fall_armyworm": (0.5, 3.0, 0.6, 2.0),
    "aphids": (2.0, 0.7, 2.5, 0.8),
    "stem_borer": (0.6, 2.0, 0.8, 1.8),
    "leaf_miner": (1.5, 0.8, 1.8, 0.9),
    "healthy": (1.0, 1.0, 1.0, 1.0),
    "common_rust": (0.5, 2.0, 1.5, 1.2),
    "gray_leaf_spot": (0.4, 2.5, 0.6, 2.0),
    "northern_leaf_blight": (0.5, 2.5, 1.2, 1.0),
    "maize_streak": (2.0, 0.8, 0.8, 1.5),
    "excellent": (0.8, 0.6, 2.0, 0.8),
    "good": (1.0, 1.0, 1.5, 1.0),
    "fair": (1.0, 1.2, 1.0, 1.1),
    "poor": (1.0, 1.8, 0.7, 1.3),
    "critical": (0.8, 2.2, 0.5, 1.4),
}
#: Crops per class (a plausible host for the pest / disease), with weights.
CROPS: dict[str, dict[str, float]] = {
    "fall_armyworm": {"maize": 0.8, "sorghum": 0.2},
    "stem_borer": {"maize": 0.7, "sorghum": 0.3},
    "aphids": {"kale": 0.35, "beans": 0.25, "maize": 0.2, "tomato": 0.1, "potato": 0.1},
    "leaf_miner": {"tomato": 0.5, "beans": 0.25, "potato": 0.25},
    "common_rust": {"maize": 0.85, "sorghum": 0.15},
    "gray_leaf_spot": {"maize": 1.0},
    "northern_leaf_blight": {"maize": 0.8, "sorghum": 0.2},
    "maize_streak": {"maize": 1.0},
    "healthy": {
        "maize": 0.4,
        "beans": 0.15,
        "tomato": 0.1,
        "potato": 0.1,
        "kale": 0.1,
        "sorghum": 0.1,
        "cassava": 0.05,
    },
}
STORED_CROPS = {"maize": 0.5, "beans": 0.25, "sorghum": 0.1, "potatoes": 0.15}
#: (county, town, latitude, longitude, weight): farms cluster in the maize belt and central highlands.
COUNTIES: tuple[tuple[str, str, float, float, float], ...] = (
    ("Nakuru", "Molo", -0.283, 36.067, 3),
    ("Kiambu", "Limuru", -1.031, 36.835, 2),
    ("Meru", "Timau", 0.047, 37.649, 2),
    ("Kakamega", "Malava", 0.282, 34.752, 2),
    ("Uasin Gishu", "Moiben", 0.514, 35.270, 3),
    ("Machakos", "Kathiani", -1.517, 37.267, 1),
    ("Kisumu", "Ahero", -0.092, 34.768, 1),
    ("Bungoma", "Kimilili", 0.564, 34.560, 2),
    ("Nyeri", "Othaya", -0.417, 36.951, 1),
    ("Trans Nzoia", "Kitale", 1.019, 35.002, 3),
    ("Embu", "Runyenjes", -0.531, 37.450, 1),
    ("Narok", "Ololulung'a", -1.083, 35.867, 1),
)
SEVERITIES = ("low", "moderate", "high", "critical")
GROWTH_STAGES = ("seedling", "vegetative", "flowering", "fruiting")
STORAGE_TYPES = ("gunny_bag", "hermetic_bag", "granary", "crib", "metal_silo", "open_floor")
#: Feedback mix: confirmed, corrected, rejected, none.
FEEDBACK_MIX = (0.35, 0.10, 0.05, 0.50)
N_FARMERS = 48
#: Most rows (and photos) per model type: about two hours of drawing on two cores and 3 GB of photos.
MAX_ROWS = 100_000
#: Rows planned, drawn and written per store transaction: memory stays flat whatever --n is.
WRITE_BATCH = 1_000


@dataclass
class ModelSummary:
    """What `demo` wrote for one model type."""

    model_type: str
    rows: int
    upsert: UpsertResult
    images: int
    classes: dict[str, int]
    feedback: dict[str, int]


@dataclass
class DemoSummary:
    """The result of :func:`generate`: per model type counts, where it went and how long it took."""

    seed: int
    models: dict[str, ModelSummary]
    seconds: float
    store_path: Path
    image_dir: Path
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "store": str(self.store_path),
            "image_dir": str(self.image_dir),
            "warnings": self.warnings,
            "models": {
                m: {
                    "rows": s.rows,
                    "inserted": s.upsert.inserted,
                    "updated": s.upsert.updated,
                    "unchanged": s.upsert.unchanged,
                    "images": s.images,
                    "classes": s.classes,
                    "feedback": s.feedback,
                }
                for m, s in self.models.items()
            },
        }


def _rng(seed: int, model_type: str, index: int, stream: int) -> np.random.Generator:
    """An independent generator per (seed, model, row, purpose): rows and pixels never shift each other."""
    return np.random.default_rng([seed, MODEL_INDEX[model_type], index, stream])


def _quota(weights: tuple[float, ...], block: int) -> list[int]:
    """Exact per-item counts in a block (largest remainder), each at least 1."""
    w = np.array(weights, float)
    raw = w / w.sum() * block
    counts = np.maximum(1, np.floor(raw).astype(int))
    for i in np.argsort(-(raw - np.floor(raw))):
        if counts.sum() >= block:
            break
        counts[i] += 1
    return [int(c) for c in counts]


def _blocked(
    items: tuple[str, ...],
    weights: tuple[float, ...],
    block: int,
    n: int,
    seed: int,
    model_type: str,
    stream: int,
    start: int = 0,
) -> list[str]:
    """Items ``start`` to ``n`` of a sequence in exact proportions per block of ``block`` rows, shuffled
    within each block by the seed.

    Why blocks: proportions hold even for small data sets (every class, every kind of feedback), and
    row i does not depend on ``n``, so ``--n 100`` gives the first 100 rows of ``--n 600`` (and a
    batch of rows can be planned without the ones before it).
    """
    base = [item for item, c in zip(items, _quota(weights, block), strict=True) for _ in range(c)]
    out: list[str] = []
    first = start // block
    for b in range(first, -(-n // block)):
        order = np.random.default_rng([seed, MODEL_INDEX[model_type], 0xB10C, stream, b]).permutation(len(base))
        out.extend(base[i] for i in order)
    return out[start - first * block : n - first * block]


def _day_weights(label: str) -> np.ndarray:
    days = [START + timedelta(days=d) for d in range(DAYS)]
    season = np.array([SEASON_WEIGHTS[label][_MONTH_SEASON[d.month - 1]] for d in days])
    growth = 1 + 0.6 * np.arange(DAYS) / DAYS  # adoption grows: more rows in the second year
    w = season * growth
    return w / w.sum()


def _pick(rng: np.random.Generator, options: dict[str, float]) -> str:
    keys = list(options)
    p = np.array([options[k] for k in keys])
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def plan_rows(model_type: str, n: int, seed: int, start: int = 0) -> list[dict[str, Any]]:
    """Demo rows ``start`` to ``n`` (record-field dicts, without image hashes) plus ``_intensity`` for the drawing."""
    classes = CLASSES[model_type]
    plan_rng = np.random.default_rng([seed, MODEL_INDEX[model_type], 0xC1A55])
    labels = _blocked(classes, CLASS_WEIGHTS[model_type], 50, n, seed, model_type, 1, start)
    kinds = (rec.CONFIRMED, rec.CORRECTED, rec.REJECTED, rec.NO_FEEDBACK)
    feedback = _blocked(kinds, FEEDBACK_MIX, 20, n, seed, model_type, 2, start)
    farmers = [str(uuid.uuid5(_NAMESPACE, f"farmer:{seed}:{i}")) for i in range(N_FARMERS)]
    farmer_p = plan_rng.dirichlet(np.ones(N_FARMERS) * 0.7)  # a few farmers send most photos
    county_p = np.array([c[4] for c in COUNTIES], float)
    day_p = {c: _day_weights(c) for c in classes}
    rows = []
    for i, (truth, fb) in enumerate(zip(labels, feedback, strict=True), start):
        rng = _rng(seed, model_type, i, 1)
        rows.append(_row(model_type, i, seed, truth, fb, rng, farmers, farmer_p, county_p, day_p[truth]))
    return rows


def _row(
    model_type: str,
    i: int,
    seed: int,
    truth: str,
    fb: str,
    rng: np.random.Generator,
    farmers: list[str],
    farmer_p: np.ndarray,
    county_p: np.ndarray,
    day_p: np.ndarray,
) -> dict[str, Any]:
    classes = CLASSES[model_type]
    others = [c for c in classes if c != truth]
    model_right = fb == rec.CONFIRMED or (fb == rec.NO_FEEDBACK and rng.random() < 0.8)
    predicted = truth if model_right else others[int(rng.integers(0, len(others)))]
    conf = rng.beta(6, 2) if model_right else rng.beta(3, 3)
    confidence = round(float(np.clip(0.3 + 0.69 * conf, 0.3, 0.99)), 4)
    day = int(rng.choice(DAYS, p=day_p))
    local_hour = rng.uniform(6.5, 18.5)
    created = START + timedelta(days=day, hours=local_hour - NAIROBI_OFFSET_H)
    county, town, lat, lon, _ = COUNTIES[int(rng.choice(len(COUNTIES), p=county_p / county_p.sum()))]
    has_gps = rng.random() < 0.9
    intensity = float(rng.uniform(0.6, 1.4))
    user_confirmed = {rec.CONFIRMED: True, rec.CORRECTED: False, rec.REJECTED: False}.get(fb)
    actual = truth if fb == rec.CORRECTED else None
    alt = [c for c in others if c != predicted][:2] + ([truth] if predicted != truth else [])
    rest = (1 - confidence) * np.sort(rng.dirichlet(np.ones(len(alt) + 1)))[::-1][: len(alt)]
    key = {"pest": "pest", "disease": "disease", "storage": "condition"}[model_type]
    extra: dict[str, Any] = {
        "alternative_predictions": [{key: a, "confidence": round(float(p), 4)} for a, p in zip(alt, rest, strict=True)],
        "image_metadata": {"width": 256, "height": 256, "format": "jpeg", "demo_intensity": round(intensity, 3)},
    }
    row: dict[str, Any] = {
        "id": str(uuid.uuid5(_NAMESPACE, f"{seed}:{model_type}:{i}")),
        "source": "demo",
        "model_type": model_type,
        "image_url": None,
        "predicted_label": predicted,
        "confidence": confidence,
        "user_confirmed": user_confirmed,
        "actual_label": actual,
        "location": f"{town}, {county} County",
        "latitude": round(lat + rng.normal(0, 0.08), 5) if has_gps else None,
        "longitude": round(lon + rng.normal(0, 0.08), 5) if has_gps else None,
        "farmer_id": farmers[int(rng.choice(len(farmers), p=farmer_p))],
        "created_at": created,
        "_intensity": intensity,
        "_truth": truth,
    }
    row["image_url"] = f"demo://{model_type}/{row['id']}.jpg"
    if model_type == "storage":
        row["crop"] = _pick(rng, STORED_CROPS)
        extra.update(
            storage_type=STORAGE_TYPES[int(rng.integers(0, len(STORAGE_TYPES)))],
            temperature=round(float(rng.normal(24, 4)), 1),
            humidity=round(float(rng.uniform(40, 90)), 1),
        )
        if fb == rec.CORRECTED:  # storage has no corrected-class column: the farmer can only say "wrong"
            row["actual_label"] = None
            row["feedback_text"] = f"Not {predicted}: the produce looks {truth}."
            extra["actual_outcome"] = f"looked {truth} on inspection"
    else:
        row["crop"] = _pick(rng, CROPS[truth])
        sev = SEVERITIES[min(3, int(intensity * 2.6 + rng.normal(0, 0.5)))] if predicted != "healthy" else None
        row["severity"] = sev
        if model_type == "disease":
            row["growth_stage"] = GROWTH_STAGES[int(rng.choice(4, p=[0.15, 0.45, 0.25, 0.15]))]
            extra["weather_conditions"] = {
                "temperature": round(float(rng.normal(22, 4)), 1),
                "humidity": round(float(rng.uniform(45, 95)), 1),
            }
            extra["contagion_risk"] = SEVERITIES[int(rng.integers(0, 3))] if predicted != "healthy" else "low"
    if fb == rec.REJECTED:
        row["feedback_text"] = "Wrong diagnosis."
    elif fb == rec.CORRECTED and model_type != "storage":
        row["feedback_text"] = f"It is {truth.replace('_', ' ')}, not {predicted.replace('_', ' ')}."
    elif fb == rec.CONFIRMED and rng.random() < 0.3:
        row["feedback_text"] = "Correct, thank you."
    row["extra"] = json.dumps(extra, sort_keys=True)
    return row


def _draw(args: tuple[str, int, int, str, float, str | None]) -> bytes:
    model_type, seed, i, truth, intensity, crop = args
    return draw_photo(model_type, truth, _rng(seed, model_type, i, 2), intensity, crop)


#: Below this many photos a process pool costs more (worker start-up) than it saves.
POOL_MIN_PHOTOS = 300


def _workers(photos: int, workers: int | None) -> int:
    if workers is not None:
        return max(1, workers)
    if photos < POOL_MIN_PHOTOS:
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker as soon as the process that started it is gone.

    Why: a pool worker waits on a queue whose writing end it holds itself, so when ``agroml demo`` is
    killed (kill -9, the OOM killer) nothing ever tells it to stop: each worker (~120 MB) and the
    resource tracker lived on as orphans. A worker whose parent died is re-parented, so its parent pid
    changes; a daemon thread notices within a fifth of a second and exits the worker, and with the last
    worker gone the resource tracker reads end-of-file and exits too. (Polling rather than Linux's
    PR_SET_PDEATHSIG: portable, and not tied to the parent *thread* that started the worker.)
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


@contextlib.contextmanager
def _drawer(workers: int) -> Iterator[Callable[[list[tuple[str, int, int, str, float, str | None]]], Iterator[bytes]]]:
    """map(_draw, jobs) in order, in this process or a process pool: each photo depends only on its
    (seed, model type, index), so the bytes are the same either way. "spawn" because forking a
    process that may hold TensorFlow's threads can deadlock. Processes, not threads: drawing is
    Python and numpy under the GIL (measured: 13.1 photos/s serial, 13.6 with two threads)."""
    if workers <= 1:
        yield lambda jobs: map(_draw, jobs)
        return
    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        yield lambda jobs: pool.map(_draw, jobs, chunksize=8)


def generate(
    settings: Settings,
    model_types: list[str],
    n: int = 600,
    seed: int = 0,
    progress: ProgressFn = no_progress,
    workers: int | None = None,
) -> DemoSummary:
    """Write ``n`` demo rows and photos per model type into the store and the image cache.

    Rows are planned, drawn and written :data:`WRITE_BATCH` at a time, so memory does not grow with
    ``n`` (at most :data:`MAX_ROWS`) and a killed run keeps the batches it finished.
    ``workers``: processes drawing photos (default: up to 4 when there are at least 300 photos, else 1).
    """
    if n < 1:
        raise UsageError(f"--n {n} must be at least 1")
    if n > MAX_ROWS:
        raise UsageError(
            f"--n {n} is more than the demo makes: at most {MAX_ROWS:,} rows per model type",
            fix=f"use --n {MAX_ROWS} or fewer; real data comes from `agroml pull` or `agroml import`",
        )
    for model_type in model_types:
        schema.check_model_type(model_type)
    started = time.perf_counter()
    models: dict[str, ModelSummary] = {}
    warnings: list[str] = []
    with (
        Store(settings.db_path, create=True) as store,
        ImageCache(settings.image_dir) as cache,
        _drawer(_workers(n * len(model_types), workers)) as draw_all,
    ):
        swept = cache.sweep_stale_temps()
        if swept:
            warnings.append(f"removed {swept} temporary file(s) that a killed run left in the image cache")
        salt = store.salt(settings.hash_salt)
        for model_type in model_types:
            task = f"demo {model_type}"
            progress(task, 0, n)
            upsert = UpsertResult(0, 0, 0)
            truths: Counter[str] = Counter()
            feedback: Counter[str] = Counter()
            for start in range(0, n, WRITE_BATCH):
                rows = plan_rows(model_type, min(n, start + WRITE_BATCH), seed, start)
                jobs = [
                    (model_type, seed, i, r["_truth"], r["_intensity"], r.get("crop"))
                    for i, r in enumerate(rows, start)
                ]
                for i, (row, data) in enumerate(zip(rows, draw_all(jobs), strict=True), start):
                    row["image_hash"] = cache.put(data, url=row["image_url"]).sha256
                    progress(task, i + 1, n)
                truths.update(row.pop("_truth") for row in rows)
                for row in rows:
                    row.pop("_intensity")
                    row["farmer_key"] = rec.farmer_key(row["farmer_id"], salt)
                frame = rec.make_records(rows)
                upsert += store.upsert(frame)
                feedback.update({k: int(v) for k, v in frame["feedback"].value_counts().items()})
            models[model_type] = ModelSummary(
                model_type,
                n,
                upsert,
                n,
                {c: truths.get(c, 0) for c in CLASSES[model_type]},
                dict(feedback),
            )
    return DemoSummary(
        seed, models, time.perf_counter() - started, Path(settings.db_path), Path(settings.image_dir), warnings
    )
