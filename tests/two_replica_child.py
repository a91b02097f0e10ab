"""The custom loop (distributed.fit_phase_distributed) on two replicas in one process, run as its own
process by tests/test_distributed.py: the CPU split into two logical devices under MirroredStrategy.

Usage: python two_replica_child.py WORKDIR OUT.json

Why its own process: the logical devices must be set before TensorFlow starts, which a test process
that already trained something cannot do. Why MirroredStrategy and not two workers: one process is a
few seconds, not minutes, and the replicas' variables behave as the workers' do (a variable Keras makes
with aggregation "none" is updated per replica in replica context), so the loop's sums over the
replicas, its callbacks and the BatchNorm statistics' sync are all exercised.

Writes OUT.json: the history rows, the largest gap between the two replicas' copies of any BatchNorm
moving statistic, how far those statistics moved from their start, and the validation loss and
accuracy of the trained model computed here without the loop (a plain copy, one predict).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402  (after the devices are set)

from agroml.training import distributed  # noqa: E402
from agroml.training.config import TrainConfig  # noqa: E402


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes told apart by brightness: images a tiny network learns in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.uniform(0, 0.5, (n, 8, 8, 3)) + y[:, None, None, None] * 0.5
    return x.astype("float32"), y.astype("int32")


def main() -> int:
    workdir, out = Path(sys.argv[1]), Path(sys.argv[2])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    dist = distributed.Distribution("mirrored", strategy, strategy.num_replicas_in_sync)
    cfg = TrainConfig.for_weights("none", model_type="pest", batch_size=16, tensorboard=False)
    (x, y), (xv, yv) = data(96, 0), data(37, 1)  # 37: an uneven last validation batch
    train_ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(96, seed=0).repeat().batch(16)
    val_ds = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(16)
    keras.utils.set_random_seed(0)
    with dist.scope():
        model = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Conv2D(4, 3),
                keras.layers.BatchNormalization(momentum=0.5),  # moves within the 18 steps
                keras.layers.ReLU(),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2, activation="softmax"),
            ]
        )
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
        start = [np.asarray(v.value.numpy()) for v in model.non_trainable_variables]
        reported: list = []
        rows = distributed.fit_phase_distributed(
            dist, model, "scratch", cfg, train_ds, val_ds, 3, 6, {0: 1.0, 1: 1.0}, workdir, on_epoch=reported.append
        )
    gap = max(
        float(np.max(np.abs(a.numpy() - b.numpy())))
        for v in model.non_trainable_variables
        for a, b in [strategy.experimental_local_results(v.value)]
    )
    moved = max(
        float(np.max(np.abs(np.asarray(v.value.numpy()) - s)))
        for v, s in zip(model.non_trainable_variables, start, strict=True)
    )
    plain = distributed.plain_copy(dist, model)
    probs = np.asarray(plain.predict(xv, verbose=0))
    loss = float(np.mean(keras.losses.sparse_categorical_crossentropy(yv, probs)))
    accuracy = float(np.mean(np.argmax(probs, axis=-1) == yv))
    out.write_text(
        json.dumps(
            {
                "rows": rows,
                "reported": [status.epoch for status in reported],
                "replica_gap": gap,
                "moved": moved,
                "val_loss": loss,
                "val_accuracy": accuracy,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
