"""The feedback series with its deployments marked: the join of the data layer and the model records.

Why a module of its own in the operations layer: the series (agroml.data.timeline) may not import the
registry, and the registry knows nothing of feedback; ``stats --by`` and the monitoring page both need
them together, computed one way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agroml.data.sources import RecordSource
from agroml.data.timeline import TimelineReport, feedback_timeline
from agroml.lifecycle.deployments import deployment_marks


def feedback_over_time(
    source: RecordSource,
    models_dir: str | Path,
    model_types: list[str],
    by: str = "month",
    since: Any = None,
    until: Any = None,
    tz: str = "Africa/Nairobi",
) -> TimelineReport:
    """``agroml stats --by month|week``: the feedback series per model type, the periods in which a new
    production model went live marked (from the registry's promotions, else promote's markers)."""
    marks, warnings = deployment_marks(models_dir, model_types)
    report = feedback_timeline(source, model_types, by, since, until, tz, deployments=marks)
    report.warnings.extend(warnings)
    return report


__all__ = ["feedback_over_time"]
