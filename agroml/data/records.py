"""The one normalized record schema, the label rules, and the source column names.

Every source (the local store, Supabase, demo, import) ends in a pandas DataFrame with exactly the
columns of :data:`RECORD_FIELDS`. This module is the only place that knows AgroShield's column names
(through :class:`TableSpec`, overridable per model type with ``AGROML_<MODEL>_TABLE`` and
``AGROML_<MODEL>_COL_<FIELD>``) and the meaning of a farmer's feedback: corrections are the most
valuable training rows, rejections without a truth are not trainable but count against the deployed
model, and rows without feedback are not labels at all.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from agroml.core.schema import TableSpec

# --- feedback -------------------------------------------------------------------------------------
CONFIRMED, CORRECTED, REJECTED, NO_FEEDBACK = "confirmed", "corrected", "rejected", "none"
FEEDBACK_VALUES: tuple[str, ...] = (CONFIRMED, CORRECTED, REJECTED, NO_FEEDBACK)

# --- invalid-row reasons (a row with one is kept in the store but out of analysis and training) ---
NO_ID, NO_IMAGE, UNKNOWN_LABEL, BAD_CONFIDENCE, BAD_CREATED_AT = (
    "no_id",
    "no_image",
    "unknown_label",
    "bad_confidence",
    "bad_created_at",
)
INVALID_REASONS: tuple[str, ...] = (NO_ID, NO_IMAGE, UNKNOWN_LABEL, BAD_CONFIDENCE, BAD_CREATED_AT)

#: The storage model's classes are a fixed scale; pest and disease labels are open vocabularies.

# --- the normalized record ------------------------------------------------------------------------
#: (name, Arrow type). ``farmer_id`` stays in the store; everything that leaves it uses farmer_key.
RECORD_ARROW_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("id", pa.string()),
    ("source", pa.string()),
    ("model_type", pa.string()),
    ("image_url", pa.string()),
    ("image_hash", pa.string()),
    ("predicted_label", pa.string()),
    ("confidence", pa.float64()),
    ("user_confirmed", pa.bool_()),
    ("actual_label", pa.string()),
    ("feedback", pa.string()),
    ("label", pa.string()),
    ("feedback_text", pa.string()),
    ("crop", pa.string()),
    ("location", pa.string()),
    ("latitude", pa.float64()),
    ("longitude", pa.float64()),
    ("severity", pa.string()),
    ("growth_stage", pa.string()),
    ("farmer_key", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
    ("invalid_reason", pa.string()),
    ("extra", pa.string()),
)
RECORD_FIELDS: tuple[str, ...] = tuple(name for name, _ in RECORD_ARROW_FIELDS)
PERSONAL_FIELDS: tuple[str, ...] = ("farmer_id",)
FLOAT_FIELDS = frozenset(n for n, t in RECORD_ARROW_FIELDS if t == pa.float64())
STRING_FIELDS = frozenset(n for n, t in RECORD_ARROW_FIELDS if t == pa.string())


def arrow_schema(include_personal: bool = False) -> pa.Schema:
    """The Arrow schema of a record table (Parquet keeps it: types, nulls, UTC time zone)."""
    fields_ = list(RECORD_ARROW_FIELDS)
    if include_personal:
        fields_.insert(fields_.index(("farmer_key", pa.string())), ("farmer_id", pa.string()))
    return pa.schema(fields_)


def empty_records(include_personal: bool = False) -> pd.DataFrame:
    """A zero-row record frame with the right columns and dtypes."""
    return coerce(pd.DataFrame({name: [] for name in arrow_schema(include_personal).names}))


def coerce(df: pd.DataFrame) -> pd.DataFrame:
    """Give a record frame its canonical dtypes (object strings with None, nullable boolean, UTC time)."""
    out = df.copy()
    for name in out.columns:
        if name in FLOAT_FIELDS:
            out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
        elif name == "user_confirmed":
            out[name] = out[name].astype("boolean")
        elif name == "created_at":
            # ISO8601: without it pandas guesses one format from the first value and turns times of
            # another precision (".5Z" after "Z") into NaT, silently
            out[name] = pd.to_datetime(out[name], utc=True, errors="coerce", format="ISO8601").astype(
                "datetime64[us, UTC]"
            )
        elif name in STRING_FIELDS or name in PERSONAL_FIELDS:
            col = out[name].astype(object)
            out[name] = col.where(col.notna(), None)
    return out


def to_arrow(df: pd.DataFrame, include_personal: bool = False) -> pa.Table:
    """A record frame as an Arrow table with the exact record schema."""
    schema = arrow_schema(include_personal)
    missing = [n for n in schema.names if n not in df.columns]
    if missing:
        raise ValueError(f"record frame lacks columns {missing}")
    return pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)


# --- labels ---------------------------------------------------------------------------------------
def normalize_label(text: Any) -> str | None:
    """Canonical class name: NFC, lower case, words joined by ``_`` ("Fall Armyworm" -> "fall_armyworm").

    Letters, marks and digits of every script are kept ("Blätterläuse" -> "blätterläuse", "कीट" stays
    whole): a label is a farmer's or a collection's class name, not an identifier for a program. For
    ASCII text this is the rule it always was (runs of anything but [0-9a-z] become one ``_``), so
    labels already in stores, runs and Supabase keep their names. Returns None for empty or wordless
    text, so "  " and "???" never become a class.
    """
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    lowered = unicodedata.normalize("NFC", str(text)).lower()
    kept = "".join(c if unicodedata.category(c)[0] in "LMN" and c != "_" else " " for c in lowered)
    return "_".join(kept.split()) or None


def derive_feedback(user_confirmed: bool | None, predicted: str | None, actual: str | None) -> tuple[str, str | None]:
    """(feedback, training label) for one row, by AgroShield's rules.

    - confirmed and no differing correction: "confirmed", label = predicted;
    - a correction (actual set and different, whatever user_confirmed says): "corrected", label = actual;
    - rejected without a truth: "rejected", not trainable;
    - no feedback: "none", not trainable.
    """
    if user_confirmed is None or user_confirmed is pd.NA:
        return NO_FEEDBACK, None
    if actual is not None and actual != predicted:
        return CORRECTED, actual
    if user_confirmed:
        return CONFIRMED, predicted
    return REJECTED, None


# --- normalization --------------------------------------------------------------------------------
def farmer_key(farmer_id: Any, salt: str) -> str | None:
    """A salted SHA-256 of the farmer id: stable within one store, useless without the salt."""
    if farmer_id is None or (isinstance(farmer_id, float) and np.isnan(farmer_id)) or farmer_id == "":
        return None
    return hashlib.sha256(f"{salt}:{farmer_id}".encode()).hexdigest()[:20]


def _json_text(value: Any) -> Any:
    if isinstance(value, dict | list):
        return value
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _free_text(value: Any) -> str | None:
    """A free-text column's value as text: a row may hold a number, a list or an object there (JSON)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def _parse_bool(value: Any) -> bool | None:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "t", "1", "yes"):
        return True
    if text in ("false", "f", "0", "no"):
        return False
    return None


