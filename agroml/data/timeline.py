"""Feedback over time: per month or week, what the field sent and what farmers said about the deployed model.

Why a series and not a snapshot: the people who run AgroShield ask "is the deployed model getting
better or worse according to farmers, since which deployment?". ``stats`` answers for one window;
this module answers per period, with a Wilson 95% interval on every accuracy so that a month with 8
answers shows a wide band instead of looking like a crisis.

Definitions are ``stats``' own (agroml.data.analysis, reference/agroshield-schema.md): invalid rows
are counted and kept out of every other number; feedback accuracy = confirmed / (confirmed +
corrected + rejected), overall and per PREDICTED class; trainable = rows with a training label.
Periods follow the farm's calendar (local time ``tz``), like ``distribution``'s months; weeks are
ISO weeks (Monday to Sunday). Gaps are filled with zero periods, so a silent month shows as one.

Deployment marks (when a new production model went live) belong to the model-records layer, which
this layer may not import: the caller passes them in (agroml.ops.monitor joins them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import pandas as pd

from agroml.core import schema
from agroml.core.errors import UsageError
from agroml.data import records as rec
from agroml.data.analysis import _empty_check, _iso, _now, check_timezone, check_window, local_time
from agroml.data.confusion import accuracy_block as _accuracy
from agroml.data.confusion import wilson
from agroml.data.sources import RecordSource

#: What ``stats --by`` accepts.
PERIODS: tuple[str, ...] = ("month", "week")
_ANSWERED = (rec.CONFIRMED, rec.CORRECTED, rec.REJECTED)
_COLUMNS = ["predicted_label", "feedback", "label", "created_at", "invalid_reason"]


@dataclass
class TimelineReport:
    """What ``agroml stats --by month|week`` shows: per model type, a series of periods.

    See :func:`feedback_timeline` for what each period holds.
    """

    generated_at: str
    source: str
    by: str
    timezone: str
    since: str | None
    until: str | None
    models: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    plot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``agroml stats --by ... --json``; "plot" only when a chart was written."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.plot is None:
            del data["plot"]
        return data


def period_key(local: pd.Series, by: str) -> pd.Series:
    """The period of each local time: ``YYYY-MM`` for months, ISO ``YYYY-Www`` for weeks."""
    if by == "month":
        return local.dt.strftime("%Y-%m")
    iso = local.dt.isocalendar()
    return iso["year"].astype(str) + "-W" + iso["week"].astype(int).map("{:02d}".format)


def _span(keys: Sequence[str], by: str) -> list[tuple[str, str]]:
    """[(period, first local day ISO)] from the first to the last key, gaps included."""
    if by == "month":
        months = pd.period_range(min(keys), max(keys), freq="M")
        return [(str(p), p.start_time.date().isoformat()) for p in months]
    mondays = [pd.Timestamp.fromisocalendar(int(k[:4]), int(k[6:]), 1) for k in keys]
    days = pd.date_range(min(mondays), max(mondays), freq="7D")
    return [(f"{d.isocalendar()[0]}-W{d.isocalendar()[1]:02d}", d.date().isoformat()) for d in days]


def _fold(chunk: pd.DataFrame, tz: str, by: str) -> pd.DataFrame:
    """One chunk of records -> row counts per (period, predicted class, feedback, trainable, invalid)."""
    frame = pd.DataFrame(
        {
            "period": period_key(local_time(chunk["created_at"], tz), by).astype(object),
            "predicted_label": chunk["predicted_label"].astype(object).fillna(""),
            "feedback": chunk["feedback"].astype(object).fillna(rec.NO_FEEDBACK),
            "trainable": chunk["label"].notna(),
            "invalid": chunk["invalid_reason"].notna(),
        }
    )
    keys = ["period", "predicted_label", "feedback", "trainable", "invalid"]
    return frame.groupby(keys, dropna=False, sort=False).size().reset_index(name="n")


def _place(marks: Sequence[Mapping[str, Any]], tz: str, by: str) -> list[dict[str, Any]]:
    """Each deployment mark with the period (local time) it falls in, oldest first."""
    placed = []
    for mark in marks:
        at = pd.Timestamp(mark["promoted_at"])
        at = at.tz_localize("UTC") if at.tzinfo is None else at
        period = period_key(pd.Series([at.tz_convert(tz)]), by).iloc[0]
        placed.append({**mark, "promoted_at": _iso(at), "period": str(period)})
    return sorted(placed, key=lambda m: m["promoted_at"])


def _series(groups: pd.DataFrame, by: str, marks: list[dict[str, Any]]) -> dict[str, Any]:
    """The model block: periods (gaps filled), classes, and the deployments (in range or not)."""
    if groups.empty:
        return {"periods": [], "classes": [], "deployments": marks}
    invalid = groups[groups["invalid"]].groupby("period")["n"].sum()
    valid = groups[~groups["invalid"]]
    rows = valid.groupby("period")["n"].sum()
    trainable = valid[valid["trainable"]].groupby("period")["n"].sum()
    by_feedback = valid.groupby(["period", "feedback"])["n"].sum()
    answered = valid[valid["feedback"].isin(_ANSWERED)]
    per_class = answered.groupby(["period", "predicted_label", "feedback"])["n"].sum()
    classes = sorted(set(answered["predicted_label"]))

    def get(series: pd.Series, *key: Any) -> int:
        value = series.get(key if len(key) > 1 else key[0], 0)
        return int(value)

    periods = []
    marks_in: dict[str, list[dict[str, Any]]] = {}
    for mark in marks:
        marks_in.setdefault(mark["period"], []).append({"run_id": mark["run_id"], "promoted_at": mark["promoted_at"]})
    for period, start in _span(list(groups["period"].unique()), by):
        counts = {f: get(by_feedback, period, f) for f in (*_ANSWERED, rec.NO_FEEDBACK)}
        total = get(rows, period)
        n_answered = sum(counts[f] for f in _ANSWERED)
        per = {}
        for c in classes:
            got = {f: get(per_class, period, c, f) for f in _ANSWERED}
            if sum(got.values()):
                per[c] = _accuracy(got[rec.CONFIRMED], sum(got.values()))
        periods.append(
            {
                "period": period,
                "start": start,
                "predictions": total,
                **{f if f != rec.NO_FEEDBACK else "no_feedback": n for f, n in counts.items()},
                "feedback_rate": n_answered / total if total else None,
                **_accuracy(counts[rec.CONFIRMED], n_answered),
                "trainable": get(trainable, period),
                "invalid": get(invalid, period),
                "classes": per,
                "deployments": marks_in.get(period, []),
            }
        )
    return {"periods": periods, "classes": classes, "deployments": marks}


def feedback_timeline(
    source: RecordSource,
    model_types: list[str],
    by: str = "month",
    since: Any = None,
    until: Any = None,
    tz: str = "Africa/Nairobi",
    deployments: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> TimelineReport:
    """``agroml stats --by month|week``: per period and model type, the feedback series.

    Each period: ``predictions`` (valid rows), ``confirmed`` / ``corrected`` / ``rejected`` /
    ``no_feedback``, ``feedback_rate``, ``answered``, ``feedback_accuracy`` with its Wilson 95%
    interval (``ci_low``, ``ci_high``; None without answers), the same per predicted class
    (``classes``), ``trainable`` rows added, ``invalid`` rows left out, and the ``deployments``
    (``{"run_id", "promoted_at"}``) that went live in it. ``deployments`` maps a model type to its
    promotion marks (``{"run_id", "promoted_at"}``, any order); each model block lists them all
    with their period, also those outside the data's span. Raises NoDataError on an empty source.
    """
    if by not in PERIODS:
        raise UsageError(f"unknown period {by!r}: valid periods are {', '.join(PERIODS)}")
    for m in model_types:
        schema.check_model_type(m)
    check_timezone(tz)
    since, until = check_window(since, until)
    models: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    invalid_total: Counter[str] = Counter()
    for m in model_types:
        parts = []
        for chunk in source.iter_records(m, since, until, columns=_COLUMNS):
            if chunk.empty:
                continue
            seen.add(m)
            parts.append(_fold(chunk, tz, by))
            invalid_total[m] += int(chunk["invalid_reason"].notna().sum())
        groups = (
            pd.concat(parts, ignore_index=True)
            .groupby(["period", "predicted_label", "feedback", "trainable", "invalid"], sort=False)["n"]
            .sum()
            .reset_index()
            if parts
            else pd.DataFrame()
        )
        models[m] = _series(groups, by, _place((deployments or {}).get(m, []), tz, by))
    warnings = _empty_check(source, model_types, seen) + list(getattr(source, "warnings", []) or [])
    warnings += [
        f"{m}: {n} invalid rows left out of the series (`agroml stats` lists the reasons)"
        for m, n in invalid_total.items()
        if n
    ]
    return TimelineReport(_now(), source.name, by, tz, _iso(since), _iso(until), models, warnings)


__all__ = ["PERIODS", "TimelineReport", "feedback_timeline", "period_key", "wilson"]
