"""The read routes: /health, /data-stats, /data-distribution, /model-performance, /training-status,
/training-history. Each returns the ``to_dict()`` of the library call its CLI command makes."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from agroml import __version__
from agroml.api.common import RUN_EXAMPLE, Context, example, parse_time
from agroml.api.schemas import ByKey, ModelType, ModelTypeOrAll
from agroml.core import schema
from agroml.core.config import Settings
from agroml.core.files import json_text, utc_stamp
from agroml.data import analysis
from agroml.data.sources import open_source
from agroml.lifecycle.performance import model_performance
from agroml.ops import doctor

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


def add_read_routes(router: APIRouter, ctx: Context) -> None:
    """Add the read routes to ``router``."""
    settings, auth = ctx.settings, ctx.auth
    checks = HealthChecks(settings)

    @router.get(
        "/health",
        summary="Offline doctor checks, version, running trainings (no token needed)",
        responses=example(
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
        with ctx.registry() as reg:
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
        responses=example({"generated_at": "…", "source": "local", "since": None, "until": None, "models": {}}),
    )
    def data_stats(
        model: ModelTypeOrAll = ModelTypeOrAll("all"),
        since: str | None = None,
        until: str | None = None,
        min_total: Annotated[int | None, Query(ge=0)] = None,
        min_per_class: Annotated[int | None, Query(ge=0)] = None,
    ) -> Response:
        start, end = analysis.check_window(parse_time("since", since), parse_time("until", until))
        total = settings.min_total if min_total is None else min_total
        per_class = settings.min_per_class if min_per_class is None else min_per_class
        models = schema.expand_model_types(model.value)

        def compute() -> bytes:
            with contextlib.closing(open_source(settings)) as src:
                return _json(analysis.stats_report(src, models, start, end, total, per_class).to_dict())

        return _kept(ctx.memo.get(("data-stats", tuple(models), start, end, total, per_class), compute))

    @router.get(
        "/data-distribution",
        dependencies=auth,
        summary="`agroml distribution --json`: rows by class, crop, region, season or month",
        responses=example({"model_type": "pest", "by": "class", "total": 0, "counts": []}),
    )
    def data_distribution(
        model: ModelType = ModelType("pest"),
        by: ByKey = ByKey("class"),
        since: str | None = None,
        until: str | None = None,
    ) -> Response:
        start, end = analysis.check_window(parse_time("since", since), parse_time("until", until))

        def compute() -> bytes:
            with contextlib.closing(open_source(settings)) as src:
                report = analysis.distribution_report(src, model.value, by.value, start, end, settings.timezone)
            return _json(report.to_dict())

        return _kept(ctx.memo.get(("data-distribution", model.value, by.value, start, end), compute))

    @router.get(
        "/model-performance",
        dependencies=auth,
        summary="`agroml performance --json`: deployed model's feedback accuracy and its test figures",
        responses=example({"models": {"pest": {"feedback": {"feedback_accuracy": 0.81}, "production": None}}}),
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
        responses=example({"running": [{"run_id": RUN_EXAMPLE, "model_type": "pest", "epoch": 3, "total_epochs": 15}]}),
    )
    def training_status() -> dict[str, Any]:
        with ctx.registry() as reg:
            return {"running": [r.to_dict() for r in reg.status()]}

    @router.get(
        "/training-history",
        dependencies=auth,
        summary="`agroml runs --json`: every run, newest first",
        responses=example([{"run_id": RUN_EXAMPLE, "model_type": "pest", "state": "succeeded"}]),
    )
    def training_history(
        model: ModelType | None = None,
        limit: Annotated[int | None, Query(ge=1)] = None,
    ) -> list[dict[str, Any]]:
        with ctx.registry() as reg:
            return [r.to_dict() for r in reg.runs(model.value if model else None)[:limit]]


def _json(data: Any) -> bytes:
    """A kept answer, encoded once as the CLI's --json encodes it (FastAPI's own encoder walks the whole
    report again on every request: 40 ms of a 100,000-row /data-stats answer, more than reading it kept)."""
    return json_text(data, indent=None).encode()


def _kept(body: bytes) -> Response:
    return Response(body, media_type="application/json")
