"""Real training, tiny: every backbone end to end, the saved model reloaded in a fresh process, the fast
path against the slow path, `agroml train --json`, and label maps that stay with their run.

Kept fast with 32 px images, a handful of rows, one epoch and Keras eager mode for the from-scratch
runs (tracing a whole backbone's training step costs more than a few eager steps).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shape_photos import add_shapes

from agroml.core import config
from agroml.images.pixels import load_image_array
from agroml.training import augment
from agroml.training.backbones import BACKBONES
from agroml.training.config import TrainConfig
from agroml.training.run import train
from agroml.training.schedule import apply_schedule

COLORS = {"circle": (230, 40, 40), "square": (40, 200, 60), "triangle": (50, 60, 230)}


def _cfg(weights: str, **fields) -> TrainConfig:
    """A pest config with the tests' per-class minimum (the tiny data sets have 8 images per class)."""
    return TrainConfig.for_weights(weights, model_type="pest", min_per_class=4, **fields)


def _settings(root: Path, **overrides):
    return config.resolve(
        {"data_dir": root / "data", "models_dir": root / "models", "min_total": 12, "min_per_class": 4, **overrides},
        environ={},
        env_file=None,
    )


@pytest.fixture(scope="module")
def scratch_runs(tmp_path_factory):
    """One --weights none run per backbone on the same tiny data."""
    settings = _settings(tmp_path_factory.mktemp("scratch"))
    add_shapes(settings, {"circle": 8, "square": 8, "triangle": 8}, size=32)
    runs = {
        arch: train(settings, _cfg("none", arch=arch, image_size=32, epochs=1, batch_size=8, run_eagerly=True))
        for arch in BACKBONES
    }
    return settings, runs


@pytest.mark.e2e
def test_every_backbone_trains_and_reloads_identically_in_a_fresh_process(scratch_runs, tmp_path):
    settings, runs = scratch_runs
    expected = {}
    for arch, result in runs.items():
        folder = settings.models_dir / "pest" / result.run_id
        assert result.path == folder and folder.is_dir()
        names = {p.name for p in folder.iterdir()}
        assert {
            "model.keras",
            "labels.json",
            "config.json",
            "split.json",
            "metrics.json",
            "history.csv",
            "curves.png",
            "confusion_matrix.png",
            "MODEL_CARD.md",
        } <= names
        assert not list(folder.parent.glob(".*.partial"))
        assert json.loads((folder / "labels.json").read_text()) == ["circle", "square", "triangle"]
        metrics = json.loads((folder / "metrics.json").read_text())
        assert {"accuracy", "macro_f1", "top3_accuracy", "per_class", "confusion_matrix"} <= set(metrics["test"])
        cfg = json.loads((folder / "config.json").read_text())
        assert cfg["arch"] == arch and cfg["weights"] == "none" and cfg["seed"] == 0
        assert cfg["augmentation"]["rotation_turns"] == 0.5  # recorded: from scratch, any angle
        assert len(cfg["data_fingerprint"]) == 64 and cfg["versions"]["tensorflow"]
        split = json.loads((folder / "split.json").read_text())
        assert sum(len(v) for v in split.values()) == 24
        paths = [str(p) for p in sorted(settings.image_dir.glob("*/*.png"))[:6]]
        images = np.stack([load_image_array(p, 32) for p in paths])
        assert images.dtype == np.uint8
        expected[arch] = np.asarray(result.model(images, training=False))
        np.save(tmp_path / f"{arch}_x.npy", images)
        np.save(tmp_path / f"{arch}_p.npy", expected[arch])
    code = (
        "import sys, numpy as np, keras\n"
        "from pathlib import Path\n"
        "out = Path(sys.argv[1])\n"
        "for arch, folder in zip(sys.argv[2::2], sys.argv[3::2]):\n"
        "    model = keras.saving.load_model(Path(folder) / 'model.keras', compile=False)\n"
        "    x = np.load(out / f'{arch}_x.npy')\n"
        "    np.save(out / f'{arch}_reloaded.npy', np.asarray(model(x, training=False)))\n"
    )
    args = [str(tmp_path)] + [a for arch, r in runs.items() for a in (arch, str(r.path))]
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for arch in runs:
        reloaded = np.load(tmp_path / f"{arch}_reloaded.npy")
        assert reloaded.shape == (6, 3)
        assert np.allclose(reloaded, expected[arch], atol=1e-5), arch


