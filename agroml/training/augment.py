"""From scratch: augmentation in the input pipeline, a new draw for every image of every batch, run by
tf.data's threads while the model trains on the batch before.

Why here and not as the model's first layer (where the pretrained recipe keeps it): from scratch every
step runs it, and in the model it sat on the step's critical path. Measured on the 2-core machine,
MobileNetV2 at 96 px, batch 16: Keras' five random layers (two resamplings) were 19-30% of the step
(width 0.35: 161 vs 112 ms with and without them, loaded; width 0.5, quiet: 150 vs 122 ms,
``benchmarks/bench_scratch.py``). An epoch gains less, 1.06x, because the pipeline's work shares the
same two cores. Here it is one resampling (views.apply: flip, rotation and zoom composed, then contrast
and brightness) on the batch, overlapped with the step, whose two threads are mostly waiting on each
other's small ops.

The draws are stateless: batch ``i`` of the repeated pipeline uses the seed (``seed``, ``i``), so a run
is reproducible and every epoch sees new views, whatever thread computes them. The ranges are
:func:`agroml.training.model.augmentation_settings` (from scratch: any angle), the same numbers
config.json records.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from agroml.training import views

if TYPE_CHECKING:
    import tensorflow as tf

#: config.json's ``augmentation.where`` for a from-scratch run.
WHERE = "input pipeline: one resampling per image, a new stateless draw per batch (training/augment.py)"
#: ... for a pretrained run: the fast path's phase 1 trains on views drawn from each image's hash
#: (training/views.py); the slow path and fine-tuning on the model's first layer.
IN_MODEL = "the model's first layer (Keras random layers)"
FAST_VIEWS = "phase 1: per-image views drawn from each image's hash (training/views.py); fine-tuning: " + IN_MODEL


def where(scratch: bool, fast: bool) -> str:
    """Where a run's augmentation runs, for config.json's ``augmentation.where``."""
    return WHERE if scratch else FAST_VIEWS if fast else IN_MODEL


def draw_batch(seed: Any, n: Any, image_size: int, settings: dict[str, Any]) -> Any:
    """(n, views.N_PARAMS) float32: the draws of ``n`` images from a stateless ``seed`` (two int32).

    The same parameters as views.draw (flip, the affine coefficients of rotation and zoom about the
    centre, contrast factor, brightness delta), drawn by TensorFlow so they can change every batch.
    """
    import tensorflow as tf

    u = tf.random.stateless_uniform((n, 5), seed=seed, dtype=tf.float32)
    flip = tf.cast(u[:, 0] <= 0.5, tf.float32)
    angle = (2 * u[:, 1] - 1) * settings["rotation_turns"] * 2 * math.pi
    zoom = 1 + (2 * u[:, 2] - 1) * settings["zoom"]
    contrast = 1 + (2 * u[:, 3] - 1) * settings["contrast"]
    brightness = (2 * u[:, 4] - 1) * settings["brightness"] * 255
    c = (image_size - 1) / 2
    cos, sin = zoom * tf.cos(angle), zoom * tf.sin(angle)
    zeros = tf.zeros_like(cos)
    affine = [cos, -sin, c - cos * c + sin * c, sin, cos, c - sin * c - cos * c, zeros, zeros]
    return tf.stack([flip, *affine, contrast, brightness], axis=1)


def augment_batches(ds: tf.data.Dataset, image_size: int, settings: dict[str, Any], seed: int) -> tf.data.Dataset:
    """``ds`` of (uint8 images (b, h, w, 3), labels) batches, each image transformed by its own draw.

    Batch ``i`` (counted across epochs of a repeated ``ds``) draws from (``seed``, ``i``); the result is
    float32 in 0..255, what the model's preprocessing takes. Prefetched, so the next batch is augmented
    while the model trains on this one.
    """
    import tensorflow as tf

    def one(i: Any, batch: tuple[Any, Any]) -> tuple[Any, Any]:
        images, labels = batch
        params = draw_batch(tf.stack([tf.cast(seed, tf.int64), i]), tf.shape(images)[0], image_size, settings)
        return views.apply(images, params), labels

    return ds.enumerate().map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
