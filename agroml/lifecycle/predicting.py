"""Predictions from a saved run: load its model and its own label map, read images, rank classes.

Why each run's own labels.json: the class order is fixed when a model is trained. A class added to
the data later would shift a shared map and silently rename every output of older models; reading
the run's own file makes that impossible.
Images are resized here to the model's input size and passed as raw RGB uint8: every other step of
preprocessing is inside the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agroml.core.config import Settings
from agroml.core.errors import ImageError, ModelNotFoundError, UsageError
from agroml.core.progress import ProgressFn, no_progress
from agroml.images.cache import ImageCache
from agroml.images.fetch import fetch_images
from agroml.images.pixels import load_image
from agroml.lifecycle.locating import resolve_run
from agroml.lifecycle.registry import Registry

if TYPE_CHECKING:
    import keras

#: A prediction's error when the model's output holds NaN or infinity (its training diverged).
NON_FINITE = "the model produced non-finite probabilities: retrain it"


@dataclass
class SavedModel:
    """A loaded run folder: the Keras model, its classes in output order, and its input size."""

    folder: Path
    run_id: str
    classes: list[str]
    image_size: tuple[int, int]
    config: dict[str, Any]
    model: keras.Model
    size_bytes: int


def read_labels(folder: Path) -> list[str]:
    """The class order of a run: labels.json as a list, or {"classes": [...]}."""
    path = Path(folder) / "labels.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"{path} is missing or unreadable ({exc.__class__.__name__})",
            fix="use a run folder written by `agroml train` (see `agroml runs`)",
        ) from None
    classes = data.get("classes") if isinstance(data, dict) else data
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ModelNotFoundError(
            f"{path} holds no list of class names", fix="use a run folder written by `agroml train`"
        )
    return classes


def _input_size(model: keras.Model, config: dict[str, Any]) -> tuple[int, int]:
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else None
    if shape is not None and len(shape) == 4 and shape[1] and shape[2]:
        return int(shape[1]), int(shape[2])
    size = config.get("image_size")
    if isinstance(size, int):
        return size, size
    if isinstance(size, list | tuple) and len(size) == 2:
        return int(size[0]), int(size[1])
    raise ModelNotFoundError(
        "the model has no fixed input size and its config.json no image_size",
        fix="use a run folder written by `agroml train`",
    )


def load_saved_model(folder: Path) -> SavedModel:
    """Load ``folder/model.keras`` with its labels; a class count that disagrees with the model is an error."""
    import keras

    folder = Path(folder)
    model_file = folder / "model.keras"
    if not model_file.is_file():
        raise ModelNotFoundError(f"no model.keras in {folder}", fix="list runs with `agroml runs`")
    classes = read_labels(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    try:
        model = keras.saving.load_model(model_file, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged or foreign file
        raise ModelNotFoundError(
            f"{model_file} cannot be loaded: {exc.__class__.__name__}: {str(exc)[:200]}",
            fix="retrain, or evaluate another run (`agroml runs`)",
        ) from None
    outputs = model.outputs[0].shape[-1]
    if outputs != len(classes):
        raise ModelNotFoundError(
            f"{model_file} has {outputs} outputs but labels.json names {len(classes)} classes",
            fix="the run folder is inconsistent: retrain or pick another run",
        )
    run_id = str(config.get("run_id") or folder.name)
    try:
        marker = json.loads((folder / "PROMOTED.json").read_text())
        run_id = str(marker.get("run_id") or run_id)
    except (OSError, ValueError):
        pass
    return SavedModel(
        folder=folder,
        run_id=run_id,
        classes=classes,
        image_size=_input_size(model, config),
        config=config,
        model=model,
        size_bytes=model_file.stat().st_size,
    )


def predict_files(
    saved: SavedModel, files: list[Path], batch_size: int = 32, progress: ProgressFn = no_progress
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """(probabilities of the readable images, readable mask, a few decoded images, {error: count}).

    Images are decoded a batch at a time, so memory stays at one batch whatever the number of files.
    """
    probs: list[np.ndarray] = []
    ok = np.zeros(len(files), dtype=bool)
    sample: list[np.ndarray] = []
    errors: dict[str, int] = {}
    for start in range(0, len(files), batch_size):
        batch, where = [], []
        for i, path in enumerate(files[start : start + batch_size], start=start):
            try:
                batch.append(load_image(path, saved.image_size))
                where.append(i)
            except ImageError:
                errors["unreadable image"] = errors.get("unreadable image", 0) + 1
        if batch:
            x = np.stack(batch)
            probs.append(np.asarray(saved.model.predict_on_batch(x), dtype=np.float64))
            ok[where] = True
            if len(sample) < 8:
                sample.extend(batch[: 8 - len(sample)])
        progress("images", min(start + batch_size, len(files)), len(files))
    k = len(saved.classes)
    stacked = np.concatenate(probs) if probs else np.zeros((0, k))
    return stacked, ok, np.stack(sample) if sample else np.zeros((0, *saved.image_size, 3), np.uint8), errors


@dataclass
class Prediction:
    """One image's answer: the top classes with probabilities, or why it could not be read."""

    image: str
    ok: bool
    top: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass
