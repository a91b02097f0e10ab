"""Background trainings: start one in its own worker process and answer at once with its run id.

Why a separate process (``python -m agroml.ops.worker``) and not a thread or a task of the web server:
a training holds the GIL for long stretches, loads TensorFlow and gigabytes of images, and a crash or
an out-of-memory kill in it must not take the API down. The worker is started in its own session, so
restarting the web server does not kill a training half-way; the registry tracks it by its pid.

Why the run id is chosen here: the caller (the HTTP API) must answer 202 with the run id and a URL to
poll before the worker has read its data (seconds to minutes), and :func:`agroml.training.run.train`
takes that id.

Why a lock file as well as the registry: the registry refuses a second training of a model type only
once the first has registered, after its data is loaded. In that window a second request must also
get "busy". The launcher takes an exclusive ``flock`` on ``<models>/.jobs/<type>.lock`` and hands the
locked file to the worker, which holds it until it exits (a lock belongs to the open file, not to a
process), so "is one starting or running? if not, start mine" is one atomic step across processes.

Each job leaves ``<models>/.jobs/<run_id>.json`` (its state while starting, and the error if it failed
before registering) and ``<run_id>.log`` (the worker's stderr), so a failed start is never silent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agroml.core.config import Settings
from agroml.core.errors import RunBusyError, UsageError
from agroml.core.files import utc_stamp, write_json
from agroml.core.schema import check_model_type
from agroml.lifecycle.registry import Registry, RunInfo, pid_alive
from agroml.training.config import resolve_config
from agroml.training.run import make_run_id

JOBS_DIR = ".jobs"
STARTING, FAILED, SUCCEEDED = "starting", "failed", "succeeded"
#: Environment variables a worker does not need and must not hold (the API's own secret).
WORKER_DROPS_ENV = ("AGROML_API_TOKEN",)
#: How long a launch waits for the lock of a worker that is dead but not yet torn down (see _lock_within).
DEAD_HOLDER_WAIT_S = 10.0
_PATH_FIELDS = {f.name for f in fields(Settings) if f.type in ("Path", Path)}


@dataclass
class Job:
    """A background job as the launcher knows it (what the worker does next is in the registry)."""

    run_id: str
    model_type: str
    kind: str
    state: str
    pid: int | None
    started_at: str | None
    log: str
    config: dict[str, Any]
    error: str | None = None
    fix: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: What the job's library call returned (a retrain's RetrainResult.to_dict()); None while it runs.
    result: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def jobs_dir(settings: Settings) -> Path:
    return Path(settings.models_dir) / JOBS_DIR


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    """The settings a worker needs, as JSON (the API token is left out: a worker serves nothing)."""
    data = asdict(settings)
    data["api_token"] = None
    return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}


def settings_from_dict(data: dict[str, Any]) -> Settings:
    values: dict[str, Any] = {k: Path(v) if k in _PATH_FIELDS and v is not None else v for k, v in data.items()}
    return Settings(**values)


def _busy_message(model_type: str, run_id: str, since: str | None) -> RunBusyError:
    return RunBusyError(
        f"a {model_type} training is already running: run {run_id} (started {since or 'just now'})",
        fix=f"wait for it to finish (GET /training-status or /runs/{run_id}, or `agroml status`)",
    )


def _current(folder: Path, model_type: str) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / f"{model_type}.current.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _take_lock(folder: Path, model_type: str) -> int:
    """The locked lock file's descriptor; RunBusyError naming the job that holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{model_type}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    # filelock's descriptor lock: flock on Linux and macOS, LockFileEx on Windows; the worker inherits it
    from filelock import lock_descriptor

    if not lock_descriptor(fd, blocking=False):
        held = _current(folder, model_type) or {}
        if not (_holder_is_dead(held) and _lock_within(fd, DEAD_HOLDER_WAIT_S)):
            os.close(fd)
            raise _busy_message(model_type, str(held.get("run_id", "?")), held.get("started_at")) from None
    return fd


def _holder_is_dead(held: dict[str, Any]) -> bool:
    """The worker the lock's record names is gone (killed: its lock goes once the kernel has torn it down)."""
    pid = held.get("pid")
    return isinstance(pid, int) and not pid_alive(pid)


def _lock_within(fd: int, seconds: float) -> bool:
    """Try the lock until ``seconds`` have passed. Why wait at all: a killed worker reads as dead (a zombie)
    as soon as its main thread ends, but its files, and so its lock, are released only when its last
    thread has ended: a TensorFlow process has dozens, and on a busy machine that takes seconds. Without
    the wait a POST /train just after the kill was refused as "busy" naming the dead run."""
    from filelock import lock_descriptor

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if lock_descriptor(fd, blocking=False):
            return True
    return False


