"""Errors as JSON ``{"error", "fix"}`` with the CLI's messages and an HTTP status, never a traceback.

Why a route class and not app exception handlers: handlers belong to the app, and the AgroShield
backend includes only this router in an app of its own. :class:`AgromlRoute` turns every library
error, validation error and crash of this router's routes into the same JSON, whatever app serves it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from agroml.core.errors import (
    AgromlError,
    ConfigError,
    ImageError,
    ModelNotFoundError,
    NoDataError,
    NotEnoughDataError,
    RunBusyError,
    SourceError,
    StoreError,
    UsageError,
)

log = logging.getLogger("agroml.api")


class Unauthorized(AgromlError):
    """No bearer token, or the wrong one."""


class Unavailable(AgromlError):
    """The server is not set up for this route (no API token configured)."""


class TooLarge(AgromlError):
    """An upload over the size limit."""


#: Error class -> HTTP status; the first class in an error's MRO found here decides.
STATUS: dict[type[AgromlError], int] = {
    Unauthorized: 401,
    Unavailable: 503,
    TooLarge: 413,
    UsageError: 400,
    ImageError: 400,
    ModelNotFoundError: 404,
    NoDataError: 404,
    RunBusyError: 409,
    NotEnoughDataError: 409,
    StoreError: 503,
    ConfigError: 503,
    SourceError: 502,
}


def status_of(exc: AgromlError) -> int:
    return next((STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS), 500)


def error_body(message: str, fix: str | None) -> dict[str, Any]:
    return {"error": message, "fix": fix}


def error_response(exc: AgromlError) -> JSONResponse:
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(exc.message, exc.fix), status_code=status, headers=headers)


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field (``body.epochs: Input should be a valid integer``) in one line."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    return JSONResponse(
        error_body("; ".join(problems) or "invalid request", "see the request's schema and example at /docs"),
        status_code=422,
    )


class AgromlRoute(APIRoute):
    """A route whose failures answer ``{"error", "fix"}`` with the status of :data:`STATUS`.

    ``max_body`` (bytes, set after the route is made): a request that announces a larger body is refused
    with 413 before the body is read (FastAPI reads a whole upload before the route's code runs).
    """

    max_body: int | None = None

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                announced = request.headers.get("content-length", "")
                if self.max_body is not None and announced.isdigit() and int(announced) > self.max_body:
                    raise TooLarge(
                        f"the request body is over {self.max_body // (1024 * 1024)} MB",
                        fix="send a smaller photo (the limit is AGROML_IMAGE_MAX_MB)",
                    )
                return await handler(request)
            except AgromlError as exc:
                return error_response(exc)
            except RequestValidationError as exc:
                return validation_response(exc)
            except Exception as exc:  # a bug: logged with its traceback here, never sent to the client
                log.exception("%s %s failed", request.method, request.url.path)
                return JSONResponse(
                    error_body(f"internal error ({type(exc).__name__})", "see the server's log"), status_code=500
                )

        return guarded
