"""Rollback: put the previous production model back, byte for byte, from ``models/<type>/archive/``.

"Previous" follows the audit trail as a stack: each promotion pushes the run it installs, each rollback
pops one. So after promoting A, B, C, two rollbacks give B then A (not C again): a rollback never
undoes a rollback. The archived folder is copied, not moved (it stays as the record of what served),
into production through the same crash-safe steps as a promotion (agroml.lifecycle.journal), and the
production model it replaces is archived in turn.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agroml.core.errors import ModelNotFoundError
from agroml.lifecycle.journal import guarded, install, production_lock, recover, stage_copy
from agroml.lifecycle.locating import ARCHIVE, PRODUCTION, PROMOTED_FILE, _read_json, folder_run_id
from agroml.lifecycle.registry import SERVING_EVENTS, PromotionEvent, Registry


@dataclass
class RollbackResult:
    """What `agroml rollback` did: which run serves again, from which archive folder, what it replaced."""

    model_type: str
    run_id: str
    path: str
    restored_from: str
    previous_run_id: str | None
    archived_to: str | None
    recovered: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        keys = ("model_type", "run_id", "path", "restored_from", "previous_run_id", "archived_to", "recovered")
        return {k: getattr(self, k) for k in keys}


def _serving_stack(events: list[PromotionEvent]) -> list[list[Any]]:
    """[run id, archive folder it was moved to (None while it serves)] for each production model in turn."""
    stack: list[list[Any]] = []
    for event in events:
        if event.event not in SERVING_EVENTS:
            continue
        if event.event == "rolled_back":
            if stack:
                stack.pop()
            if stack:
                stack[-1][1] = None
        elif stack:
            stack[-1][1] = event.archived_to
        if event.event == "promoted" or not stack:
            stack.append([event.run_id, None])
    return stack


def _archived_copy(type_dir: Path, run_id: str, recorded: str | None) -> Path | None:
    """The archive folder holding ``run_id``: the one recorded, else (a registry from before the audit
    trail recorded it) the newest archived folder of that run."""
    if recorded and (Path(recorded) / "model.keras").is_file():
        return Path(recorded)
    found = [f for f in (type_dir / ARCHIVE).glob("*") if (f / "model.keras").is_file() and folder_run_id(f) == run_id]
    found.sort(key=lambda f: str(_read_json(f / PROMOTED_FILE).get("promoted_at") or ""))
    return found[-1] if found else None


def rollback(registry: Registry, model_type: str, *, command: str = "rollback") -> RollbackResult:
    """Restore the production model that served before the current one; recorded as ``rolled_back``."""
    type_dir = registry.models_dir / model_type
    production = type_dir / PRODUCTION
    with production_lock(type_dir):
        recovered = guarded("recover", production, lambda: recover(registry, type_dir))
        stack = _serving_stack(registry.events(model_type))
        current = folder_run_id(production) if (production / "model.keras").is_file() else None
        if current is None or len(stack) < 2:
            raise ModelNotFoundError(
                f"no earlier production {model_type} model to roll back to"
                + (f" ({current} is the first one promoted)" if current else ""),
                fix=f"see `agroml history --model {model_type}`; promote a run with `agroml promote RUN_ID`",
            )
        run_id, recorded = stack[-2]
        source = _archived_copy(type_dir, run_id, recorded)
        if source is None:
            raise ModelNotFoundError(
                f"the archived copy of {run_id} is gone from {type_dir / ARCHIVE}",
                fix=f"promote {run_id} again from its run folder: `agroml promote {run_id} --force`",
            )
        event = PromotionEvent(
            model_type, run_id, time.time(), None, str(production), event="rolled_back", command=command
        )
        event.champion_run_id, event.restored_from = current, str(source)
        staged = guarded(f"roll back to {run_id}", production, lambda: stage_copy(type_dir, source))
        guarded(f"roll back to {run_id}", production, lambda: install(registry, type_dir, staged, event))
    return RollbackResult(
        model_type=model_type,
        run_id=run_id,
        path=str(production),
        restored_from=str(source),
        previous_run_id=event.previous_run_id,
        archived_to=event.archived_to,
        recovered=recovered,
    )