def _check_registry(settings: Settings, model_type: str) -> None:
    """A training started outside the API (`agroml train`) holds the model type too."""
    if not (Path(settings.models_dir) / "registry.db").exists():
        return
    with Registry(settings.models_dir, create=False) as registry:
        live: list[RunInfo] = registry.status(model_type)
    if live:
        raise _busy_message(model_type, live[0].run_id, live[0].to_dict()["started_at"])


def start_training(settings: Settings, flags: dict[str, Any], python: str | None = None) -> Job:
    """Check ``flags`` (TrainConfig fields) and start the training in a worker process; return at once.

    Bad values raise UsageError before anything starts; a running or starting training of the same
    model type raises RunBusyError naming it.
    """
    cfg = resolve_config(settings, flags)
    return launch(settings, "train", cfg.model_type, asdict(cfg), make_run_id(cfg.arch), python=python)


def start_retrain(
    settings: Settings, model_type: str, *, min_new: int = 1, publish: bool = False, python: str | None = None
) -> Job:
    """Start `agroml retrain` for one model type in a worker process; return at once.

    The job id (``retrain-<UTC>-<type>``) is not a run id: the run the retrain trains, if any, is in the
    job's ``result`` when it ends (and in the registry meanwhile).
    """
    if min_new < 0:
        raise UsageError(f"min_new {min_new} must be 0 or more", fix="give min_new >= 0")
    job_id = f"retrain-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{model_type}"
    return launch(settings, "retrain", model_type, {"min_new": min_new, "publish": publish}, job_id, python=python)


def launch(
    settings: Settings,
    kind: str,
    model_type: str,
    config: dict[str, Any],
    run_id: str,
    python: str | None = None,
) -> Job:
    """Start ``python -m agroml.ops.worker`` for job ``kind`` holding the model type's lock."""
    check_model_type(model_type)
    folder = jobs_dir(settings)
    fd = _take_lock(folder, model_type)
    try:
        _check_registry(settings, model_type)
        log = folder / f"{run_id}.log"
        job = Job(run_id, model_type, kind, STARTING, None, utc_stamp(time.time()), str(log), config)
        env = {k: v for k, v in os.environ.items() if k not in WORKER_DROPS_ENV}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with open(log, "ab") as log_file:
            proc = subprocess.Popen(
                [python or sys.executable, "-m", "agroml.ops.worker"],
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                pass_fds=(fd,),
                start_new_session=True,  # a restart of the web server leaves the training running
                env=env,
            )
        job.pid = proc.pid
        record(folder, job)
        write_json(folder / f"{model_type}.current.json", job.to_dict())
        order = {"job": job.to_dict(), "settings": settings_to_dict(settings)}
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(order).encode())  # the settings hold secrets: never on the command line
        proc.stdin.close()
        # reap the worker when it ends, so it never lingers as a zombie that looks alive
        threading.Thread(target=proc.wait, name=f"reap-{run_id}", daemon=True).start()
        return job
    finally:
        os.close(fd)  # the worker holds its own copy of the locked file until it exits


def record(folder: Path, job: Job) -> None:
    write_json(folder / f"{job.run_id}.json", job.to_dict())


def find_job(settings: Settings, run_id: str) -> Job | None:
    """The launcher's record of ``run_id`` (a job not yet in the registry, or one that failed to start).

    A job still "starting" whose worker is gone (killed before it registered its run, e.g. SIGKILL or an
    out-of-memory kill) is answered as failed: it cannot say so itself, and a client polling for the end
    of "starting" would otherwise wait forever. (Once registered, the registry marks such a run
    interrupted the same way.)
    """
    if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith("."):
        raise UsageError(f"{run_id!r} is not a run id", fix="list runs: GET /training-history or `agroml runs`")
    try:
        data = json.loads((jobs_dir(settings) / f"{run_id}.json").read_text())
        job = Job(**data)
    except (OSError, ValueError, TypeError):
        return None
    # a reused pid can only make a dead job look alive (the old answer), never a live one look dead
    if job.state == STARTING and job.pid is not None and not pid_alive(job.pid):
        error = f"the worker process {job.pid} ended before its run started (killed?)"
        return replace(job, state=FAILED, error=error, fix=f"see {job.log}; start the job again")
    return job
