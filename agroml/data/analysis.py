"""Stats and distribution: what the feedback says about the deployed model and the training data.

Why aggregates first: ``stats`` works on the (model_type, predicted_label, feedback, label,
actual_label, invalid_reason) -> n table that the local store computes with one SQL GROUP BY, so a
million rows cost a few hundred groups; ``distribution`` folds each chunk of records into small
group counts as it reads, so memory does not grow with the table.

Definitions (reference/agroshield-schema.md):
- invalid rows (``invalid_reason`` set) are counted per reason and kept out of every other number;
- trainable = rows with a training label (confirmed, or corrected under the corrected label);
- feedback_rate = (confirmed + corrected + rejected) / valid rows;
- feedback accuracy of the deployed model = confirmed / (confirmed + corrected + rejected), overall
  and per PREDICTED class, None when no feedback: a correction and a rejection both say "wrong";
- readiness: at least ``min_total`` trainable rows, every class (predicted or trained) with at least
  ``min_per_class`` trainable rows, and at least two such classes (one class is not a classifier).
  A class the deployed model predicts but nobody has labelled is short: a model trained without it
  could no longer name it. Only rows whose image training can read count (the source says which are
  missing: for the local store, rows whose image is not in the cache); how many do not is reported.
"""

from __future__ import annotations

import calendar
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from agroml.core import schema
from agroml.core.errors import ConfigError, NoDataError, NotEnoughDataError, UsageError
from agroml.data import confusion
from agroml.data import records as rec
from agroml.data.sources import RecordSource

#: East African seasons by local calendar month, in calendar order of the year.
SEASONS: tuple[str, ...] = ("transition", "long_rains", "dry_season", "short_rains")
_SEASON_OF_MONTH: dict[int, str] = {
    1: "transition",
    2: "transition",
    3: "long_rains",
    4: "long_rains",
    5: "long_rains",
    6: "dry_season",
    7: "dry_season",
    8: "dry_season",
    9: "dry_season",
    10: "short_rains",
    11: "short_rains",
    12: "short_rains",
}
#: What ``distribution --by`` accepts. "region" is the record's free-text ``location``.
DISTRIBUTION_KEYS: tuple[str, ...] = ("class", "crop", "region", "season", "month")
#: The bucket for rows without a crop or location: counted, never dropped.
UNKNOWN = "unknown"
MONTH_NAMES: tuple[str, ...] = tuple(calendar.month_abbr[m] for m in range(1, 13))


# --- results ---------------------------------------------------------------------------------------
@dataclass
class StatsReport:
    """What ``agroml stats`` shows: per model type blocks (see :func:`model_stats`), for a window."""

    generated_at: str
    source: str
    since: str | None
    until: str | None
    models: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def require_ready(self) -> None:
        """NotEnoughDataError naming each model type that is not ready and why (``stats --require-ready``)."""
        short = [
            f"{m}: {readiness_verdict(block['ready'])}" for m, block in self.models.items() if not block["ready"]["ok"]
        ]
        if short:
            raise NotEnoughDataError(
                "; ".join(short), fix="`agroml pull` or wait for more feedback, or lower --min-total / --min-per-class"
            )


@dataclass
class DistributionReport:
    """What ``agroml distribution`` shows; ``plot`` is the chart's path once one is written."""

    generated_at: str
    source: str
    model_type: str
    by: str
    timezone: str
    since: str | None
    until: str | None
    total: int
    trainable: int
    invalid: dict[str, int]
    counts: list[dict[str, Any]]
    seasons: list[str]
    class_season: dict[str, dict[str, dict[str, int]]]
    months: list[dict[str, Any]]
    #: Where the deployed model is wrong (agroml.data.confusion.where_wrong): per crop, region, pair.
    where_wrong: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    plot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``agroml distribution --json``; "plot" only when a chart was written."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.plot is None:
            del data["plot"]
        return data


# --- feedback counts and stats ---------------------------------------------------------------------
def _sum_by(frame: pd.DataFrame, key: str) -> dict[str, int]:
    if frame.empty:
        return {}
    sums = frame.groupby(key, dropna=True)["n"].sum()
    return {str(k): int(v) for k, v in sums.items()}


