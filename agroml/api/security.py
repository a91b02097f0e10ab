"""The bearer token every route but /health requires, compared in constant time.

Why closed when no token is set (503 with the fix, not open): an API that trains, promotes and
exports farmers' data must never be reachable without a secret because someone forgot to set one.
The token is never logged or returned; a wrong one gets the same answer as a missing one.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agroml.api.errors import Unauthorized, Unavailable
from agroml.core.config import Settings

NO_TOKEN_FIX = (
    "set AGROML_API_TOKEN on the server (e.g. `export AGROML_API_TOKEN=$(openssl rand -hex 32)`) and restart it"
)
_scheme = HTTPBearer(auto_error=False, description="AGROML_API_TOKEN")


def bearer_auth(settings: Settings) -> Callable[[HTTPAuthorizationCredentials | None], None]:
    """A dependency that lets a request through only with ``Authorization: Bearer <AGROML_API_TOKEN>``."""
    expected = (settings.api_token or "").encode()

    def check(credentials: HTTPAuthorizationCredentials | None = Security(_scheme)) -> None:
        if not expected:
            raise Unavailable("this API has no token configured, so its protected routes are closed", fix=NO_TOKEN_FIX)
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise Unauthorized(
                "missing or wrong bearer token",
                fix="send the header `Authorization: Bearer <AGROML_API_TOKEN>`",
            )

    return check
