"""Rollback, the audit trail, and kills: SIGKILL at each step of promote and rollback leaves a whole model.

The kill tests run the library in a child process paused at one step (AGROML_TEST_PAUSE, a test hook in
agroml.lifecycle.journal), kill it with SIGKILL once the step is visible on disk, then check that
production/ loads with Keras right away, and that the next command (`agroml history`) brings the
registry in line with the folder and leaves no temporary folder or journal behind.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agroml.core import config
from agroml.core.errors import ModelNotFoundError
from agroml.lifecycle.locating import folder_run_id
from agroml.lifecycle.promotion import promote
from agroml.lifecycle.registry import Registry
from agroml.lifecycle.rollback import rollback
from tests.gate_helpers import tree_bytes
from tests.model_helpers import write_run

SPLIT = {"train": [], "val": [], "test": []}


@pytest.fixture
def settings(workdir):
    return config.resolve(env_file=None)


def _runs(settings, *run_ids: str) -> None:
    for i, run_id in enumerate(run_ids):  # different class lists: different bytes in every folder
        write_run(settings.models_dir, "pest", run_id, ["red", "green", "blue", "yellow"][: 2 + i % 3], SPLIT)


def test_rollback_restores_the_previous_production_byte_for_byte_then_the_one_before(settings, cli):
    _runs(settings, "a", "b", "c")
    production = settings.models_dir / "pest" / "production"
    snapshots = {}
    with Registry(settings.models_dir) as registry:
        for run_id in ("a", "b", "c"):
            promote(registry, "pest", run_id, settings=settings, force=True)
            snapshots[run_id] = tree_bytes(production)
    first = cli("rollback", "--model", "pest", "--json")
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert (data["run_id"], data["previous_run_id"]) == ("b", "c")
    assert data["restored_from"] == "models/pest/archive/b"
    assert tree_bytes(production) == snapshots["b"]
    second = cli("rollback", "--model", "pest")  # two models back, not c again
    assert second.exit_code == 0 and second.stdout.startswith("rolled back pest to a (from models/pest/archive/a)")
    assert tree_bytes(production) == snapshots["a"]
    third = cli("rollback", "--model", "pest")
    assert third.exit_code == 1
    assert third.stderr.startswith("error: no earlier production pest model to roll back to (a is the first one")
    assert tree_bytes(production) == snapshots["a"]
    with Registry(settings.models_dir) as registry:
        assert registry.production_run_id("pest") == "a"
        assert [r.run_id for r in registry.runs("pest") if r.production] == ["a"]
    history = json.loads(cli("history", "--model", "pest", "--json").stdout)
    assert [(e["event"], e["run_id"], e["command"]) for e in history] == [
        ("promoted", "a", "promote"),
        ("promoted", "b", "promote"),
        ("promoted", "c", "promote"),
        ("rolled_back", "b", "rollback"),
        ("rolled_back", "a", "rollback"),
    ]
    assert all(e["forced"] for e in history[:3]) and history[3]["champion_run_id"] == "c"
    table = cli("history").stdout
    assert "rolled_back" in table and "promoted (forced)" in table


def test_rollback_without_an_earlier_model_says_so(settings, cli):
    assert cli("rollback", "--model", "disease").stderr.startswith(
        "error: no earlier production disease model to roll back to ("
    )
    assert "no promotions yet" in cli("history").stderr


def test_a_registry_from_before_the_audit_trail_is_migrated_and_its_promotions_kept(settings, cli):
    models = settings.models_dir
    _runs(settings, "a", "b")
    with Registry(models) as registry:  # the old way: a, then b over it (a archived), old-style rows
        promote(registry, "pest", "a", settings=settings)
        promote(registry, "pest", "b", settings=settings, force=True)
    con = sqlite3.connect(models / "registry.db")
    con.execute("DROP TABLE promotions")
    con.execute(
        "CREATE TABLE promotions (model_type TEXT NOT NULL, run_id TEXT NOT NULL, promoted_at REAL NOT NULL, "
        "previous_run_id TEXT, path TEXT NOT NULL)"
    )
    con.executemany(
        "INSERT INTO promotions VALUES (?, ?, ?, ?, ?)",
        [("pest", "a", 1.0, None, "models/pest/production"), ("pest", "b", 2.0, "a", "models/pest/production")],
    )
    con.commit()
    con.close()
    history = json.loads(cli("history", "--json").stdout)
    assert [(e["event"], e["run_id"], e["previous_run_id"]) for e in history] == [
        ("promoted", "a", None),
        ("promoted", "b", "a"),
    ]
    result = cli("rollback", "--model", "pest")  # the archive folder is found by its run id
    assert result.exit_code == 0, result.output
    assert folder_run_id(models / "pest" / "production") == "a"


# --- SIGKILL at each step -------------------------------------------------------------------------------
_CHILD = """
import sys
from agroml.core import config
from agroml.lifecycle.promotion import promote
from agroml.lifecycle.registry import Registry
from agroml.lifecycle.rollback import rollback
settings = config.resolve(env_file=None)
with Registry(settings.models_dir) as registry:
    if sys.argv[1] == "rollback":
        rollback(registry, "pest")
    else:
        promote(registry, "pest", sys.argv[1], settings=settings, force=True)