def _valid(counts: pd.DataFrame) -> pd.DataFrame:
    return counts[counts["invalid_reason"].isna()]


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _class_trainable(counts: pd.DataFrame) -> tuple[dict[str, int], dict[str, int]]:
    """({class: rows predicted as it}, {class: trainable rows labelled it}) over valid rows."""
    valid = _valid(counts)
    return _sum_by(valid, "predicted_label"), _sum_by(valid[valid["label"].notna()], "label")


def readiness(
    counts: pd.DataFrame, min_total: int, min_per_class: int, missing_images: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Is there enough labelled data to train honestly? From ONE model type's feedback counts.

    ``missing_images`` is {class: trainable rows whose image training cannot use} (the source's
    ``missing_images``): those rows do not count. Returns ``{"ok", "min_total", "min_per_class",
    "short_classes", "trainable", "needed", "classes_ready", "missing_images"}``: ``trainable`` counts
    rows WITH their image, ``missing_images`` the trainable rows without one, ``needed`` is how many more
    trainable rows ``min_total`` asks for, ``classes_ready`` how many classes have at least
    ``min_per_class`` trainable rows.
    """
    if not counts.empty and counts["model_type"].nunique() > 1:
        raise ValueError("readiness() takes the feedback counts of one model type")
    predicted, labelled = _class_trainable(counts)
    lost = {c: min(int(n), labelled.get(c, 0)) for c, n in (missing_images or {}).items()}
    trainable_by = {c: n - lost.get(c, 0) for c, n in labelled.items()}
    trainable = sum(trainable_by.values())
    classes = sorted(set(predicted) | set(trainable_by))
    short = [c for c in classes if trainable_by.get(c, 0) < min_per_class]
    ready_classes = sum(1 for c in classes if trainable_by.get(c, 0) >= min_per_class)
    return {
        "ok": trainable >= min_total and not short and ready_classes >= 2,
        "min_total": int(min_total),
        "min_per_class": int(min_per_class),
        "short_classes": short,
        "trainable": int(trainable),
        "needed": int(max(0, min_total - trainable)),
        "classes_ready": int(ready_classes),
        "missing_images": int(sum(lost.values())),
    }


def readiness_verdict(ready: dict[str, Any]) -> str:
    """One line a person can act on: "ready to train ..." or "not ready: <what is missing>"."""
    missing = ready.get("missing_images", 0)
    lacking = f"{missing} trainable rows lack their image in the cache (`agroml pull` fetches them)"
    if ready["ok"]:
        return f"ready to train ({ready['trainable']} trainable rows, {ready['classes_ready']} classes)" + (
            f"; {lacking}" if missing else ""
        )
    parts = []
    if ready["needed"]:
        parts.append(f"{ready['needed']} more trainable rows needed")
    if ready["short_classes"]:
        parts.append(f"short classes: {', '.join(ready['short_classes'])} (minimum {ready['min_per_class']})")
    if ready["classes_ready"] < 2 and not ready["short_classes"]:
        parts.append(f"only {ready['classes_ready']} class with trainable rows (a classifier needs at least 2)")
    if missing:
        parts.append(lacking)
    return "not ready: " + "; ".join(parts or ["no trainable rows"])


def model_stats(
    counts: pd.DataFrame, min_total: int = 100, min_per_class: int = 10, missing_images: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The per-model block of ``stats`` from one model type's feedback counts; readiness
    leaves out the trainable rows whose image is missing (``missing_images``, {class: rows})."""
    invalid = _sum_by(counts[counts["invalid_reason"].notna()], "invalid_reason")
    valid = _valid(counts)
    by_feedback = _sum_by(valid, "feedback")
    confirmed, corrected, rejected = (by_feedback.get(k, 0) for k in (rec.CONFIRMED, rec.CORRECTED, rec.REJECTED))
    total = int(valid["n"].sum()) if not valid.empty else 0
    answered = confirmed + corrected + rejected
    trainable = int(valid.loc[valid["label"].notna(), "n"].sum()) if not valid.empty else 0

    predicted, trainable_by = _class_trainable(counts)
    fb = valid[valid["feedback"].isin((rec.CONFIRMED, rec.CORRECTED, rec.REJECTED))]
    answered_by = _sum_by(fb, "predicted_label")
    confirmed_by = _sum_by(fb[fb["feedback"] == rec.CONFIRMED], "predicted_label")
    order = sorted(set(predicted) | set(trainable_by), key=lambda c: (-trainable_by.get(c, 0), -predicted.get(c, 0), c))
    classes = {
        c: {
            "predicted": predicted.get(c, 0),
            "trainable": trainable_by.get(c, 0),
            "feedback_accuracy": _ratio(confirmed_by.get(c, 0), answered_by.get(c, 0)),
        }
        for c in order
    }

    # (predicted, training label) of every row with a label: confirmations on the diagonal,
    # corrections off it: the deployed model's confusion as far as farmers told us.
    labelled = valid[valid["label"].notna()]
    pairs = labelled.groupby(["predicted_label", "label"])["n"].sum() if not labelled.empty else pd.Series([])
    ranked = sorted(((int(n), str(p), str(a)) for (p, a), n in pairs.items()), key=lambda t: (-t[0], t[1], t[2]))
    confusion = [{"predicted": p, "actual": a, "n": n} for n, p, a in ranked]
    return {
        "total": total,
        "confirmed": confirmed,
        "corrected": corrected,
        "rejected": rejected,
        "no_feedback": by_feedback.get(rec.NO_FEEDBACK, 0),
        "trainable": trainable,
        "invalid": invalid,
        "feedback_rate": answered / total if total else 0.0,
        "feedback_accuracy": _ratio(confirmed, answered),
        "classes": classes,
        "ready": readiness(counts, min_total, min_per_class, missing_images),
        "deployed_confusion": confusion,
    }


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).isoformat()


