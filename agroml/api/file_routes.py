"""The routes that move files: a run's files, the two exports (as downloads) and /predict (an upload)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from agroml.api.common import RUN_EXAMPLE, Context, example
from agroml.api.errors import AgromlRoute, TooLarge
from agroml.api.schemas import ExportBody, ModelType
from agroml.core.errors import ModelNotFoundError, UsageError
from agroml.data.exporting import export_records
from agroml.data.sources import open_source
from agroml.lifecycle.predicting import predict as run_predict
from agroml.lifecycle.serving import ProductionModels

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
#: The export routes: (path, operation name, `agroml export --scope`, summary). One endpoint serves both.
EXPORT_ROUTES = (
    (
        "/export-training-data",
        "export_training_data",
        "training",
        "`agroml export --scope training`: confirmed and corrected rows, as a download",
    ),
    (
        "/export-all-data",
        "export_all_data",
        "all",
        "`agroml export --scope all`: every row (invalid ones with their reason), as a download",
    ),
)
EXPORT_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the file, streamed as an attachment (header X-Agroml-Rows: its row count)",
        "content": {
            "text/csv": {"example": "id,source,model_type,predicted_label,label,...\n3f2a...,supabase,pest,aphids,..."},
            "application/x-ndjson": {},
            "application/vnd.apache.parquet": {},
        },
    }
}
#: Bytes a multipart form adds around the photo (boundaries, headers): allowed on top of the photo limit.
UPLOAD_OVERHEAD = 64 * 1024


def add_file_routes(router: APIRouter, ctx: Context) -> None:
    """Add the run file, export and predict routes to ``router``."""
    settings, auth = ctx.settings, ctx.auth
    models = ProductionModels()

    @router.get(
        "/runs/{run_id}/files/{name}",
        dependencies=auth,
        summary="A run's curves.png, confusion_matrix.png, MODEL_CARD.md or model.tflite",
        response_class=FileResponse,
        responses={
            200: {"description": "the file", "content": {t.split(";")[0]: {} for t in RUN_FILES.values()}},
            **example({"error": "run 2026... has no model.tflite", "fix": "model.tflite: trained with tflite"}, 404),
        },
    )
    def run_file(run_id: str, name: str) -> FileResponse:
        if name not in RUN_FILES:
            raise UsageError(f"{name!r} is not a run file served here", fix=f"ask for one of {', '.join(RUN_FILES)}")
        with ctx.registry() as reg:
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

    for path, name, scope, summary in EXPORT_ROUTES:
        router.add_api_route(
            path,
            _export_endpoint(ctx, scope),
            methods=["POST"],
            name=name,
            dependencies=auth,
            response_class=FileResponse,
            responses=EXPORT_DOC,
            summary=summary,
        )

    @router.post(
        "/predict",
        dependencies=auth,
        summary="`agroml predict --run production --json` for one uploaded photo",
        responses=example({"run_id": RUN_EXAMPLE, "predictions": [{"image": "leaf.jpg", "ok": True, "top": []}]}),
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


def limit_uploads(router: APIRouter, ctx: Context) -> None:
    """An upload to /predict announced over the photo limit is refused before it is read.

    Call it on the router the app includes, after every route is on it: including a router copies its
    routes, so a limit set on another router's route would not travel.
    """
    for route in router.routes:
        if isinstance(route, AgromlRoute) and route.path.endswith("/predict"):
            route.max_body = int(ctx.settings.image_max_mb * 1024 * 1024) + UPLOAD_OVERHEAD


def _export_endpoint(ctx: Context, scope: str) -> Any:
    """The endpoint of one export route: `agroml export --scope <scope>` into a temporary folder, streamed
    back as a download; the folder is removed once the response is sent (or at once if the export fails)."""

    def export(body: ExportBody) -> FileResponse:
        folder = Path(tempfile.mkdtemp(prefix="agroml-export-"))
        try:
            with contextlib.closing(open_source(ctx.settings)) as src:
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

    return export
