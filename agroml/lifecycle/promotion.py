"""Promotion: making a run the production model, through the gate (agroml.lifecycle.gate).

``promote`` copies a run to ``models/<type>/production/`` and moves the previous production to
``archive/<its run id>/`` (agroml.lifecycle.journal: a kill at any point leaves a whole production
model), but only when the gate says the run (the challenger) is not worse than the production model
(the champion) on rows neither trained on; ``force`` skips the gate and is recorded as forced. The
first promotion of a model type has nothing to compare with and needs no gate; promoting the run that
already serves changes nothing and says so. Every outcome (promoted, refused, no-op) is an event in
the registry's audit trail (`agroml history`).

Refusal is a result, not an error: `agroml promote` exits 1 with the side-by-side table, and
`agroml retrain` exits 3 (trained but not promoted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agroml.core.config import Settings
from agroml.core.errors import UsageError
from agroml.core.files import utc_stamp
from agroml.core.progress import ProgressFn, no_progress
from agroml.core.schema import MODEL_TYPES
from agroml.lifecycle import tracking
from agroml.lifecycle.gate import compare
from agroml.lifecycle.journal import JOURNAL, STAGING_PREFIX, guarded, install, production_lock, recover, stage_copy
from agroml.lifecycle.locating import (
    ARCHIVE,
    PRODUCTION,
    PROMOTED_FILE,
    folder_run_id,
    locate,
    recorded_model_type,
    resolve_run,
)
from agroml.lifecycle.publishing import publish as publish_production
from agroml.lifecycle.registry import PromotionEvent, Registry

__all__ = [
    "ARCHIVE",
    "PRODUCTION",
    "PROMOTED_FILE",
    "PromotionResult",
    "folder_run_id",
    "history",
    "locate",
    "promote",
    "recorded_model_type",
    "resolve_run",
]


@dataclass
class PromotionResult:
    """What `agroml promote` did: promoted, refused by the gate, or nothing (the run already serves).

    ``run_id`` is the challenger; ``previous_run_id`` the production run it replaced (None when it
    replaced nothing or was not promoted); ``champion_run_id`` the production run it was compared with;
    ``comparison`` the gate's side-by-side (None: first promotion, no-op, or forced).
    """

    model_type: str
    run_id: str
    path: str
    source: str
    previous_run_id: str | None
    archived_to: str | None
    promoted: bool = True
    refused: bool = False
    noop: bool = False
    forced: bool = False
    champion_run_id: str | None = None
    comparison: dict[str, Any] | None = None
    reason: str | None = None
    recovered: str | None = None
    #: With ``publish``: what `agroml publish` uploaded (PublishResult.to_dict()); None otherwise.
    published: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The `agroml promote --json` document (warnings go to stderr, as for every command)."""
        keys = (
            "model_type",
            "run_id",
            "path",
            "source",
            "previous_run_id",
            "archived_to",
            "promoted",
            "refused",
            "noop",
            "forced",
            "champion_run_id",
            "comparison",
            "reason",
            "recovered",
            "published",
        )
        return {k: getattr(self, k) for k in keys}


def promote(
    registry: Registry,
    model_type: str,
    ref: str,
    *,
    settings: Settings,
    force: bool = False,
    command: str = "promote",
    progress: ProgressFn = no_progress,
    publish: bool = False,
) -> PromotionResult:
    """Make run ``ref`` the production ``model_type`` model if the gate lets it (or ``force``).

    Returns the outcome (promoted, refused or no-op), each recorded in the registry with ``command``
    (the command line that asked: promote, retrain...). A failed copy or rename raises OutputError and
    leaves the old production serving. With ``publish``, the production model (the new one, or the
    same one after a no-op) is then uploaded (agroml.lifecycle.publishing); a refused run publishes nothing.
    """
    if ref == PRODUCTION:
        raise UsageError("`production` is already promoted: give a run id (see `agroml runs`)")
    source, recorded = locate(registry, model_type, ref)
    warnings = []
    if recorded is None:
        warnings.append(
            f"{source} records no model type (no model_type in its config.json, no registry row): "
            f"promoted as {model_type}, as --model says"
        )
    type_dir = registry.models_dir / model_type
    production = type_dir / PRODUCTION
    run_id = folder_run_id(source)
    event = PromotionEvent(model_type, run_id, time.time(), None, str(production), command=command, forced=force)
    result = PromotionResult(model_type, run_id, str(production), str(source), None, None, forced=force)
    result.warnings = warnings
    with production_lock(type_dir):
        _decide_and_install(registry, settings, result, event, force, progress)
    return _published(result, registry, settings, publish, progress)


def _decide_and_install(
    registry: Registry,
    settings: Settings,
    result: PromotionResult,
    event: PromotionEvent,
    force: bool,
    progress: ProgressFn,
) -> None:
    """Under the lock: no-op, gate (refuse), or install; ``result`` and ``event`` are filled in."""
    model_type, run_id, source = result.model_type, result.run_id, Path(result.source)
    type_dir = registry.models_dir / model_type
    production = type_dir / PRODUCTION
    result.recovered = guarded("recover", production, lambda: recover(registry, type_dir))
    champion = folder_run_id(production) if (production / "model.keras").is_file() else None
    event.champion_run_id = result.champion_run_id = champion
    if champion == run_id:
        result.promoted, result.noop = False, True
        result.reason = f"{run_id} is already the production {model_type} model: nothing to do"
        event.event, event.reason, event.forced = "noop", result.reason, False
        result.forced = False
        registry.record_event(event)
        return
    if champion is not None and not force:
        comparison = compare(settings, model_type, source, production, progress=progress)
        event.comparison = result.comparison = comparison.to_dict()
        result.warnings += comparison.warnings
        if not comparison.passed:
            result.promoted, result.refused = False, True
            result.reason = "refused by the gate: " + "; ".join(comparison.failed)
            event.event, event.reason = "refused", result.reason
            registry.record_event(event)
            return
    if champion is None:
        event.reason = "first production model: no gate"
    elif force:
        event.reason = "forced: gate skipped"
    result.reason = event.reason
    marker = {
        "run_id": run_id,
        "model_type": model_type,
        "promoted_at": utc_stamp(time.time()),
        "source": str(source),
    }
    staged = guarded(f"promote {run_id}", production, lambda: stage_copy(type_dir, source, marker))
    guarded(f"promote {run_id}", production, lambda: install(registry, type_dir, staged, event))
    result.previous_run_id, result.archived_to = event.previous_run_id, event.archived_to
    result.warnings += tracking.set_production_alias(model_type, run_id)  # MLflow alias, when tracking is on


def _published(
    result: PromotionResult, registry: Registry, settings: Settings, publish: bool, progress: ProgressFn
) -> PromotionResult:
    if publish and not result.refused:
        result.published = publish_production(settings, registry, result.model_type, progress=progress).to_dict()
    return result


def history(registry: Registry, model_type: str | None = None) -> list[PromotionEvent]:
    """The audit trail, oldest first, after finishing any promotion or rollback a kill interrupted (so the
    trail agrees with what is in ``production/``)."""
    for kind in [model_type] if model_type else MODEL_TYPES:
        type_dir = registry.models_dir / kind
        if (type_dir / JOURNAL).is_file() or any(type_dir.glob(f"{STAGING_PREFIX}*")):
            with production_lock(type_dir):
                guarded("recover", type_dir / PRODUCTION, lambda: recover(registry, type_dir))  # noqa: B023
    return registry.events(model_type)
