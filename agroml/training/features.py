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
from agroml.training.config import TrainConfig
from agroml.training.data import make_dataset
from agroml.training.feature_store import CLEAN_VIEW, FeatureStore, augmented_view
from agroml.training.loop import EpochFn, callbacks, history_rows
from agroml.training.model import augmentation, augmentation_settings, build_head, compile_model

if TYPE_CHECKING:
    import keras


def extract_features(
    extractor: keras.Model,
    paths: list[str],
    image_size: int,
    batch_size: int,
    *,
    augment: keras.Sequential | None = None,
    task: str = "features",
    progress: ProgressFn = no_progress,
) -> np.ndarray:
    """The extractor's output for every file, in order, as a float32 array (n, feature_dim)."""
    import tensorflow as tf

    ds = make_dataset(paths, None, image_size, batch_size)
    # augmentation inside the traced call, not in a tf.data map: there Keras' random layers kept one
    # frozen seed state and the "augmented" view came out identical to the clean one
    if augment is None:
        run = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
    else:
        run = tf.function(lambda x: extractor(augment(x, training=True), training=False), reduce_retracing=True)
    out = []
    total = math.ceil(len(paths) / batch_size)
    for done, batch in enumerate(ds, start=1):
        out.append(run(batch).numpy())
        progress(task, done, total)
    dim = int(extractor.output_shape[-1])
    return np.concatenate(out).astype("float32") if out else np.zeros((0, dim), dtype="float32")


def train_and_val_features(
    extractor: keras.Model,
    train_paths: list[str],
    val_paths: list[str],
    cfg: TrainConfig,
    progress: ProgressFn = no_progress,
    store: FeatureStore | None = None,
    other_paths: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train views (views, n, dim), val features (m, dim)): view 0 of train and the val features in one
    pass, then views 1.. of train with the model's augmentation in training mode.

    Why one clean pass for both splits: each pass traces the base into a graph (about a second for
    MobileNetV2 on a 2-core CPU, as long as the base needs for 50 images).
    ``store``: features of images seen before are read from it, only the others computed (and added).
    With a store, every view is made for ``other_paths`` (the test split) and for val too, though this run
    uses only train's views and val's clean one: when new rows arrive the split is drawn again and old
    images move between splits, and a retrain must find every view of every old image (measured on the
    demo: without this, 10% more rows left 30% of the retrain's views to compute).
    """
    size, batch = cfg.image_size, cfg.batch_size
    dim = int(extractor.output_shape[-1])
    extra = list(other_paths or []) if store is not None else []
    every = train_paths + val_paths + extra

    def views_of(view: str, paths: list[str], compute: Any) -> np.ndarray:
        return compute(paths) if store is None else store.features(view, paths, dim, compute)

    if store is not None:
        store.bind(extractor, size)
    clean = views_of(
        CLEAN_VIEW,
        train_paths + val_paths + extra,
        lambda paths: extract_features(extractor, paths, size, batch, task="features (train + val)", progress=progress),
    )
    views = [clean[: len(train_paths)]]
    for k in range(1, cfg.aug_views):
        seed = cfg.seed + 100 * k

        def augmented(paths: list[str], seed: int = seed, k: int = k) -> np.ndarray:
            return extract_features(
                extractor,
                paths,
                size,
                batch,
                augment=augmentation(seed),
                task=f"features (view {k + 1})",
                progress=progress,
            )

        view = augmented_view(k, seed, augmentation_settings())
        views.append(views_of(view, every if store is not None else train_paths, augmented)[: len(train_paths)])
    if store is not None:
        progress("feature store", store.counts.hits, store.counts.hits + store.counts.computed, store.counts.summary())
    return np.stack(views), clean[len(train_paths) : len(train_paths) + len(val_paths)]


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