#: The times a window may name: pandas' nanosecond Timestamps (which the store and Supabase filters go
#: through) reach from 1677-09-21 to 2262-04-11; whole days inside that, so the message is simple.
EARLIEST = datetime(1677, 9, 22, tzinfo=UTC)
LATEST = datetime(2262, 4, 10, tzinfo=UTC)


def _utc(flag: str, value: Any) -> datetime:
    """``value`` (a datetime, date or ISO text; naive = UTC) as an aware UTC datetime inside the bounds."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    try:
        inside = EARLIEST <= when <= LATEST
    except OverflowError:  # an offset that pushes year 1 or 9999 past what datetime holds
        inside = False
    if not inside:
        raise UsageError(
            f"{flag} {value.isoformat() if isinstance(value, datetime) else value} is outside the dates "
            f"agroml handles ({EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d})",
            fix=f"give a {flag} between those dates, or leave it out",
        )
    return when.astimezone(UTC)


def check_window(since: Any, until: Any) -> tuple[datetime | None, datetime | None]:
    """The one check of a ``[since, until)`` window, for every command that takes one.

    Each bound must lie within :data:`EARLIEST` .. :data:`LATEST` (beyond them a pandas Timestamp
    overflows), and ``since`` must come before ``until``: an empty window is a mistake to report, not an
    empty file to write or a network round trip to make. Returns both as aware UTC datetimes.
    """
    start = None if since is None else _utc("--since", since)
    end = None if until is None else _utc("--until", until)
    if start is not None and end is not None and start >= end:
        raise UsageError(
            f"--since {start.isoformat()} is not before --until {end.isoformat()}",
            fix="give an earlier --since or a later --until",
        )
    return start, end


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _empty_check(source: RecordSource, model_types: Iterable[str], seen: set[str]) -> list[str]:
    """NoDataError if the source holds no rows at all; else a warning per requested type without rows.

    Why not an error for one empty type: ``stats --model all`` on a store with only pest rows is a
    true answer (zeros, not ready), and an empty --since window is too.
    """
    missing = [m for m in model_types if m not in seen]
    if not missing:
        return []
    present = set(source.model_types())
    if not present:
        # a source may know why it looks empty (Supabase's anon key under row-level security)
        why = list(getattr(source, "warnings", []) or [])
        raise NoDataError(f"no data visible in the {source.name} source: {'; '.join(why)}") if why else NoDataError()
    return [
        f"no {m} rows in the {source.name} source"
        + (" in this time window" if m in present else f" (run `agroml demo --model {m}` or `agroml pull --model {m}`)")
        for m in missing
    ]


def stats_report(
    source: RecordSource,
    model_types: list[str],
    since: Any = None,
    until: Any = None,
    min_total: int = 100,
    min_per_class: int = 10,
) -> StatsReport:
    """``agroml stats``: per model type totals, feedback, accuracy, classes and readiness.

    ``since`` is inclusive, ``until`` exclusive (naive times are UTC). Raises NoDataError when the
    source holds no rows at all.
    """
    for m in model_types:
        schema.check_model_type(m)
    since, until = check_window(since, until)
    models, seen = {}, set()
    for m in model_types:
        counts = source.feedback_counts(m, since, until)
        counts = counts[counts["model_type"] == m] if not counts.empty else counts
        if not counts.empty:
            seen.add(m)
        models[m] = model_stats(counts, min_total, min_per_class, source.missing_images(m, since, until))
        # where the deployed model is wrong (per crop / region): one pass of five columns over the valid rows
        chunks = source.iter_records(m, since, until, columns=list(confusion.COLUMNS), valid_only=True)
        models[m]["where_wrong"] = confusion.where_wrong(chunks if m in seen else [])
    warnings = _empty_check(source, model_types, seen) + list(getattr(source, "warnings", []) or [])
    for m, block in models.items():
        if block["invalid"]:
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(block["invalid"].items()))
            warnings.append(f"{m}: {sum(block['invalid'].values())} invalid rows left out ({detail})")
    return StatsReport(_now(), source.name, _iso(since), _iso(until), models, warnings)


# --- seasons and distribution ---------------------------------------------------------------------
def season_of_month(month: int) -> str:
    """The East African season of a local calendar month (1-12)."""
    return _SEASON_OF_MONTH[month]


def check_timezone(tz: str) -> ZoneInfo:
    """The zone for ``tz``, or a ConfigError naming it and the setting that fixes it."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {tz!r}",
            fix="set AGROML_TIMEZONE (or --timezone) to an IANA name such as Africa/Nairobi",
        ) from None