"""


def _visible(step: str, models: Path, new: str, events_before: int) -> bool:
    """Whether the child has reached ``step`` (or is inside it), judging from the disk."""
    pest = models / "pest"
    if step == "staged":
        return any(p.is_dir() for p in pest.glob(".production.*"))
    if step == "journal":
        return (pest / ".production-journal.json").is_file()
    if step in ("swapped", "archived", "recorded"):
        if not (pest / ".production-journal.json").is_file():
            return False
        if step == "recorded":
            with Registry(models) as registry:
                return len(registry.events("pest")) > events_before
        swapped = folder_run_id(pest / "production") == new
        return swapped and (step == "swapped" or not any(pest.glob(".production.*/production")))
    raise AssertionError(step)


def _kill_at(workdir: Path, models: Path, step: str, arg: str, new: str) -> None:
    env = {k: v for k, v in __import__("os").environ.items()}
    env["AGROML_TEST_PAUSE"] = f"{step}:60"
    with Registry(models) as registry:
        events_before = len(registry.events("pest"))
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, arg], cwd=workdir, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not _visible(step, models, new, events_before):
            if proc.poll() is not None:
                raise AssertionError(f"the child ended before {step}: {proc.stderr.read().decode()[-1500:]}")
            assert time.monotonic() < deadline, f"{step} never reached"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()


def _check_whole_then_recovered(
    cli, models: Path, old: str, new: str, before: dict, after_new: dict | None, kind: str = "promoted"
) -> str:
    import keras

    production = models / "pest" / "production"
    serving = folder_run_id(production)
    assert serving in (old, new)
    keras.saving.load_model(production / "model.keras", compile=False)  # whole and loadable, before any repair
    assert tree_bytes(production) == (before if serving == old else after_new or tree_bytes(production))
    assert cli("history", "--json").exit_code == 0  # the next command finishes or undoes the step
    with Registry(models) as registry:
        assert registry.production_run_id("pest") == serving
        served = [e for e in registry.events("pest") if e.run_id == new and e.event == kind]
    assert len(served) == (1 if serving == new else 0)
    assert (
        not list((models / "pest").glob(".production.*/"))
        and not (models / "pest" / ".production-journal.json").exists()
    )
    if serving == new:
        assert tree_bytes(models / "pest" / "archive" / old) == before  # the replaced model archived whole
    return serving


@pytest.mark.parametrize("step", ["staged", "journal", "swapped", "archived", "recorded"])
def test_sigkill_during_promote_leaves_a_loadable_production(settings, cli, workdir, step):
    _runs(settings, "old", "new")
    with Registry(settings.models_dir) as registry:
        promote(registry, "pest", "old", settings=settings)
    before = tree_bytes(settings.models_dir / "pest" / "production")
    _kill_at(workdir, settings.models_dir, step, "new", "new")
    serving = _check_whole_then_recovered(cli, settings.models_dir, "old", "new", before, None)
    assert serving == ("old" if step in ("staged", "journal") else "new")
    again = cli("promote", "new", "--model", "pest", "--force")  # and the next promotion works
    assert again.exit_code == 0 and ("nothing to do" in again.stdout) == (serving == "new")


@pytest.mark.parametrize("step", ["journal", "swapped", "recorded"])
def test_sigkill_during_rollback_leaves_a_loadable_production(settings, cli, workdir, step):
    _runs(settings, "a", "b")
    production = settings.models_dir / "pest" / "production"
    with Registry(settings.models_dir) as registry:
        promote(registry, "pest", "a", settings=settings)
        a_bytes = tree_bytes(production)
        promote(registry, "pest", "b", settings=settings, force=True)
    before = tree_bytes(production)
    _kill_at(workdir, settings.models_dir, step, "rollback", "a")
    serving = _check_whole_then_recovered(cli, settings.models_dir, "b", "a", before, a_bytes, "rolled_back")
    assert serving == ("b" if step == "journal" else "a")
    with Registry(settings.models_dir) as registry:
        if serving == "a":
            with pytest.raises(ModelNotFoundError):  # a was the first: nothing before it
                rollback(registry, "pest")
        else:
            assert rollback(registry, "pest").run_id == "a"
    assert tree_bytes(production) == a_bytes
