"""lean.py: the eager pass without Keras' per-layer bookkeeping computes exactly what the model computes.

What must hold: for every backbone's feature extractor (nested base, preprocessing layers, residual
adds, squeeze-excite multiplies), the lean pass gives the model's own inference output bit for bit, on
uint8 and float input; and a model it cannot run the same way gets None (the caller then calls the model).
"""

from __future__ import annotations

import numpy as np
import pytest

from agroml.training.backbones import BACKBONES, build_base, get_backbone
from agroml.training.lean import lean_call
from agroml.training.model import build_feature_extractor

SIZE = 32


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_the_lean_pass_equals_the_models_own_call_bit_for_bit(name):
    import keras

    keras.utils.set_random_seed(3)
    backbone = get_backbone(name)
    alpha = 0.35 if backbone.has_alpha else 1.0
    extractor = build_feature_extractor(backbone, build_base(backbone, SIZE, "none", alpha), SIZE)
    # a random base's BatchNorm statistics are 0 and 1: set others, so inference-mode BN does something
    for layer in extractor.layers[-1].layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.1, "float32"))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, "float32"))
    lean = lean_call(extractor)
    assert lean is not None
    images = np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), dtype="uint8")
    for x in (images, images.astype("float32")):
        want = np.asarray(extractor(x, training=False))
        np.testing.assert_array_equal(np.asarray(lean(x)), want)
    assert np.abs(want).max() > 0


def test_a_model_it_cannot_run_the_same_way_gets_none():
    import keras

    inputs = keras.Input((4,))
    half = keras.Model(inputs, keras.layers.Dense(2, dtype="mixed_float16")(inputs))
    assert lean_call(half) is None  # a layer that computes in float16: Keras autocasts, lean.py would not
    two = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(3)(inputs)])
    assert lean_call(two) is None
    assert lean_call(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])) is None
    plain = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dropout(0.5)(inputs)))
    run = lean_call(plain)
    x = np.ones((3, 4), "float32")
    assert run is not None
    np.testing.assert_array_equal(np.asarray(run(x)), np.asarray(plain(x, training=False)))  # dropout off
