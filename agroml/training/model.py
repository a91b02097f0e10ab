"""The network: raw RGB uint8 in -> augmentation (training only) -> backbone preprocessing -> base ->
dropout -> softmax head. Small named functions (build_model, build_head, unfreeze_top) as in the
keras-io EfficientNet fine-tuning example, so each phase of the recipe reads as one call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agroml.training.backbones import Backbone

if TYPE_CHECKING:
    import keras
    import numpy as np
    from keras.optimizers.schedules import LearningRateSchedule

HEAD_NAME = "predictions"
BASE_NAME_SUFFIX = "_base"


#: (rotation as a fraction of a full turn, zoom) for a pretrained base and from scratch.
PRETRAINED_AUGMENT = (0.1, 0.1)
#: From scratch: any angle. A photographed leaf has no "up", and a random network has none of the
#: invariances ImageNet taught a pretrained one; on the 600-row demo (188 training images, MobileNetV2
#: 0.35 at 96 px, seed 0) any angle with 150 epochs took test accuracy from 0.63-0.78 (36 degrees,
#: 100 epochs) to 0.90-0.95 (README, "Training").
SCRATCH_AUGMENT = (0.5, 0.15)
#: Contrast and brightness factors, the same for every run.
COLOR_AUGMENT = 0.2


def augmentation_settings(scratch: bool = False) -> dict[str, Any]:
    """What a run's augmentation does: the one source for both the layers and config.json."""
    rotation, zoom = SCRATCH_AUGMENT if scratch else PRETRAINED_AUGMENT
    return {
        "flip": "horizontal_and_vertical",
        "rotation_turns": rotation,
        "zoom": zoom,
        "contrast": COLOR_AUGMENT,
        "brightness": COLOR_AUGMENT,
    }


def augmentation(seed: int = 0, scratch: bool = False) -> keras.Sequential:
    """Flip, rotation, zoom, contrast, brightness on 0..255 pixels; Keras makes them identity at inference.

    A layer of the model (slow path and fine-tuning) or of the feature pipeline (fast path), so it is
    applied whenever training runs and can never be built and forgotten.
    """
    import keras

    aug = augmentation_settings(scratch)
    return keras.Sequential(
        [
            keras.layers.RandomFlip(aug["flip"], seed=seed),
            keras.layers.RandomRotation(aug["rotation_turns"], fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomZoom(aug["zoom"], fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomContrast(aug["contrast"], value_range=(0, 255), seed=seed + 3),
            keras.layers.RandomBrightness(aug["brightness"], value_range=(0, 255), seed=seed + 4),
        ],
        name="augmentation",
    )


def feature_norm(stats: tuple[Any, Any] | None) -> list[Any]:
    """A frozen standardization of the base's features, (mean, std) measured on the training images.

    Why: pooled features of different bases differ in scale by orders of magnitude (ImageNet
    MobileNetV2 about 0.5, a base fine-tuned elsewhere maybe 0.01); standardized, one head learning
    rate fits them all and a few epochs on cached features converge. Stored as a Rescaling layer's
    per-feature scale and offset: stock Keras, saved in the model.
    """
    import keras
    import numpy as np

    if stats is None:
        return []
    mean, std = (np.asarray(v, dtype="float64") for v in stats)
    std = np.maximum(std, 1e-6)
    return [keras.layers.Rescaling((1.0 / std).tolist(), offset=(-mean / std).tolist(), name="feature_norm")]


def build_model(
    backbone: Backbone,
    base: keras.Model,
    n_classes: int,
    image_size: int,
    *,
    scratch: bool,
    dropout: float = 0.2,
    seed: int = 0,
    augment: bool = True,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> keras.Model:
    """The whole network taking raw pixels.

    With a pretrained base the base is called with ``training=False``: its BatchNorm layers stay in
    inference mode even when the top is unfrozen for fine-tuning (otherwise small batches wreck the
    ImageNet statistics). From scratch BatchNorm must learn its statistics, so it follows the phase.
    """
    import keras

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = augmentation(seed, scratch)(inputs) if augment else inputs
    for layer in backbone.preprocessing():
        x = layer(x)
    x = base(x) if scratch else base(x, training=False)
    for layer in feature_norm(stats):
        x = layer(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name=HEAD_NAME)(x)
    return keras.Model(inputs, outputs, name=f"agroml_{backbone.name}")


def inference_model(model: keras.Model) -> keras.Model:
    """The trained network without its augmentation layer, sharing every weight: what is saved.

    Why: random layers are identity at inference anyway, but their ops stay in an exported graph and
    the TFLite converter rejects them; a serving model has no use for them.
    """
    import keras

    inputs = keras.Input(model.input.shape[1:], name="image")
    x = inputs
    for layer in model.layers[1:]:  # a chain: augmentation, preprocessing, base, norm, dropout, head
        if layer.name == "augmentation":
            continue
        x = layer(x, training=False) if isinstance(layer, keras.Model) else layer(x)
    return keras.Model(inputs, x, name=model.name)


def build_feature_extractor(backbone: Backbone, base: keras.Model, image_size: int) -> keras.Model:
    """Raw pixels -> the frozen base's pooled features (the fast path computes these once per view)."""
    import keras

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    for layer in backbone.preprocessing():
        x = layer(x)
    return keras.Model(inputs, base(x, training=False), name=f"{backbone.name}_features")


def build_head(
    feature_dim: int, n_classes: int, dropout: float = 0.2, stats: tuple[np.ndarray, np.ndarray] | None = None
) -> keras.Model:
    """The head alone (features in), with the same layer names as the whole model's head."""
    import keras

    inputs = keras.Input((feature_dim,), name="features")
    x = inputs
    for layer in feature_norm(stats):
        x = layer(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name=HEAD_NAME)(x)
    return keras.Model(inputs, outputs, name="head")


def copy_head(head: keras.Model, model: keras.Model) -> None:
    """Put the head trained on cached features into the whole network."""
    model.get_layer(HEAD_NAME).set_weights(head.get_layer(HEAD_NAME).get_weights())


def unfreeze_top(base: keras.Model, n_layers: int) -> int:
    """Make the top ``n_layers`` of the base trainable, BatchNorm layers excluded; returns how many."""
    import keras

    base.trainable = True
    cut = max(0, len(base.layers) - n_layers)
    unfrozen = 0
    for i, layer in enumerate(base.layers):
        trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        unfrozen += int(trainable and bool(layer.weights))
    return unfrozen


def compile_model(
    model: keras.Model, learning_rate: float | LearningRateSchedule, n_classes: int, run_eagerly: bool = False
) -> None:
    """Adam, sparse cross-entropy; top-3 as SparseTopKCategoricalAccuracy (labels are integer class
    indices, so the sparse metric is the right one). ``learning_rate`` is a float or a Keras schedule."""
    import keras

    metrics: list[Any] = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if n_classes > 3:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3_accuracy"))
    # jit_compile=False: XLA-compiling a whole backbone on a CPU costs more than the few epochs it speeds up
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=metrics,
        jit_compile=False,
        run_eagerly=run_eagerly,
    )
