"""When each production model went live: the deployment marks of the feedback series and the monitoring page.

Why here: which run served when is the model records' knowledge (the registry's promotions, the
markers promote writes), and the data layer, which computes the series, may not import them. This
module reads them; agroml.ops.monitor hands them to agroml.data.timeline.

Sources, best first:
1. ``models/registry.db``'s promotions table: one row per promotion (``--force`` ones included),
   with the time it happened;
2. where the registry has none for a model type (a registry moved aside, models copied from another
   machine): the ``PROMOTED.json`` markers that ``promote`` writes into ``production/`` and that
   travel with each previous production into ``archive/<run id>/``.
Reads only: a models folder without a registry gets none created.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agroml.core.files import utc_stamp
from agroml.lifecycle.promotion import ARCHIVE, PRODUCTION, PROMOTED_FILE
from agroml.lifecycle.registry import Registry


def _registry_marks(registry: Registry, model_type: str) -> list[dict[str, Any]]:
    # The promotions table is the registry's record of what served (Registry.record_promotion writes it).
    rows = registry.con.execute(
        "SELECT run_id, promoted_at, previous_run_id FROM promotions WHERE model_type = ? ORDER BY promoted_at",
        (model_type,),
    ).fetchall()
    return [
        {"run_id": str(run), "promoted_at": utc_stamp(at), "previous_run_id": prev, "from": "registry"}
        for run, at, prev in rows
    ]


def _marker(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(value, dict) or not value.get("promoted_at") or not value.get("run_id"):
        return None
    return {"run_id": str(value["run_id"]), "promoted_at": str(value["promoted_at"]), "from": str(path.parent)}


def _folder_marks(type_dir: Path) -> list[dict[str, Any]]:
    """Marks from ``production/PROMOTED.json`` and ``archive/*/PROMOTED.json``, oldest first."""
    folders = [type_dir / PRODUCTION]
    archive = type_dir / ARCHIVE
    if archive.is_dir():
        folders += sorted(p for p in archive.iterdir() if p.is_dir())
    found = [m for m in (_marker(f / PROMOTED_FILE) for f in folders) if m is not None]
    return sorted(found, key=lambda m: m["promoted_at"])


Marks = dict[str, list[dict[str, Any]]]


def deployment_marks(models_dir: str | Path, model_types: list[str]) -> tuple[Marks, list[str]]:
    """({model type: [{"run_id", "promoted_at" (ISO UTC), "from"}] oldest first}, warnings).

    ``from`` says where a mark was read ("registry", or the folder of its PROMOTED.json), so a reader
    can tell a recorded promotion from one reconstructed from the folders.
    """
    models = Path(models_dir)
    marks: Marks = {}
    warnings: list[str] = []
    with Registry(models, create=False) as registry:
        for model_type in model_types:
            found = _registry_marks(registry, model_type)
            if not found:
                found = _folder_marks(models / model_type)
                if found:
                    warnings.append(
                        f"{model_type}: the registry records no promotion; {len(found)} deployment(s) taken from the "
                        f"PROMOTED.json markers under {models / model_type}"
                    )
            marks[model_type] = found
    return marks, warnings


__all__ = ["deployment_marks"]
