"""From-scratch augmentation in the input pipeline (training/augment.py): what it draws, that every
batch gets new draws, that a seed repeats a run, and that it reaches the model of a real run."""

from __future__ import annotations

import json
import math

import numpy as np
from shape_photos import add_shapes

from agroml.training.augment import WHERE, augment_batches, draw_batch
from agroml.training.model import augmentation_settings

SIZE = 24


def _batches(images: np.ndarray, seed: int, n: int, settings: dict | None = None) -> list[tuple[np.ndarray, ...]]:
    import tensorflow as tf

    labels = np.arange(len(images), dtype="int32")
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(len(images)).repeat()
    out = augment_batches(ds, SIZE, settings or augmentation_settings(scratch=True), seed)
    return [(x.numpy(), y.numpy()) for x, y in out.take(n)]


def _images(n: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype="uint8")


def test_nothing_to_draw_leaves_each_image_as_it_is_or_turned_half_round():
    """With every range 0 the only draw left is the flip of both axes: the pixels come through exactly."""
    none = {"flip": "horizontal_and_vertical", "rotation_turns": 0.0, "zoom": 0.0, "contrast": 0.0, "brightness": 0.0}
    images = _images(8)
    (x, y), *_ = _batches(images, 0, 1, none)
    assert x.dtype == np.float32 and x.shape == images.shape and y.tolist() == list(range(8))
    flipped = 0
    for got, image in zip(x, images.astype("float32"), strict=True):
        turned = image[::-1, ::-1]
        assert np.array_equal(got, image) or np.array_equal(got, turned)
        flipped += int(np.array_equal(got, turned) and not np.array_equal(got, image))
    assert 0 < flipped < 8  # both draws happen (8 images: all the same would be 1 in 128)


def test_every_batch_and_every_epoch_draws_anew_and_a_seed_repeats_them():
    images = _images()
    first = _batches(images, 3, 4)
    again = _batches(images, 3, 4)
    other = _batches(images, 4, 4)
    for (a, ya), (b, yb) in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)  # the same seed, the same views: a run repeats
        np.testing.assert_array_equal(ya, yb)
    epochs = [x for x, _ in first]  # one batch per epoch here: the same images every time
    assert all(not np.array_equal(epochs[i], epochs[j]) for i in range(4) for j in range(i + 1, 4))
    assert not any(np.array_equal(a, b) for (a, _), (b, _) in zip(first, other, strict=True))
    for x, _ in first:
        assert x.min() >= 0.0 and x.max() <= 255.0


def test_from_scratch_every_angle_is_drawn_and_the_zoom_stays_in_its_range():
    """A leaf has no "up": from scratch the rotation covers the full turn (the demo's 0.63 -> 0.95)."""
    import tensorflow as tf

    settings = augmentation_settings(scratch=True)
    params = draw_batch(tf.constant([0, 0], tf.int64), 4000, SIZE, settings).numpy()
    cos, sin = params[:, 1], params[:, 4]  # zoom * cos(angle), zoom * sin(angle)
    angles = np.degrees(np.arctan2(sin, cos))
    zooms = np.hypot(cos, sin)
    assert angles.min() < -175 and angles.max() > 175
    assert np.histogram(angles, bins=8, range=(-180, 180))[0].min() > 350  # about uniform: 500 a bin
    assert zooms.min() >= 1 - settings["zoom"] - 1e-6 and zooms.max() <= 1 + settings["zoom"] + 1e-6
    assert math.isclose(np.mean(params[:, 0]), 0.5, abs_tol=0.05)  # flipped half the time
    c = (SIZE - 1) / 2  # about the centre: the centre pixel reads itself
    centre = params[:, 1] * c + params[:, 2] * c + params[:, 3]
    np.testing.assert_allclose(centre, c, atol=1e-3)


def test_a_from_scratch_run_augments_in_the_pipeline_and_saves_a_model_without_it(tmp_path):
    """What a run records is what it did, and the saved model takes plain images (no random layers)."""
    import keras

    from agroml.core import config
    from agroml.training.config import TrainConfig
    from agroml.training.run import train

    settings = config.resolve(
        {"data_dir": tmp_path / "data", "models_dir": tmp_path / "models", "min_total": 12, "min_per_class": 4},
        environ={},
        env_file=None,
    )
    add_shapes(settings, {"circle": 8, "square": 8, "triangle": 8}, size=32)
    cfg = TrainConfig.for_weights(
        "none", model_type="pest", min_per_class=4, image_size=32, epochs=1, batch_size=8, run_eagerly=True
    )
    result = train(settings, cfg)
    recorded = json.loads((result.path / "config.json").read_text())["augmentation"]
    assert recorded == {**augmentation_settings(scratch=True), "where": WHERE}
    saved = keras.models.load_model(result.path / "model.keras")
    assert not [layer.name for layer in saved.layers if "augmentation" in layer.name or "random" in layer.name]
    assert result.metrics["test"]["n"] > 0  # evaluated: the pipeline's float32 images and the saved graph agree


def test_config_says_where_each_recipe_augments():
    """From scratch the pipeline; pretrained fast, the hashed views then the model; pretrained slow, the model."""
    from agroml.training.augment import FAST_VIEWS, IN_MODEL, where

    assert [where(True, True), where(True, False)] == [WHERE, WHERE]  # from scratch there is no fast path
    assert (where(False, True), where(False, False)) == (FAST_VIEWS, IN_MODEL)
    assert "views.py" in FAST_VIEWS and IN_MODEL in FAST_VIEWS  # fine-tuning still augments in the model
