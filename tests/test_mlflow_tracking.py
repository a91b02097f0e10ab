"""Optional MLflow tracking (agroml/lifecycle/tracking.py) against a real local MLflow file store.

- a tiny demo training appears in MLflow with its settings, per-epoch and test metrics, its files and
  a registered model version; `agroml promote` points the `production` alias at it and moves it on;
- a tracking server that is down costs a warning, never the run or the promotion;
- without MLFLOW_TRACKING_URI (or without mlflow) nothing is tracked and mlflow is never imported.
The MLflow tests are skipped, saying why, where the mlflow extra is not installed.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from model_helpers import write_run

from agroml.core import config
from agroml.demo import rows as demo
from agroml.lifecycle import tracking

needs_mlflow = pytest.mark.skipif(
    not tracking.installed(), reason="mlflow is not installed: pip install -e '.[mlflow]' to run the MLflow tests"
)


@pytest.fixture
def store_uri(workdir, monkeypatch) -> str:
    """A local MLflow file store in the test's folder (MLflow 3 asks for MLFLOW_ALLOW_FILE_STORE to use one)."""
    uri = (workdir / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return uri


@needs_mlflow
def test_a_demo_training_is_tracked_and_promotion_sets_the_production_alias(cli, workdir, store_uri, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("AGROML_MIN_TOTAL", "12")
    demo.generate(config.resolve(env_file=None), ["pest"], n=60, seed=0)
    (workdir / "tiny.yaml").write_text("run_eagerly: true\nmin_per_class: 4\nbatch_size: 16\n")
    args = ("train", "--model", "pest", "--weights", "none", "--image-size", "32", "--epochs", "2")
    trained = cli(*args, "--config", "tiny.yaml", "--json")
    assert trained.exit_code == 0, trained.stderr
    assert "MLflow" not in trained.stderr  # no warning: it worked
    run_id = json.loads(trained.stdout)["run_id"]
    folder = Path(json.loads(trained.stdout)["path"])

    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("agroml-pest")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id], filter_string=f"tags.`agroml.run_id` = '{run_id}'")
    assert run.info.status == "FINISHED" and run.info.run_name == run_id
    assert run.data.params["epochs"] == "2" and run.data.params["weights"] == "none"
    assert run.data.params["augmentation.rotation_turns"] == "0.5"
    history = list(csv.DictReader((folder / "history.csv").open()))
    logged = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in logged] == [int(r["epoch"]) for r in history] == [1, 2]
    assert [m.value for m in logged] == pytest.approx([float(r["loss"]) for r in history])
    saved = json.loads((folder / "metrics.json").read_text())
    for split in ("val", "test"):
        assert run.data.metrics[f"{split}_accuracy"] == pytest.approx(saved[split]["accuracy"])
        assert run.data.metrics[f"{split}_macro_f1"] == pytest.approx(saved[split]["macro_f1"])
    for cls, row in saved["test"]["per_class"].items():
        assert run.data.metrics[f"test_f1.{cls}"] == pytest.approx(row["f1"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {p.name for p in folder.iterdir()} == artifacts  # every file and folder (tensorboard/) of the run

    promoted = cli("promote", run_id, "--model", "pest", "--json")
    assert promoted.exit_code == 0, promoted.stderr
    version = client.get_model_version_by_alias("agroml-pest", "production")
    assert version.tags["agroml_run_id"] == run_id and version.run_id == run.info.run_id

    # a later run promoted: the alias moves to its version
    other = write_run(workdir / "models", "pest", "20300101T000000Z-tiny", ["red", "green"], {"test": []})
    assert tracking.log_run(other) == []
    # --force: a hand-made run with no rows to compare on would be refused by the gate (test_gate.py's job)
    assert cli("promote", other.name, "--model", "pest", "--force").exit_code == 0
    moved = client.get_model_version_by_alias("agroml-pest", "production")
    assert moved.tags["agroml_run_id"] == other.name and int(moved.version) == int(version.version) + 1


@needs_mlflow
def test_a_server_that_is_down_is_a_warning_and_the_promotion_still_happens(cli, workdir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    folder = write_run(workdir / "models", "pest", "r1", ["red", "green"], {"test": []})
    [warning] = tracking.log_run(folder)
    assert warning.startswith("MLflow tracking at http://127.0.0.1:9 failed (logging run r1):")
    assert "the local run and registry are unaffected" in warning
    result = cli("promote", "r1", "--model", "pest", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["run_id"] == "r1" and (workdir / "models/pest/production/model.keras").is_file()
    assert "failed (setting the production alias of r1)" in result.stderr


@needs_mlflow
def test_promoting_a_run_mlflow_never_saw_says_so(cli, workdir, store_uri):
    write_run(workdir / "models", "pest", "old", ["red", "green"], {"test": []})
    result = cli("promote", "old", "--model", "pest")
    assert result.exit_code == 0, result.stderr
    assert "run old is not in MLflow's registered model agroml-pest" in result.stderr


_NOTHING_TRACKED = """
import sys
from pathlib import Path
import agroml.cli.main, agroml.training.run, agroml.lifecycle.promotion
from agroml.lifecycle import tracking
assert tracking.log_run(Path(sys.argv[1])) == {expected!r}
assert tracking.set_production_alias("pest", "r1") == {expected!r}
assert "mlflow" not in sys.modules, "mlflow was imported"
"""


def test_without_the_uri_nothing_is_tracked_or_imported(workdir):
    folder = write_run(workdir / "models", "pest", "r1", ["red", "green"], {"test": []}, register=False)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    code = _NOTHING_TRACKED.format(expected=[])
    done = subprocess.run([sys.executable, "-c", code, str(folder)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (workdir / "mlruns").exists()


def test_with_the_uri_but_without_mlflow_a_warning_says_what_to_install(workdir):
    folder = write_run(workdir / "models", "pest", "r1", ["red", "green"], {"test": []}, register=False)
    env = {**os.environ, "MLFLOW_TRACKING_URI": (workdir / "mlruns").as_uri()}
    warning = "MLFLOW_TRACKING_URI is set but mlflow is not installed: not tracked (pip install 'agroml[mlflow]')"
    code = "import sys; sys.modules['mlflow'] = None\n" + _NOTHING_TRACKED.format(expected=[warning]).replace(
        'assert "mlflow" not in sys.modules', 'assert sys.modules["mlflow"] is None'
    )
    done = subprocess.run([sys.executable, "-c", code, str(folder)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (workdir / "mlruns").exists()
