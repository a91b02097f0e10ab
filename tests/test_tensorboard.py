"""TensorBoard logs of a run: Keras' own callback writes event files into <run>/tensorboard/<phase>/ that
TensorBoard's own reader reads back with the run's epoch scalars. (--no-tensorboard writing none is
checked on the runs of tests/test_runs_compare.py, which train with it.)

One pretrained run covers both places the callback is attached: the head on cached features
(training/features.py) and a fine-tuning phase through model.fit (training/loop.py). Kept fast: a
weights file made here (no download), 32 px, a handful of rows, 2 + 1 epochs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from shape_photos import add_shapes
from test_train_models import COLORS, make_base_weights

from agroml.core import config
from agroml.images.pixels import load_image_array
from agroml.training.config import TrainConfig
from agroml.training.run import train


def _settings(root: Path):
    return config.resolve(
        {"data_dir": root / "data", "models_dir": root / "models", "min_total": 12, "min_per_class": 4},
        environ={},
        env_file=None,
    )


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)...]} of every scalar in the event files of ``folder``, read by TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    out: dict[str, list[tuple[int, float]]] = {}
    for tag in acc.Tags()["tensors"]:  # Keras writes TF2 summaries: scalars as 0-d tensors
        out[tag] = [(e.step, float(np.asarray(_ndarray(e.tensor_proto)))) for e in acc.Tensors(tag)]
    for tag in acc.Tags()["scalars"]:
        out[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
    return out


def _ndarray(proto):
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(proto)


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    settings = _settings(root)
    add_shapes(settings, {"circle": 8, "square": 8}, size=32, colors=COLORS)
    images = np.stack([load_image_array(p, 32) for p in sorted(settings.image_dir.glob("*/*.png"))])
    weights = make_base_weights(root / "base.weights.h5", images)
    cfg = TrainConfig.for_weights(
        str(weights),
        model_type="pest",
        min_per_class=4,
        alpha=0.35,
        image_size=32,
        epochs=2,
        batch_size=8,
        fine_tune_layers=2,
        fine_tune_epochs=1,
        patience=5,
        run_eagerly=True,  # no graph tracing of the fine-tuning step: seconds saved on a tiny run
    )
    return train(settings, cfg)


def test_each_phase_logs_its_epoch_scalars_as_history_csv_has_them(pretrained_run):
    folder = pretrained_run.path
    assert json.loads((folder / "config.json").read_text())["tensorboard"] is True
    history = list(csv.DictReader((folder / "history.csv").open()))
    assert [r["phase"] for r in history] == ["head", "head", "fine_tune"]
    for phase in ("head", "fine_tune"):
        rows = [r for r in history if r["phase"] == phase]
        train_logs = scalars(folder / "tensorboard" / phase / "train")
        val_logs = scalars(folder / "tensorboard" / phase / "validation")
        # one point per epoch of the phase, at steps 0..n-1, with the values history.csv recorded
        assert [step for step, _ in train_logs["epoch_loss"]] == list(range(len(rows)))
        assert [v for _, v in train_logs["epoch_loss"]] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-5)
        assert [v for _, v in train_logs["epoch_accuracy"]] == pytest.approx(
            [float(r["accuracy"]) for r in rows], rel=1e-5
        )
        assert [v for _, v in val_logs["epoch_loss"]] == pytest.approx([float(r["val_loss"]) for r in rows], rel=1e-5)
        assert "epoch_learning_rate" in train_logs
    # written into the .partial folder, then moved with it: nothing is left beside the run
    assert not list(folder.parent.glob(".*.partial"))
