"""The fast path for phase 1: a frozen base gives the same output for the same pixels every epoch, so
compute it once per image (and per augmented view) and train the head on those cached features.

Why: a plain loop pushes every image through the whole frozen network again every epoch, while the
head alone is a matrix multiply. For E epochs and K views the base runs K times per training image and once
per validation image instead of E times each. Features live in RAM as float32 (1,280-2,048 numbers per
view), never the decoded images. The saved model is still the whole network (raw pixels in): the trained
head is copied into it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agroml.core.progress import ProgressFn, no_progress
from agroml.training import views
from agroml.training.config import TrainConfig
from agroml.training.data import make_dataset
from agroml.training.feature_store import CLEAN_VIEW, FeatureStore, augmented_view
from agroml.training.lean import lean_call
from agroml.training.loop import EpochFn, build_optimizer, callbacks, history_rows
from agroml.training.model import augmentation_settings, build_head, compile_model

if TYPE_CHECKING:
    import keras

#: Up to this many images, extract_features runs the base eagerly instead of tracing it into a graph.
EAGER_MAX_IMAGES = 64


#: A view of an image for extract_features: None for the plain image, (k, seed) for the k-th augmented one.
View = tuple[int, int] | None


def extract_features(
    extractor: keras.Model,
    paths: list[str],
    image_size: int,
    batch_size: int,
    *,
    view: View = None,
    task: str = "features",
    progress: ProgressFn = no_progress,
) -> np.ndarray:
    """The extractor's output for every file, in order, as a float32 array (n, feature_dim)."""
    return extract_views(extractor, paths, image_size, batch_size, [view], task=task, progress=progress)[0]


def extract_views(
    extractor: keras.Model,
    paths: list[str],
    image_size: int,
    batch_size: int,
    specs: list[View],
    *,
    task: str = "features",
    progress: ProgressFn = no_progress,
) -> np.ndarray:
    """The extractor's output for every view of every file, in order: float32 (len(specs), n, feature_dim).

    Each file is decoded once and each batch goes through the base once, all its views stacked. An
    augmented view (k, seed) is views.py's: each image's draw a function of its hash, k and seed, so the
    result does not depend on the batch or on which other paths are in the call.
    """
    import tensorflow as tf

    settings = augmentation_settings()
    drawn = [None if v is None else views.draws(paths, v[0], v[1], image_size, settings) for v in specs]

    eager = len(paths) <= EAGER_MAX_IMAGES
    # a few images (what a retrain misses in the feature store) run eagerly: tracing the base into a
    # graph costs more than they do (MobileNetV2 at 96 px on 2 cores: 5.4 s CPU traced vs 1.8 s eager
    # for 40 images); the outputs agree within float rounding (tests/test_feature_store.py checks it).
    # Eagerly, lean.py runs each layer's own call (the same ops, the same numbers) without Keras'
    # per-layer bookkeeping and frees each activation after its last use.
    forward = (lean_call(extractor) if eager else None) or (lambda x: extractor(x, training=False))

    def call(x: Any, params: Any) -> Any:
        batch = [x if p is None else views.apply(x, params[i]) for i, p in enumerate(drawn)]
        stacked = batch[0] if len(batch) == 1 else tf.concat([tf.cast(b, "float32") for b in batch], 0)
        return forward(stacked)

    run = call if eager else tf.function(call, reduce_retracing=True)
    dim = int(extractor.output_shape[-1])
    out = []
    total = math.ceil(len(paths) / batch_size)
    for done, batch in enumerate(make_dataset(paths, None, image_size, batch_size), start=1):
        start, n = (done - 1) * batch_size, len(batch)
        params = [tf.zeros((n, 0)) if d is None else tf.constant(d[start : start + n]) for d in drawn]
        out.append(np.asarray(run(batch, params)).reshape(len(specs), n, dim))
        progress(task, done, total)
    return np.concatenate(out, axis=1).astype("float32") if out else np.zeros((len(specs), 0, dim), "float32")