def test_preprocessing_is_inside_the_model():
    import keras

    from agroml.training.backbones import get_backbone

    x = np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")
    (scale,) = get_backbone("mobilenetv2").preprocessing()
    assert np.allclose(np.asarray(scale(x)), [[[[-1.0, 0.0, 1.0]]]])
    (caffe,) = get_backbone("resnet50").preprocessing()
    got = np.asarray(caffe(x))
    want = keras.applications.resnet50.preprocess_input(x.copy())
    assert np.allclose(got, want, atol=1e-4)
    assert get_backbone("efficientnetb0").preprocessing() == []  # EfficientNet rescales itself


def make_base_weights(path: Path, images: np.ndarray) -> Path:
    """A weights file for MobileNetV2 (alpha 0.35, 32 px) made here: ImageNet cannot be downloaded offline.

    Data-dependent init: one training-mode pass with momentum 0 over real images sets every BatchNorm's
    statistics to theirs, so the random base's pooled features are well scaled (at Keras' init the
    signal fades through 50 layers and no head can learn anything from it).
    """
    from agroml.training.backbones import build_base, get_backbone, set_bn_momentum

    base = build_base(get_backbone("mobilenetv2"), 32, "none", 0.35)
    set_bn_momentum(base, 0.0)
    base(images.astype("float32") / 127.5 - 1.0, training=True)
    set_bn_momentum(base, 0.99)
    base.save_weights(path)
    return path


def _images(settings, n: int = 64) -> np.ndarray:
    return np.stack([load_image_array(p, 32) for p in sorted(settings.image_dir.glob("*/*.png"))[:n]])


@pytest.mark.e2e
def test_fast_path_matches_slow_path(tmp_path):
    settings = _settings(tmp_path)
    # 40 per class: 36 held-out images, so the 0.25 tolerance is about 2 standard errors of a difference
    add_shapes(settings, {k: 40 for k in COLORS}, size=32, colors=COLORS)
    # a base that has seen these images (3 epochs from scratch): random deep features carry no colour
    pre = train(settings, _cfg("none", image_size=32, epochs=3, batch_size=16, alpha=0.35, run_eagerly=True))
    base_weights = tmp_path / "base.weights.h5"
    next(layer for layer in pre.model.layers if layer.name.startswith("mobilenetv2")).save_weights(base_weights)
    common = dict(image_size=32, epochs=8, batch_size=16, alpha=0.35, learning_rate=0.01)
    fast = train(settings, _cfg(str(base_weights), fast=True, **common))
    slow = train(settings, _cfg(str(base_weights), fast=False, **common))
    accuracy = {
        name: (
            r.metrics["val"]["accuracy"] * r.metrics["val"]["n"]
            + r.metrics["test"]["accuracy"] * r.metrics["test"]["n"]
        )
        / (r.metrics["val"]["n"] + r.metrics["test"]["n"])
        for name, r in (("fast", fast), ("slow", slow))
    }
    recorded = {
        name: json.loads((r.path / "config.json").read_text())["augmentation"]["where"]
        for name, r in (("fast", fast), ("slow", slow))
    }
    assert recorded == {"fast": augment.FAST_VIEWS, "slow": augment.IN_MODEL}  # what each path did
    assert max(accuracy.values()) >= 0.6, accuracy  # the base's features carry the classes
    assert abs(accuracy["fast"] - accuracy["slow"]) <= 0.25, accuracy
    # the saved whole network (raw pixels in) is the base + the head trained on cached features
    rows = list(csv_rows(fast.path / "history.csv"))
    assert rows[0]["phase"] == "head" and len(rows) >= 2


def csv_rows(path: Path):
    import csv

    with path.open() as fh:
        yield from csv.DictReader(fh)


