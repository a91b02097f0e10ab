"""The from-scratch schedule scales with the data (training/schedule.py): the budget's arithmetic for
200, 2,000 and 20,000 training images, the user's values winning, the choice recorded in config.json,
and the decoded images cached on disk (and removed) when they do not fit the memory budget.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from shape_photos import add_shapes

from agroml.core import config
from agroml.training.config import AUTO, PRETRAINED, SCRATCH, TrainConfig, resolve_config
from agroml.training.data import load_training_data, make_dataset, plan_cache
from agroml.training.run import train
from agroml.training.schedule import (
    BASE_LR,
    MAX_EPOCHS,
    MIN_EPOCHS,
    TARGET_STEPS,
    TRUSTED_VAL,
    apply_schedule,
    plan_schedule,
)


def _scratch(**fields) -> TrainConfig:
    return TrainConfig.for_weights("none", model_type="pest", **fields)


# --- the budget's arithmetic ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n_train", "n_val", "batch", "epochs", "early"),
    [
        (200, 43, 16, 138, False),  # 13 steps an epoch: 1,800 steps are 138 epochs; 43 val images too few
        (2_000, 430, 32, 29, True),  # 63 steps an epoch
        (20_000, 4_300, 64, MIN_EPOCHS, True),  # 313 steps an epoch: the floor, 3,130 steps
        (40, 9, 16, MAX_EPOCHS, False),  # 3 steps an epoch: the ceiling, not 600 epochs
    ],
)
def test_the_budget_scales_batch_rate_and_epochs_with_the_data(n_train, n_val, batch, epochs, early):
    plan = plan_schedule(_scratch(), n_train, n_val)
    assert (plan.batch_size, plan.epochs, plan.early_stopping) == (batch, epochs, early)
    assert plan.steps_per_epoch == math.ceil(n_train / batch) and plan.steps == epochs * plan.steps_per_epoch
    assert plan.learning_rate == pytest.approx(BASE_LR * math.sqrt(batch / 16), rel=5e-3)  # sqrt scaling, 3 digits
    if MIN_EPOCHS < epochs < MAX_EPOCHS:  # inside the bounds the run is the target number of steps
        assert abs(plan.steps - TARGET_STEPS) <= plan.steps_per_epoch / 2
    assert set(plan.chosen) == {"epochs", "batch_size", "learning_rate"}


def test_more_data_never_means_fewer_images_seen_nor_a_smaller_batch():
    sizes = (50, 200, 999, 1000, 2000, 4999, 5000, 20000, 100000)
    plans = [plan_schedule(_scratch(), n, n // 5) for n in sizes]
    seen = [p.steps * p.batch_size for p in plans]
    for n, before, after in zip(sizes[1:], seen, seen[1:], strict=False):  # up to rounding to whole epochs
        assert after >= before - n
    assert [p.batch_size for p in plans] == sorted(p.batch_size for p in plans)
    assert all(MIN_EPOCHS <= p.epochs <= MAX_EPOCHS for p in plans)


def test_early_stopping_only_from_a_validation_split_large_enough_to_trust():
    small, trusted = plan_schedule(_scratch(), 1500, TRUSTED_VAL - 1), plan_schedule(_scratch(), 1500, TRUSTED_VAL)
    assert not small.early_stopping and "too few to trust" in small.reason
    assert trusted.early_stopping and trusted.patience >= SCRATCH.patience
    assert f"patience {trusted.patience}" in trusted.reason and trusted.to_dict()["patience"] == trusted.patience
    assert small.to_dict()["patience"] is None


def test_the_scratch_callbacks_stop_early_only_when_asked(tmp_path):
    import keras

    from agroml.training.loop import callbacks

    cfg, _ = apply_schedule(_scratch(), 1500, 300)
    stops = [
        [c for c in callbacks("scratch", cfg, cfg.epochs, 10, tmp_path, lambda *a: None, None, 0, stop_early=flag)]
        for flag in (False, True)
    ]
    early = [c for c in stops[1] if isinstance(c, keras.callbacks.EarlyStopping)]
    assert not any(isinstance(c, keras.callbacks.EarlyStopping) for c in stops[0])
    assert len(early) == 1 and early[0].restore_best_weights and early[0].patience == cfg.patience
    # the cosine decay sets the rate from scratch: never ReduceLROnPlateau
    assert not any(isinstance(c, keras.callbacks.ReduceLROnPlateau) for c in stops[0] + stops[1])


# --- the user's values win --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "given",
    [{"epochs": 7}, {"batch_size": 8}, {"learning_rate": 1e-4}, {"epochs": 3, "batch_size": 128, "learning_rate": 0.5}],
)
def test_a_value_the_user_gave_wins_and_only_the_rest_is_chosen(workdir, given):
    settings = config.resolve({}, environ={}, env_file=None)
    cfg = resolve_config(settings, {"model_type": "pest", "weights": "none", **given})  # as the CLI passes flags
    resolved, recorded = apply_schedule(cfg, 20_000, 4_000)
    for name, value in given.items():
        assert getattr(resolved, name) == value and recorded[name] == value
    assert set(recorded["chosen"]) == {"epochs", "batch_size", "learning_rate"} - set(given)
    assert all(getattr(resolved, n) != AUTO for n in ("epochs", "batch_size", "learning_rate"))
    assert "as given" in recorded["reason"]
    if "batch_size" in given and "learning_rate" not in given:  # the rate follows the batch the user chose
        assert resolved.learning_rate == pytest.approx(BASE_LR * math.sqrt(given["batch_size"] / 16), rel=5e-3)


def test_the_pretrained_recipe_is_left_as_its_preset():
    cfg = TrainConfig.for_weights("imagenet", model_type="pest")
    resolved, recorded = apply_schedule(cfg, 20_000, 4_000)
    assert resolved == cfg and recorded["chosen"] == []
    assert (recorded["epochs"], recorded["batch_size"]) == (PRETRAINED.epochs, PRETRAINED.batch_size)


def test_auto_is_a_from_scratch_value_only():
    from agroml.core.errors import UsageError

    _scratch().check()  # the preset's AUTO values are valid from scratch
    for name in ("epochs", "batch_size", "learning_rate"):
        with pytest.raises(UsageError, match="out of range"):
            TrainConfig.for_weights("imagenet", model_type="pest", **{name: AUTO}).check()


# --- a real tiny run: config.json and the disk cache -------------------------------------------------
def test_a_run_records_its_schedule_and_caches_on_disk_when_the_budget_is_0(tmp_path):
    settings = config.resolve(
        {
            "data_dir": tmp_path / "data",
            "models_dir": tmp_path / "models",
            "min_total": 12,
            "min_per_class": 4,
            "train_cache_mb": 0,
        },
        environ={},
        env_file=None,
    )
    add_shapes(settings, {"circle": 8, "square": 8, "triangle": 8}, size=32)
    cache_root = Path(settings.data_dir) / "train_cache"
    files_seen: list[list[str]] = []

    def progress(task: str, done: int, total: int | None = None, info: str = "") -> None:
        if task == "scratch steps" and done == 0:  # an epoch begins: the files the last one wrote
            files_seen.append(sorted(p.name for p in cache_root.rglob("*") if p.is_file()))

    cfg = TrainConfig.for_weights("none", model_type="pest", min_per_class=4, image_size=32, epochs=2, run_eagerly=True)
    result = train(settings, cfg, progress)
    saved = json.loads((result.path / "config.json").read_text())
    schedule = saved["schedule"]
    n_train, n_val = sum(saved["counts"]["train"].values()), sum(saved["counts"]["val"].values())
    assert schedule["chosen"] == ["batch_size", "learning_rate"] and "epochs as given" in schedule["reason"]
    assert (saved["epochs"], saved["batch_size"], saved["learning_rate"]) == (2, 16, BASE_LR)
    assert schedule["steps"] == 2 * math.ceil(n_train / 16) and schedule["early_stopping"] is (n_val >= TRUSTED_VAL)
    cache = saved["train_cache"]
    assert cache["used"] is False and "AGROML_TRAIN_CACHE_MB is 0" in cache["reason"]
    assert cache["disk_path"] and Path(cache["disk_path"]).parent == cache_root
    # epoch 2 began with the train and val splits' tf.data cache files written by epoch 1 ...
    assert any(f.startswith("train") for f in files_seen[1]) and any(f.startswith("val") for f in files_seen[1])
    assert not Path(cache["disk_path"]).exists()  # ... and the run removed them
    assert cache["reason"] not in result.warnings  # 0 asks for no memory: not a surprise to warn about


def test_disk_cached_dataset_yields_every_image_once_per_epoch_in_a_new_order(workdir, tmp_path):
    settings = config.resolve({"min_total": 12, "min_per_class": 4}, env_file=None)
    add_shapes(settings, {"circle": 8, "square": 8}, size=40)
    paths, labels = load_training_data(settings, "pest").arrays("train")
    plain = np.concatenate([x.numpy() for x, _ in make_dataset(paths, labels, 24, batch_size=4)])
    ds = make_dataset(paths, labels, 24, batch_size=4, shuffle=True, seed=3, cache=str(tmp_path / "train"))
    epochs = [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(3)]
    assert any(p.name.startswith("train") for p in tmp_path.iterdir())  # read from files after the first pass
    for epoch in epochs:
        assert sorted(i.tobytes() for i in epoch) == sorted(i.tobytes() for i in plain)
    assert not all(np.array_equal(epochs[0], e) for e in epochs[1:])


def test_over_the_memory_budget_the_plan_falls_back_to_disk_then_to_decoding(tmp_path):
    memory = plan_cache(100, 20, 64, budget_mb=3, disk_dir=tmp_path / "k")
    assert memory.used and memory.disk_path is None
    disk = plan_cache(100, 20, 64, budget_mb=2, disk_dir=tmp_path / "k")
    assert not disk.used and disk.disk_path == str(tmp_path / "k") and "cached on disk" in disk.reason
    # more than any disk holds: decoded every epoch, saying why
    huge = plan_cache(10**9, 0, 1024, budget_mb=2, disk_dir=tmp_path / "k")
    assert not huge.used and huge.disk_path is None and "MB free on disk" in huge.reason
    assert plan_cache(100, 20, 64, budget_mb=0).disk_path is None  # no folder given: decoded every epoch


def test_efficientnetb0_gets_its_own_smaller_step_budget_and_says_so():
    """Its step costs about 4x MobileNetV2's and it learns in fewer: 1,800 steps would be 25 minutes on 1,259
    digits (schedule.BACKBONE_STEPS); the others keep TARGET_STEPS."""
    from agroml.training.schedule import BACKBONE_STEPS

    for arch, steps in (("efficientnetb0", BACKBONE_STEPS["efficientnetb0"]), ("resnet50", TARGET_STEPS)):
        plan = plan_schedule(_scratch(arch=arch), 1259, 270)
        assert abs(plan.steps - steps) <= plan.steps_per_epoch / 2, plan
        assert f"{steps} target steps for {arch}" in plan.reason
    assert BACKBONE_STEPS["efficientnetb0"] < TARGET_STEPS
    given = plan_schedule(_scratch(arch="efficientnetb0", epochs=40), 1259, 270)
    assert given.epochs == 40 and "epochs" not in given.chosen  # the user's value still wins
