"""The pieces of `agroml retrain` that need no training: the per-type lock, the exit code, the log files,
which rows count as new."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from supaserver_http import closed_port
from webhookserver import WebhookServer

from agroml.core import config
from agroml.demo import rows as demo
from agroml.ops.retrain import (
    BUSY,
    FAILED,
    NOTHING_TO_DO,
    PROMOTED,
    REFUSED,
    ROWS_FILE,
    ModelRetrain,
    RetrainLog,
    RetrainResult,
    remove_old_logs,
    retrain,
    seen_ids,
    type_lock,
)


def test_exit_code_is_the_worst_outcome():
    def code(*outcomes: str) -> int:
        return RetrainResult([ModelRetrain(f"m{i}", o) for i, o in enumerate(outcomes)]).exit_code

    assert code(PROMOTED) == code(NOTHING_TO_DO) == code(BUSY) == code(PROMOTED, BUSY, NOTHING_TO_DO) == 0
    assert code(REFUSED) == code(PROMOTED, REFUSED) == 3
    assert code(FAILED) == code(REFUSED, FAILED, PROMOTED) == 1


def test_the_lock_is_held_across_processes_and_freed_when_its_holder_dies(tmp_path):
    """A live holder (another process) is named by pid; once it is killed (SIGKILL) the lock is free."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from agroml.ops.retrain import type_lock\n"
            "with type_lock(Path(sys.argv[1]), 'pest') as held:\n"
            "    assert held is None; print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with type_lock(tmp_path, "pest") as held:
            assert held is not None and held.startswith(f"pid {holder.pid} on ")
        with type_lock(tmp_path, "disease") as other:  # another type is free
            assert other is None
    finally:
        holder.kill()
        holder.wait()
    with type_lock(tmp_path, "pest") as held:
        assert held is None
        assert json.loads((tmp_path / "pest" / ".retrain.lock").read_text())["pid"] == os.getpid()


def test_logs_are_named_by_time_and_type_and_old_ones_removed(tmp_path):
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    first, second = RetrainLog(tmp_path, "pest", now), RetrainLog(tmp_path, "pest", now)  # same second: both kept
    for log in (first, second):
        log.write("two\nlines")
        log.close()
    assert [first.path.name, second.path.name] == ["20260301T120000Z-pest.log", "20260301T120000Z-pest-2.log"]
    lines = first.path.read_text().splitlines()
    assert len(lines) == 2 and lines[0].endswith("Z two") and lines[1].endswith("Z lines")
    old = tmp_path / "20250101T000000Z-disease.log"
    old.write_text("old")
    keep = tmp_path / "notes.log"  # not a retrain log: never touched
    keep.write_text("mine")
    stale = time.time() - 200 * 86400
    for path in (old, keep):
        os.utime(path, (stale, stale))
    assert remove_old_logs(tmp_path, 0, now.replace(year=2027)) == 0  # 0 keeps every log
    assert remove_old_logs(tmp_path, 180, datetime.now(UTC)) == 1
    assert not old.exists() and keep.exists() and first.path.exists() and second.path.exists()


def test_a_run_saw_its_split_and_the_rows_retrain_recorded(tmp_path):
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a", "local:b"], "val": ["c"], "test": []}))
    assert seen_ids(tmp_path) == {"a", "local:b", "b", "c"}
    (tmp_path / ROWS_FILE).write_text(json.dumps({"trainable": ["a", "d"]}))  # d: a class left out of the split
    assert seen_ids(tmp_path) == {"a", "local:b", "b", "c", "d"}


def test_not_ready_is_nothing_to_do_and_a_failure_alerts_without_training(workdir, monkeypatch):
    """The library loop up to the point where training would start (no TensorFlow needed): not ready ->
    exit 0 with the verdict; a config that cannot be read -> exit 1, the error in the log, the webhook
    told; a dead webhook -> the same exit code, the undelivered alert a warning."""
    settings = config.resolve(env_file=None)
    demo.generate(settings, ["pest"], n=30, seed=0)
    server = WebhookServer()
    try:
        monkeypatch.setenv("AGROML_ALERT_WEBHOOK", server.hook_url)
        monkeypatch.setenv("AGROML_ALERT_MIN_FEEDBACK_ACCURACY", "0")
        result = retrain(config.resolve(env_file=None), "pest")
        (pest,) = result.models
        assert (result.exit_code, pest.outcome) == (0, NOTHING_TO_DO)
        assert pest.reason.startswith("not ready: ") and server.messages == []
        monkeypatch.setenv("AGROML_MIN_TOTAL", "5")
        monkeypatch.setenv("AGROML_MIN_PER_CLASS", "1")
        failed = retrain(config.resolve(env_file=None), "pest", config_file="missing.yaml")
        (pest,) = failed.models
        assert (failed.exit_code, pest.outcome) == (1, FAILED)
        assert "error: --config missing.yaml: cannot read it" in Path(pest.log).read_text()
        (message,) = server.messages
        assert "retrain pest failed: --config missing.yaml: cannot read it" in message
        monkeypatch.setenv("AGROML_ALERT_WEBHOOK", f"http://127.0.0.1:{closed_port()}/hook/SECRETHOOKTOKEN")
        dead = retrain(config.resolve(env_file=None), "pest", config_file="missing.yaml")
        assert dead.exit_code == 1 and len(server.messages) == 1
        (warning,) = dead.warnings
        assert warning.startswith("alert not delivered to http://127.0.0.1/…") and "SECRET" not in warning
        assert "alert (failed): alert not delivered" in Path(dead.models[0].log).read_text()
    finally:
        server.stop()
