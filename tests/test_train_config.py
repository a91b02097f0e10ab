"""The training config: presets, the check of every number, --help read from the presets, and configs
from a file (--config, JSON or YAML) or an earlier run (--like), flags winning over both.

No training here (fast): tests/test_train_models.py trains with these configs.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields, replace
from pathlib import Path

import pytest

from agroml.core import config
from agroml.core.errors import UsageError
from agroml.lifecycle.registry import Registry
from agroml.training.config import (
    AUTO,
    AUTO_FIELDS,
    LIMITS,
    PRETRAINED,
    SCRATCH,
    TrainConfig,
    field_names,
    flag,
    read_config_file,
    resolve_config,
    run_config,
)

NUMERIC = [f.name for f in fields(TrainConfig) if f.type in ("int", "float")]


@pytest.fixture
def settings(workdir):
    return config.resolve(env_file=None)


def _one_line(text: str) -> str:
    """Rich's help panel as one line of words (its borders and wrapping removed)."""
    return " ".join(text.replace("│", " ").split())


# --- presets ----------------------------------------------------------------------------------------
def test_the_presets_hold_todays_defaults_and_scratch_differs_only_where_it_must():
    assert (PRETRAINED.epochs, PRETRAINED.batch_size, PRETRAINED.learning_rate, PRETRAINED.alpha) == (15, 32, 1e-3, 1.0)
    assert (PRETRAINED.patience, PRETRAINED.image_size, PRETRAINED.weights) == (4, 224, "imagenet")
    # from scratch epochs, batch size and rate are AUTO: scaled to the data (tests/test_train_schedule.py)
    assert (SCRATCH.epochs, SCRATCH.batch_size, SCRATCH.learning_rate, SCRATCH.alpha) == (AUTO, AUTO, AUTO, 0.5)
    differ = {n for n in field_names() if getattr(PRETRAINED, n) != getattr(SCRATCH, n)}
    assert differ == {"weights", "epochs", "batch_size", "learning_rate", "alpha"}
    assert all(getattr(PRETRAINED, n) is not None for n in field_names() if n != "tflite")  # no "None: default"


def test_for_weights_picks_the_preset_and_applies_overrides(tmp_path):
    scratch = TrainConfig.for_weights("None", model_type="pest", epochs=3)
    assert scratch.scratch and scratch.epochs == 3 and scratch.batch_size == AUTO and scratch.weights == "None"
    assert scratch.alpha == SCRATCH.alpha
    weights_file = tmp_path / "base.weights.h5"
    assert TrainConfig.for_weights(str(weights_file), model_type="disease") == replace(
        PRETRAINED, weights=str(weights_file), model_type="disease"
    )


def test_for_weights_rejects_an_unknown_key_listing_the_valid_ones():
    with pytest.raises(UsageError) as caught:
        TrainConfig.for_weights("none", model_type="pest", lr=0.1)
    assert caught.value.exit_code == 2
    assert "unknown key(s) 'lr'; valid keys are " + ", ".join(field_names()) in str(caught.value)


# --- the check: every number finite and in range ---------------------------------------------------
def test_every_number_of_the_config_has_a_range():
    assert NUMERIC and set(LIMITS) == set(NUMERIC)


def _invalid_values():
    for name, limit in LIMITS.items():
        values = [math.nan, math.inf, -math.inf, -1]
        if limit.low_open or limit.low > 0:
            values.append(0)
        if limit.high is not None:
            values.append(limit.high if limit.high_open else limit.high + 1)
        for value in values:
            yield pytest.param(name, value, id=f"{name}={value}")


@pytest.mark.parametrize(("name", "value"), list(_invalid_values()))
def test_check_rejects_every_invalid_number_naming_the_flag(name, value):
    weights = "imagenet" if name in AUTO_FIELDS and value == AUTO else "none"  # 0 from scratch: AUTO
    cfg = replace(TrainConfig.for_weights(weights, model_type="pest"), **{name: value})
    with pytest.raises(UsageError) as caught:
        cfg.check()
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert message.startswith(f"{flag(name)} {value!r} ")
    assert "must be a whole number" in message or f"must be a finite number {LIMITS[name].text()}" in message


@pytest.mark.parametrize("name", list(LIMITS))
def test_check_accepts_each_numbers_edges(name):
    limit = LIMITS[name]
    kind = next(f.type for f in fields(TrainConfig) if f.name == name)
    low = limit.low + (1e-9 if limit.low_open else 0)
    edges = [low] + ([limit.high - (1e-9 if limit.high_open else 0)] if limit.high is not None else [])
    for edge in edges:
        value = math.ceil(edge) if kind == "int" else edge
        replace(TrainConfig.for_weights("none", model_type="pest"), **{name: value}).check()