def train_and_val_features(
    extractor: keras.Model,
    train_paths: list[str],
    val_paths: list[str],
    cfg: TrainConfig,
    progress: ProgressFn = no_progress,
    store: FeatureStore | None = None,
    other_paths: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train views (views, n, dim), val features (m, dim)): view 0 is the plain image, views 1.. augmented
    (views.py: each image's draw fixed by its hash, k and seed), all views of a file in one pass.

    ``store``: features of images seen before are read from it, only the others computed (and added).
    With a store, every view is made for ``other_paths`` (the test split) and for val too, though this run
    uses only train's views and val's clean one: when new rows arrive the split is drawn again and old
    images move between splits, and a retrain must find every view of every old image (measured on the
    demo: without this, 10% more rows left 30% of the retrain's views to compute).
    """
    size, batch = cfg.image_size, cfg.batch_size
    dim = int(extractor.output_shape[-1])
    specs: list[View] = [None, *((k, cfg.seed + 100 * k) for k in range(1, cfg.aug_views))]

    def compute(paths: list[str], which: list[View], task: str) -> np.ndarray:
        return extract_views(extractor, paths, size, batch, which, task=task, progress=progress)

    if store is None:
        train_views = compute(train_paths, specs, "features (train, every view)")
        return train_views, compute(val_paths, [None], "features (val)")[0]
    store.bind(extractor, size, cfg.weights)
    names = [CLEAN_VIEW] + [
        augmented_view(v[0], v[1], {**augmentation_settings(), "draw": views.SCHEME}) for v in specs if v
    ]
    every = train_paths + val_paths + list(other_paths or [])
    got = store.views(names, every, dim, lambda paths: compute(paths, specs, "features (images not in the store)"))
    progress("feature store", store.counts.hits, store.counts.hits + store.counts.computed, store.counts.summary())
    return got[:, : len(train_paths)], got[0, len(train_paths) : len(train_paths) + len(val_paths)]


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per feature over the clean training view: the head's frozen standardization."""
    return feats.mean(axis=0), feats.std(axis=0)


def fit_head_on_features(
    train_feats: np.ndarray,
    y_train: np.ndarray,
    val_feats: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    cfg: TrainConfig,
    class_weight: dict[int, float],
    workdir: Path,
    progress: ProgressFn = no_progress,
    on_epoch: EpochFn | None = None,
    later_epochs: int = 0,
) -> tuple[Any, list[dict[str, Any]]]:
    """Train the head on cached features: each epoch draws one view of every training image at random.

    Returns the head (best weights restored) and its history rows; a non-finite loss raises a
    TrainingError (loop.StopOnNonFiniteLoss is among the phase's callbacks).
    """
    import tensorflow as tf

    views, n, dim = train_feats.shape
    flat = train_feats.reshape(views * n, dim)
    labels = np.tile(y_train, views)
    weights = np.asarray([class_weight.get(int(c), 1.0) for c in labels], dtype="float32")
    train_ds = (
        tf.data.Dataset.from_tensor_slices((flat, labels, weights))
        .shuffle(len(flat), seed=cfg.seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(cfg.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    steps = max(1, math.ceil(n / cfg.batch_size))
    val_ds = tf.data.Dataset.from_tensor_slices((val_feats, y_val)).batch(256)
    head = build_head(dim, n_classes, cfg.dropout, feature_stats(train_feats[0]))
    compile_model(head, cfg.learning_rate, n_classes)
    epochs = cfg.epochs
    build_optimizer(head)
    history = head.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        steps_per_epoch=steps,
        verbose=0,
        shuffle=False,  # tf.data shuffles itself; keras warns otherwise
        callbacks=callbacks("head", cfg, epochs, steps, workdir, progress, on_epoch, 0, later_epochs),
    )
    return head, history_rows("head", history, 0)