class PredictResult:
    run_id: str
    model_path: str
    classes: list[str]
    predictions: list[Prediction]
    failed: int
    warnings: list[str] = field(default_factory=list)
    #: Warnings that only count what ``predictions`` already says image by image (a renderer that shows
    #: every failed image on its own line leaves these out, so nothing is said twice).
    counts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model_path": self.model_path,
            "classes": self.classes,
            "failed": self.failed,
            "warnings": self.warnings,
            "predictions": [p.__dict__ for p in self.predictions],
        }


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _fetch_urls(settings: Settings, urls: list[str]) -> tuple[dict[str, Path], dict[str, str]]:
    """({url: cached file}, {url: error}) through the image cache, with agroml.images.fetch's host allow-list.

    Why through the cache: a photo asked about twice is downloaded once, and the bytes are verified
    (size cap, full decode) before the model sees them. Only SUPABASE_URL's host and
    AGROML_IMAGE_HOSTS are fetched from, as for `agroml pull`.
    """

    with ImageCache(settings.image_dir, max_bytes=int(settings.image_max_mb * 1_000_000)) as cache:
        try:
            summary = fetch_images(urls, cache, settings)
        except ImageError as exc:  # e.g. another process holds the cache's fill lock
            return {}, {u: f"could not fetch: {exc}" for u in urls}
    files = {u: Path(p) for u, p in summary.paths.items()}
    errors = {
        u: f"could not fetch: {summary.details.get(u) or summary.failures.get(u) or 'unknown reason'}"
        for u in urls
        if u not in files
    }
    return files, errors


def predict(
    settings: Settings,
    model_type: str,
    images: list[str],
    ref: str | None = None,
    top: int = 3,
    batch_size: int = 32,
    progress: ProgressFn = no_progress,
    saved: SavedModel | None = None,
) -> PredictResult:
    """Top ``top`` classes for each image (files, or URLs through the cache); unreadable ones are reported.

    ``saved``: the model of ``ref`` already loaded (a server keeps it between requests); loaded here when
    it is None or another folder's.
    """

    if not images:
        raise UsageError("no images given", fix="pass one or more image files or URLs")
    if top < 1:
        raise UsageError(f"--top {top} must be at least 1")
    with Registry(settings.models_dir, create=False) as registry:
        folder = resolve_run(registry, model_type, ref)  # a run of another type: exit 2, naming both
    if saved is None or Path(saved.folder).resolve() != Path(folder).resolve():
        saved = load_saved_model(folder)
    urls = [i for i in images if _is_url(i)]
    fetched, fetch_errors = _fetch_urls(settings, urls) if urls else ({}, {})
    files = [fetched.get(i) if _is_url(i) else Path(i) for i in images]
    readable = [f for f in files if f is not None]
    probs, ok, _, _ = predict_files(saved, readable, batch_size=batch_size, progress=progress)
    k = min(top, len(saved.classes))
    predictions: list[Prediction] = []
    row = 0
    ok_iter = iter(ok)
    for image, path in zip(images, files, strict=True):
        if path is None:
            predictions.append(Prediction(image, False, error=fetch_errors.get(image, "could not fetch the image")))
            continue
        if not next(ok_iter):
            predictions.append(Prediction(image, False, error=_why_unreadable(path, saved.image_size)))
            continue
        p = probs[row]
        row += 1
        if not np.isfinite(p).all():  # a diverged model: a NaN would sort first and read as "ok"
            predictions.append(Prediction(image, False, error=NON_FINITE))
            continue
        order = np.argsort(-p, kind="stable")[:k]
        predictions.append(
            Prediction(image, True, top=[{"label": saved.classes[j], "probability": float(p[j])} for j in order])
        )
    failed = sum(1 for p in predictions if not p.ok)
    non_finite = sum(1 for p in predictions if p.error == NON_FINITE)
    counts = [f"{failed - non_finite} of {len(images)} image(s) could not be read"] if failed > non_finite else []
    if non_finite:
        counts.append(f"{non_finite} of {len(images)} image(s) got non-finite probabilities from {saved.run_id}")
    warnings = list(counts)
    if top > len(saved.classes):
        warnings.append(f"--top {top} is more than the model's {len(saved.classes)} classes: showing all")
    return PredictResult(
        run_id=saved.run_id,
        model_path=str(folder),
        classes=saved.classes,
        predictions=predictions,
        failed=failed,
        warnings=warnings,
        counts=counts,
    )


def _why_unreadable(path: Path, size: tuple[int, int]) -> str:
    try:
        load_image(path, size)
    except ImageError as exc:
        return str(exc)
    return "unreadable image"