@pytest.mark.parametrize(
    ("fields_", "message"),
    [
        ({"model_type": ""}, "no model type (pass --model pest|disease|storage)"),
        ({"model_type": "weeds"}, "unknown model type 'weeds': valid types are pest, disease, storage"),
        ({"arch": "vgg16"}, "unknown backbone 'vgg16': valid backbones are mobilenetv2, resnet50, efficientnetb0"),
        ({"tflite": "fp32"}, "unknown --tflite mode 'fp32': valid modes are float16, int8"),
        ({"weights": "no/such.h5"}, "--weights 'no/such.h5' is neither imagenet, none nor an existing weights file"),
        ({"epochs": 2.5}, "--epochs 2.5 must be a whole number"),
        ({"fast": "yes"}, "--fast 'yes' must be true or false"),
        ({"learning_rate": "1e-3"}, "--lr '1e-3' must be a number"),
        ({"arch": "resnet50", "alpha": 0.75}, "--alpha applies to mobilenetv2 only, not resnet50"),
        ({"weights": "imagenet", "alpha": 0.6}, "--alpha 0.6: Keras has ImageNet weights for MobileNetV2 at widths"),
    ],
)
def test_check_names_and_types(fields_, message):
    preset = "imagenet" if fields_.get("weights") == "imagenet" else "none"  # the scratch preset's AUTO is not
    cfg = replace(TrainConfig.for_weights(preset, model_type="pest"), **fields_)
    with pytest.raises(UsageError) as caught:
        cfg.check()
    assert message in str(caught.value) and caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--lr", "nan"), "--lr nan is out of range: it must be a finite number > 0"),
        (("--lr", "-1"), "--lr -1.0 is out of range: it must be a finite number > 0"),
        (("--lr", "inf"), "--lr inf is out of range"),
        (("--lr", "0"), "--lr 0.0 is out of range"),
        (("--alpha", "-1"), "--alpha -1.0 is out of range: it must be a finite number in (0, 1.4]"),
        (("--alpha", "inf"), "--alpha inf is out of range"),
        (("--dropout", "2"), "--dropout 2.0 is out of range: it must be a finite number in [0, 1)"),
        (("--fine-tune-lr", "-inf"), "--fine-tune-lr -inf is out of range"),
        (("--epochs", "0"), "--epochs 0 is out of range: it must be a finite number >= 1"),
        (("--batch-size", "-8"), "--batch-size -8 is out of range"),
        (("--image-size", "4096"), "--image-size 4096 is out of range: it must be a finite number in [32, 1024]"),
        (("--aug-views", "0"), "--aug-views 0 is out of range"),
        (("--patience", "0"), "--patience 0 is out of range"),
        (("--seed", "-1"), "Invalid value for '--seed'"),  # the CLI's own check, as for every --seed
        (("--tflite", "fp32"), "unknown --tflite mode 'fp32': valid modes are float16, int8"),
    ],
)
def test_cli_rejects_nonsense_before_reading_any_data(cli, workdir, args, message):
    """No store exists here: reading data would exit 1; the check exits 2 first and creates nothing."""
    result = cli("train", "--model", "pest", "--weights", "none", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (workdir / "data").exists() and not (workdir / "models").exists()


def test_cli_needs_a_model_type_from_somewhere(cli):
    result = cli("train", "--weights", "none")
    assert result.exit_code == 2
    assert "no model type (pass --model pest|disease|storage)" in result.stderr


# --- help from the presets --------------------------------------------------------------------------
def test_help_shows_every_default_from_the_presets(cli):
    shown = _one_line(cli("train", "--help", env={"COLUMNS": "250"}).stdout)
    for name in ("epochs", "batch_size", "learning_rate", "alpha"):
        pretrained, scratch = getattr(PRETRAINED, name), getattr(SCRATCH, name)
        scratch = "scaled to the data" if name in AUTO_FIELDS else scratch
        assert f"{flag(name)} " in shown
        assert f"[default: {pretrained}; {scratch} with --weights none]" in shown, name
    for name in ("image_size", "fine_tune_layers", "fine_tune_epochs", "fine_tune_learning_rate", "patience"):
        assert f"[default: {getattr(PRETRAINED, name)}]" in shown, name
    for name in NUMERIC:
        assert f"{flag(name)} " in shown, name
    assert "[mobilenetv2|resnet50|efficientnetb0]" in shown and "[float16|int8]" in shown
    assert "--config" in shown and "--like" in shown


# --- --config FILE ----------------------------------------------------------------------------------
YAML = "model_type: pest\nweights: none\nlearning_rate: 1e-3  # YAML 1.1 reads this as text\nepochs: 3\nseed: 7\n"


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_config_file_in_yaml_or_json_and_flags_win_over_it(settings, workdir, suffix):
    path = workdir / f"run{suffix}"
    data = {"model_type": "pest", "weights": "none", "learning_rate": 1e-3, "epochs": 3, "seed": 7}
    path.write_text(YAML if suffix == ".yaml" else json.dumps(data))
    assert read_config_file(path) == data
    cfg = resolve_config(settings, {"epochs": 9, "model_type": "disease"}, config_file=path)
    assert (cfg.model_type, cfg.epochs) == ("disease", 9)  # flags win
    assert (cfg.learning_rate, cfg.seed, cfg.weights) == (1e-3, 7, "none")  # the file
    assert (cfg.batch_size, cfg.alpha) == (SCRATCH.batch_size, SCRATCH.alpha)  # the preset of the file's weights
    flags_weights = resolve_config(settings, {"weights": "imagenet"}, config_file=path)
    assert flags_weights.batch_size == PRETRAINED.batch_size and flags_weights.learning_rate == 1e-3


def test_config_file_with_an_unknown_key_exits_2_naming_the_valid_keys(cli, workdir):
    (workdir / "run.yaml").write_text("model_type: pest\nlr: 0.01\nepoch: 3\n")
    result = cli("train", "--config", "run.yaml")
    assert result.exit_code == 2
    assert (
        "--config run.yaml: unknown key(s) 'epoch', 'lr'; valid keys are " + ", ".join(field_names())
    ) in result.stderr
    assert not (workdir / "models").exists()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.json", '{"epochs": ', "--config bad.json: not valid JSON"),
        ("bad.yaml", "epochs: [3\n", "--config bad.yaml: not valid YAML"),
        ("list.yaml", "- epochs\n", "--config list.yaml: must hold a mapping of TrainConfig fields, not list"),
        ("nan.json", '{"model_type": "pest", "learning_rate": NaN}', "--lr nan is out of range"),
        ("nan.yaml", "model_type: pest\ndropout: .nan\n", "--dropout nan is out of range"),
    ],
)
def test_bad_config_files_exit_2(cli, workdir, name, text, message):
    (workdir / name).write_text(text)
    result = cli("train", "--config", name)
    assert result.exit_code == 2 and message in result.stderr


