"""`agroml runs`, `agroml status` and `agroml promote` through the CLI, on a real registry."""

from __future__ import annotations

import json
import signal

import pytest
from model_helpers import TRAIN_ARGS, has_train_command, start_training, wait_until_training, write_run

from agroml.core import config
from agroml.lifecycle.promotion import promote
from agroml.lifecycle.registry import Registry


def test_empty_history_and_nothing_running(cli, workdir):
    assert json.loads(cli("runs", "--json").stdout) == []
    assert json.loads(cli("status", "--json").stdout) == {"running": []}
    status = cli("status")
    assert status.exit_code == 0 and status.stdout.strip() == "no training running"
    runs = cli("runs")
    assert runs.exit_code == 0 and runs.stdout == "" and "agroml train" in runs.stderr
    assert not (workdir / "models").exists()  # reading commands write nothing


def test_status_shows_epoch_of_total_the_phase_and_the_time_left(cli, workdir, sleeper):
    settings = config.resolve(env_file=None)
    with Registry(settings.models_dir) as registry:
        run = registry.start("pest", "20260301T101500Z-mobilenetv2", "mobilenetv2", {}, pid=sleeper.pid)
        run.update(
            17, {"loss": 0.5}, phase="scratch", phase_epoch=17, phase_epochs=150, total_epochs=150, seconds_left=725
        )
    (row,) = json.loads(cli("status", "--json").stdout)["running"]
    assert {k: row[k] for k in ("epoch", "total_epochs", "phase", "phase_epoch", "phase_epochs", "seconds_left")} == {
        "epoch": 17,
        "total_epochs": 150,
        "phase": "scratch",
        "phase_epoch": 17,
        "phase_epochs": 150,
        "seconds_left": 725.0,
    }
    assert 700 < row["seconds_left_now"] <= 725  # the estimate less the seconds since it was recorded
    assert "epoch 17/150 (scratch 17/150), ~13m left: loss 0.500" in cli("status").stdout


def test_status_shows_the_running_run_with_epoch_and_metrics(cli, workdir, sleeper):
    settings = config.resolve(env_file=None)
    with Registry(settings.models_dir) as registry:
        run = registry.start("pest", "20260301T101500Z-mobilenetv2", "mobilenetv2", {"epochs": 10}, pid=sleeper.pid)
        run.update(3, {"loss": 0.52, "val_accuracy": 0.81})
    data = json.loads(cli("status", "--json").stdout)["running"]
    assert len(data) == 1
    assert {k: data[0][k] for k in ("run_id", "model_type", "state", "epoch", "pid")} == {
        "run_id": "20260301T101500Z-mobilenetv2",
        "model_type": "pest",
        "state": "running",
        "epoch": 3,
        "pid": sleeper.pid,
    }
    assert data[0]["metrics"] == {"loss": 0.52, "val_accuracy": 0.81}
    text = cli("status").stdout
    assert f"pest run 20260301T101500Z-mobilenetv2 (mobilenetv2), pid {sleeper.pid}" in text
    assert "epoch 3: loss 0.520, val_accuracy 0.810" in text
    # the process dies without a word: status and runs say interrupted
    sleeper.kill()
    sleeper.wait()
    assert cli("status").stdout.strip() == "no training running"
    (row,) = json.loads(cli("runs", "--json").stdout)
    assert row["state"] == "interrupted"


def test_runs_table_and_json_list_the_history(cli, workdir):
    settings = config.resolve(env_file=None)
    split = {"train": [], "val": [], "test": []}
    write_run(
        settings.models_dir,
        "pest",
        "run-a",
        ["red", "green"],
        split,
        metrics={"test": {"accuracy": 0.875, "macro_f1": 0.8125}},
    )
    write_run(settings.models_dir, "disease", "run-b", ["red", "blue"], split)
    with Registry(settings.models_dir) as registry:
        registry.start("pest", "run-c", "resnet50", {}).finish("failed", error="TrainingError: no data")
    rows = json.loads(cli("runs", "--json").stdout)
    assert [r["run_id"] for r in rows] == ["run-c", "run-b", "run-a"]
    assert set(rows[0]) >= {
        "run_id",
        "model_type",
        "arch",
        "state",
        "started_at",
        "ended_at",
        "duration_s",
        "metrics",
        "path",
        "pid",
        "host",
        "production",
    }
    assert rows[2]["metrics"]["test"]["accuracy"] == 0.875
    pest = json.loads(cli("runs", "--model", "pest", "--json").stdout)
    assert [r["run_id"] for r in pest] == ["run-c", "run-a"]
    table = cli("runs", "--model", "pest").stdout
    assert "run-a" in table and "0.875" in table and "0.812" in table and "failed" in table
    assert "run-b" not in table