@pytest.mark.e2e
def test_train_json_and_a_label_map_that_survives_a_new_class(cli, workdir, monkeypatch):
    monkeypatch.setenv("AGROML_MIN_TOTAL", "12")
    settings = config.resolve(env_file=None)
    add_shapes(settings, {"circle": 8, "square": 8}, size=32, colors=COLORS)
    base_weights = make_base_weights(workdir / "base.weights.h5", _images(settings))
    args = (
        "train",
        "--model",
        "pest",
        "--weights",
        str(base_weights),
        "--alpha",
        "0.35",
        "--image-size",
        "32",
        "--epochs",
        "2",
        "--min-per-class",
        "4",
        "--json",
    )
    first = cli(*args)
    assert first.exit_code == 0, first.stderr
    out = json.loads(first.stdout)
    folder = Path(out["path"])
    assert folder == Path("models") / "pest" / out["run_id"] and out["run_id"].endswith("-mobilenetv2")
    saved = json.loads((folder / "metrics.json").read_text())
    assert set(out["metrics"]["test"]) == set(saved["test"]) and out["metrics"]["test"] == saved["test"]

    add_shapes(settings, {"triangle": 8}, start=100, size=32, colors=COLORS)
    second = cli(*args, "--tflite", "float16", "--no-feature-store")
    assert second.exit_code == 0, second.stderr
    out2 = json.loads(second.stdout)
    folder2 = Path(out2["path"])
    stores = [json.loads((f / "config.json").read_text())["feature_store"] for f in (folder, folder2)]
    assert stores[0]["enabled"] and stores[0]["computed"] > 0 and stores[0]["hits"] == 0
    assert stores[1] == {"enabled": False, "reason": "AGROML_FEATURE_STORE_MB=0 or --no-feature-store"}
    assert out2["tflite"]["mode"] == "float16" and out2["tflite"]["top1_agreement"] >= 0.99
    assert (folder2 / "model.tflite").stat().st_size == out2["tflite"]["size_bytes"]
    assert json.loads((folder / "labels.json").read_text()) == ["circle", "square"]
    assert json.loads((folder2 / "labels.json").read_text()) == ["circle", "square", "triangle"]
    import keras

    old = keras.saving.load_model(folder / "model.keras", compile=False)
    assert old.output_shape[-1] == 2

    from agroml.lifecycle.registry import Registry

    with Registry(settings.models_dir) as registry:
        states = {r.run_id: r.state for r in registry.runs("pest")}
    assert states == {out["run_id"]: "succeeded", folder2.name: "succeeded"}


def test_from_scratch_the_rate_warms_up_then_decays_to_zero_and_nothing_cuts_the_schedule_short(tmp_path):
    import keras

    from agroml.training.loop import callbacks, scratch_schedule

    # the demo's 188 training / 41 validation images: the schedule the budget gives them
    cfg, _ = apply_schedule(TrainConfig.for_weights("none", model_type="pest"), 188, 41)
    assert (cfg.epochs, cfg.batch_size, cfg.learning_rate, cfg.alpha, cfg.image_size) == (150, 16, 5e-3, 0.5, 224)
    sched = scratch_schedule(cfg.learning_rate, cfg.epochs, steps=12)
    rates = [float(sched(step)) for step in (0, 30, 60, 900, 1799)]
    assert rates[0] == pytest.approx(5e-4) and rates[1] < rates[2] == pytest.approx(5e-3)
    assert rates[2] > rates[3] > rates[4] and rates[4] < 1e-5
    plateau, stopping = keras.callbacks.ReduceLROnPlateau, keras.callbacks.EarlyStopping
    scratch = callbacks("scratch", cfg, 150, 12, tmp_path, lambda *a: None, None, 0)
    # neither halves the rate nor stops (and restores mid-schedule weights) before the cosine decay ends
    assert not any(isinstance(c, (plateau, stopping)) for c in scratch)
    head = TrainConfig.for_weights("imagenet", model_type="pest")
    assert (head.batch_size, head.learning_rate) == (32, 1e-3)
    assert (head.epochs, head.alpha, head.patience, head.image_size) == (15, 1.0, 4, 224)
    pretrained = callbacks("head", head, 15, 12, tmp_path, lambda *a: None, None, 0)
    assert any(isinstance(c, plateau) for c in pretrained)
    assert any(isinstance(c, stopping) and c.restore_best_weights for c in pretrained)


