"""The routes that start or change runs: /train and /retrain (in a worker process, 202), /runs/{id},
/evaluate and /promote."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from agroml.api import PREFIX
from agroml.api.common import RUN_EXAMPLE, Context, example
from agroml.api.schemas import EvaluateBody, ModelType, PromoteBody, RetrainBody, TrainBody
from agroml.core.errors import ModelNotFoundError
from agroml.lifecycle.evaluation import evaluate as run_evaluation
from agroml.lifecycle.promotion import promote as promote_run
from agroml.lifecycle.registry import Registry
from agroml.ops import jobs


def add_job_routes(router: APIRouter, ctx: Context) -> None:
    """Add the training, run, evaluation and promotion routes to ``router``."""
    settings, auth = ctx.settings, ctx.auth

    @router.post(
        "/train",
        dependencies=auth,
        status_code=202,
        summary="Start a training in a worker process; 202 with the run id and where to poll",
        responses={
            **example({"run_id": RUN_EXAMPLE, "model_type": "pest", "state": "starting", "poll": "…"}, 202),
            409: {"description": "a training of this model type is already running (named in the error)"},
        },
    )
    def train(body: TrainBody) -> JSONResponse:  # type: ignore[valid-type]
        flags = {k: v.value if isinstance(v, ModelType) else v for k, v in body.model_dump(exclude_none=True).items()}  # type: ignore[attr-defined]
        job = jobs.start_training(settings, flags)
        return _accepted(job)

    @router.post(
        "/retrain",
        dependencies=auth,
        status_code=202,
        summary="Pull, check, train, evaluate, gate and promote (as `agroml retrain`) in a worker process",
        responses=example({"run_id": "retrain-20261201T020000Z-pest", "model_type": "pest", "state": "starting"}),
    )
    def retrain(body: RetrainBody) -> JSONResponse:
        job = jobs.start_retrain(settings, body.model_type.value, min_new=body.min_new, publish=body.publish)
        return _accepted(job)

    @router.get(
        "/runs/{run_id}",
        dependencies=auth,
        summary="One run: config, metrics, state (an element of `agroml runs --json`)",
        responses={
            **example({"run_id": RUN_EXAMPLE, "state": "running", "epoch": 2}),
            404: {"description": "no such run"},
        },
    )
    def get_run(run_id: str) -> dict[str, Any]:
        with ctx.registry() as reg:
            run = reg.get(run_id)
        if run is not None:
            return run.to_dict()
        job = jobs.find_job(settings, run_id)
        if job is None:
            raise ModelNotFoundError(f"no run {run_id}", fix="list runs: GET /training-history or `agroml runs`")
        return job.to_dict()

    @router.post(
        "/evaluate",
        dependencies=auth,
        summary="`agroml evaluate --json`: a run (or production) on rows it never trained on",
        responses=example({"run_id": RUN_EXAMPLE, "rows": "test", "metrics": {"accuracy": 0.9}}),
    )
    def evaluate(body: EvaluateBody) -> dict[str, Any]:
        result = run_evaluation(settings, body.model_type.value, body.run, newer=body.newer, batch_size=body.batch_size)
        return result.to_dict()

    @router.post(
        "/promote",
        dependencies=auth,
        summary="`agroml promote --json`: make a run the production model",
        responses=example({"model_type": "pest", "run_id": RUN_EXAMPLE, "previous_run_id": None}),
    )
    def promote(body: PromoteBody) -> Any:
        with Registry(settings.models_dir) as reg:
            result = promote_run(
                reg, body.model_type.value, body.run_id, settings=settings, force=body.force, command="api promote"
            )
        if result.refused:  # as `agroml promote` exits 1: production is as it was; the comparison says why
            fix = "train a better model, or promote with force: true (recorded as forced)"
            return JSONResponse({"error": result.reason, "fix": fix, **result.to_dict()}, status_code=409)
        return result.to_dict()


def _accepted(job: jobs.Job) -> JSONResponse:
    location = f"{PREFIX}/runs/{job.run_id}"
    return JSONResponse(
        {
            "run_id": job.run_id,
            "model_type": job.model_type,
            "state": job.state,
            "poll": location,
            "config": job.config,
        },
        status_code=202,
        headers={"Location": location},
    )