def local_time(created_at: pd.Series, tz: str) -> pd.Series:
    """UTC ``created_at`` in the farm's local time (seasons and months follow the farm's calendar)."""
    check_timezone(tz)
    return pd.to_datetime(created_at, utc=True).dt.tz_convert(tz)


def seasons(created_at: pd.Series, tz: str = "Africa/Nairobi") -> pd.Series:
    """The season of each UTC time, by its month in ``tz``."""
    return local_time(created_at, tz).dt.month.map(_SEASON_OF_MONTH)


_DIST_COLUMNS = ["predicted_label", "label", "crop", "location", "created_at"]
_GROUPS = ["predicted_label", "label", "crop", "region", "season", "month"]


def _fold(chunk: pd.DataFrame, tz: str) -> pd.DataFrame:
    """One chunk of records -> counts per (predicted, label, crop, region, season, local month)."""
    local = local_time(chunk["created_at"], tz)
    frame = pd.DataFrame(
        {
            "predicted_label": chunk["predicted_label"].astype(object),
            "label": chunk["label"].astype(object).where(chunk["label"].notna(), ""),
            "crop": chunk["crop"].astype(object).where(chunk["crop"].notna(), UNKNOWN),
            "region": chunk["location"].astype(object).where(chunk["location"].notna(), UNKNOWN),
            "season": local.dt.month.map(_SEASON_OF_MONTH),
            "month": local.dt.year * 100 + local.dt.month,  # an int here; "YYYY-MM" text once grouped (cheaper)
        }
    )
    return frame.groupby(_GROUPS, dropna=False, sort=False).size().reset_index(name="n")


def _count_table(groups: pd.DataFrame, key: str) -> list[dict[str, Any]]:
    """[{"key", "rows", "trainable"}] for one key, in the key's natural order."""
    trainable = groups[groups["label"] != ""]
    if key == "class":  # rows by what the field sent (predicted), trainable by the truth (label)
        rows, train = _sum_by(groups, "predicted_label"), _sum_by(trainable, "label")
    elif key == "month":  # month of the year, all years together: the seasonal profile
        month_of = {k: MONTH_NAMES[int(k[5:7]) - 1] for k in groups["month"].unique()}
        rows = _sum_by(groups.assign(m=groups["month"].map(month_of)), "m")
        train = _sum_by(trainable.assign(m=trainable["month"].map(month_of)), "m")
    else:
        rows, train = _sum_by(groups, key), _sum_by(trainable, key)
    keys = set(rows) | set(train)
    if key == "season":
        ordered = [s for s in SEASONS if s in keys]
    elif key == "month":
        ordered = [m for m in MONTH_NAMES if m in keys]
    else:
        ordered = sorted(keys, key=lambda k: (-rows.get(k, 0), k))
    return [{"key": k, "rows": rows.get(k, 0), "trainable": train.get(k, 0)} for k in ordered]