@dataclass
class Normalized:
    """Rows in the record schema, and how many of them are invalid per reason."""

    records: pd.DataFrame
    invalid: dict[str, int] = field(default_factory=dict)


def normalize_rows(
    rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
    spec: TableSpec,
    source: str,
    salt: str,
    include_personal: bool = True,
) -> Normalized:
    """Turn raw source rows (source column names) into records.

    Invalid rows are kept, with ``invalid_reason`` set (the first that applies, in the order of
    :data:`INVALID_REASONS`), so the store can count them and a later fix of the source refreshes them.
    """
    raw = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    n = len(raw)

    def col(field_: str) -> pd.Series:
        name = spec.column(field_)
        if name is None or name not in raw.columns:
            return pd.Series([None] * n, index=raw.index, dtype=object)
        return raw[name].astype(object).where(raw[name].notna(), None)

    vocabulary = set(spec.vocabulary) if spec.vocabulary else None

    def label_of(value: Any) -> str | None:
        label = normalize_label(value)
        return None if (label is not None and vocabulary is not None and label not in vocabulary) else label

    predicted_raw = col("predicted")
    predicted = predicted_raw.map(label_of)
    actual_raw = col("actual")
    actual = actual_raw.map(label_of)
    confirmed = col("user_confirmed").map(_parse_bool)
    confidence = pd.to_numeric(col("confidence"), errors="coerce").astype("float64")
    # pandas 4 will read numbers as epochs under format=; a number in created_at is not an ISO time, so it
    # goes in as its text and fails (or parses) as text, the way it did before that change
    created_raw = col("created_at").map(lambda v: str(v) if isinstance(v, int | float) and not pd.isna(v) else v)
    created = pd.to_datetime(created_raw, utc=True, errors="coerce", format="ISO8601")
    ids = col("id").map(lambda v: None if v is None or str(v).strip() == "" else str(v))
    urls = col("image_url").map(lambda v: None if v is None or str(v).strip() == "" else str(v).strip())

    # pandas 3 maps None to NaN in these str columns: NaN is "no label", not a correction
    fb = [
        derive_feedback(c, None if pd.isna(p) else p, None if pd.isna(a) else a)
        for c, p, a in zip(confirmed, predicted, actual, strict=True)
    ]
    reason = pd.Series([None] * n, index=raw.index, dtype=object)
    checks = (
        (NO_ID, ids.isna()),
        (NO_IMAGE, urls.isna()),
        # an unreadable correction is as unusable as an unreadable prediction
        (UNKNOWN_LABEL, predicted.isna() | (actual_raw.notna() & actual.isna())),
        (BAD_CONFIDENCE, confidence.isna() | (confidence < 0) | (confidence > 1)),
        (BAD_CREATED_AT, created.isna()),
    )
    for name, mask in checks:
        reason = reason.where(reason.notna() | ~mask, name)

    extra_cols = [c for c in spec.extra if c in raw.columns]
    if extra_cols:
        extra = [
            json.dumps(
                {
                    c: _json_text(v)
                    for c, v in zip(extra_cols, values, strict=True)
                    if v is not None and not (isinstance(v, float) and np.isnan(v))
                },
                default=str,
                sort_keys=True,
            )
            for values in raw[extra_cols].astype(object).itertuples(index=False, name=None)
        ]
        extra_text: list[str | None] = [None if e == "{}" else e for e in extra]
    else:
        extra_text = [None] * n

    farmer_ids = col("farmer_id").map(lambda v: None if v is None else str(v))
    records = pd.DataFrame(
        {
            "id": ids,
            "source": source,
            "model_type": spec.model_type,
            "image_url": urls,
            "image_hash": None,
            "predicted_label": predicted,
            "confidence": confidence,
            "user_confirmed": confirmed,
            "actual_label": actual,
            "feedback": [f for f, _ in fb],
            "label": [lab for _, lab in fb],
            "feedback_text": col("feedback_text").map(_free_text),
            "crop": col("crop").map(normalize_label),
            "location": col("location").map(lambda v: None if v is None else str(v).strip() or None),
            "latitude": pd.to_numeric(col("latitude"), errors="coerce"),
            "longitude": pd.to_numeric(col("longitude"), errors="coerce"),
            "severity": col("severity").map(normalize_label),
            "growth_stage": col("growth_stage").map(normalize_label),
            "farmer_id": farmer_ids,
            "farmer_key": farmer_ids.map(lambda v: farmer_key(v, salt)),
            "created_at": created,
            "invalid_reason": reason,
            "extra": extra_text,
        },
        index=raw.index,
    )
    records = coerce(records.reset_index(drop=True))
    if not include_personal:
        records = records.drop(columns=list(PERSONAL_FIELDS))
    invalid = records["invalid_reason"].value_counts().to_dict()
    return Normalized(records=records, invalid={str(k): int(v) for k, v in invalid.items()})


