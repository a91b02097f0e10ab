"""`agroml serve`: check what the server needs, then run the app with uvicorn.

Kept free of FastAPI and uvicorn imports at module level, so a machine without the ``api`` extra
gets a message naming the install command instead of an ImportError.
"""

from __future__ import annotations

import importlib.util
import ipaddress

from agroml.core.config import Settings
from agroml.core.errors import ConfigError, UsageError

INSTALL_FIX = "pip install 'agroml[api]'  (FastAPI, uvicorn and python-multipart)"
NEEDED = ("fastapi", "uvicorn", "multipart")


def is_loopback(host: str) -> bool:
    """Only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Refuse what must not start: missing packages, a non-loopback host with no token, bad numbers."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"`agroml serve` needs {', '.join(missing)}, which are not installed", fix=INSTALL_FIX)
    if not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a TCP port", fix="use a port from 1 to 65535")
    if workers < 1:
        raise UsageError(f"--workers {workers} must be at least 1")
    if not settings.api_token and not is_loopback(host):
        raise UsageError(
            f"refusing to serve on {host} without a token: anyone who can reach it could train, promote and export",
            fix="set AGROML_API_TOKEN (e.g. `export AGROML_API_TOKEN=$(openssl rand -hex 32)`), or serve on 127.0.0.1",
        )


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the API until interrupted (each uvicorn worker builds the app from the environment / .env)."""
    check_serve(settings, host, port, workers)
    import uvicorn

    uvicorn.run(
        "agroml.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,  # behind a reverse proxy: client addresses from X-Forwarded-For (trusted: loopback)
        log_level="info",
    )