def test_from_scratch_photos_are_turned_by_any_angle_and_for_a_pretrained_base_by_a_little():
    """A leaf photo has no "up": a random network must be shown every angle (the demo's 0.63 -> 0.95)."""
    import keras

    from agroml.training.backbones import build_base, get_backbone
    from agroml.training.model import build_model

    def turns(scratch: bool) -> tuple[float, float]:
        backbone = get_backbone("mobilenetv2")
        base = build_base(backbone, 32, "none", 0.35)
        model = build_model(backbone, base, 3, 32, scratch=scratch)
        rotation = next(
            layer for layer in model.get_layer("augmentation").layers if isinstance(layer, keras.layers.RandomRotation)
        )
        return tuple(float(f) * 360 for f in rotation.factor)

    assert turns(scratch=True) == (-180.0, 180.0)
    assert turns(scratch=False) == pytest.approx((-36.0, 36.0))


def test_tflite_check_agrees_and_stays_quiet(tmp_path):
    """The TFLite check agrees with Keras on a real converted model, and TensorFlow's deprecation notice
    for tf.lite.Interpreter (about our code, not the user's model) does not reach the user."""
    import warnings

    import keras

    from agroml.training import outputs

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    images = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype="uint8")
    outputs.export_tflite(model, tmp_path / "model.tflite", "float16", images)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = outputs.check_tflite(tmp_path / "model.tflite", images, model.predict(images, verbose=0))
    assert result["n"] == 20 and result["top1_agreement"] >= 0.95 and result["ok"] is (result["top1_agreement"] >= 0.99)
    assert result["size_bytes"] == (tmp_path / "model.tflite").stat().st_size
    assert not [w for w in caught if "Interpreter is deprecated" in str(w.message)]


def test_a_yaml_config_with_flags_on_top_then_like_reproduces_the_runs_config(cli, workdir, monkeypatch):
    """--config FILE (YAML; flags win over it) trains; --like RUN_ID --json trains again with the same
    config.json, field for field, under a new run id (the data, split and seed are the same too)."""
    monkeypatch.setenv("AGROML_MIN_TOTAL", "12")
    settings = config.resolve(env_file=None)
    add_shapes(settings, {"circle": 8, "square": 8, "triangle": 8}, size=32)
    (workdir / "tiny.yaml").write_text(
        "model_type: pest\nweights: none\nimage_size: 32\nepochs: 3\nbatch_size: 8\nlearning_rate: 2e-3\n"
        "min_per_class: 4\nseed: 5\nrun_eagerly: true\n"
    )
    first = cli("train", "--config", "tiny.yaml", "--epochs", "1", "--dropout", "0.1", "--json")
    assert first.exit_code == 0, first.stderr
    out = json.loads(first.stdout)
    assert set(out) == {"run_id", "path", "metrics", "tflite", "warnings"}
    recorded = json.loads((Path(out["path"]) / "config.json").read_text())
    assert (recorded["epochs"], recorded["dropout"]) == (1, 0.1)  # the flags
    assert (recorded["learning_rate"], recorded["batch_size"], recorded["seed"]) == (2e-3, 8, 5)  # the file
    assert (recorded["alpha"], recorded["patience"]) == (0.5, 4)  # the scratch preset, concrete

    again = cli("train", "--like", out["run_id"], "--json")
    assert again.exit_code == 0, again.stderr
    out2 = json.loads(again.stdout)
    assert out2["run_id"] != out["run_id"]
    reproduced = json.loads((Path(out2["path"]) / "config.json").read_text())
    assert reproduced.pop("run_id") == out2["run_id"] and recorded.pop("run_id") == out["run_id"]
    assert reproduced == recorded
