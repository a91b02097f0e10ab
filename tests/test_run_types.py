"""A run's model type is its own (config.json, else its registry row, else its models/<type>/ folder), never
the --model flag's: promote, evaluate and predict refuse a run of another type by path or by id (exit 2,
naming both types), whether or not the other type has a folder yet."""

from __future__ import annotations

import json
import shutil

import pytest
from model_helpers import color_png, write_run

from agroml.core import config
from agroml.core.errors import UsageError
from agroml.lifecycle.promotion import promote, recorded_model_type, resolve_run
from agroml.lifecycle.registry import Registry

SPLIT = {"train": [], "val": [], "test": []}
WRONG = "error: run p1 is a pest model, not disease (use --model pest)"


@pytest.fixture
def settings(workdir):
    return config.resolve(env_file=None)


def _commands(ref: str, image: str) -> dict[str, tuple[str, ...]]:
    return {
        "promote": ("promote", ref, "--model", "disease"),
        "evaluate": ("evaluate", ref, "--model", "disease"),
        "predict": ("predict", image, "--model", "disease", "--run", ref),
    }


@pytest.mark.parametrize("disease_folder", [False, True], ids=["no-disease-folder", "disease-folder"])
@pytest.mark.parametrize("by", ["path", "id"])
@pytest.mark.parametrize("command", ["promote", "evaluate", "predict"])
def test_a_pest_run_is_not_a_disease_model(cli, workdir, settings, command, by, disease_folder):
    write_run(settings.models_dir, "pest", "p1", ["red", "green"], SPLIT)
    if disease_folder:
        write_run(settings.models_dir, "disease", "d1", ["red", "blue"], SPLIT)
    (workdir / "leaf.png").write_bytes(color_png("red"))
    ref = "models/pest/p1" if by == "path" else "p1"
    result = cli(*_commands(ref, "leaf.png")[command])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == WRONG
    assert (workdir / "models" / "disease").exists() == disease_folder  # nothing made for the wrong type
    assert not list((workdir / "models").glob("*/production"))
    assert not list((workdir / "models" / "pest" / "p1").glob("eval_*"))


def test_the_type_comes_from_the_registry_or_the_folder_when_config_json_has_none(settings):
    registered = write_run(settings.models_dir, "pest", "old", ["red", "green"], SPLIT)
    unregistered = write_run(settings.models_dir, "storage", "loose", ["red", "green"], SPLIT, register=False)
    for folder in (registered, unregistered):  # written by an agroml that kept no model_type in config.json
        cfg = json.loads((folder / "config.json").read_text())
        del cfg["model_type"]
        (folder / "config.json").write_text(json.dumps(cfg))
    with Registry(settings.models_dir) as registry:
        assert recorded_model_type(registered, registry) == "pest"
        assert recorded_model_type(unregistered, registry) == "storage"
        with pytest.raises(UsageError, match="run old is a pest model, not storage"):
            resolve_run(registry, "storage", str(registered))
        with pytest.raises(UsageError, match="run loose is a storage model, not pest"):
            resolve_run(registry, "pest", "models/storage/loose")
        assert resolve_run(registry, "storage", "loose") == settings.models_dir / "storage" / "loose"


def test_the_same_run_id_in_two_types_is_two_runs(cli, settings):
    write_run(settings.models_dir, "pest", "same", ["red", "green"], SPLIT)
    write_run(settings.models_dir, "disease", "same", ["red", "blue"], SPLIT)
    result = cli("promote", "same", "--model", "disease", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "model_type": "disease",
        "run_id": "same",
        "path": "models/disease/production",
        "source": "models/disease/same",
        "previous_run_id": None,
        "archived_to": None,
        "promoted": True,
        "refused": False,
        "noop": False,
        "forced": False,
        "champion_run_id": None,
        "comparison": None,
        "reason": "first production model: no gate",
        "recovered": None,
        "published": None,
    }
    assert json.loads((settings.models_dir / "disease/production/labels.json").read_text()) == ["red", "blue"]


def test_a_folder_from_elsewhere_is_promoted_as_the_flag_says_with_a_warning(cli, workdir, settings):
    folder = write_run(settings.models_dir, "pest", "ext", ["red", "green"], SPLIT, register=False)
    outside = shutil.move(folder, workdir / "handed-over")
    cfg = json.loads((workdir / "handed-over" / "config.json").read_text())
    del cfg["model_type"]
    (workdir / "handed-over" / "config.json").write_text(json.dumps(cfg))
    result = cli("promote", str(outside), "--model", "disease")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "promoted ext to models/disease/production"
    assert "warning: " in result.stderr and "records no model type" in result.stderr
    with Registry(settings.models_dir) as registry:
        assert registry.production_run_id("disease") == "ext"
        again = promote(registry, "disease", str(outside), settings=settings)
    # the same run again: nothing to do (it used to archive a copy of itself), still with the warning
    assert again.noop and not again.promoted and again.warnings and again.archived_to is None
