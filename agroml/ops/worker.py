"""The worker process of a background job (started by :mod:`agroml.ops.jobs`): ``python -m agroml.ops.worker``.

It reads its order (the job, the settings, the locked file it inherits) as JSON on stdin, runs the
library call, and records the outcome in the job's file. The lock file stays open (and locked) until
this process exits: that is what tells the launcher a training of this model type is still alive.
What the training says (warnings, TensorFlow's chatter, a traceback) goes to the job's log file.
"""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from agroml.core.config import Settings
from agroml.core.errors import AgromlError
from agroml.ops.jobs import FAILED, SUCCEEDED, Job, jobs_dir, record, settings_from_dict
from agroml.ops.retrain import retrain
from agroml.training.config import TrainConfig
from agroml.training.run import train


def run_job(order: dict[str, Any]) -> int:
    """Run the job in ``order``; returns the exit code (the job's file says what happened)."""
    job = Job(**order["job"])
    settings = settings_from_dict(order["settings"])
    folder = jobs_dir(settings)
    try:
        if job.kind == "retrain":
            return _retrain(job, settings, folder)
        if job.kind != "train":
            raise AgromlError(f"unknown job kind {job.kind!r}", fix="upgrade agroml on the server")
        result = train(settings, TrainConfig(**job.config), run_id=job.run_id)
    except AgromlError as exc:
        record(folder, replace(job, state=FAILED, error=exc.message, fix=exc.fix))
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BaseException as exc:  # a crash or a kill: recorded, and the traceback kept in the log
        traceback.print_exc()
        record(folder, replace(job, state=FAILED, error=f"{type(exc).__name__}: {exc}"[:500], fix="see " + job.log))
        return 1
    record(folder, replace(job, state=SUCCEEDED, warnings=result.warnings))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _retrain(job: Job, settings: Settings, folder: Path) -> int:
    """`agroml retrain` for the job's model type; the job ends succeeded only when retrain's exit code is 0
    (promoted or nothing to do), else failed with retrain's one-line reason (3: refused by the gate)."""
    outcome = retrain(settings, job.model_type, min_new=job.config["min_new"], publish=job.config["publish"])
    first = outcome.models[0] if outcome.models else None
    state = SUCCEEDED if outcome.exit_code == 0 else FAILED
    error = None if state == SUCCEEDED or first is None else first.reason
    fix = None if first is None or not first.log else "see " + first.log
    record(folder, replace(job, state=state, error=error, fix=fix if error else None, result=outcome.to_dict()))
    return outcome.exit_code


def main() -> None:
    sys.exit(run_job(json.loads(sys.stdin.read())))


if __name__ == "__main__":
    main()
