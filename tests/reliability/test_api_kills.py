"""SIGKILL of `agroml serve` while a training it started runs, and of that training's worker process.

The API trains in a worker process (``python -m agroml.ops.worker``, agroml/ops/jobs.py) started in a
session of its own and holding the model type's lock file. What must hold, with real processes and real
HTTP (httpx), nothing of agroml mocked:

1. the server killed mid-training: the worker goes on; a restarted server sees the training (409
   naming it for a second POST /train, its run "running" while its process lives);
2. the worker killed: once a status is read no run stays "running" and no job stays "starting"
   (GET /runs/{id} says interrupted or failed), and a new POST /train is accepted at once (the lock
   died with the process), runs to the end and leaves a whole run folder;
3. after it all: tests/reliability/consistency.py's checks (store rows as before, image cache and
   index consistent, no run "running", no ``.partial`` under models/, production loads if there is
   one).

Each kill lands at a seeded moment: a phase of the training (accepted, registered, an epoch reported)
drawn from the seed, then a drawn delay of up to a second; a training may finish first (counted, and
checked all the same). Default run: one seed (server kill, then worker kill: two trainings). ``--soak``:
five seeds, where the orphaned training is also let finish on some (it must end "succeeded"), and the
surviving run is promoted and production checked. ``AGROML_FAULT_SEED=<seed>`` replays one;
``AGROML_FAULT_LOG=<file>`` gets one JSON line per kill.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx
from consistency import check_all, store_counts
from faultmix import kill_seeds, record

from agroml.lifecycle.registry import pid_alive

BASE_SEED = 16_2027
TOKEN = "kill-test-token-0123456789abcdef"
BASE = "/api/model-training"
#: A tiny training (from scratch, 32 px, 3 epochs on 30 photos): seconds once TensorFlow is loaded.
BODY = {"model_type": "pest", "weights": "none", "image_size": 32, "epochs": 3, "batch_size": 8, "seed": 0}
BODY.update(min_per_class=2, alpha=0.35)
PHASES = ("accepted", "registered", "epoch")
#: Every process here imports TensorFlow (seconds on idle cores, minutes on a machine shared by many).
WAIT_S = 900
pytestmark = pytest.mark.timeout(2400)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "api_kill_seed" not in metafunc.fixturenames:
        return
    chosen = kill_seeds(metafunc.config, BASE_SEED)
    metafunc.parametrize("api_kill_seed", chosen, ids=[f"seed{s}" for s in chosen])


# --- the server, as a real process ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """`python -m agroml serve` in ``folder``; ``client`` talks to it with the token."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.log = folder / f"serve-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agroml", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=folder,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        auth = {"Authorization": f"Bearer {TOKEN}"}
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}{BASE}", headers=auth, timeout=120)
        deadline = time.monotonic() + WAIT_S
        while True:
            assert self.proc.poll() is None, f"agroml serve exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "agroml serve did not answer"
            try:  # not /health: its doctor checks import TensorFlow in the server, a cost this test need not pay
                if self.client.get("/training-status", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)

    def kill(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def _run_state(server: Serve, run_id: str) -> dict[str, Any]:
    response = server.client.get(f"/runs/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()


def _phase(run: dict[str, Any]) -> str:
    """How far a training has come, as a client sees it."""
    if run["state"] not in ("starting", "running"):
        return "ended"
    if run["state"] == "starting":
        return "accepted"
    return "epoch" if run.get("epoch") is not None else "registered"


def _kill_at(server: Serve, run_id: str, rng: random.Random, kill: Any) -> dict[str, Any]:
    """Wait for a drawn phase of ``run_id`` (polling ``server``), then a drawn delay, then ``kill()``."""
    want = rng.choice(PHASES)
    delay = rng.uniform(0.0, 1.0)
    deadline = time.monotonic() + WAIT_S
    while True:
        phase = _phase(_run_state(server, run_id))
        if phase == "ended" or PHASES.index(phase) >= PHASES.index(want):
            break
        assert time.monotonic() < deadline, f"run {run_id} never reached {want}"
        time.sleep(0.1)  # each look is a request the server logs: a fast poll would slow the training
    if phase != "ended":
        time.sleep(delay)
        phase = _phase(_run_state(server, run_id))
    killed = phase != "ended"
    if killed:
        kill()
    return {"phase": want, "delay_s": round(delay, 2), "at": phase, "killed": killed}


def _train(server: Serve) -> tuple[str, int]:
    response = server.client.post("/train", json=BODY)
    assert response.status_code == 202, (response.text, _lock_holders())
    run_id = response.json()["run_id"]
    return run_id, int(_run_state(server, run_id)["pid"])


def _lock_holders() -> list[str]:
    """Processes that have a model type's job lock file open (what a "busy" answer was waiting on)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "status", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(f.path.endswith(".lock") and "/.jobs/" in f.path for f in proc.open_files()):
                found.append(f"{proc.info['pid']} {proc.info['status']} {' '.join(proc.info['cmdline'] or [])[:80]}")
    return found


def _wait_end(server: Serve, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    run = _run_state(server, run_id)
    while run["state"] in ("starting", "running"):
        assert time.monotonic() < deadline, f"run {run_id} did not end: {run}"
        time.sleep(0.2)
        run = _run_state(server, run_id)
    return run


def _sigkill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended between the look and the kill
        os.kill(pid, signal.SIGKILL)


def _photos(root: Path, n_per_class: int = 10) -> Path:
    from model_helpers import color_png

    for name in ("red", "green", "blue"):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            (root / name / f"{i:03d}.png").write_bytes(color_png(name, size=32, seed=i))
    return root


@pytest.fixture
def api_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGROML_", "SUPABASE_"))}
    env.update(AGROML_HASH_SALT="pepper", TF_CPP_MIN_LOG_LEVEL="2", AGROML_API_TOKEN=TOKEN, AGROML_SOURCE="local")
    env.update(AGROML_MIN_TOTAL="10", AGROML_MIN_PER_CLASS="2")
    env.update(AGROML_GATE_MIN_ROWS="1")  # --soak promotes a tiny model: the gate's row minimum is not the point
    return env


def _our_live_workers(workdir: Path) -> list[int]:
    """The workers the launcher recorded in ``workdir`` that still run (a failed test may leave one: they
    run in a session of their own). Only a live worker process whose folder is ``workdir`` is named, never
    another process that reused a finished worker's pid."""
    import psutil

    pids = []
    for path in (workdir / "models" / ".jobs").glob("*.json"):
        data = json.loads(path.read_text())
        if not (isinstance(data, dict) and data.get("pid")) or "current" in path.name:
            continue
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(int(data["pid"]))
            if "agroml.ops.worker" in proc.cmdline() and Path(proc.cwd()) == workdir:
                pids.append(proc.pid)
    return pids


@pytest.mark.slow
def test_kill_the_server_then_the_worker_of_an_api_training(cli, workdir, api_env, api_kill_seed, pytestconfig):
    seed = api_kill_seed
    rng = random.Random(seed)
    let_finish = bool(rng.getrandbits(1)) and bool(pytestconfig.getoption("soak"))
    print(f"seed {seed}: AGROML_FAULT_SEED={seed} replays it; orphaned training let finish: {let_finish}")
    result = cli("import", str(_photos(workdir / "photos")), "--model", "pest", env=api_env)
    assert result.exit_code == 0, result.output
    rows = store_counts(workdir / "data" / "agroml.db")
    models = workdir / "models"
    servers: list[Serve] = []
    try:
        # 1. the server killed while its training runs: the worker (own session) goes on
        first = Serve(workdir, api_env)
        servers.append(first)
        run_a, worker_a = _train(first)
        assert os.getsid(worker_a) != os.getsid(first.proc.pid)
        server_kill = _kill_at(first, run_a, rng, first.kill)
        record({"test": "api_kill", "command": "serve", "seed": seed, **server_kill})
        second = Serve(workdir, api_env)
        servers.append(second)
        if pid_alive(worker_a):
            busy = second.client.post("/train", json=BODY)
            # the orphan holds the lock: "busy", naming it (or it ended in between: then that POST trained)
            if busy.status_code == 409:
                assert run_a in busy.json()["error"], busy.text
            else:
                assert busy.status_code == 202 and not pid_alive(worker_a), busy.text
                _wait_end(second, busy.json()["run_id"])
        # 2. the worker killed (the orphan's, or a new training's when the orphan ended or is let finish)
        if let_finish or not pid_alive(worker_a):
            ended = _wait_end(second, run_a)
            assert ended["state"] == "succeeded", ended  # a server kill cost the training nothing
            run_b, worker_b = _train(second)
        else:
            run_b, worker_b = run_a, worker_a
        worker_kill = _kill_at(second, run_b, rng, lambda: _sigkill(worker_b))
        record({"test": "api_kill", "command": "worker", "seed": seed, **worker_kill})
        after = _wait_end(second, run_b)  # the status read: a dead worker's run is no longer "running"
        if worker_kill["killed"]:
            assert after["state"] in ("interrupted", "failed"), after
        assert second.client.get("/training-status").json() == {"running": []}
        # 3. a new training is accepted at once (not a 409 forever) and ends with a whole run
        run_c, _ = _train(second)
        done = _wait_end(second, run_c)
        assert done["state"] == "succeeded", (done, (models / ".jobs" / f"{run_c}.log").read_text()[-3000:])
        assert (Path(done["path"]) / "model.keras").is_file()
        production: tuple[str, ...] = ()
        if let_finish:  # --soak: the model serves, and checks below load it
            promoted = second.client.post("/promote", json={"model_type": "pest", "run_id": run_c, "force": True})
            assert promoted.status_code == 200, promoted.text
            production = ("pest",)
        summary = check_all(workdir, rows, production)
        assert summary["production"] == list(production)
        assert summary["runs"].get("succeeded", 0) >= 1 and "running" not in summary["runs"]
        record({"test": "api_recovery", "seed": seed, "consistent": True, "let_finish": let_finish, **summary})
    finally:
        for server in servers:
            server.kill()
        for pid in _our_live_workers(workdir):
            _sigkill(pid)


def test_a_job_whose_worker_died_before_its_run_started_reads_failed_not_starting(workdir):
    """A worker killed before it registered its run (here one that reads its order and exits) cannot record its end;
    its job once read "starting" forever. It reads failed, naming the process, and the type is free again."""
    from agroml.core import config
    from agroml.ops import jobs

    settings = config.resolve(env_file=None)
    quits = workdir / "quitting-worker"
    quits.write_text("#!/bin/sh\ncat >/dev/null\nexit 137\n")  # reads its order, dies before registering
    quits.chmod(0o755)
    dead = jobs.start_training(settings, {"model_type": "pest", "weights": "none"}, python=str(quits))
    deadline = time.monotonic() + 60
    while pid_alive(dead.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    found = jobs.find_job(settings, dead.run_id)
    assert found is not None and found.state == "failed", found
    assert f"worker process {dead.pid} ended before its run started" in (found.error or "")
    assert found.fix and found.log in found.fix
    again = jobs.start_training(settings, {"model_type": "pest", "weights": "none"}, python=str(quits))
    assert again.state == "starting"  # accepted, not "busy": the dead worker's lock went with it
    slow = workdir / "slow-worker"
    slow.write_text(
        "#!/bin/sh\ncat >/dev/null\nexec sleep 60\n"
    )  # a worker still loading its data: alive, not registered
    slow.chmod(0o755)
    live = jobs.start_training(settings, {"model_type": "disease", "weights": "none"}, python=str(slow))
    try:
        assert jobs.find_job(settings, live.run_id).state == "starting"
    finally:
        _sigkill(live.pid)
    deadline = time.monotonic() + 60
    while pid_alive(live.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jobs.find_job(settings, live.run_id).state == "failed"


_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_launch_waits_briefly_for_the_lock_of_a_dead_worker_but_not_of_a_live_one(workdir):
    """The lock of a killed worker goes with its last thread, after it already reads as dead: a launch then
    waits (up to DEAD_HOLDER_WAIT_S) instead of answering "busy" for a dead run; a live holder is busy at once."""
    from agroml.core import config
    from agroml.core.errors import RunBusyError
    from agroml.core.files import write_json
    from agroml.ops import jobs

    settings = config.resolve(env_file=None)
    folder = jobs.jobs_dir(settings)
    folder.mkdir(parents=True)
    quits = workdir / "quitting-worker"
    quits.write_text("#!/bin/sh\ncat >/dev/null\n")
    quits.chmod(0o755)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for record_pid, live in ((gone.pid, False), (None, True)):
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD, str(folder / "pest.lock"), "1.5"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            write_json(folder / "pest.current.json", {"run_id": "dead-run", "pid": record_pid or holder.pid})
            started = time.monotonic()
            if live:  # the process the record names holds the lock: busy, without waiting
                with pytest.raises(RunBusyError, match="dead-run"):
                    jobs.start_training(settings, {"model_type": "pest", "weights": "none"}, python=str(quits))
                assert time.monotonic() - started < 1.0
            else:  # the record names a dead process: the launch waits for the lock to go, then starts
                job = jobs.start_training(settings, {"model_type": "pest", "weights": "none"}, python=str(quits))
                assert job.state == "starting" and holder.poll() is not None
        finally:
            holder.kill()
            holder.wait()
