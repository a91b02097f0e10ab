"""A training that diverges fails (TrainingError naming the epoch and the fix, run recorded failed, no
folder), and a model that outputs NaN never answers `ok` in `agroml predict`.

The NaN comes by a legitimate route: a learning rate the check allows (finite, > 0) but so large that
Adam's first step (lr x the gradient's sign) overflows float32 activations. Tiny and eager, as in
tests/test_train_models.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from model_helpers import build_color_model, color_png, write_run
from shape_photos import add_shapes

from agroml.core import config
from agroml.core.errors import TrainingError
from agroml.lifecycle.predicting import NON_FINITE
from agroml.lifecycle.registry import Registry
from agroml.training.config import TrainConfig
from agroml.training.features import fit_head_on_features
from agroml.training.loop import callbacks

HUGE_LR = "1e38"  # finite, accepted by the check; float32 overflows after one Adam step


@pytest.mark.parametrize(("phase", "flag"), [("head", "--lr"), ("fine_tune", "--fine-tune-lr"), ("scratch", "--lr")])
def test_every_phase_stops_at_a_non_finite_loss(tmp_path, phase, flag):
    cfg = TrainConfig.for_weights("none" if phase == "scratch" else "imagenet", model_type="pest")
    stop = callbacks(phase, cfg, 3, 2, tmp_path, lambda *a: None, None, 0)[0]
    rate = cfg.fine_tune_learning_rate if phase == "fine_tune" else cfg.learning_rate
    assert (stop.phase, stop.rate_flag, stop.rate) == (phase, flag, rate)
    with pytest.raises(TrainingError, match=rf"training loss became nan in epoch 1 \({phase} phase\)"):
        stop.on_train_batch_end(0, {"loss": float("nan")})


def test_the_fast_paths_head_fit_stops_when_its_loss_becomes_nan(tmp_path):
    rng = np.random.default_rng(0)
    train_feats = rng.normal(size=(2, 24, 64)).astype("float32")
    y = np.repeat(np.arange(3), 8).astype("int32")
    cfg = TrainConfig.for_weights("imagenet", model_type="pest", learning_rate=float(HUGE_LR), epochs=3, batch_size=8)
    with pytest.raises(TrainingError) as caught:
        fit_head_on_features(train_feats, y, train_feats[0], y, 3, cfg, {0: 1.0, 1: 1.0, 2: 1.0}, tmp_path)
    message = str(caught.value)
    assert "in epoch 1 (head phase): the model diverged and was not saved" in message
    assert "(lower --lr below this run's 1e+38, e.g. to 1e+37)" in message


def test_a_diverging_training_fails_is_recorded_failed_and_leaves_no_folder(cli, workdir, monkeypatch):
    monkeypatch.setenv("AGROML_MIN_TOTAL", "12")
    settings = config.resolve(env_file=None)
    add_shapes(settings, {"circle": 8, "square": 8, "triangle": 8}, size=32)
    (workdir / "tiny.yaml").write_text(
        "run_eagerly: true\nmin_per_class: 4\nimage_size: 32\nepochs: 1\nbatch_size: 4\n"
    )
    result = cli("train", "--model", "pest", "--weights", "none", "--config", "tiny.yaml", "--lr", HUGE_LR, "--json")
    assert result.exit_code == 1 and result.stdout == ""
    expected = (
        "the training loss became nan in epoch 1 (scratch phase): the model diverged and was not saved "
        "(lower --lr below this run's 1e+38, e.g. to 1e+37)"
    )
    assert f"error: {expected}" in result.stderr
    with Registry(settings.models_dir) as registry:
        (run,) = registry.runs("pest")
    assert run.state == "failed" and run.error == f"TrainingError: {expected}"
    assert list((settings.models_dir / "pest").iterdir()) == []  # neither a run folder nor a .partial one


def test_predict_never_answers_ok_with_non_finite_probabilities(cli, workdir):
    settings = config.resolve(env_file=None)
    folder = write_run(settings.models_dir, "pest", "nan-run", ["red", "green"], {"train": [], "val": [], "test": []})
    model = build_color_model(["red", "green"])
    kernel, bias = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([np.full_like(kernel, np.nan), bias])
    model.save(folder / "model.keras")
    image = workdir / "red.png"
    image.write_bytes(color_png("red", size=24))
    result = cli("predict", str(image), "--model", "pest", "--json")
    assert result.exit_code == 1
    (only,) = json.loads(result.stdout)["predictions"]
    assert only == {"image": str(image), "ok": False, "top": [], "error": NON_FINITE}
    assert NON_FINITE == "the model produced non-finite probabilities: retrain it"
    assert "1 of 1 image(s) got non-finite probabilities from nan-run" in result.stderr
    table = cli("predict", str(image), "--model", "pest")
    assert table.exit_code == 1 and f"{Path(image)}: {NON_FINITE}" in table.stderr
