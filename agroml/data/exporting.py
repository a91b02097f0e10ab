"""Export records to CSV, JSON Lines or Parquet: typed, chunked, atomic, without farmer ids by default.

Why this shape:
- **Typed.** Every format is written from the one record schema (:func:`agroml.data.records.arrow_schema`).
  Parquet keeps the types themselves (``created_at`` as ``timestamp[us, UTC]``, ``user_confirmed`` a
  nullable boolean); CSV and JSON write times as ISO-8601 with their ``+00:00`` offset and the nested
  ``extra`` field as JSON text (it is JSON text in every format, so all three hold the same columns).
- **Chunked.** Rows come from ``source.iter_records(chunk_rows=...)`` and each chunk is appended to the
  open file, so memory stays flat however large the table grows.
- **Atomic.** A file is written under a hidden temporary name in the same folder and renamed into
  place when complete; on any failure (including Ctrl-C) the temporary file is removed. A reader
  never sees a partial export under its final name.
- **Private.** Farmers appear only as the salted ``farmer_key``; the raw ``farmer_id`` is exported
  only when the caller asks for it (``include_personal``), and such a file is created owner-only
  (0600): it is personal data. Other exports keep the umask's permissions, for a serving account.
- **Safe to open in a spreadsheet.** In CSV, a text cell that begins with ``=``, ``+``, ``-``, ``@``,
  a tab or a carriage return would be run as a formula by Excel or LibreOffice (a farmer's free text
  is user input); such cells get a leading ``'``, as OWASP recommends for CSV injection. Parquet and
  JSON keep every value exact, and ``raw_csv`` writes CSV cells unchanged.
- **Clean after a kill.** The temporary file is locked while it is written; the next export removes
  the ones whose writer died (:func:`agroml.core.files.sweep_stale_temps`).

Read-back recipes (pandas, giving exactly the store's values and dtypes, strings as pandas' ``str``):
see :data:`READ_BACK` and the project README.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa

from agroml.core import schema
from agroml.core.errors import NoDataError, OutputError, UsageError
from agroml.core.files import free_name, open_temp, sweep_stale_temps
from agroml.core.progress import ProgressFn, no_progress
from agroml.data import records as rec
from agroml.data.analysis import check_window
from agroml.data.sources import LocalSource, RecordSource

FORMATS: dict[str, str] = {"csv": "csv", "json": "jsonl", "parquet": "parquet"}  # format -> file extension
SCOPES: tuple[str, ...] = ("training", "all")

#: What a trainer needs: the image, its training label and the metadata to split, stratify and audit
#: by. Left out: user_confirmed (folded into feedback/label), feedback_text (farmers' free text) and
#: invalid_reason (always empty in this scope).
TRAINING_COLUMNS: tuple[str, ...] = tuple(
    f for f in rec.RECORD_FIELDS if f not in ("user_confirmed", "feedback_text", "invalid_reason")
)

#: First characters that make a spreadsheet read a CSV cell as a formula (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

#: RFC 4180's line end. Why not "\n": Python's csv writer quotes a cell only for the characters of the
#: line end, so with "\n" a cell holding a bare carriage return went out unquoted and split its row in
#: every reader; with "\r\n" both are quoted.
CSV_LINE_END = "\r\n"

#: Time text in CSV and JSON: ISO-8601, microseconds, explicit offset (times are always UTC).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"

#: How to read each format back with pandas into the exported values and dtypes (README shows these).
READ_BACK: dict[str, str] = {
    "parquet": "pd.read_parquet(path)",
    "csv": 'pd.read_csv(path, dtype=DTYPES, parse_dates=["created_at"], keep_default_na=False, na_values=[""])',
    "json": 'df = pd.read_json(path, lines=True, dtype=DTYPES | {"created_at": "str"}, precise_float=True); '
    'df["created_at"] = pd.to_datetime(df["created_at"], utc=True, format="ISO8601")'
    '.astype("datetime64[us, UTC]")',
}


@dataclass(frozen=True)
class ExportedFile:
    """One written file: its model type, where it is, and how many rows it holds."""

    model_type: str
    path: Path
    rows: int
    #: Rows of this model type (and time range) left out by the scope, per reason: the invalid-row
    #: reasons, plus "rejected" / "no_feedback" for valid rows without a training label.
    excluded: dict[str, int] = field(default_factory=dict)


@dataclass
class ExportResult:
    """What an export wrote; ``warnings`` are for the CLI to show on stderr."""

    files: list[ExportedFile]
    format: str
    scope: str
    warnings: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.files]

    @property
    def rows(self) -> dict[Path, int]:
        return {f.path: f.rows for f in self.files}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "scope": self.scope,
            "warnings": list(self.warnings),
            "files": [
                {"model_type": f.model_type, "path": str(f.path), "rows": f.rows, "excluded": f.excluded}
                for f in self.files
            ],
        }


def export_columns(scope: str, include_personal: bool = False) -> list[str]:
    """The exported columns, in schema order (farmer_id just before farmer_key when personal)."""
    names = rec.arrow_schema(include_personal).names
    if scope == "all":
        return names
    return [n for n in names if n in TRAINING_COLUMNS or n in rec.PERSONAL_FIELDS]


def pandas_dtypes(columns: Sequence[str]) -> dict[str, str]:
    """``DTYPES`` of the read-back recipes: the pandas dtype of each non-time column."""
    schema = rec.arrow_schema(include_personal=True)
    kinds = {pa.string(): "str", pa.float64(): "float64", pa.bool_(): "boolean"}
    return {n: kinds[schema.field(n).type] for n in columns if n != "created_at"}


def export_file_name(model_type: str, scope: str, fmt: str, when: datetime) -> str:
    """``<model>_<scope>_<UTC timestamp>.<ext>``, e.g. ``pest_training_20261126T130501Z.parquet``."""
    return f"{model_type}_{scope}_{when.astimezone(UTC):%Y%m%dT%H%M%SZ}.{FORMATS[fmt]}"


# --- writers: open on a temporary path, append chunks, close --------------------------------------
class _Writer(Protocol):
    def write(self, chunk: pd.DataFrame) -> None: ...
    def close(self) -> None: ...


class _ParquetWriter:
    def __init__(self, fd: int, schema: pa.Schema) -> None:
        import pyarrow.parquet as pq

        self.schema = schema
        self.file = open(fd, "wb", closefd=False)  # noqa: SIM115 - closed by close(); fd by the caller
        self.writer = pq.ParquetWriter(self.file, schema)

    def write(self, chunk: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(chunk, schema=self.schema, preserve_index=False)
        self.writer.write_table(table)

    def close(self) -> None:
        self.writer.close()
        self.file.close()


def _time_text(times: pd.Series) -> pd.Series:
    return times.dt.strftime(TIME_FORMAT)


def neutralize_formulas(column: pd.Series) -> pd.Series:
    """Text cells that a spreadsheet would run as a formula, prefixed with ``'`` (see FORMULA_STARTS)."""
    risky = column.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_STARTS)).astype(bool)
    if not risky.any():
        return column
    return column.where(~risky, "'" + column[risky].astype(str))


