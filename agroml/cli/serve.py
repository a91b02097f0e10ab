"""Command: `agroml serve` (the HTTP API with uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from agroml.api.server import serve as run_server
from agroml.core import config


def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (not loopback: AGROML_API_TOKEN needed).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes (each loads its own models).")] = 1,
) -> None:
    """Serve the HTTP API (the FastAPI router under /api/model-training) with uvicorn.

    Every route but /health needs `Authorization: Bearer <AGROML_API_TOKEN>`; with no token set the
    server refuses any host but loopback, and its protected routes answer 503. OpenAPI docs: /docs.
    Needs the api extra: pip install 'agroml[api]'.

    Example: AGROML_API_TOKEN=... agroml serve --host 0.0.0.0 --port 8000 --workers 2
    """

    run_server(config.resolve(), host, port, workers)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("serve")(serve)
