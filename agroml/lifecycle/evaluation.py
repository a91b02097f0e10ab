"""Honest evaluation: metrics on rows a model never trained on, and how fast and big the model is.

Why honest: a model measured on rows it trained on looks better than it is. Here the rows come from
the run's recorded test split (split.json), or from rows created after the newest row the run trained
on, and every figure comes from :func:`agroml.lifecycle.metrics.compute_metrics`.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agroml.core.config import Settings
from agroml.core.errors import ModelNotFoundError, NotEnoughDataError, OutputError, UsageError
from agroml.core.files import atomic_write, write_json
from agroml.core.progress import ProgressFn, no_progress
from agroml.data.store import Store
from agroml.images.cache import ImageCache
from agroml.lifecycle.locating import resolve_run
from agroml.lifecycle.metrics import compute_metrics
from agroml.lifecycle.plots import confusion_matrix_png
from agroml.lifecycle.predicting import load_saved_model, predict_files
from agroml.lifecycle.registry import Registry

if TYPE_CHECKING:
    import keras

#: Single-image calls timed for latency (after warm-up): enough for a p95, cheap on a CPU.
LATENCY_CALLS = 30
LATENCY_WARMUP = 3


@dataclass
class EvalResult:
    """What ``agroml evaluate`` shows: figures, where they were written, and every skipped row's reason."""

    run_id: str
    model_type: str
    model_path: str
    rows: str  # "test" (the run's recorded test split) or "newer" (rows created after its data)
    metrics: dict[str, Any]
    latency_ms: dict[str, Any]
    model_size_bytes: int
    out_dir: str
    confusion_png: str
    evaluated_ids: list[str]
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _split_ids(folder: Path) -> dict[str, list[str]]:
    path = folder / "split.json"
    try:
        split = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"{path} is missing or unreadable ({exc.__class__.__name__}): cannot tell which rows "
            "the model never trained on",
            fix="evaluate a run made by `agroml train`",
        ) from None
    return {name: [str(i) for i in split.get(name, [])] for name in ("train", "val", "test")}


def select_rows(
    settings: Settings, model_type: str, folder: Path, classes: list[str], newer: bool, skipped: dict[str, int]
) -> tuple[list[str], list[Path], np.ndarray]:
    """(row ids, image files, class indices) for the rows to evaluate, counting every row left out."""
    import pandas as pd

    split = _split_ids(folder)
    with Store(settings.db_path, create=False) as store:
        frame = store.read(
            model_type, columns=["source", "id", "label", "image_hash", "image_url", "created_at", "invalid_reason"]
        )
    keyed = frame.assign(key=frame["id"].astype(str))
    both = frame["source"].astype(str) + ":" + frame["id"].astype(str)
    if split["test"] and sum(1 for i in split["test"][:50] if ":" in i) == min(50, len(split["test"])):
        keyed = keyed.assign(key=both)  # the ids in split.json carry their source
    if newer:
        used = set(split["train"]) | set(split["val"]) | set(split["test"])
        seen = keyed[keyed["key"].isin(used)]
        if seen.empty:
            raise NotEnoughDataError(
                f"none of the rows of {folder} are in the store, so 'newer' has no reference",
                fix="evaluate its test split instead (drop --newer)",
            )
        cutoff = seen["created_at"].max()
        chosen = keyed[(keyed["created_at"] > cutoff) & ~keyed["key"].isin(used)]
    else:
        wanted = pd.Index(split["test"]).drop_duplicates()
        by_key = keyed.drop_duplicates("key").set_index("key")
        missing = int((~wanted.isin(by_key.index)).sum())
        if missing:
            skipped["row no longer in the store"] = missing
        chosen = by_key.loc[wanted[wanted.isin(by_key.index)]].reset_index()

    ids: list[str] = []
    files: list[Path] = []
    labels: list[int] = []
    index = {c: i for i, c in enumerate(classes)}
    cache = ImageCache(settings.image_dir)
    try:
        for row in chosen.itertuples(index=False):
            path, reason = measurable(cache, row, index, "label not in the model's classes")
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            ids.append(str(row.key))
            files.append(path)  # type: ignore[arg-type]
            labels.append(index[row.label])
    finally:
        cache.close()
    return ids, files, np.asarray(labels, dtype=np.int64)


def measurable(cache: Any, row: Any, index: dict[str, int], unknown_label: str) -> tuple[Path | None, str | None]:
    """(the row's cached image, None), or (None, why the row cannot be measured): shared by evaluate and the
    gate so both skip the same rows for the same reasons (``unknown_label`` says whose classes missed it)."""
    if row.invalid_reason is not None:
        return None, f"invalid row ({row.invalid_reason})"
    if row.label is None:
        return None, "no training label (no feedback or rejected)"
    if row.label not in index:
        return None, unknown_label
    path = _image_file(cache, row.image_hash, row.image_url)
    return (path, None) if path is not None else (None, "image not in the cache")


