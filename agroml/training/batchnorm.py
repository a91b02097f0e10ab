"""BatchNorm's training step as TensorFlow's fused kernel, for the networks trained from scratch.

Why: Keras 3 computes a BatchNormalization in training mode from separate ops (mean, squared
difference, multiply, subtract, and their gradients, Tile included): profiled on MobileNetV2 0.35 at
96 px, batch 16 (benchmarks/bench_scratch.py ``--profile``), those ops were about a third of a
from-scratch step's CPU time. TensorFlow's FusedBatchNormV3 and its gradient do the same work in
one pass per tensor. From scratch every BatchNorm layer trains, so that third is paid every step.

How, and why this way: each layer's ``call`` is replaced *on the instance* while training; the
layer stays a stock ``keras.layers.BatchNormalization`` (same class, config and weights), so the
saved model.keras loads with plain Keras and nothing of agroml. Inference (``training=False``) and
every case the fused kernel does not cover (masks, renorm, synchronized statistics, a channel axis
other than the last, inputs that are not 4-D) go to Keras' own code unchanged.

What differs from Keras' path, measured equal otherwise (tests/test_batchnorm.py): the moving
variance is updated with the batch variance corrected by n / (n - 1) (the kernel's unbiased
estimate; n is batch x height x width, at least 144 here), the normalization itself uses the biased
one, as Keras does.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras


def _fused_call(self: Any, inputs: Any, training: Any = None, mask: Any = None) -> Any:
    import tensorflow as tf

    fused = (
        training
        and self.trainable
        and mask is None
        and not self.renorm
        and not self.synchronized
        and self.center
        and self.scale
        and len(inputs.shape) == 4
        and self.axis in (-1, 3)
        and inputs.dtype == tf.float32
    )
    if not fused:
        return type(self).call(self, inputs, training=training, mask=mask)
    y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        inputs, self.gamma, self.beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
    )
    self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
    self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
    return y


def use_fused_batch_norm(model: keras.Model) -> int:
    """Train every BatchNormalization layer of ``model`` (nested models included) with the fused
    kernel; returns how many layers. Only on the TensorFlow backend (the fused op is TensorFlow's)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return 0
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.call = types.MethodType(_fused_call, layer)
    return len(layers)
