"""What every route module of the API shares: the router's context, time parsing, OpenAPI examples."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agroml.api.memo import Memo
from agroml.core.config import Settings
from agroml.core.errors import UsageError
from agroml.lifecycle.registry import Registry

RUN_EXAMPLE = "20261126T130501Z-mobilenetv2"


@dataclass
class Context:
    """One router's settings, the token check of its protected routes and its kept read results."""

    settings: Settings
    #: ``dependencies=`` of every route but /health: the bearer token check.
    auth: list[Any]
    memo: Memo

    def registry(self) -> Registry:
        return Registry(self.settings.models_dir, create=False)


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


def example(data: Any, status: int = 200, media: str = "application/json") -> dict[int | str, Any]:
    """OpenAPI ``responses=`` with one example body (shown at /docs)."""
    return {status: {"content": {media: {"example": data}}}}