def test_a_missing_config_file_and_config_with_like_exit_2(cli, workdir):
    missing = cli("train", "--config", "nope.yaml")
    assert missing.exit_code == 2 and "--config nope.yaml: cannot read it" in missing.stderr
    (workdir / "run.yaml").write_text("model_type: pest\n")
    both = cli("train", "--config", "run.yaml", "--like", "some-run")
    assert both.exit_code == 2 and "--config and --like both give a whole config" in both.stderr


def test_min_per_class_flag_over_file_over_the_setting(workdir, monkeypatch):
    monkeypatch.setenv("AGROML_MIN_PER_CLASS", "7")
    settings = config.resolve(env_file=None)
    assert resolve_config(settings, {"model_type": "pest"}).min_per_class == 7
    (workdir / "run.json").write_text('{"model_type": "pest", "min_per_class": 3}')
    assert resolve_config(settings, {}, config_file=workdir / "run.json").min_per_class == 3
    assert resolve_config(settings, {"min_per_class": 5}, config_file=workdir / "run.json").min_per_class == 5


# --- --like RUN_ID ----------------------------------------------------------------------------------
def _recorded(**fields_) -> dict:
    cfg = replace(TrainConfig.for_weights("none", model_type="storage", min_per_class=4), **fields_)
    return {"run_id": "r1", **{n: getattr(cfg, n) for n in field_names()}, "classes": ["a", "b"], "counts": {}}


def test_like_reads_a_runs_config_json_and_flags_win(settings):
    folder = settings.models_dir / "storage" / "r1"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(_recorded(epochs=5, seed=3, tflite="int8")))
    with Registry(settings.models_dir) as registry, registry.start("storage", "r1", "mobilenetv2", {}) as handle:
        handle.finish("succeeded", path=folder)
    cfg = resolve_config(settings, {"seed": 11}, like="r1")
    assert (cfg.model_type, cfg.epochs, cfg.seed, cfg.tflite, cfg.min_per_class) == ("storage", 5, 11, "int8", 4)
    assert resolve_config(settings, {}, like=str(folder)) == replace(cfg, seed=3)  # a run folder's path works too
    assert set(run_config(settings, "r1")) == set(field_names())  # classes, counts... are not settings


def test_like_a_run_that_left_no_folder_uses_the_registrys_record(settings):
    recorded = _recorded(model_type="pest", learning_rate=2.0)
    with Registry(settings.models_dir) as registry, registry.start("pest", "r2", "mobilenetv2", recorded) as handle:
        handle.finish("failed", error="TrainingError: diverged")
    assert resolve_config(settings, {"learning_rate": 0.2}, like="r2").epochs == SCRATCH.epochs
    assert run_config(settings, "r2")["learning_rate"] == 2.0


def test_like_an_older_runs_null_defaults_fall_back_to_the_preset(settings, workdir):
    (workdir / "old").mkdir()
    (workdir / "old" / "config.json").write_text(
        json.dumps({"model_type": "pest", "weights": "none", "patience": None, "min_per_class": None, "tflite": None})
    )
    cfg = resolve_config(settings, {}, like=str(workdir / "old"))
    assert (cfg.patience, cfg.min_per_class, cfg.tflite) == (SCRATCH.patience, settings.min_per_class, None)


def test_like_an_unknown_run_exits_2(cli):
    result = cli("train", "--like", "20200101T000000Z-mobilenetv2")
    assert result.exit_code == 2
    assert "--like 20200101T000000Z-mobilenetv2: no run with that id and no run folder there" in result.stderr


def test_run_config_and_config_file_are_plain_mappings(workdir):
    (workdir / "empty.yaml").write_text("")
    assert read_config_file(Path("empty.yaml")) == {}
