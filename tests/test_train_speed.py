"""Training that keeps up and tells the time: the decoded-image cache and the epoch / time-left progress.

The cache must change nothing but speed (same images, same run folder, a fresh order each epoch);
the registry must say, while a run trains, where it stands and about how long it has left.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shape_photos import add_shapes

from agroml.core import config
from agroml.core.progress import time_left_text
from agroml.lifecycle.registry import Registry
from agroml.training.config import TrainConfig
from agroml.training.data import load_training_data, make_dataset, plan_cache
from agroml.training.loop import seconds_left
from agroml.training.run import train

ROOT = Path(__file__).resolve().parents[1]


def _settings(root: Path, **overrides):
    return config.resolve(
        {"data_dir": root / "data", "models_dir": root / "models", "min_total": 12, "min_per_class": 4, **overrides},
        environ={},
        env_file=None,
    )


def _images(ds) -> np.ndarray:
    return np.concatenate([images.numpy() for images, _ in ds])


# --- the cache ------------------------------------------------------------------------------------
def test_the_cache_is_used_when_the_decoded_images_fit_the_budget():
    # 100 shuffled training images count twice (cache + shuffle buffer), 20 validation images once
    needed_mb = 220 * 64 * 64 * 3 / 2**20  # 2.58 MB
    fits = plan_cache(100, 20, 64, budget_mb=3)
    assert fits.used and fits.needed_mb == pytest.approx(needed_mb, abs=0.05)
    assert "kept in memory" in fits.reason
    over = plan_cache(100, 20, 64, budget_mb=2)
    assert not over.used and "over AGROML_TRAIN_CACHE_MB=2" in over.reason
    off = plan_cache(100, 20, 64, budget_mb=0)
    assert not off.used and "is 0" in off.reason


def test_cached_dataset_yields_the_images_of_the_uncached_one_and_reshuffles_each_epoch(workdir):
    settings = config.resolve({"min_total": 12, "min_per_class": 4}, env_file=None)
    add_shapes(settings, {"circle": 8, "square": 8}, size=40)
    paths, labels = load_training_data(settings, "pest").arrays("train")
    plain = _images(make_dataset(paths, labels, 24, batch_size=4))
    cached_ds = make_dataset(paths, labels, 24, batch_size=4, cache=True)
    first, second = _images(cached_ds), _images(cached_ds)  # the second pass is read from the cache
    assert plain.dtype == first.dtype == np.uint8
    assert np.array_equal(first, plain) and np.array_equal(second, plain)

    shuffled = make_dataset(paths, labels, 24, batch_size=4, shuffle=True, seed=3, cache=True)
    epochs = [_images(shuffled) for _ in range(3)]

    def as_set(batch: np.ndarray) -> list[bytes]:
        return sorted(image.tobytes() for image in batch)

    assert all(as_set(e) == as_set(plain) for e in epochs)  # every image once per epoch, none altered
    assert not all(np.array_equal(epochs[0], e) for e in epochs[1:])  # a new order each epoch


# --- the time left --------------------------------------------------------------------------------
def test_seconds_left_is_the_mean_epoch_after_the_first_times_the_epochs_left_in_this_and_later_phases():
    assert math.isnan(seconds_left([], 10))
    assert seconds_left([30.0], 10) == pytest.approx(270.0)  # 9 epochs left at 30 s
    # the first epoch (tracing, filling the cache) leaves the mean once a second one is timed
    assert seconds_left([30.0, 10.0, 20.0], 10) == pytest.approx(15.0 * 7)
    assert seconds_left([30.0, 10.0, 20.0], 10, later_epochs=5) == pytest.approx(15.0 * 12)
    assert seconds_left([90.0, 10.0], 4) == pytest.approx(10.0 * 2)
    assert seconds_left([5.0] * 10, 10) == 0.0
    assert seconds_left([5.0] * 4, 3) == 0.0  # never negative


def test_time_left_reads_as_people_say_it():
    assert time_left_text(None) == "" and time_left_text(math.nan) == ""
    assert time_left_text(42.4) == "~42s left"
    assert time_left_text(91) == "~2m left"  # rounded up
    assert time_left_text(12 * 60) == "~12m left"
    assert time_left_text(65 * 60 + 1) == "~1h06m left"


# --- a real tiny training -------------------------------------------------------------------------
def _status_from_another_process(models_dir: Path) -> tuple[dict, str]:
    env = {**os.environ, "AGROML_MODELS_DIR": str(models_dir), "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "agroml", "status"]
    as_json = subprocess.run([*run, "--json"], env=env, capture_output=True, text=True, check=True, timeout=120)
    text = subprocess.run(run, env=env, capture_output=True, text=True, check=True, timeout=120)
    return json.loads(as_json.stdout), text.stdout


@pytest.fixture(scope="module")
def cached_and_uncached(tmp_path_factory):
    """The same tiny from-scratch run with the cache (status read from another process mid-run) and without."""
    root = tmp_path_factory.mktemp("speed")
    cfg = TrainConfig.for_weights(
        "none", model_type="pest", min_per_class=4, image_size=32, epochs=3, batch_size=8, run_eagerly=True
    )
    seen: list[tuple[dict, str]] = []
    bars: list[tuple[int, int | None, str]] = []

    def progress(task: str, done: int, total: int | None = None, info: str = "") -> None:
        if task == "scratch epochs" and not (root / "b").exists():
            bars.append((done, total, info))
        if task == "scratch steps" and done == 0 and not seen and (root / "a" / "models" / "registry.db").exists():
            with Registry(root / "a" / "models", create=False) as registry:
                if registry.status() and registry.status()[0].epoch == 1:  # epoch 2 begins
                    seen.append(_status_from_another_process(root / "a" / "models"))

    results = {}
    for name, budget in (("a", 1024.0), ("b", 0.001)):
        settings = _settings(root / name, train_cache_mb=budget)
        add_shapes(settings, {"circle": 8, "square": 8, "triangle": 8}, size=32)
        results[name] = (settings, train(settings, cfg, progress))
    return results, seen, bars


@pytest.mark.e2e
def test_cache_on_and_off_give_a_run_folder_with_the_same_files_and_say_which_was_used(cached_and_uncached):
    results, _, _ = cached_and_uncached
    on, off = results["a"][1], results["b"][1]
    assert sorted(p.name for p in on.path.iterdir()) == sorted(p.name for p in off.path.iterdir())
    saved_on = json.loads((on.path / "config.json").read_text())["train_cache"]
    saved_off = json.loads((off.path / "config.json").read_text())["train_cache"]
    assert saved_on["used"] is True and saved_on["budget_mb"] == 1024
    assert saved_off["used"] is False and "over AGROML_TRAIN_CACHE_MB=0.001" in saved_off["reason"]
    assert saved_off["reason"] in off.warnings and not any("AGROML_TRAIN_CACHE_MB" in w for w in on.warnings)


def test_status_mid_run_shows_epoch_of_total_phase_and_time_left(cached_and_uncached):
    results, seen, bars = cached_and_uncached
    assert len(seen) == 1, "status was not read while the run trained"
    data, text = seen[0]
    (running,) = data["running"]
    assert {k: running[k] for k in ("epoch", "total_epochs", "phase", "phase_epoch", "phase_epochs")} == {
        "epoch": 1,
        "total_epochs": 3,
        "phase": "scratch",
        "phase_epoch": 1,
        "phase_epochs": 3,
    }
    assert running["seconds_left"] > 0 and 0 <= running["seconds_left_now"] <= running["seconds_left"]
    assert "epoch 1/3 (scratch 1/3), ~" in text and "left" in text

    settings, result = results["a"]
    with Registry(settings.models_dir) as registry:
        done = registry.get(result.run_id)
    assert (done.state, done.epoch, done.total_epochs, done.phase, done.phase_epoch) == (
        "succeeded",
        3,
        3,
        "scratch",
        3,
    )
    assert done.seconds_left == 0.0 and done.to_dict()["seconds_left_now"] is None

    # the training bar: epoch N of the phase's total, the time left ahead of the metrics
    assert [(done, total) for done, total, _ in bars] == [(1, 3), (2, 3), (3, 3)]
    assert all(info.startswith("~") and " left loss=" in info for _, _, info in bars)
    assert bars[-1][2].startswith("~0s left")
