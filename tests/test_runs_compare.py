"""`agroml runs --compare`: two real demo runs with different settings and more data show exactly the
changed settings, the data difference and both runs' metrics; bad references are clear errors.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from agroml.core import config
from agroml.data.store import Store
from agroml.demo import rows as demo
from agroml.lifecycle.comparison import NOT_SETTINGS, differing, flatten

TINY = ("train", "--model", "pest", "--weights", "none", "--image-size", "32", "--min-per-class", "4", "--json")


def _train(cli, *flags: str) -> Path:
    result = cli(*TINY, "--config", "tiny.yaml", *flags)
    assert result.exit_code == 0, result.stderr
    return Path(json.loads(result.stdout)["path"])


@pytest.fixture
def two_demo_runs(cli, workdir, monkeypatch):
    """Run A on 60 demo rows; run B with three settings changed, after 40 more demo rows arrived."""
    monkeypatch.setenv("AGROML_MIN_TOTAL", "12")
    settings = config.resolve(env_file=None)
    demo.generate(settings, ["pest"], n=60, seed=0)
    (workdir / "tiny.yaml").write_text("run_eagerly: true\n")
    a = _train(cli, "--epochs", "1", "--batch-size", "8", "--no-tensorboard")
    demo.generate(settings, ["pest"], n=40, seed=1)  # ids are uuid5(seed, type, index): all new rows
    b = _train(cli, "--epochs", "2", "--batch-size", "16", "--dropout", "0.3", "--no-tensorboard")
    return a, b


def test_compare_two_demo_runs_shows_exactly_the_changed_settings_and_the_new_data(cli, two_demo_runs):
    a, b = two_demo_runs
    result = cli("runs", "--compare", a.name, str(b), "--json")  # a run id and a run folder
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["run_ids"] == [a.name, b.name]
    for folder in (a, b):  # trained with --no-tensorboard: no logs, and the choice recorded
        assert not (folder / "tensorboard").exists() and not list(folder.rglob("*tfevents*"))
        assert json.loads((folder / "config.json").read_text())["tensorboard"] is False
    # exactly the three flags that differ, and the learning rate the from-scratch schedule scaled with the
    # batch size: not the run id, the data keys, the schedule's record of its choice or the package versions
    lr = [json.loads((f / "config.json").read_text())["learning_rate"] for f in (a, b)]
    assert lr[0] < lr[1]  # 5e-3 x sqrt(batch / 16): batch 8 < batch 16
    assert out["settings"] == {"epochs": [1, 2], "batch_size": [8, 16], "dropout": [0.2, 0.3], "learning_rate": lr}
    assert set(out["not_compared"]) == set(NOT_SETTINGS)

    split_a = json.loads((a / "split.json").read_text())
    split_b = json.loads((b / "split.json").read_text())
    ids_a = {i for ids in split_a.values() for i in ids}
    ids_b = {i for ids in split_b.values() for i in ids}
    seed1 = {str(uuid.uuid5(demo._NAMESPACE, f"1:pest:{i}")) for i in range(40)}
    data = out["data"]
    cfg_a, cfg_b = (json.loads((f / "config.json").read_text()) for f in (a, b))
    assert data["fingerprints"] == [cfg_a["data_fingerprint"], cfg_b["data_fingerprint"]]
    assert data["same_data"] == [True, False]
    assert [r["total"] for r in data["rows"]] == [len(ids_a), len(ids_b)]
    with Store(config.resolve(env_file=None).db_path, create=False) as store:
        frame = store.read("pest", valid_only=True, columns=["id", "label"])
    label = dict(zip(frame["id"], frame["label"], strict=True))
    new = ids_b - ids_a
    assert new & seed1  # the new demo rows, and older rows of a class run A left out (under the minimum)
    assert {label[i] for i in new - seed1} <= set(cfg_a["dropped_classes"])
    assert data["rows_added"] == [0, len(ids_b - ids_a)] and data["rows_removed"] == [0, 0]
    assert data["rows_more"] == [0, len(ids_b) - len(ids_a)]
    assert data["same_test_split"][0] is True

    metrics = [json.loads((f / "metrics.json").read_text()) for f in (a, b)]
    for split in ("val", "test"):
        for name in ("accuracy", "macro_f1", "top3_accuracy", "n"):
            assert out["metrics"][split][name] == [m[split][name] for m in metrics]
    classes = list(dict.fromkeys([*metrics[0]["test"]["per_class"], *metrics[1]["test"]["per_class"]]))
    assert list(out["per_class_f1"]) == classes
    for c in classes:
        assert out["per_class_f1"][c] == [m["test"]["per_class"].get(c, {}).get("f1") for m in metrics]

    text = cli("runs", "--compare", a.name, b.name)
    assert text.exit_code == 0, text.stderr
    for word in ("settings that differ", "epochs", "batch_size", "dropout", "rows more", "test macro_f1"):
        assert word in text.stdout
    assert "seed" not in text.stdout.split("data")[0]  # unchanged settings are not listed


def test_run_id_versions_and_data_keys_are_not_settings(cli, workdir):
    """Two folders whose config.json differ only in what NOT_SETTINGS names: no setting differs."""
    from agroml.lifecycle.registry import Registry

    Registry(workdir / "models").close()
    common = {"epochs": 3, "augmentation": {"zoom": 0.1}}
    _folder(workdir / "models", "r1", **common, versions={"keras": "3.1"}, data_fingerprint="f1", classes=["a"])
    _folder(workdir / "models", "r2", **common, versions={"keras": "3.2"}, data_fingerprint="f2", classes=["a", "b"])
    result = cli("runs", "--compare", "r1", "r2", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["settings"] == {}
    assert out["versions"] == {"keras": ["3.1", "3.2"]}
    assert out["data"]["same_data"] == [True, False] and out["data"]["classes"] == [["a"], ["a", "b"]]
    assert "no readable metrics.json" in result.stderr
    text = cli("runs", "--compare", "r1", "r2")
    assert "settings: the same" in text.stdout and "package versions differ: keras 3.1 / 3.2" in text.stderr


def test_flatten_and_differing_keep_nested_keys_and_treat_a_missing_key_as_none():
    flat = [flatten({"a": 1, "aug": {"zoom": 0.1, "turns": 0.5}, "l": [1, 2]}), flatten({"a": 1, "aug": {"zoom": 0.2}})]
    assert flat[0] == {"a": 1, "aug.zoom": 0.1, "aug.turns": 0.5, "l": [1, 2]}
    assert differing(flat) == {"aug.zoom": [0.1, 0.2], "aug.turns": [0.5, None], "l": [[1, 2], None]}
    assert differing([{"x": 1}, {"x": 1}]) == {}


def _folder(models: Path, run_id: str, **config) -> Path:
    folder = models / "pest" / run_id
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"run_id": run_id, "model_type": "pest", **config}))
    return folder


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("runs", "--compare", "r1"), 2, "--compare needs at least two runs, got 1"),
        (("runs", "--compare"), 2, "--compare needs at least two runs, got 0"),
        (("runs", "r1", "r2"), 2, "unexpected run ids r1 r2"),
        (("runs", "--compare", "r1", "nope"), 1, "no run or run folder named 'nope'"),
        (("runs", "--compare", "r1", "models/pest/r1"), 2, "are the same run"),
        (("runs", "--compare", "r1", "r2", "--model", "disease"), 1, "no disease run"),
    ],
)
def test_bad_references_are_clear_errors(cli, workdir, args, code, message):
    from agroml.lifecycle.registry import Registry

    Registry(workdir / "models").close()
    _folder(workdir / "models", "r1", epochs=1)
    _folder(workdir / "models", "r2", epochs=2)
    result = cli(*args)
    assert result.exit_code == code, result.output
    assert message in result.stderr