def _image_file(cache: Any, image_hash: str | None, image_url: str | None) -> Path | None:
    if image_hash:
        found = cache.find(image_hash)
        if found is not None:
            return found
    if image_url:
        found = cache.lookup(image_url)
        if found is not None:
            return found
        local = Path(image_url.removeprefix("file://"))
        if "://" not in image_url.removeprefix("file://") and local.is_file():
            return local
    return None


def measure_latency(model: keras.Model, images: np.ndarray, calls: int = LATENCY_CALLS) -> dict[str, Any]:
    """p50 / p95 milliseconds of single-image ``model.predict_on_batch(x[None])`` calls, after warm-up.

    Single-image calls, not a batch divided by its size: a farmer's phone or an API asks about one
    photo at a time, and batching would hide the fixed cost per call. ``predict_on_batch`` runs the
    compiled graph (traced during warm-up), as a server would; eager ``model(x)`` would mostly time
    Python dispatch.
    """
    if len(images) == 0:
        return {"p50": None, "p95": None, "calls": 0, "method": "single-image predict_on_batch calls"}
    for i in range(LATENCY_WARMUP):
        model.predict_on_batch(images[i % len(images)][None])
    times = []
    for i in range(calls):
        start = time.perf_counter()
        np.asarray(model.predict_on_batch(images[i % len(images)][None]))
        times.append((time.perf_counter() - start) * 1000)
    return {
        "p50": float(np.percentile(times, 50)),
        "p95": float(np.percentile(times, 95)),
        "calls": calls,
        "method": f"single-image model.predict_on_batch calls after {LATENCY_WARMUP} warm-up calls",
    }


def evaluate(
    settings: Settings,
    model_type: str,
    ref: str | None = None,
    *,
    newer: bool = False,
    batch_size: int = 32,
    out: Path | None = None,
    progress: ProgressFn = no_progress,
) -> EvalResult:
    """Evaluate a saved model (run id, ``production``, a path, or the newest succeeded run) on unseen rows."""

    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size} must be at least 1")
    with Registry(settings.models_dir, create=False) as registry:
        folder = resolve_run(registry, model_type, ref)  # a run of another type: exit 2, naming both
    saved = load_saved_model(folder)
    skipped: dict[str, int] = {}
    ids, files, y = select_rows(settings, model_type, folder, saved.classes, newer, skipped)
    if not ids:
        what = "rows newer than its data" if newer else "rows of its test split"
        left = ", ".join(f"{n} {r}" for r, n in skipped.items()) or "none found"
        raise NotEnoughDataError(
            f"no {what} to evaluate {saved.run_id} on ({left})",
            fix="pull or import newer rows (`agroml pull`)"
            if newer
            else "check the image cache and the store (`agroml stats`)",
        )
    probs, ok, sample, errors = predict_files(saved, files, batch_size=batch_size, progress=progress)
    for reason, count in errors.items():
        skipped[reason] = skipped.get(reason, 0) + count
    if not ok.any():
        raise NotEnoughDataError(
            f"none of the {len(files)} images of {saved.run_id} could be read ({', '.join(errors)})",
            fix="check the image cache folder (AGROML_IMAGE_DIR)",
        )
    ids = [i for i, good in zip(ids, ok, strict=True) if good]
    y = y[ok]
    metrics = compute_metrics(y, probs, saved.classes)
    latency = measure_latency(saved.model, sample)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(out) if out is not None else folder / f"eval_{stamp}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out_dir}: {exc.strerror}", fix="pass a writable --out folder") from None
    png = confusion_matrix_png(metrics["confusion_matrix"], saved.classes, out_dir / "confusion_matrix.png")
    warnings = [f"{n} row(s) left out: {r}" for r, n in skipped.items()]
    if metrics["n"] < 30:
        warnings.append(f"only {metrics['n']} rows evaluated: the figures are rough")
    result = EvalResult(
        run_id=saved.run_id,
        model_type=model_type,
        model_path=str(folder),
        rows="newer" if newer else "test",
        metrics=metrics,
        latency_ms=latency,
        model_size_bytes=saved.size_bytes,
        out_dir=str(out_dir),
        confusion_png=str(png),
        evaluated_ids=ids,
        skipped=skipped,
        warnings=warnings,
    )
    _write_outputs(out_dir, result, y, probs, saved.classes)
    return result


def _write_outputs(out_dir: Path, result: EvalResult, y: np.ndarray, probs: np.ndarray, classes: list[str]) -> None:
    """metrics.json and predictions.csv, each written whole through a temporary file and a rename."""
    write_json(out_dir / "metrics.json", result.to_dict())
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "label", "predicted", "confidence", "correct"])
    pred = probs.argmax(axis=1)
    for row_id, t, p, conf in zip(result.evaluated_ids, y, pred, probs.max(axis=1), strict=True):
        writer.writerow([row_id, classes[t], classes[p], f"{conf:.4f}", int(t == p)])
    atomic_write(out_dir / "predictions.csv", buf.getvalue().encode())
