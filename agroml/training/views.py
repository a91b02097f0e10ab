"""The fast path's augmented views: each one a fixed function of (image content hash, view index, seed).

Why not Keras' random layers (what the slow path and fine-tuning use): their draws come from a seed
generator that advances batch by batch, so an image's augmented view depended on which images shared
its batch and in which order. With a feature store a retrain computes only the new images, in other
batches than a run with an empty store, and the two runs trained on different views of the same old
images (different heads, different figures). Here the draw of every image comes from its own hash,
so a view is the same whichever run, batch or execution mode (eager or traced) computes it, and a run
that reads old views from the store trains on exactly the features a run that computes them would.

The transforms are the ones :func:`agroml.training.model.augmentation` configures, with the same ranges
(``augmentation_settings``): a flip of both axes together (what Keras' RandomFlip does in
"horizontal_and_vertical" mode with its one draw per image), a rotation and a zoom about the centre
(composed into one resampling with reflected borders, where Keras resamples twice), contrast about each
channel's mean, brightness; pixels stay in 0..255.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agroml.training.feature_store import image_key

#: Columns of one image's draw: flip (0 or 1), the 8 affine coefficients, contrast factor, brightness delta.
N_PARAMS = 11
#: Part of the store's view key: stored views of another drawing scheme are never reused.
SCHEME = "per-image-v1"


def image_id(path: str) -> str:
    """The content hash of an image: its cache file name, or the sha256 of its bytes for another file."""
    return image_key(path) or hashlib.sha256(Path(path).read_bytes()).hexdigest()


def draw(image: str, k: int, seed: int, image_size: int, settings: dict[str, Any]) -> np.ndarray:
    """The parameters of view ``k`` of one image (its content hash): the same on every machine and run."""
    entropy = int.from_bytes(hashlib.sha256(f"{image}|{k}|{seed}".encode()).digest()[:16], "big")
    u = np.random.default_rng(entropy).random(5)
    flip = float(u[0] <= 0.5)
    angle = (2 * u[1] - 1) * settings["rotation_turns"] * 2 * math.pi
    zoom = 1 + (2 * u[2] - 1) * settings["zoom"]
    contrast = 1 + (2 * u[3] - 1) * settings["contrast"]
    brightness = (2 * u[4] - 1) * settings["brightness"] * 255
    # output pixel p reads input pixel c + zoom * R(angle) (p - c): rotate about the centre, then zoom
    c = (image_size - 1) / 2
    cos, sin = zoom * math.cos(angle), zoom * math.sin(angle)
    affine = [cos, -sin, c - cos * c + sin * c, sin, cos, c - sin * c - cos * c, 0.0, 0.0]
    return np.asarray([flip, *affine, contrast, brightness], dtype="float32")


def draws(paths: Sequence[str], k: int, seed: int, image_size: int, settings: dict[str, Any]) -> np.ndarray:
    """(n, N_PARAMS): the draws of view ``k`` of every image, in order."""
    rows = [draw(image_id(p), k, seed, image_size, settings) for p in paths]
    return np.stack(rows) if rows else np.zeros((0, N_PARAMS), dtype="float32")


def apply(images: Any, params: Any) -> Any:
    """A batch of 0..255 images (b, h, w, 3) transformed by its draws (b, N_PARAMS), as float32."""
    import keras

    ops = keras.ops
    x = ops.cast(images, "float32")
    flip = ops.reshape(params[:, 0], (-1, 1, 1, 1)) > 0.5
    x = ops.where(flip, ops.flip(ops.flip(x, axis=1), axis=2), x)
    x = keras.ops.image.affine_transform(x, params[:, 1:9], interpolation="bilinear", fill_mode="reflect")
    mean = ops.mean(x, axis=(1, 2), keepdims=True)
    x = ops.clip((x - mean) * ops.reshape(params[:, 9], (-1, 1, 1, 1)) + mean, 0.0, 255.0)
    return ops.clip(x + ops.reshape(params[:, 10], (-1, 1, 1, 1)), 0.0, 255.0)