class _CsvWriter:
    def __init__(self, fd: int, columns: list[str], raw: bool = False) -> None:
        self.file = open(fd, "w", encoding="utf-8", newline="", closefd=False)  # noqa: SIM115 - closed by close()
        self.columns = columns
        self.header = True
        self.raw = raw

    def write(self, chunk: pd.DataFrame) -> None:
        out = chunk.copy()
        out["created_at"] = _time_text(out["created_at"])
        if not self.raw:  # every text column: labels, ids, urls, free text and extra alike
            for name in out.columns:
                if not pd.api.types.is_numeric_dtype(out[name]) and not pd.api.types.is_bool_dtype(out[name]):
                    out[name] = neutralize_formulas(out[name])
        out.to_csv(self.file, header=self.header, index=False, lineterminator=CSV_LINE_END)
        self.header = False

    def close(self) -> None:
        if self.header:  # no chunk came: still a valid CSV, with its header
            pd.DataFrame(columns=self.columns).to_csv(self.file, index=False, lineterminator=CSV_LINE_END)
        self.file.close()


def _json_value(value: Any) -> Any:
    """Python value for JSON: every kind of missing (None, NaN, NA, NaT) is null; inf is not JSON either."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _JsonLinesWriter:
    """One JSON object per line: streamable, and what ``pd.read_json(lines=True)`` reads.

    Written with the json module rather than ``DataFrame.to_json``, whose floats keep only 15 digits:
    here a float is written with Python's shortest exact repr, so it reads back bit for bit.
    """

    def __init__(self, fd: int, columns: list[str]) -> None:
        self.file = open(fd, "w", encoding="utf-8", newline="\n", closefd=False)  # noqa: SIM115 - closed by close()

    def write(self, chunk: pd.DataFrame) -> None:
        names = list(chunk.columns)
        values = []
        for name in names:
            col = _time_text(chunk[name]) if name == "created_at" else chunk[name]
            values.append([_json_value(v) for v in col.astype(object)])
        dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
        self.file.writelines(dumps(dict(zip(names, row, strict=True))) + "\n" for row in zip(*values, strict=True))

    def close(self) -> None:
        self.file.close()


def _open_writer(fmt: str, fd: int, columns: list[str], include_personal: bool, raw_csv: bool) -> _Writer:
    if fmt == "parquet":
        full = rec.arrow_schema(include_personal)
        schema = pa.schema([full.field(n) for n in columns])
        # pandas' metadata (from an empty record frame) lets pd.read_parquet restore the nullable
        # boolean; without it a bool column with nulls reads back as object
        empty = rec.empty_records(include_personal)[columns]
        metadata = pa.Table.from_pandas(empty, schema=schema, preserve_index=False).schema.metadata
        return _ParquetWriter(fd, schema.with_metadata(metadata))
    if fmt == "csv":
        return _CsvWriter(fd, columns, raw_csv)
    return _JsonLinesWriter(fd, columns)


# --- the folder and the file ----------------------------------------------------------------------
def _unwritable(out_dir: Path, reason: str) -> OutputError:
    return OutputError(
        f"cannot write to export folder {out_dir}: {reason}",
        fix="choose a writable folder with --out DIR or set AGROML_EXPORTS_DIR",
    )


def _prepare_folder(out_dir: Path) -> None:
    """Create the folder and prove it writable now, before any rows are read."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except FileExistsError:
        raise _unwritable(out_dir, "it is a file, not a folder") from None
    except OSError as exc:
        raise _unwritable(out_dir, exc.strerror or str(exc)) from None


