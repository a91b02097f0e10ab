"""The local store: one SQLite file (WAL) holding every model type's records.

Why SQLite: it is in the standard library, works with no account or server, survives a killed
process (transactions), and lets ``agroml stats`` run while ``agroml pull`` writes (WAL: readers never
block the writer). Rows are upserted by (source, id), so pulling twice adds only what is new and
refreshes feedback that changed. Invalid rows are stored too, with their reason, so they are counted.

Times are stored as integer microseconds since the epoch, UTC: exact, sortable, cheap to convert.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from agroml.core import sqlite
from agroml.core.errors import NoDataError, StoreError
from agroml.data import records as rec
from agroml.data.confusion import UNKNOWN

APP_ID = "agroml"
SCHEMA_VERSION = 2

_SQL_TYPES = {
    "confidence": "REAL",
    "latitude": "REAL",
    "longitude": "REAL",
    "user_confirmed": "INTEGER",
    "created_at": "INTEGER",
}
STORE_COLUMNS: tuple[str, ...] = tuple(rec.arrow_schema(include_personal=True).names)
#: Columns an upsert may change on an existing row (feedback changes after a row is created).
_UPDATABLE = tuple(c for c in STORE_COLUMNS if c not in ("source", "id", "image_hash"))


#: What to do about a damaged store (the fix of its StoreError, and of `agroml doctor`'s line).
DAMAGED_FIX = "restore it from a backup, or move it aside and run `agroml pull` or `agroml demo` to start a fresh store"


def _create_v1(con: sqlite3.Connection) -> None:
    cols = ",\n  ".join(
        f"{c} {_SQL_TYPES.get(c, 'TEXT')}" + (" NOT NULL" if c in ("source", "id", "model_type") else "")
        for c in STORE_COLUMNS
    )
    # one statement per execute(): executescript() would commit the migration's transaction early
    con.execute(f"CREATE TABLE predictions (\n  {cols},\n  PRIMARY KEY (source, id)\n) WITHOUT ROWID")
    con.execute("CREATE INDEX predictions_model_time ON predictions (model_type, created_at)")


def _add_feedback_index_v2(con: sqlite3.Connection) -> None:
    # A covering index in feedback_counts' GROUP BY order: `agroml stats` reads the index in order
    # instead of sorting every row (1,000,000 rows: about 0.2 s instead of 10 s), time window included.
    con.execute(
        "CREATE INDEX predictions_feedback ON predictions (model_type, predicted_label, feedback, label, "
        "actual_label, invalid_reason, created_at)"
    )


#: Migration i takes the schema from version i to i + 1 (index 0 creates version 1).
MIGRATIONS = (_create_v1, _add_feedback_index_v2)


@dataclass(frozen=True)
class UpsertResult:
    """What one upsert changed: counted so `pull` and `import` can say it."""

    inserted: int
    updated: int
    unchanged: int

    def __add__(self, other: UpsertResult) -> UpsertResult:
        return UpsertResult(
            self.inserted + other.inserted, self.updated + other.updated, self.unchanged + other.unchanged
        )


def _to_micros(value: datetime | pd.Timestamp | str | None) -> int | None:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1000)


class Store:
    """An open local store. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        """Open the store at ``path``; ``create`` makes it (0600: farmer ids and the hash salt) if missing.

        A damaged, foreign, newer or unwritable file is a StoreError naming it and the fix, here or at
        the first query that reaches the damage (see :mod:`agroml.core.sqlite`); a refused file is left as it is.
        """
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise NoDataError()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create {self.path.parent}: {exc.strerror}", fix="set AGROML_DATA_DIR to a writable folder"
                ) from None
        # wal=False: a foreign SQLite file must be recognized before anything switches its journal mode
        self.con = sqlite.connect(self.path, setting="AGROML_DB", damaged_fix=DAMAGED_FIX, wal=False, private=create)
        try:
            self._check_and_migrate(create)
        except BaseException:
            self.con.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    def _check_and_migrate(self, create: bool) -> None:
        tables = {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "agroml_meta" not in tables:
            raise StoreError(
                f"{self.path} is not an agroml store (it holds tables: {', '.join(sorted(tables))})",
                fix="point AGROML_DB (or AGROML_DATA_DIR) at another file",
            )
        if not tables and not create:
            raise NoDataError()
        version = self.schema_version if tables else 0
        if tables and self._meta("app") != APP_ID:
            raise StoreError(f"{self.path} is not an agroml store", fix="point AGROML_DB at another file")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema version {version}, newer than this agroml "
                f"understands ({SCHEMA_VERSION})",
                fix="upgrade agroml: pip install -U agroml",
            )
        if version == SCHEMA_VERSION:
            return
        sqlite.enable_wal(self.con)
        with self.transaction():
            if not tables:
                self.con.execute("CREATE TABLE agroml_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                self._set_meta("app", APP_ID)
            for migrate in MIGRATIONS[version:]:
                migrate(self.con)
            self._set_meta("schema_version", str(SCHEMA_VERSION))

    # -- meta --------------------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self.con.execute("SELECT value FROM agroml_meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.con.execute(
            "INSERT INTO agroml_meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @property
    def schema_version(self) -> int:
        value = self._meta("schema_version")
        return int(value) if value else 0

    def salt(self, configured: str | None = None) -> str:
        """The farmer-key salt: the configured one, else one made at random once and kept here."""
        if configured:
            return configured
        value = self._meta("hash_salt")
        if value is None:
            with self.transaction():
                value = self._meta("hash_salt") or secrets.token_hex(16)
                self._set_meta("hash_salt", value)
        return value

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: takes the write lock up front, no upgrade deadlock)."""
        return sqlite.transaction(self.con)

    def quick_check(self, limit: int = 5) -> list[str]:
        """SQLite's ``PRAGMA quick_check``: [] when every page reads back whole, else up to ``limit`` problems.

        It reads every page of the file, so `agroml doctor` runs it, not every command.
        """
        found = [r[0] for r in self.con.execute(f"PRAGMA quick_check({int(limit)})").fetchall()]
        return [] if found == ["ok"] else found

    # -- writing -----------------------------------------------------------------------------------
    def upsert(self, records: pd.DataFrame) -> UpsertResult:
        """Insert new rows and refresh changed ones, atomically; an image_hash already known is kept."""
        if records.empty:
            return UpsertResult(0, 0, 0)
        frame = records.copy()
        for name in STORE_COLUMNS:
            if name not in frame.columns:
                frame[name] = None
        frame = rec.coerce(frame[list(STORE_COLUMNS)])
        if frame["id"].isna().any():
            raise StoreError("cannot store a record without an id")
        frame = frame.drop_duplicates(["source", "id"], keep="last")
        created = frame["created_at"]
        # microseconds from the microsecond value itself: Timestamp.value is nanoseconds and overflows
        # for a time before 1677 or after 2262 (a row dated 0001-01-01 made upsert raise OverflowError)
        frame["created_at"] = [None if pd.isna(t) else int(t.as_unit("us").asm8.view("i8")) for t in created]
        frame["user_confirmed"] = [None if pd.isna(v) else int(bool(v)) for v in frame["user_confirmed"]]
        rows = frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None)

        cols = ", ".join(STORE_COLUMNS)
        marks = ", ".join("?" for _ in STORE_COLUMNS)
        differs = " OR ".join(f"p.{c} IS NOT b.{c}" for c in _UPDATABLE)
        update = ", ".join(f"{c} = excluded.{c}" for c in _UPDATABLE)
        with self.transaction() as con:
            con.execute(f"CREATE TEMP TABLE IF NOT EXISTS batch AS SELECT {cols} FROM predictions WHERE 0")
            con.execute("DELETE FROM temp.batch")
            con.executemany(f"INSERT INTO temp.batch ({cols}) VALUES ({marks})", rows)
            inserted = con.execute(
                "SELECT count(*) FROM temp.batch b LEFT JOIN predictions p "
                "ON p.source = b.source AND p.id = b.id WHERE p.id IS NULL"
            ).fetchone()[0]
            updated = con.execute(
                f"SELECT count(*) FROM temp.batch b JOIN predictions p "
                f"ON p.source = b.source AND p.id = b.id WHERE {differs} "
                f"OR (b.image_hash IS NOT NULL AND p.image_hash IS NOT b.image_hash)"
            ).fetchone()[0]
            con.execute(
                f"INSERT INTO predictions ({cols}) SELECT {cols} FROM temp.batch WHERE true "
                f"ON CONFLICT(source, id) DO UPDATE SET {update}, "
                f"image_hash = coalesce(excluded.image_hash, predictions.image_hash)"
            )
            con.execute("DELETE FROM temp.batch")
        return UpsertResult(int(inserted), int(updated), len(frame) - int(inserted) - int(updated))

    def set_image_hashes(self, pairs: Sequence[tuple[str, str, str]]) -> int:
        """Record cached image hashes: (source, id, sha256) triples. Returns rows changed."""
        with self.transaction() as con:
            before = con.total_changes
            con.executemany(
                "UPDATE predictions SET image_hash = ? WHERE source = ? AND id = ?", [(h, s, i) for s, i, h in pairs]
            )
            return con.total_changes - before

    # -- reading -----------------------------------------------------------------------------------
    def _where(
        self, model_type: str | None, since: Any, until: Any, valid_only: bool, source: str | None = None
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if model_type is not None:
            clauses.append("model_type = ?")
            params.append(model_type)
        if source is not None:
            clauses.append("source = ?")
            params.append(source)
        if since is not None:
            clauses.append("created_at >= ?")
            params.append(_to_micros(since))
        if until is not None:
            clauses.append("created_at < ?")
            params.append(_to_micros(until))
        if valid_only:
            clauses.append("invalid_reason IS NULL")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def count(self, model_type: str | None = None, since: Any = None, until: Any = None) -> int:
        where, params = self._where(model_type, since, until, False)
        return int(self.con.execute(f"SELECT count(*) FROM predictions{where}", params).fetchone()[0])

    def model_types(self) -> list[str]:
        """Model types that have at least one row."""
        return [r[0] for r in self.con.execute("SELECT DISTINCT model_type FROM predictions ORDER BY 1")]

    def iter_records(
        self,
        model_type: str | None = None,
        since: Any = None,
        until: Any = None,
        *,
        columns: Sequence[str] | None = None,
        valid_only: bool = False,
        include_personal: bool = False,
        source: str | None = None,
        chunk_rows: int = 100_000,
        order: str = "time",
    ) -> Iterator[pd.DataFrame]:
        """Records in (model_type, created_at, id) order, ``chunk_rows`` at a time, so memory stays flat.

        ``since`` is inclusive and ``until`` exclusive (UTC, or naive taken as UTC). ``order="key"`` reads
        in the table's own (source, id) order instead: without a time window that is one sequential scan,
        about 3x cheaper per row than time order's index lookups, for readers of a whole model type that
        need no particular order (export).
        """
        names = (
            list(columns) if columns else [c for c in STORE_COLUMNS if include_personal or c not in rec.PERSONAL_FIELDS]
        )
        unknown = set(names) - set(STORE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown record columns {sorted(unknown)}")
        where, params = self._where(model_type, since, until, valid_only, source)
        if order not in ("time", "key"):
            raise ValueError(f"unknown order {order!r}: valid orders are time, key")
        order_by = "model_type, created_at, id"
        if order == "key":
            order_by = "source, id"
            if since is None and until is None:  # unary + keeps SQLite off the model_type indexes: a plain scan
                where = where.replace("model_type = ?", "+model_type = ?", 1)
        cur = self.con.execute(f"SELECT {', '.join(names)} FROM predictions{where} ORDER BY {order_by}", params)
        while True:
            rows = cur.fetchmany(chunk_rows)
            if not rows:
                break
            yield _frame(rows, names)

    def read(self, model_type: str | None = None, since: Any = None, until: Any = None, **kw: Any) -> pd.DataFrame:
        """All matching records in one frame (see :meth:`iter_records` for the arguments)."""
        chunks = list(self.iter_records(model_type, since, until, **kw))
        if not chunks:
            names = kw.get("columns") or [
                c for c in STORE_COLUMNS if kw.get("include_personal") or c not in rec.PERSONAL_FIELDS
            ]
            return _frame([], list(names))
        return pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]

    def feedback_counts(self, model_type: str | None = None, since: Any = None, until: Any = None) -> pd.DataFrame:
        """Rows per (model_type, predicted_label, feedback, label, actual_label, invalid_reason), as ``n``.

        The aggregate is computed by SQLite, so ``stats`` on a million rows reads a few hundred groups
        instead of a million records. :func:`agroml.data.analysis.feedback_counts` gives the same shape from
        a record frame (the Supabase path).
        """
        where, params = self._where(model_type, since, until, False)
        keys = "model_type, predicted_label, feedback, label, actual_label, invalid_reason"
        rows = self.con.execute(f"SELECT {keys}, count(*) FROM predictions{where} GROUP BY {keys}", params).fetchall()
        return pd.DataFrame(rows, columns=[*keys.split(", "), "n"]).astype({"n": "int64"})

    def _scan_where(self, model_type: str | None, since: Any, until: Any) -> tuple[str, list[Any]]:
        """The WHERE of valid rows for a reader of columns no index holds: without a time window, one plain
        scan of the table (unary + keeps SQLite off the model_type indexes) reads 100,000 rows 3-4x faster
        than an index search that looks each row up by its key; with a window, the index narrows it."""
        where, params = self._where(model_type, since, until, True)
        if since is None and until is None:
            where = where.replace("model_type = ?", "+model_type = ?", 1)
        return where, params

    def wrong_counts(
        self, model_type: str | None = None, since: Any = None, until: Any = None
    ) -> list[tuple[tuple[str, str, str, str, str], int]]:
        """Answered valid rows per (crop, region, predicted, feedback, training label), grouped by SQLite.

        The keys of :class:`agroml.data.confusion.WrongFolder` ("unknown" for no crop or location, ""
        for no label or prediction), so ``stats`` folds a few hundred groups instead of reading every
        row into pandas (100,000 rows: 1.9 s read, a few tens of ms grouped here).
        """
        where, params = self._scan_where(model_type, since, until)
        answered = (rec.CONFIRMED, rec.CORRECTED, rec.REJECTED)
        where += f" AND feedback IN ({', '.join('?' for _ in answered)})"
        rows = self.con.execute(
            "SELECT coalesce(crop, ?), coalesce(location, ?), coalesce(predicted_label, ''), feedback, "
            f"coalesce(label, ''), count(*) FROM predictions{where} GROUP BY 1, 2, 3, 4, 5",
            [UNKNOWN, UNKNOWN, *params, *answered],
        ).fetchall()
        return [((c, r, p, f, lab), int(n)) for c, r, p, f, lab, n in rows]

    def labelled_images(
        self, model_type: str | None = None, since: Any = None, until: Any = None, chunk_rows: int = 100_000
    ) -> Iterator[list[tuple[str, str | None, str | None]]]:
        """(training label, image_hash, image_url) of every valid labelled row, ``chunk_rows`` at a time.

        Plain tuples in no particular order: readiness only counts which images are missing, and turning
        the rows into a record frame cost more than reading them (1.3 s of ``stats`` on 100,000 rows).
        """
        where, params = self._scan_where(model_type, since, until)
        cur = self.con.execute(
            f"SELECT label, image_hash, image_url FROM predictions{where} AND label IS NOT NULL", params
        )
        while rows := cur.fetchmany(chunk_rows):
            yield rows


def _frame(rows: list[tuple], names: list[str]) -> pd.DataFrame:
    """SQLite rows -> a record frame with canonical dtypes."""
    df = pd.DataFrame.from_records(rows, columns=names)
    if "created_at" in df.columns:
        df["created_at"] = pd.to_datetime(df["created_at"].astype("Int64"), unit="us", utc=True)
    if "user_confirmed" in df.columns:
        df["user_confirmed"] = df["user_confirmed"].astype("Int64").astype("boolean")
    return rec.coerce(df)
