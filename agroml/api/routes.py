"""The routes under ``/api/model-training``: each parses its input, calls the library function the CLI
command of the same job calls, and returns that result's ``to_dict()``, the JSON of the CLI's ``--json``.

One router, its routes added by job: reads (read_routes), trainings and runs (job_routes), files in
and out (file_routes). Blocking work (SQLite, pandas, TensorFlow) runs in plain ``def`` routes, which
FastAPI runs in its thread pool, so the event loop keeps answering; a training runs in a worker
process of its own (agroml.ops.jobs), never in this one.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from agroml.api import PREFIX
from agroml.api.common import Context
from agroml.api.errors import AgromlRoute
from agroml.api.file_routes import add_file_routes, limit_uploads
from agroml.api.job_routes import add_job_routes
from agroml.api.memo import Memo
from agroml.api.read_routes import add_read_routes
from agroml.api.security import bearer_auth
from agroml.core import config
from agroml.core.config import Settings
from agroml.data.freshness import StoreWatch


def make_router(settings: Settings | None = None) -> APIRouter:
    """The API's router with its prefix; ``settings`` default to the environment / .env, resolved now."""
    settings = settings if settings is not None else config.resolve()
    # read results are kept while the local store and image cache are unchanged; a remote source always reads
    local = settings.effective_source != "supabase"
    watch = StoreWatch(settings.db_path, settings.image_dir) if local else None
    ctx = Context(settings=settings, auth=[Depends(bearer_auth(settings))], memo=Memo(watch))
    router = APIRouter(prefix=PREFIX, route_class=AgromlRoute, tags=["model training"])
    add_read_routes(router, ctx)
    add_job_routes(router, ctx)
    add_file_routes(router, ctx)
    limit_uploads(router, ctx)
    return router
