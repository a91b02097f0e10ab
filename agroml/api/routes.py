"""The routes under ``/api/model-training``: each parses its input, calls the library function the CLI
command of the same job calls, and returns that result's ``to_dict()``, the JSON of the CLI's ``--json``.

Blocking work (SQLite, pandas, TensorFlow) runs in plain ``def`` routes, which FastAPI runs in its
thread pool, so the event loop keeps answering; a training runs in a worker process of its own
(agroml.ops.jobs), never in this one.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from starlette.background import BackgroundTask

from agroml import __version__
from agroml.api import PREFIX
from agroml.api.errors import AgromlRoute, TooLarge
from agroml.api.schemas import (
    ByKey,
    EvaluateBody,
    ExportBody,
    ModelType,
    ModelTypeOrAll,
    PromoteBody,
    RetrainBody,
    TrainBody,
)
from agroml.api.security import bearer_auth
from agroml.core import config, schema
from agroml.core.config import Settings
from agroml.core.errors import ModelNotFoundError, UsageError
from agroml.core.files import utc_stamp
from agroml.data import analysis
from agroml.data.exporting import export_records
from agroml.data.sources import open_source
from agroml.lifecycle.evaluation import evaluate as run_evaluation
from agroml.lifecycle.performance import model_performance
from agroml.lifecycle.predicting import predict as run_predict
from agroml.lifecycle.promotion import promote as promote_run
from agroml.lifecycle.registry import Registry
from agroml.lifecycle.serving import ProductionModels
from agroml.ops import doctor, jobs

#: The files of a run folder that GET /runs/{id}/files/{name} serves (no other name is ever opened).
RUN_FILES: dict[str, str] = {
    "curves.png": "image/png",
    "confusion_matrix.png": "image/png",
    "MODEL_CARD.md": "text/markdown; charset=utf-8",
    "model.tflite": "application/octet-stream",
}
EXPORT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
#: /health reruns the doctor checks at most this often (they read the store); live fields are always fresh.
HEALTH_CHECKS_TTL_S = 10.0


class HealthChecks:
    """The offline doctor checks, rerun in a background thread when older than :data:`HEALTH_CHECKS_TTL_S`.

    Why never in the request: the first run imports TensorFlow (seconds) and every run reads the store,
    and a load balancer's health probe must answer in milliseconds. Until the first run ends, /health
    says "checking" with no checks.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.report: doctor.Report | None = None
        self.at: float | None = None
        self._lock = threading.Lock()
        self._running = False

    def latest(self) -> tuple[doctor.Report | None, str | None]:
        with self._lock:
            stale = self.at is None or time.time() - self.at > HEALTH_CHECKS_TTL_S
            if stale and not self._running:
                self._running = True
                threading.Thread(target=self._refresh, name="agroml-health", daemon=True).start()
            return self.report, utc_stamp(self.at)

    def _refresh(self) -> None:
        try:
            report = doctor.Report(checks=doctor.run_checks(self.settings, offline=True))
            with self._lock:
                self.report, self.at = report, time.time()
        finally:
            with self._lock:
                self._running = False


RUN_EXAMPLE = "20261126T130501Z-mobilenetv2"
#: Bytes a multipart form adds around the photo (boundaries, headers): allowed on top of the photo limit.
UPLOAD_OVERHEAD = 64 * 1024