def _sweep_stale_exports(out_dir: Path) -> int:
    """Remove killed exports' temporary files: only names an export makes, only those no live export holds."""
    patterns = {f".{m}_{s}_*.{ext}.*.tmp" for m in schema.MODEL_TYPES for s in SCOPES for ext in FORMATS.values()}
    return sum(sweep_stale_temps(out_dir, pattern) for pattern in sorted(patterns))


def _excluded(source: RecordSource, model_type: str, since: Any, until: Any) -> dict[str, int]:
    """Rows the training scope leaves out, per reason, from the source's cheap aggregate."""
    counts = source.feedback_counts(model_type, since, until)
    if counts.empty:
        return {}
    counts = counts[counts["model_type"] == model_type]
    invalid = counts[counts["invalid_reason"].notna()].groupby("invalid_reason")["n"].sum()
    unlabeled = counts[counts["invalid_reason"].isna() & counts["label"].isna()].groupby("feedback")["n"].sum()
    out = {str(k): int(v) for k, v in invalid.items() if v}
    out.update({("no_feedback" if k == rec.NO_FEEDBACK else str(k)): int(v) for k, v in unlabeled.items() if v})
    return out


def _fast_order(source: RecordSource) -> dict[str, str]:
    """The local store reads a whole model type fastest in its own key order (a sequential scan, no
    per-row index lookups): exports need no time order, so they take it. Other sources keep theirs."""
    return {"order": "key"} if isinstance(source, LocalSource) else {}


