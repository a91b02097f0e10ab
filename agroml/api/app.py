"""The stand-alone app `agroml serve` runs: the router, OpenAPI docs at /docs, CORS only when asked."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agroml import __version__
from agroml.api.errors import error_body
from agroml.api.routes import make_router
from agroml.core import config
from agroml.core.config import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app with every route under /api/model-training (uvicorn's factory)."""
    settings = settings if settings is not None else config.resolve()
    app = FastAPI(
        title="agroml",
        version=__version__,
        description="Data and training loop of AgroShield's crop classifiers. Every route but /health needs "
        '`Authorization: Bearer <AGROML_API_TOKEN>`; errors are `{"error", "fix"}`.',
    )
    app.include_router(make_router(settings))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Outside the router's routes too (an unknown URL), errors are {"error", "fix"}."""
        return JSONResponse(
            error_body(str(exc.detail), "see the routes at /docs"), status_code=exc.status_code, headers=exc.headers
        )

    origins = [o.strip() for o in settings.api_cors_origins.split(",") if o.strip()]
    if origins:  # off unless AGROML_API_CORS_ORIGINS names the browsers' origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Location", "Content-Disposition", "X-Agroml-Rows"],
        )
    return app
