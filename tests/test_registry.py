"""The run registry: states, one training per model type, dead processes, signals, promotion."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agroml.core.config import Settings
from agroml.core.errors import ModelNotFoundError, OutputError, RunBusyError, UsageError
from agroml.lifecycle.promotion import PromotionResult, promote, resolve_run
from agroml.lifecycle.registry import Registry, _proc_start, pid_alive


@pytest.fixture
def registry(tmp_path: Path):
    with Registry(tmp_path / "models") as reg:
        yield reg


def test_start_update_finish_round_trip_with_numpy_values(registry):
    handle = registry.start("pest", "r1", "mobilenetv2", {"epochs": np.int64(5), "lr": np.float32(0.001)})
    handle.update(np.int64(2), {"loss": np.float32(0.5), "val_accuracy": np.float64(0.75), "bad": float("nan")})
    (running,) = registry.status()
    assert (running.run_id, running.state, running.epoch, running.pid) == ("r1", "running", 2, os.getpid())
    assert running.metrics == {"loss": 0.5, "val_accuracy": 0.75, "bad": None}
    assert running.config == {"epochs": 5, "lr": pytest.approx(0.001)}
    handle.finish("succeeded", metrics={"test": {"accuracy": np.float64(0.9), "macro_f1": 0.8}}, path="models/x")
    run = registry.get("r1")
    assert run.state == "succeeded" and run.ended_at is not None and run.path == "models/x"
    assert run.test_metric("accuracy") == 0.9 and run.test_metric("macro_f1") == 0.8
    assert registry.status() == []
    json.dumps(run.to_dict())  # plain JSON all the way down


def test_second_training_of_same_type_is_refused_naming_run_and_pid(registry, sleeper):
    registry.start("pest", "first", "mobilenetv2", {}, pid=sleeper.pid)
    with pytest.raises(RunBusyError) as err:
        registry.start("pest", "second", "resnet50", {})
    assert err.value.exit_code == 1
    assert str(err.value).startswith(f"a pest training is already running: run first (pid {sleeper.pid} on ")
    assert "`agroml status`" in str(err.value)
    assert [r.run_id for r in registry.runs("pest")] == ["first"]  # the refused one left no row
    registry.start("disease", "other-type", "mobilenetv2", {})  # another model type is free


def test_run_whose_process_is_gone_is_interrupted_and_does_not_block(registry):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    registry.start("pest", "ghost", "mobilenetv2", {}, pid=dead.pid)
    assert registry.status() == []  # status reaps it
    ghost = registry.get("ghost")
    assert ghost.state == "interrupted" and "ended without finishing" in ghost.error
    registry.start("pest", "next", "mobilenetv2", {})
    assert registry.get("next").state == "running"


def test_killed_but_unreaped_process_counts_as_dead(registry):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        registry.start("pest", "zombie", "mobilenetv2", {}, pid=proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        for _ in range(200):  # wait until the kernel has made it a zombie (no wait(): it stays one)
            if not pid_alive(proc.pid):
                break
            threading.Event().wait(0.02)
        assert [r.run_id for r in registry.status()] == []
        assert registry.get("zombie").state == "interrupted"
    finally:
        proc.wait()


def test_a_reused_pid_is_told_from_the_process_that_registered(registry, sleeper):
    """psutil's creation time: the same pid with another start time is another process (pid reuse);
    a start time in clock ticks (registries written before psutil) is not compared."""
    started = _proc_start(sleeper.pid)
    assert started is not None and abs(started / 1000 - time.time()) < 3600
    assert pid_alive(sleeper.pid, started)
    assert not pid_alive(sleeper.pid, started - 60_000)  # a process created a minute earlier with this pid
    assert pid_alive(sleeper.pid, 12_345)  # old clock-tick value: only the pid is checked
    registry.start("pest", "recycled", "mobilenetv2", {}, pid=sleeper.pid)
    registry.con.execute("UPDATE runs SET pid_start = pid_start - 60000 WHERE run_id = 'recycled'")
    assert registry.status() == [] and registry.get("recycled").state == "interrupted"


def test_run_on_another_host_blocks_until_stale(tmp_path):
    with Registry(tmp_path / "models") as elsewhere:
        elsewhere.host = "other-machine"
        elsewhere.start("pest", "remote", "mobilenetv2", {}, pid=999_999)
    with (
        Registry(tmp_path / "models") as here,
        pytest.raises(RunBusyError, match="run remote \\(pid 999999 on other-machine"),
    ):
        here.start("pest", "local", "mobilenetv2", {})
    with Registry(tmp_path / "models", stale_seconds=0) as impatient:
        impatient.start("pest", "local", "mobilenetv2", {})
        assert impatient.get("remote").state == "interrupted"


def test_concurrent_starts_admit_exactly_one(tmp_path, sleeper):
    Registry(tmp_path / "models").close()
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def contender(i: int) -> None:
        with Registry(tmp_path / "models") as reg:
            barrier.wait()
            try:
                reg.start("pest", f"run{i}", "mobilenetv2", {}, pid=sleeper.pid)
                outcomes.append("started")
            except RunBusyError:
                outcomes.append("busy")

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["busy"] * 5 + ["started"]


@pytest.mark.parametrize(
    ("raised", "state"), [(None, "succeeded"), (KeyboardInterrupt, "interrupted"), (RuntimeError, "failed")]
)
def test_context_manager_records_the_outcome(registry, raised, state):
    try:
        with registry.start("pest", "ctx", "mobilenetv2", {}) as run:
            run.update(1, {"loss": 1.0})
            if raised:
                raise raised("boom")
    except (KeyboardInterrupt, RuntimeError):
        pass
    got = registry.get("ctx")
    assert got.state == state
    assert got.ended_at is not None
    if raised is RuntimeError:
        assert got.error == "RuntimeError: boom"


def test_sigterm_inside_a_run_becomes_interrupted_and_handler_is_restored(registry):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), registry.start("pest", "term", "mobilenetv2", {}):
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # the handler runs between bytecodes, at once in practice
            threading.Event().wait(0.01)
    assert registry.get("term").state == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is before


def test_explicit_finish_wins_over_context_exit(registry):
    with registry.start("pest", "explicit", "mobilenetv2", {}) as run:
        run.finish("failed", error="bad data")
    assert registry.get("explicit").state == "failed"
    with pytest.raises(UsageError):
        run.finish("running")


def test_runs_are_newest_first_and_filtered_by_type(registry):
    for model_type, run_id in (("pest", "a"), ("disease", "b"), ("pest", "c")):
        registry.start(model_type, run_id, "mobilenetv2", {}).finish("succeeded")
    assert [r.run_id for r in registry.runs()] == ["c", "b", "a"]
    assert [r.run_id for r in registry.runs("pest")] == ["c", "a"]


def test_resolve_unknown_run_points_to_agroml_runs(registry):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_run(registry, "pest", "nope")
    assert str(err.value) == (
        "no pest run, production model or model folder named 'nope' (list runs with `agroml runs`)"
    )
    with pytest.raises(ModelNotFoundError, match="no succeeded pest run"):
        resolve_run(registry, "pest")
    with pytest.raises(ModelNotFoundError, match="no production pest model"):
        resolve_run(registry, "pest", "production")


def _fake_run(models: Path, run_id: str) -> Path:
    folder = models / "pest" / run_id
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"model of " + run_id.encode())
    (folder / "labels.json").write_text('["a", "b"]')
    (folder / "config.json").write_text(json.dumps({"run_id": run_id}))
    return folder


def test_promote_copies_then_archives_the_previous_production(registry):
    models = registry.models_dir
    for run_id in ("r1", "r2"):
        registry.start("pest", run_id, "x", {}).finish("succeeded", path=_fake_run(models, run_id))
    first = promote(registry, "pest", "r1", settings=Settings())
    prod = models / "pest" / "production"
    assert isinstance(first, PromotionResult) and first.warnings == []
    assert first.to_dict() == {
        "model_type": "pest",
        "run_id": "r1",
        "path": str(prod),
        "source": str(models / "pest" / "r1"),
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
    assert (prod / "model.keras").read_bytes() == b"model of r1"
    second = promote(registry, "pest", "r2", settings=Settings(), force=True)  # no real model: no gate
    assert second.previous_run_id == "r1" and second.archived_to == str(models / "pest" / "archive" / "r1")
    assert (prod / "model.keras").read_bytes() == b"model of r2"
    assert (models / "pest" / "archive" / "r1" / "model.keras").read_bytes() == b"model of r1"
    assert json.loads((prod / "PROMOTED.json").read_text())["run_id"] == "r2"
    assert (models / "pest" / "r1" / "model.keras").exists()  # the run folder itself is untouched
    assert registry.production_run_id("pest") == "r2"
    assert [r.run_id for r in registry.runs() if r.production] == ["r2"]
    assert resolve_run(registry, "pest", "production") == prod
    left = [p.name for p in (models / "pest").iterdir() if p.name.startswith(".")]
    assert left == [".production.lock"]  # no temporary folder or journal left; the (empty) lock file stays
    promote(registry, "pest", "r1", settings=Settings(), force=True)  # back again: r2 archived
    assert (models / "pest" / "archive" / "r2").is_dir()


def test_failed_promotion_leaves_production_serving(registry, monkeypatch):
    models = registry.models_dir
    for run_id in ("r1", "r2"):
        registry.start("pest", run_id, "x", {}).finish("succeeded", path=_fake_run(models, run_id))
    promote(registry, "pest", "r1", settings=Settings())
    (models / "pest" / "r2" / "weights.h5").symlink_to(models / "missing")  # the copy fails half-way
    with pytest.raises(OutputError, match="cannot promote r2"):
        promote(registry, "pest", "r2", settings=Settings(), force=True)
    assert (models / "pest" / "production" / "model.keras").read_bytes() == b"model of r1"
    assert registry.production_run_id("pest") == "r1"


def test_a_run_id_cannot_be_registered_twice(registry):
    registry.start("pest", "same", "mobilenetv2", {}).finish("failed")
    with pytest.raises(RunBusyError) as err:
        registry.start("pest", "same", "mobilenetv2", {})
    assert str(err.value) == (
        "run id same is already used by another pest run (start again in a second: run ids are made from the time)"
    )
    registry.start("disease", "same", "mobilenetv2", {})  # ids are per model type, like the folders


OLD_RUNS_TABLE = """CREATE TABLE runs (
    run_id TEXT NOT NULL, model_type TEXT NOT NULL, arch TEXT, state TEXT NOT NULL,
    pid INTEGER, pid_start INTEGER, host TEXT, started_at REAL NOT NULL, ended_at REAL,
    updated_at REAL, epoch INTEGER, metrics TEXT, path TEXT, config TEXT, error TEXT,
    PRIMARY KEY (model_type, run_id))"""


def test_a_registry_from_before_the_progress_columns_gains_them_and_keeps_its_runs(tmp_path):
    (tmp_path / "models").mkdir()
    with sqlite3.connect(tmp_path / "models" / "registry.db") as con:
        con.execute(OLD_RUNS_TABLE)
        con.execute(
            "INSERT INTO runs (run_id, model_type, state, started_at, ended_at, epoch, path) "
            "VALUES ('old', 'pest', 'succeeded', 1.0, 2.0, 7, 'models/pest/old')"
        )
    con.close()
    with Registry(tmp_path / "models") as registry:
        (old,) = registry.runs()
        assert (old.run_id, old.epoch, old.path, old.phase, old.total_epochs, old.seconds_left) == (
            "old",
            7,
            "models/pest/old",
            None,
            None,
            None,
        )
        handle = registry.start("pest", "new", "mobilenetv2", {})
        handle.update(
            4, {"loss": 1.0}, phase="scratch", phase_epoch=4, phase_epochs=10, total_epochs=10, seconds_left=60
        )
        (new,) = registry.status()
        assert (new.phase, new.phase_epoch, new.phase_epochs, new.total_epochs, new.seconds_left) == (
            "scratch",
            4,
            10,
            10,
            60.0,
        )
        handle.update(5, {}, seconds_left=float("nan"))  # nothing to estimate from: stored as unknown
        assert registry.status()[0].seconds_left is None
    # opened again, nothing is added twice
    with Registry(tmp_path / "models") as registry:
        assert {r.run_id for r in registry.runs()} == {"old", "new"}
        names = [row[1] for row in registry.con.execute("PRAGMA table_info(runs)")]
    assert len(names) == len(set(names)) and "seconds_left" in names