def _write_one(
    source: RecordSource,
    model_type: str,
    scope: str,
    fmt: str,
    final: Path,
    *,
    include_personal: bool,
    raw_csv: bool,
    since: Any,
    until: Any,
    chunk_rows: int,
    progress: ProgressFn,
) -> int:
    """Stream one model type's rows into ``final`` atomically; returns the row count."""
    columns = export_columns(scope, include_personal)
    task = f"export {model_type}"
    rows = 0
    try:
        # a hidden, locked temporary name (a later export can tell a killed one's file from a live one's),
        # owner-only when it holds farmer ids
        fd, tmp = open_temp(final, private=include_personal)
    except OSError as exc:
        raise _unwritable(final.parent, f"writing {final.name} failed: {exc.strerror or exc}") from None
    try:
        writer = _open_writer(fmt, fd, columns, include_personal, raw_csv)
        try:
            progress(task, 0, None)
            for chunk in source.iter_records(
                model_type,
                since,
                until,
                columns=columns,
                valid_only=scope == "training",
                include_personal=include_personal,
                chunk_rows=chunk_rows,
                **_fast_order(source),
            ):
                if scope == "training":
                    chunk = chunk[chunk["label"].notna()]
                writer.write(chunk[columns])
                rows += len(chunk)
                progress(task, rows, None)
        finally:
            writer.close()
        os.replace(tmp, final)
    except BaseException as exc:  # Ctrl-C too: never leave the temporary file behind
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _unwritable(final.parent, f"writing {final.name} failed: {exc.strerror or exc}") from None
        raise
    finally:
        os.close(fd)  # after the rename: the lock marks the temporary file as live until then
    return rows


def export_records(
    source: RecordSource,
    model_type: str,
    scope: str = "training",
    fmt: str = "parquet",
    out_dir: str | Path = "exports",
    *,
    include_personal: bool = False,
    raw_csv: bool = False,
    since: Any = None,
    until: Any = None,
    chunk_rows: int = 100_000,
    progress: ProgressFn = no_progress,
    now: datetime | None = None,
) -> ExportResult:
    """Write one file per model type (``model_type`` "all" = every type that has rows).

    Rows come in the source's cheapest order: for the local store its key order (source, id).
    ``scope`` "training": valid rows with a training label (confirmed or corrected), the columns of
    :data:`TRAINING_COLUMNS`; "all": every record, invalid ones included (``invalid_reason`` says why).
    A model type with no rows in scope still gets a file (header or schema only) and a warning, so a
    scheduled export always produces its file; a store with no rows at all is :class:`NoDataError`.
    ``include_personal`` files are owner-only (0600); ``raw_csv`` leaves formula-like CSV cells as they are.
    """
    if scope not in SCOPES:
        raise UsageError(f"unknown export scope {scope!r}: valid scopes are {', '.join(SCOPES)}")
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}: valid formats are {', '.join(FORMATS)}")
    if chunk_rows < 1:
        raise UsageError(f"chunk_rows={chunk_rows} must be at least 1")
    since, until = check_window(since, until)  # an empty window is a mistake, not an empty file
    wanted = schema.expand_model_types(model_type)
    present = source.model_types()
    if not present:
        raise NoDataError()
    out_dir = Path(out_dir)
    _prepare_folder(out_dir)
    when = now or datetime.now(UTC)
    result = ExportResult(files=[], format=fmt, scope=scope)
    swept = _sweep_stale_exports(out_dir)
    if swept:
        result.warnings.append(f"removed {swept} temporary file(s) that a killed export left in {out_dir}")
    for model in wanted:
        if model_type == "all" and model not in present:
            result.warnings.append(f"{model}: no rows in the {source.name} source, no file written")
            continue
        path = free_name(out_dir / export_file_name(model, scope, fmt, when))
        rows = _write_one(
            source,
            model,
            scope,
            fmt,
            path,
            include_personal=include_personal,
            raw_csv=raw_csv,
            since=since,
            until=until,
            chunk_rows=chunk_rows,
            progress=progress,
        )
        excluded = _excluded(source, model, since, until) if scope == "training" else {}
        result.files.append(ExportedFile(model, path, rows, excluded))
        if rows == 0:
            result.warnings.append(
                f"{model}: no rows in scope {scope!r}, wrote {path} with no rows"
                + ("" if model in present else f" (the {source.name} source has no {model} rows)")
            )
    return result
