"""How the deployed model does: farmers' feedback accuracy next to its production run's test figures.

Why both, side by side: the test split measures the model on photos like those it trained on; the
feedback accuracy measures the model that actually answered farmers (confirmed / (confirmed +
corrected + rejected), overall and per predicted class). A gap between them is the first sign the
photos in the field have drifted from the training data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agroml.data.analysis import stats_report
from agroml.data.sources import RecordSource
from agroml.lifecycle.promotion import PRODUCTION, PROMOTED_FILE

#: The test-split figures of metrics.json shown per production model.
TEST_FIGURES = ("n", "accuracy", "top3_accuracy", "macro_f1")
#: The feedback figures of ``stats`` shown per model type.
FEEDBACK_FIGURES = ("total", "confirmed", "corrected", "rejected", "feedback_rate", "feedback_accuracy")


@dataclass
class PerformanceReport:
    """What `agroml performance` shows (and GET /model-performance returns)."""

    generated_at: str
    source: str
    since: str | None
    until: str | None
    models: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "source": self.source,
            "since": self.since,
            "until": self.until,
            "models": self.models,
        }


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def production_summary(models_dir: str | Path, model_type: str) -> dict[str, Any] | None:
    """The production model of ``model_type``: run id, when it was promoted, its test figures (None: none)."""
    folder = Path(models_dir) / model_type / PRODUCTION
    if not folder.is_dir():
        return None
    marker, config, metrics = (_read(folder / name) for name in (PROMOTED_FILE, "config.json", "metrics.json"))
    test = metrics.get("test") or {}
    return {
        "run_id": marker.get("run_id") or config.get("run_id") or folder.name,
        "promoted_at": marker.get("promoted_at"),
        "arch": config.get("arch"),
        "classes": config.get("classes"),
        "test": {k: test.get(k) for k in TEST_FIGURES} if test else None,
        "test_per_class_f1": {c: m.get("f1") for c, m in (test.get("per_class") or {}).items()},
    }


def model_performance(
    source: RecordSource,
    models_dir: str | Path,
    model_types: list[str],
    since: Any = None,
    until: Any = None,
) -> PerformanceReport:
    """Per model type: the feedback figures of ``stats`` and the production run's test figures."""
    stats = stats_report(source, model_types, since, until)
    models: dict[str, dict[str, Any]] = {}
    warnings = list(stats.warnings)
    for model_type, block in stats.models.items():
        production = production_summary(models_dir, model_type)
        if production is None:
            warnings.append(f"{model_type}: no production model yet (promote a run: `agroml promote RUN_ID`)")
        models[model_type] = {
            "feedback": {k: block[k] for k in FEEDBACK_FIGURES},
            "feedback_accuracy_by_class": {c: v["feedback_accuracy"] for c, v in block["classes"].items()},
            "deployed_confusion": block["deployed_confusion"],
            "production": production,
        }
    return PerformanceReport(
        stats.generated_at,
        stats.source,
        stats.since,
        stats.until,
        models,
        warnings,
    )
