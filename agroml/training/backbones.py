"""Backbones: name -> (base builder, default input size, preprocessing that lives INSIDE the model).

Why preprocessing inside the model: each backbone wants its own scaling (MobileNetV2 [-1, 1], ResNet50
caffe-style BGR mean subtraction, EfficientNet rescales itself from [0, 255]; a shared /255 is wrong
for all three). Here every saved model takes raw RGB pixels 0..255, so whoever serves
it cannot get the scaling wrong. Only stock Keras layers are used (Rescaling, a frozen 1x1 Conv2D for
the BGR flip + mean), so ``model.keras`` loads in a fresh process with no custom objects.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agroml.core.errors import TrainingError, UsageError

if TYPE_CHECKING:
    import keras

#: Caffe-style ImageNet means, in BGR order (what keras.applications.resnet50.preprocess_input uses).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: BatchNorm momentum when training from scratch: Keras' 0.99 needs hundreds of steps before the
#: moving statistics match the weights, so on a few hundred images validation sits at chance.
SCRATCH_BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class Backbone:
    """One Keras application: how to build its pooled base and the layers that feed it raw pixels."""

    name: str
    default_size: int
    #: (input size, weights "imagenet" | None, alpha) -> the keras.applications base, pooled.
    build: Callable[[int, str | None, float], keras.Model]
    #: () -> Keras layers turning raw RGB 0..255 floats into what the base expects.
    preprocessing: Callable[[], list[Any]]
    #: Whether the width multiplier --alpha applies (MobileNetV2 only).
    has_alpha: bool = False


def _mobilenetv2(size: int, weights: str | None, alpha: float) -> keras.Model:
    import keras

    return keras.applications.MobileNetV2(
        input_shape=(size, size, 3), include_top=False, weights=weights, pooling="avg", alpha=alpha
    )


def _resnet50(size: int, weights: str | None, alpha: float) -> keras.Model:
    import keras

    return keras.applications.ResNet50(input_shape=(size, size, 3), include_top=False, weights=weights, pooling="avg")


def _efficientnetb0(size: int, weights: str | None, alpha: float) -> keras.Model:
    import keras

    return keras.applications.EfficientNetB0(
        input_shape=(size, size, 3), include_top=False, weights=weights, pooling="avg"
    )


def _to_minus_one_one() -> list[Any]:
    import keras

    return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_minus1_1")]


def _caffe_bgr() -> list[Any]:
    """RGB -> BGR and mean subtraction as one frozen 1x1 convolution (exact, stock Keras, serializable)."""
    import keras
    import numpy as np

    kernel = np.zeros((1, 1, 3, 3), dtype="float32")
    for out_channel, in_channel in enumerate((2, 1, 0)):  # B <- R[2], G <- G, R <- B
        kernel[0, 0, in_channel, out_channel] = 1.0
    bias = -np.asarray(CAFFE_MEAN_BGR, dtype="float32")
    conv = keras.layers.Conv2D(
        3,
        1,
        name="caffe_bgr_mean",
        trainable=False,
        kernel_initializer=keras.initializers.Constant(kernel),
        bias_initializer=keras.initializers.Constant(bias),
    )
    return [conv]


def _identity() -> list[Any]:
    return []  # EfficientNet's own Rescaling/Normalization layers take 0..255


BACKBONES: dict[str, Backbone] = {
    "mobilenetv2": Backbone("mobilenetv2", 224, _mobilenetv2, _to_minus_one_one, has_alpha=True),
    "resnet50": Backbone("resnet50", 224, _resnet50, _caffe_bgr),
    "efficientnetb0": Backbone("efficientnetb0", 224, _efficientnetb0, _identity),
}
DEFAULT_BACKBONE = "mobilenetv2"


def get_backbone(name: str) -> Backbone:
    """The backbone called ``name``, or a UsageError listing the valid ones."""
    key = (name or "").strip().lower()
    if key not in BACKBONES:
        raise UsageError(
            f"unknown backbone {name!r}: valid backbones are {', '.join(BACKBONES)}",
            fix="use --arch " + "|".join(BACKBONES),
        )
    return BACKBONES[key]


def weights_mode(weights: str | None) -> str:
    """ "imagenet", "none" or "path" for a --weights value (a path must exist)."""
    value = (weights or "none").strip()
    if value.lower() in ("imagenet", "none"):
        return value.lower()
    if not Path(value).is_file():
        raise UsageError(
            f"--weights {value!r} is neither imagenet, none nor an existing weights file",
            fix="use --weights imagenet|none|PATH",
        )
    return "path"


def build_base(backbone: Backbone, size: int, weights: str | None, alpha: float = 1.0) -> keras.Model:
    """The pooled base with the requested weights; frozen unless training from scratch.

    ``weights`` is "imagenet" (Keras downloads and caches), "none" (random init, whole network
    trainable, BatchNorm momentum suited to small data) or a path to a weights file for this base.
    """
    mode = weights_mode(weights)
    try:
        # Keras prints "Downloading data from ..." on stdout; stdout is reserved for data (--json).
        with contextlib.redirect_stdout(sys.stderr):
            base = backbone.build(size, "imagenet" if mode == "imagenet" else None, alpha)
    except Exception as exc:  # keras.utils.get_file raises a bare Exception on a failed download
        if mode == "imagenet" and ("fetch failure" in str(exc) or isinstance(exc, OSError)):
            raise TrainingError(
                f"cannot download the ImageNet weights for {backbone.name} ({_first_line(exc)})",
                fix="train offline with --weights PATH (a weights file for this backbone) or --weights none",
            ) from None
        raise TrainingError(
            f"cannot build {backbone.name} at {size}px: {_first_line(exc)}",
            fix="choose another --image-size (at least 32)",
        ) from None
    if mode == "path":
        try:
            base.load_weights(str(weights))
        except Exception as exc:
            raise TrainingError(
                f"--weights {weights}: not a weights file for {backbone.name} at {size}px ({_first_line(exc)})",
                fix="pass the weights of the same backbone, or --weights none",
            ) from None
    if mode == "none":
        set_bn_momentum(base, SCRATCH_BN_MOMENTUM)
        base.trainable = True
    else:
        base.trainable = False
    return base


def set_bn_momentum(model: keras.Model, momentum: float) -> None:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