def _class_season(groups: pd.DataFrame, label_col: str) -> dict[str, dict[str, int]]:
    frame = groups[groups[label_col] != ""] if label_col == "label" else groups
    if frame.empty:
        return {}
    table = frame.groupby([label_col, "season"])["n"].sum().unstack(fill_value=0)
    table = table.reindex(columns=list(SEASONS), fill_value=0)
    table = table.loc[table.sum(axis=1).sort_values(ascending=False, kind="stable").index]
    return {str(c): {s: int(v) for s, v in row.items()} for c, row in table.iterrows()}


def _month_series(groups: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows and trainable rows per local calendar month, gaps filled with zeros so they show."""
    if groups.empty:
        return []
    rows = _sum_by(groups, "month")
    train = _sum_by(groups[groups["label"] != ""], "month")
    span = pd.period_range(min(rows), max(rows), freq="M")
    return [{"month": str(p), "rows": rows.get(str(p), 0), "trainable": train.get(str(p), 0)} for p in span]


def distribution_report(
    source: RecordSource,
    model_type: str,
    by: str = "class",
    since: Any = None,
    until: Any = None,
    tz: str = "Africa/Nairobi",
) -> DistributionReport:
    """``agroml distribution``: where and when the rows are, by class, crop, region, season or month.

    Counts valid rows ("rows") and rows with a training label ("trainable") for each value of ``by``.
    For ``class``, "rows" counts by PREDICTED label (every photo the field sent, feedback or not) and
    "trainable" by TRAINING label (what a model would learn from). ``month`` is the month of the year
    (all years together); the dated series is in "months". The class x season tables use the same two
    views: "rows" by predicted label, "trainable" by training label. Seasons and months are taken in
    local time ``tz``. Rows without crop or location are counted under "unknown".
    """
    schema.check_model_type(model_type)
    if by not in DISTRIBUTION_KEYS:
        raise UsageError(f"unknown distribution key {by!r}: valid keys are {', '.join(DISTRIBUTION_KEYS)}")
    check_timezone(tz)
    since, until = check_window(since, until)
    # One pass over the records (invalid ones too, to count them): a remote source is read once.
    invalid: Counter[str] = Counter()
    parts, seen = [], False
    wrong = confusion.WrongFolder()  # folded in the same pass: a remote source is still read once
    columns = [*_DIST_COLUMNS, "feedback", "invalid_reason"]
    for chunk in source.iter_records(model_type, since, until, columns=columns):
        if chunk.empty:
            continue
        seen = True
        bad = chunk["invalid_reason"].notna()
        invalid.update({str(k): int(v) for k, v in chunk.loc[bad, "invalid_reason"].value_counts().items()})
        if not bad.all():
            parts.append(_fold(chunk[~bad], tz))
            wrong.add(chunk[~bad])
    warnings = _empty_check(source, [model_type], {model_type} if seen else set())
    if invalid:
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(invalid.items()))
        warnings.append(f"{model_type}: {sum(invalid.values())} invalid rows left out ({detail})")
    groups = (
        pd.concat(parts, ignore_index=True).groupby(_GROUPS, dropna=False, sort=False)["n"].sum().reset_index()
        if parts
        else pd.DataFrame({**{g: pd.Series([], dtype=object) for g in _GROUPS}, "n": pd.Series([], dtype="int64")})
    )
    groups["month"] = [f"{ym // 100:04d}-{ym % 100:02d}" for ym in groups["month"]]
    total = int(groups["n"].sum())
    return DistributionReport(
        generated_at=_now(),
        source=source.name,
        model_type=model_type,
        by=by,
        timezone=tz,
        since=_iso(since),
        until=_iso(until),
        total=total,
        trainable=int(groups.loc[groups["label"] != "", "n"].sum()),
        invalid=dict(invalid),
        counts=_count_table(groups, by),
        seasons=list(SEASONS),
        class_season={"rows": _class_season(groups, "predicted_label"), "trainable": _class_season(groups, "label")},
        months=_month_series(groups),
        where_wrong=wrong.result(),
        warnings=warnings,
    )


__all__ = [
    "DISTRIBUTION_KEYS",
    "SEASONS",
    "DistributionReport",
    "StatsReport",
    "check_timezone",
    "check_window",
    "distribution_report",
    "local_time",
    "model_stats",
    "readiness",
    "readiness_verdict",
    "season_of_month",
    "seasons",
    "stats_report",
]