def parse_time(name: str, text: str | None) -> datetime | None:
    """An ISO 8601 date or time (no zone: UTC), as the CLI's --since / --until take it."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{name}={text!r} is not an ISO 8601 date or time",
            fix="use e.g. 2025-03-01, 2025-03-01T10:00:00Z or 2025-03-01T13:00:00+03:00",
        ) from None


def _example(data: Any, status: int = 200, media: str = "application/json") -> dict[int | str, Any]:
    return {status: {"content": {media: {"example": data}}}}


def make_router(settings: Settings | None = None) -> APIRouter:
    """The API's router with its prefix; ``settings`` default to the environment / .env, resolved now."""
    settings = settings if settings is not None else config.resolve()
    auth = [Depends(bearer_auth(settings))]
    router = APIRouter(prefix=PREFIX, route_class=AgromlRoute, tags=["model training"])
    models = ProductionModels()
    checks = HealthChecks(settings)

    def registry() -> Registry:
        return Registry(settings.models_dir, create=False)

    @router.get(
        "/health",
        summary="Offline doctor checks, version, running trainings (no token needed)",
        responses=_example(
            {
                "status": "ok",
                "version": __version__,
                "training": {"running": False, "runs": []},
                "checks": [{"name": "python", "status": "ok", "detail": "Python 3.11.9", "fix": ""}],
                "checked_at": "2026-11-26T13:05:01Z",
            }
        ),
    )
    def health() -> dict[str, Any]:
        report, checked_at = checks.latest()
        with registry() as reg:
            running = [
                {k: r.to_dict()[k] for k in ("run_id", "model_type", "epoch", "total_epochs", "started_at")}
                for r in reg.status()
            ]
        return {
            "status": "checking" if report is None else ("ok" if report.ok else "fail"),
            "version": __version__,
            "training": {"running": bool(running), "runs": running},
            "checks": [] if report is None else report.to_dict()["checks"],
            "checked_at": checked_at,
        }

    @router.get(
        "/data-stats",
        dependencies=auth,
        summary="`agroml stats --json`: feedback counts, feedback accuracy, readiness",
        responses=_example({"generated_at": "…", "source": "local", "since": None, "until": None, "models": {}}),
    )
    def data_stats(
        model: ModelTypeOrAll = ModelTypeOrAll("all"),
        since: str | None = None,
        until: str | None = None,
        min_total: Annotated[int | None, Query(ge=0)] = None,
        min_per_class: Annotated[int | None, Query(ge=0)] = None,
    ) -> dict[str, Any]:
        start, end = analysis.check_window(parse_time("since", since), parse_time("until", until))
        total = settings.min_total if min_total is None else min_total
        per_class = settings.min_per_class if min_per_class is None else min_per_class
        with contextlib.closing(open_source(settings)) as src:
            report = analysis.stats_report(src, schema.expand_model_types(model.value), start, end, total, per_class)
        return report.to_dict()

    @router.get(
        "/data-distribution",
        dependencies=auth,
        summary="`agroml distribution --json`: rows by class, crop, region, season or month",
        responses=_example({"model_type": "pest", "by": "class", "total": 0, "counts": []}),
    )
    def data_distribution(
        model: ModelType = ModelType("pest"),
        by: ByKey = ByKey("class"),
        since: str | None = None,
        until: str | None = None,
    ) -> dict[str, Any]:
        start, end = analysis.check_window(parse_time("since", since), parse_time("until", until))
        with contextlib.closing(open_source(settings)) as src:
            report = analysis.distribution_report(src, model.value, by.value, start, end, settings.timezone)
        return report.to_dict()

    @router.get(
        "/model-performance",
        dependencies=auth,
        summary="`agroml performance --json`: deployed model's feedback accuracy and its test figures",
        responses=_example({"models": {"pest": {"feedback": {"feedback_accuracy": 0.81}, "production": None}}}),
    )
    def model_performance_route(
        model: ModelTypeOrAll = ModelTypeOrAll("all"),
        since: str | None = None,
        until: str | None = None,
    ) -> dict[str, Any]:
        start, end = analysis.check_window(parse_time("since", since), parse_time("until", until))
        with contextlib.closing(open_source(settings)) as src:
            report = model_performance(src, settings.models_dir, schema.expand_model_types(model.value), start, end)
        return report.to_dict()

    @router.get(
        "/training-status",
        dependencies=auth,
        summary="`agroml status --json`: trainings running now, with epoch and metrics",
        responses=_example(
            {"running": [{"run_id": RUN_EXAMPLE, "model_type": "pest", "epoch": 3, "total_epochs": 15}]}
        ),
    )
    def training_status() -> dict[str, Any]:
        with registry() as reg:
            return {"running": [r.to_dict() for r in reg.status()]}

    @router.get(
        "/training-history",
        dependencies=auth,
        summary="`agroml runs --json`: every run, newest first",
        responses=_example([{"run_id": RUN_EXAMPLE, "model_type": "pest", "state": "succeeded"}]),
    )
    def training_history(
        model: ModelType | None = None,
        limit: Annotated[int | None, Query(ge=1)] = None,
    ) -> list[dict[str, Any]]:
        with registry() as reg:
            return [r.to_dict() for r in reg.runs(model.value if model else None)[:limit]]

    @router.post(
        "/train",
        dependencies=auth,
        status_code=202,
        summary="Start a training in a worker process; 202 with the run id and where to poll",
        responses={
            **_example({"run_id": RUN_EXAMPLE, "model_type": "pest", "state": "starting", "poll": "…"}, 202),
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
        responses=_example({"run_id": "retrain-20261201T020000Z-pest", "model_type": "pest", "state": "starting"}),
    )
    def retrain(body: RetrainBody) -> JSONResponse:
        job = jobs.start_retrain(settings, body.model_type.value, min_new=body.min_new, publish=body.publish)
        return _accepted(job)

    @router.get(
        "/runs/{run_id}",
        dependencies=auth,
        summary="One run: config, metrics, state (an element of `agroml runs --json`)",
        responses={
            **_example({"run_id": RUN_EXAMPLE, "state": "running", "epoch": 2}),
            404: {"description": "no such run"},
        },
    )
    def get_run(run_id: str) -> dict[str, Any]:
        with registry() as reg:
            run = reg.get(run_id)
        if run is not None:
            return run.to_dict()
        job = jobs.find_job(settings, run_id)
        if job is None:
            raise ModelNotFoundError(f"no run {run_id}", fix="list runs: GET /training-history or `agroml runs`")
        return job.to_dict()

    @router.get(
        "/runs/{run_id}/files/{name}",
        dependencies=auth,
        summary="A run's curves.png, confusion_matrix.png, MODEL_CARD.md or model.tflite",
        response_class=FileResponse,
        responses={
            200: {"description": "the file", "content": {t.split(";")[0]: {} for t in RUN_FILES.values()}},
            **_example({"error": "run 2026... has no model.tflite", "fix": "model.tflite: trained with tflite"}, 404),
        },
    )
    def run_file(run_id: str, name: str) -> FileResponse:
        if name not in RUN_FILES:
            raise UsageError(f"{name!r} is not a run file served here", fix=f"ask for one of {', '.join(RUN_FILES)}")
        with registry() as reg:
            run = reg.get(run_id)
        if run is None or not run.path:
            raise ModelNotFoundError(f"no finished run {run_id}", fix="list runs: GET /training-history")
        path = Path(run.path) / name  # name is one of RUN_FILES: it cannot leave the run folder
        if not path.is_file():
            raise ModelNotFoundError(
                f"run {run_id} has no {name}",
                fix="curves.png and MODEL_CARD.md: every run; "
                "confusion_matrix.png: with a test split; model.tflite: trained with tflite",
            )
        return FileResponse(path, media_type=RUN_FILES[name], filename=name)

    def export(body: ExportBody, scope: str) -> FileResponse:
        folder = Path(tempfile.mkdtemp(prefix="agroml-export-"))
        try:
            with contextlib.closing(open_source(settings)) as src:
                result = export_records(src, body.model_type.value, scope, body.format.value, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        file = result.files[0]
        return FileResponse(
            file.path,
            media_type=EXPORT_TYPES[body.format.value],
            filename=file.path.name,
            headers={"X-Agroml-Rows": str(file.rows)},
            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
        )

    export_doc: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "the file, streamed as an attachment (header X-Agroml-Rows: its row count)",
            "content": {
                "text/csv": {
                    "example": "id,source,model_type,predicted_label,label,...\n3f2a...,supabase,pest,aphids,..."
                },
                "application/x-ndjson": {},
                "application/vnd.apache.parquet": {},
            },
        }
    }

    @router.post(
        "/export-training-data",
        dependencies=auth,
        response_class=FileResponse,
        responses=export_doc,
        summary="`agroml export --scope training`: confirmed and corrected rows, as a download",
    )
    def export_training_data(body: ExportBody) -> FileResponse:
        return export(body, "training")

    @router.post(
        "/export-all-data",
        dependencies=auth,
        response_class=FileResponse,
        responses=export_doc,
        summary="`agroml export --scope all`: every row (invalid ones with their reason), as a download",
    )
    def export_all_data(body: ExportBody) -> FileResponse:
        return export(body, "all")

    @router.post(
        "/evaluate",
        dependencies=auth,
        summary="`agroml evaluate --json`: a run (or production) on rows it never trained on",
        responses=_example({"run_id": RUN_EXAMPLE, "rows": "test", "metrics": {"accuracy": 0.9}}),
    )
    def evaluate(body: EvaluateBody) -> dict[str, Any]:
        result = run_evaluation(settings, body.model_type.value, body.run, newer=body.newer, batch_size=body.batch_size)
        return result.to_dict()

    @router.post(
        "/promote",
        dependencies=auth,
        summary="`agroml promote --json`: make a run the production model",
        responses=_example({"model_type": "pest", "run_id": RUN_EXAMPLE, "previous_run_id": None}),
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

    @router.post(
        "/predict",
        dependencies=auth,
        summary="`agroml predict --run production --json` for one uploaded photo",
        responses=_example({"run_id": RUN_EXAMPLE, "predictions": [{"image": "leaf.jpg", "ok": True, "top": []}]}),
    )
    def predict(
        image: Annotated[UploadFile, File(description="a photo (JPEG, PNG, WebP...)")],
        model: ModelType = ModelType("pest"),
        top: Annotated[int, Query(ge=1, le=100)] = 3,
    ) -> dict[str, Any]:
        name = Path(image.filename or "upload").name or "upload"
        limit = int(settings.image_max_mb * 1024 * 1024)
        too_large = TooLarge(
            f"the upload is over {settings.image_max_mb:g} MB",
            fix="send a smaller photo (the limit is AGROML_IMAGE_MAX_MB)",
        )
        with tempfile.TemporaryDirectory(prefix="agroml-predict-") as tmp:
            path = Path(tmp) / name
            with open(path, "wb") as out:
                size = 0
                while chunk := image.file.read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise too_large
                    out.write(chunk)
            saved = models.get(settings, model.value)
            result = run_predict(settings, model.value, [str(path)], ref="production", top=top, saved=saved)
        data = result.to_dict()
        for prediction in data["predictions"]:
            prediction["image"] = name  # the client's name, not the server's temporary path
            if prediction["error"]:
                prediction["error"] = prediction["error"].replace(str(path), name)
        return data

    for route in router.routes:  # an upload announced over the limit is refused before it is read
        if isinstance(route, AgromlRoute) and route.path.endswith("/predict"):
            route.max_body = int(settings.image_max_mb * 1024 * 1024) + UPLOAD_OVERHEAD
    return router


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