def test_promote_then_promote_again_archives_and_marks_production(cli, workdir):
    settings = config.resolve(env_file=None)
    split = {"train": [], "val": [], "test": []}
    for run_id in ("run-a", "run-b"):
        write_run(settings.models_dir, "pest", run_id, ["red", "green"], split)
    first = cli("promote", "run-a", "--model", "pest")
    assert first.exit_code == 0 and "promoted run-a to models/pest/production" in first.stdout
    second = cli("promote", "run-b", "--model", "pest", "--json", "--force")  # no rows to compare on: forced
    data = json.loads(second.stdout)
    assert data["previous_run_id"] == "run-a" and data["archived_to"] == "models/pest/archive/run-a"
    assert (workdir / "models/pest/archive/run-a/model.keras").is_file()
    assert json.loads((workdir / "models/pest/production/PROMOTED.json").read_text())["run_id"] == "run-b"
    runs = {r["run_id"]: r["production"] for r in json.loads(cli("runs", "--json").stdout)}
    assert runs == {"run-a": False, "run-b": True}
    assert "succeeded production" in cli("runs").stdout


def test_promote_unknown_run_fails_with_a_hint(cli, workdir):
    result = cli("promote", "nope", "--model", "pest")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: no pest run, production model or model folder named 'nope' (list runs with `agroml runs`)"
    )
    assert not (workdir / "models/pest/production").exists()


# --- the real `agroml train`, killed -------------------------------------------------------------------
@pytest.fixture
def training_env(demo_data, monkeypatch):
    """The demo store (27 labelled pest rows) with thresholds low enough to train on it."""
    if not has_train_command():
        pytest.skip("`agroml train` is not registered in this build")
    monkeypatch.setenv("AGROML_MIN_TOTAL", "10")
    monkeypatch.setenv("AGROML_MIN_PER_CLASS", "3")
    return demo_data


def test_second_training_refused_then_sigkill_leaves_interrupted_and_production_untouched(cli, workdir, training_env):
    models = training_env.models_dir
    write_run(models, "pest", "prod-run", ["red", "green"], {"train": [], "val": [], "test": []})
    with Registry(models) as registry:
        promote(registry, "pest", "prod-run", settings=training_env)
    production = models / "pest" / "production"
    before = {p.name: p.read_bytes() for p in production.iterdir()}

    proc = start_training(workdir)
    try:
        run_id = wait_until_training(workdir, models, proc)
        second = cli(*TRAIN_ARGS)
        assert second.exit_code == 1
        assert f"error: a pest training is already running: run {run_id} (pid {proc.pid} on " in second.stderr
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert cli("status").stdout.strip() == "no training running"
    runs = {r["run_id"]: r for r in json.loads(cli("runs", "--json").stdout)}
    assert runs[run_id]["state"] == "interrupted"
    assert len(runs) == 2  # the refused second training left no row
    assert not (models / "pest" / run_id).exists()  # no half-written model where a finished one would be
    assert {p.name: p.read_bytes() for p in production.iterdir()} == before
    assert Registry(models).production_run_id("pest") == "prod-run"


def test_sigterm_stops_training_cleanly_as_interrupted(cli, workdir, training_env):
    models = training_env.models_dir
    proc = start_training(workdir)
    try:
        run_id = wait_until_training(workdir, models, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=300) == 130, (workdir / "train.out").read_text(errors="replace")[-2000:]
    finally:
        proc.kill()
        proc.wait()
    (run,) = json.loads(cli("runs", "--json").stdout)
    assert (run["run_id"], run["state"], run["error"]) == (run_id, "interrupted", "interrupted (Ctrl-C or SIGTERM)")
    assert not (models / "pest" / run_id).exists()
    assert not list((models / "pest").glob(".*.partial"))  # the unwinding removed its partial folder