def valid_only(df: pd.DataFrame) -> pd.DataFrame:
    """The rows analysis and training may use."""
    return df[df["invalid_reason"].isna()]


def make_records(rows: Iterable[Mapping[str, Any]], include_personal: bool = True) -> pd.DataFrame:
    """Build a record frame from dicts already in record-field names (demo, import), filling defaults.

    ``feedback`` and ``label`` are derived here from user_confirmed / predicted / actual so no
    producer can disagree with the rules above.
    """
    frame = pd.DataFrame(list(rows))
    names = arrow_schema(include_personal=True).names
    for name in names:
        if name not in frame.columns:
            frame[name] = None
    # pandas fills a missing actual_label with NaN when other rows have one: NaN is "no correction"
    fb = [
        derive_feedback(None if pd.isna(c) else bool(c), None if pd.isna(p) else p, None if pd.isna(a) else a)
        for c, p, a in zip(frame["user_confirmed"], frame["predicted_label"], frame["actual_label"], strict=True)
    ]
    frame["feedback"] = [f for f, _ in fb]
    frame["label"] = [lab for _, lab in fb]
    frame = coerce(frame[names])
    return frame if include_personal else frame.drop(columns=list(PERSONAL_FIELDS))


# --- feedback counts ------------------------------------------------------------------------------
#: The groups ``stats`` counts rows in: the local store with SQL, other sources with :func:`feedback_counts`.
COUNT_KEYS: tuple[str, ...] = ("model_type", "predicted_label", "feedback", "label", "actual_label", "invalid_reason")


def feedback_counts(records: pd.DataFrame) -> pd.DataFrame:
    """The shape of ``Store.feedback_counts`` computed from a record frame (the Supabase path)."""
    if records.empty:
        return pd.DataFrame({**{k: pd.Series([], dtype=object) for k in COUNT_KEYS}, "n": pd.Series([], dtype="int64")})
    grouped = records.groupby(list(COUNT_KEYS), dropna=False, sort=False).size().reset_index(name="n")
    for key in COUNT_KEYS:  # None, not NaN, for a missing value: the same as the store's rows
        column = grouped[key].astype(object)
        grouped[key] = column.where(column.notna(), None)
    return grouped.astype({"n": "int64"})
