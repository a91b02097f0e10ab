"""The fused BatchNorm training step (training/batchnorm.py) computes what Keras' own does."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from agroml.training.batchnorm import use_fused_batch_norm  # noqa: E402


def small_net(seed: int) -> keras.Model:
    """Conv -> BN -> ReLU -> nested (Conv -> BN) -> pool -> Dense: BN at two depths, one nested."""
    keras.utils.set_random_seed(seed)
    inner_in = keras.Input((8, 8, 6))
    inner = keras.Model(
        inner_in, keras.layers.BatchNormalization(momentum=0.9)(keras.layers.Conv2D(5, 3, padding="same")(inner_in))
    )
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.8, epsilon=1e-3)(x)
    x = keras.layers.ReLU()(x)
    x = inner(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def step(model: keras.Model, x: np.ndarray, training: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
    with tf.GradientTape() as tape:
        out = model(x, training=training)
        loss = tf.reduce_sum(out * tf.range(1.0, 5.0))
    grads = tape.gradient(loss, model.trainable_variables)
    return out.numpy(), [g.numpy() for g in grads]


def bn_stats(model: keras.Model) -> list[np.ndarray]:
    return [
        v.numpy()
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_training_step_matches_keras(seed):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(4, 8, 8, 3)) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)).astype("float32")
    stock, fused = small_net(seed), small_net(seed)
    assert use_fused_batch_norm(fused) == 2  # the nested model's layer counted too

    out_s, grads_s = step(stock, x)
    out_f, grads_f = step(fused, x)
    np.testing.assert_allclose(out_f, out_s, rtol=1e-4, atol=1e-4)
    for g_f, g_s in zip(grads_f, grads_s, strict=True):
        np.testing.assert_allclose(g_f, g_s, rtol=1e-3, atol=1e-4)

    # moving statistics: the same mean; the variance differs only by the kernel's n / (n - 1)
    for i, (s_f, s_s) in enumerate(zip(bn_stats(fused), bn_stats(stock), strict=True)):
        np.testing.assert_allclose(s_f, s_s, rtol=2e-2, atol=1e-5, err_msg=f"moving statistic {i}")

    # inference is Keras' own path, untouched: equal once the statistics are equal
    for layer_f, layer_s in zip(fused._flatten_layers(), stock._flatten_layers(), strict=True):
        if isinstance(layer_f, keras.layers.BatchNormalization):
            layer_f.moving_variance.assign(layer_s.moving_variance)
    np.testing.assert_allclose(fused(x, training=False).numpy(), stock(x, training=False).numpy(), rtol=1e-5)


def test_a_saved_model_is_stock_keras(tmp_path):
    """The fused step is per instance: the saved file names only Keras' BatchNormalization and loads
    without agroml."""
    model = small_net(0)
    use_fused_batch_norm(model)
    model.compile(optimizer="adam", loss=keras.losses.MeanSquaredError())
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32")
    model.fit(x, np.zeros((8, 4), "float32"), epochs=2, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    kinds = {type(layer).__name__ for layer in loaded._flatten_layers()}
    assert "BatchNormalization" in kinds
    assert all(type(layer).call is layer.call.__func__ for layer in loaded._flatten_layers() if hasattr(layer, "call"))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
