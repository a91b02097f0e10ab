"""The run registry (``models/registry.db``): every training run, its state, and which run is in production.

Why a database and not a log file: a crash while appending to a log leaves a truncated file that
breaks the history for good. SQLite transactions cannot be
half-written, WAL lets ``agroml status`` read while a training writes, and ``BEGIN IMMEDIATE`` makes
"is a run of this model type already running? if not, register mine" one atomic step, so two
trainings started in the same second cannot both pass the check.

A run is ``running`` while its process lives. A process that dies without saying so (SIGKILL, power
loss) cannot mark itself, so every reader checks: a running run whose pid is gone on this host (or a
zombie, or a pid reused by a younger process) is marked ``interrupted``; a run on another host is
trusted until it has not reported for :data:`STALE_SECONDS`.

Which run serves is recorded here too (the ``promotions`` table); copying a run into
``models/<type>/production/`` and finding a run's folder live in :mod:`agroml.lifecycle.promotion`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from agroml.core import sqlite
from agroml.core.errors import OutputError, RunBusyError, UsageError
from agroml.core.files import json_text, utc_stamp

RUNNING, SUCCEEDED, FAILED, INTERRUPTED = "running", "succeeded", "failed", "interrupted"
STATES: tuple[str, ...] = (RUNNING, SUCCEEDED, FAILED, INTERRUPTED)
#: A running run on another host that has not reported for this long is taken as dead (an epoch on
#: a slow CPU can take many minutes; half a day without a word is not a live training).
STALE_SECONDS = 12 * 3600

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT NOT NULL, model_type TEXT NOT NULL, arch TEXT, state TEXT NOT NULL,
        pid INTEGER, pid_start INTEGER, host TEXT, started_at REAL NOT NULL, ended_at REAL,
        updated_at REAL, epoch INTEGER, metrics TEXT, path TEXT, config TEXT, error TEXT,
        phase TEXT, phase_epoch INTEGER, phase_epochs INTEGER, total_epochs INTEGER, seconds_left REAL,
        PRIMARY KEY (model_type, run_id))""",
    "CREATE INDEX IF NOT EXISTS runs_state ON runs (model_type, state)",
    """CREATE TABLE IF NOT EXISTS promotions (
        model_type TEXT NOT NULL, run_id TEXT NOT NULL, promoted_at REAL NOT NULL,
        previous_run_id TEXT, path TEXT NOT NULL)""",
)


#: Columns added after the first release, with their types: a registry.db made before them gets them
#: with ALTER TABLE when it is opened (see Registry._migrate).
_ADDED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("phase", "TEXT"),
    ("phase_epoch", "INTEGER"),
    ("phase_epochs", "INTEGER"),
    ("total_epochs", "INTEGER"),
    ("seconds_left", "REAL"),
)
#: The same for the ``promotions`` table, which became the audit trail of every promotion, refusal,
#: no-op and rollback (older rows, all promotions, keep NULL: ``event`` NULL reads as "promoted").
_ADDED_PROMOTION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event", "TEXT"),
    ("event_id", "TEXT"),
    ("command", "TEXT"),
    ("forced", "INTEGER"),
    ("champion_run_id", "TEXT"),
    ("archived_to", "TEXT"),
    ("restored_from", "TEXT"),
    ("reason", "TEXT"),
    ("comparison", "TEXT"),
)
#: The events after which ``run_id`` serves (a refusal or a no-op changes nothing).
SERVING_EVENTS = ("promoted", "rolled_back")
_SERVING_SQL = "coalesce(event, 'promoted') IN ('promoted', 'rolled_back')"
_EVENT_COLUMNS = (
    "model_type",
    "run_id",
    "promoted_at",
    "previous_run_id",
    "path",
    *(name for name, _ in _ADDED_PROMOTION_COLUMNS),
)


def _dumps(value: Any) -> str | None:
    return None if value is None else json_text(value, indent=None, sort_keys=True)


# --- process liveness ----------------------------------------------------------------------------
#: Two readings of one process's creation time may differ by float rounding; a reused pid belongs to a
#: process created later than that (pids are not handed out again within a second).
_START_TOLERANCE_MS = 1000
#: Registries written before psutil stored Linux clock ticks since boot (far below any epoch time in
#: milliseconds): such a start time cannot be compared, so only the pid is checked for those runs.
_OLD_TICKS_BELOW = 10**11


def _proc_start(pid: int) -> int | None:
    """The process's creation time (milliseconds since the epoch), or None where unknown: tells a reused pid.

    Why psutil: it reads the creation time on Linux, macOS and Windows alike, where parsing /proc worked
    on Linux only.
    """
    import psutil

    try:
        return round(psutil.Process(pid).create_time() * 1000)
    except (psutil.Error, OSError, ValueError):
        return None


def pid_alive(pid: int | None, pid_start: int | None = None) -> bool:
    """Whether ``pid`` is a live (not zombie) process on this host, and the same process if ``pid_start`` is known.

    Why psutil and not ``os.kill(pid, 0)``: on Windows that call does not probe, it sends CTRL_C_EVENT.
    """
    import psutil

    if not pid or pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):  # killed, not yet reaped: never reports
            return False
        started = round(proc.create_time() * 1000)
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, OSError):  # exists, owned by someone else
        return True
    if pid_start is None or pid_start < _OLD_TICKS_BELOW:
        return True
    return abs(started - pid_start) <= _START_TOLERANCE_MS


# --- records ---------------------------------------------------------------------------------------
@dataclass
class RunInfo:
    """One registered run, as stored (times as UTC seconds; :meth:`to_dict` renders ISO strings)."""

    run_id: str
    model_type: str
    arch: str | None
    state: str
    pid: int | None
    host: str | None
    started_at: float
    ended_at: float | None
    updated_at: float | None
    epoch: int | None
    metrics: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    phase: str | None = None
    phase_epoch: int | None = None
    phase_epochs: int | None = None
    total_epochs: int | None = None
    #: Estimated seconds left when the run last reported (at ``updated_at``).
    seconds_left: float | None = None
    production: bool = False

    @property
    def seconds_left_now(self) -> float | None:
        """The estimate less the time since it was made, for a running run (None when there is none)."""
        if self.state != RUNNING or self.seconds_left is None or self.updated_at is None:
            return None
        return max(0.0, self.seconds_left - (time.time() - self.updated_at))

    @property
    def duration_s(self) -> float | None:
        end = self.ended_at if self.ended_at is not None else (time.time() if self.state == RUNNING else None)
        return None if end is None else max(0.0, end - self.started_at)

    def test_metric(self, name: str) -> float | None:
        """A test-split figure (``accuracy``, ``macro_f1``) from the metrics, wherever training put it."""
        test = self.metrics.get("test")
        if isinstance(test, dict) and name in test:
            return test[name]
        return self.metrics.get(f"test_{name}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("started_at", "ended_at", "updated_at"):
            out[key] = utc_stamp(out[key])
        out["duration_s"] = None if self.duration_s is None else round(self.duration_s, 1)
        left = self.seconds_left_now
        out["seconds_left_now"] = None if left is None else round(left, 1)
        return out


_COLUMNS = (
    "run_id",
    "model_type",
    "arch",
    "state",
    "pid",
    "pid_start",
    "host",
    "started_at",
    "ended_at",
    "updated_at",
    "epoch",
    "metrics",
    "path",
    "config",
    "error",
    *(name for name, _ in _ADDED_COLUMNS),
)


def _info(row: tuple, production: set[tuple[str, str]]) -> RunInfo:
    d = dict(zip(_COLUMNS, row, strict=True))
    d.pop("pid_start")
    d["metrics"] = json.loads(d["metrics"]) if d["metrics"] else {}
    d["config"] = json.loads(d["config"]) if d["config"] else {}
    return RunInfo(**d, production=(d["model_type"], d["run_id"]) in production)


class RunHandle:
    """The training process's side of a run: report epochs, then finish exactly once.

    As a context manager it also turns SIGTERM into KeyboardInterrupt while the run is active (so
    ``kill`` unwinds the training like Ctrl-C: no model is written, the run is marked interrupted)
    and records the outcome: KeyboardInterrupt -> interrupted, another exception -> failed, a clean
    exit without :meth:`finish` -> succeeded.
    """

    def __init__(self, registry: Registry, model_type: str, run_id: str) -> None:
        self.registry = registry
        self.model_type = model_type
        self.run_id = run_id
        self.finished = False
        self._old_handler: Any = None
        self._installed = False

    def update(
        self,
        epoch: int,
        metrics: dict[str, Any],
        *,
        phase: str | None = None,
        phase_epoch: int | None = None,
        phase_epochs: int | None = None,
        total_epochs: int | None = None,
        seconds_left: float | None = None,
    ) -> None:
        """Record the latest epoch, its metrics, and where the run stands (``agroml status`` shows them).

        A NaN ``seconds_left`` (nothing to estimate from yet) is stored as NULL.
        """
        left = None if seconds_left is None or seconds_left != seconds_left else float(seconds_left)
        with self.registry._tx() as con:
            con.execute(
                "UPDATE runs SET epoch = ?, metrics = ?, updated_at = ?, phase = ?, phase_epoch = ?, "
                "phase_epochs = ?, total_epochs = ?, seconds_left = ? WHERE model_type = ? AND run_id = ?",
                (
                    int(epoch),
                    _dumps(metrics),
                    time.time(),
                    phase,
                    None if phase_epoch is None else int(phase_epoch),
                    None if phase_epochs is None else int(phase_epochs),
                    None if total_epochs is None else int(total_epochs),
                    left,
                    self.model_type,
                    self.run_id,
                ),
            )

    def finish(
        self,
        state: str,
        metrics: dict[str, Any] | None = None,
        path: str | Path | None = None,
        error: str | None = None,
    ) -> None:
        """Mark the run ended in ``state``; metrics and path are kept as they were when not given."""
        if state not in STATES or state == RUNNING:
            raise UsageError(f"cannot finish a run as {state!r}: use one of succeeded, failed, interrupted")
        now = time.time()
        with self.registry._tx() as con:
            con.execute(
                "UPDATE runs SET state = ?, ended_at = ?, updated_at = ?, metrics = coalesce(?, metrics), "
                "path = coalesce(?, path), error = coalesce(?, error) WHERE model_type = ? AND run_id = ?",
                (
                    state,
                    now,
                    now,
                    _dumps(metrics),
                    None if path is None else str(path),
                    error,
                    self.model_type,
                    self.run_id,
                ),
            )
        self.finished = True
        self._restore_signal()

    # -- context manager ---------------------------------------------------------------------------
    def __enter__(self) -> RunHandle:
        try:
            self._old_handler = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
            self._installed = True
        except ValueError:  # not the main thread: signals cannot be handled here, the registry still works
            self._installed = False
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if not self.finished:
                if exc_type is None:
                    self.finish(SUCCEEDED)
                elif issubclass(exc_type, KeyboardInterrupt):
                    self.finish(INTERRUPTED, error="interrupted (Ctrl-C or SIGTERM)")
                else:
                    self.finish(FAILED, error=f"{exc_type.__name__}: {exc}"[:500])
        finally:
            self._restore_signal()

    def _restore_signal(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._old_handler if self._old_handler is not None else signal.SIG_DFL)
            self._installed = False


def _sigterm_to_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt("SIGTERM")


class Registry:
    """The runs of every model type, in ``<models_dir>/registry.db``."""

    def __init__(self, models_dir: str | Path, stale_seconds: float = STALE_SECONDS, create: bool = True) -> None:
        """Open (and with ``create``, make) the registry; ``create=False`` on a folder without one gives an
        empty in-memory registry, so `agroml runs` in a fresh folder answers "no runs" and writes nothing."""
        self.models_dir = Path(models_dir)
        self.path = self.models_dir / "registry.db"
        self.stale_seconds = stale_seconds
        self.host = socket.gethostname()
        damaged = (
            f"move it aside: the run folders under {self.models_dir} stay, and evaluate, predict and promote "
            "still take their paths"
        )
        if not create and not self.path.exists():
            self.con = sqlite.connect(":memory:", setting="AGROML_MODELS_DIR", damaged_fix=damaged)
        else:
            try:
                self.models_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(
                    f"cannot create {self.models_dir}: {exc.strerror}",
                    fix="set AGROML_MODELS_DIR to a writable folder",
                ) from None
            self.con = sqlite.connect(self.path, setting="AGROML_MODELS_DIR", damaged_fix=damaged)
        try:
            for statement in _SCHEMA:
                self.con.execute(statement)
            self._migrate()
        except BaseException:
            self.con.close()
            raise

    def _migrate(self) -> None:
        """Add the columns a registry.db made by an older agroml lacks (its runs keep NULL there).

        Why ALTER TABLE and not a new file: the runs and promotions recorded so far are the history of
        what served; ADD COLUMN keeps every row and is one quick schema change. The write lock is taken
        only when a column is missing, so a current registry opens on a read-only account too.
        """

        def missing(con: sqlite3.Connection) -> list[tuple[str, str, str]]:
            found = []
            for table, added in (("runs", _ADDED_COLUMNS), ("promotions", _ADDED_PROMOTION_COLUMNS)):
                have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
                found += [(table, name, kind) for name, kind in added if name not in have]
            return found

        if not missing(self.con):
            return
        with self._tx() as con:
            for table, name, kind in missing(con):  # again inside the lock: another process may have added them
                con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite.transaction(self.con)  # BEGIN IMMEDIATE: check-then-insert in start() is atomic

    # -- liveness ------------------------------------------------------------------------------------
    def _is_dead(
        self, pid: int | None, pid_start: int | None, host: str | None, updated_at: float | None, started_at: float
    ) -> bool:
        if host == self.host:
            return not pid_alive(pid, pid_start)
        last = updated_at if updated_at is not None else started_at
        return time.time() - last > self.stale_seconds

    def _running(self, con: sqlite3.Connection, model_type: str | None) -> list[tuple]:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE state = ?"
        params: list[Any] = [RUNNING]
        if model_type is not None:
            sql += " AND model_type = ?"
            params.append(model_type)
        return con.execute(sql + " ORDER BY started_at", params).fetchall()

    def _row_is_dead(self, row: tuple) -> bool:
        d = dict(zip(_COLUMNS, row, strict=True))
        return self._is_dead(d["pid"], d["pid_start"], d["host"], d["updated_at"], d["started_at"])

    def _reap(self, con: sqlite3.Connection, model_type: str | None = None) -> list[tuple]:
        """Inside a transaction: mark dead running runs interrupted; return the live ones' rows."""
        live = []
        for row in self._running(con, model_type):
            if self._row_is_dead(row):
                d = dict(zip(_COLUMNS, row, strict=True))
                con.execute(
                    "UPDATE runs SET state = ?, ended_at = coalesce(updated_at, started_at), error = ? "
                    "WHERE model_type = ? AND run_id = ?",
                    (
                        INTERRUPTED,
                        f"process {d['pid']} on {d['host']} ended without finishing the run",
                        d["model_type"],
                        d["run_id"],
                    ),
                )
            else:
                live.append(row)
        return live

    def _live(self, model_type: str | None) -> list[tuple]:
        """The live running runs' rows, dead ones marked first. The write lock is taken only when a run
        died, so `agroml runs` and `predict` read a registry they may not write (a serving account's)."""
        rows = self._running(self.con, model_type)
        if not any(self._row_is_dead(r) for r in rows):
            return rows
        with self._tx() as con:
            return self._reap(con, model_type)

    # -- writing -------------------------------------------------------------------------------------
    def start(
        self,
        model_type: str,
        run_id: str,
        arch: str | None,
        config: dict[str, Any],
        pid: int | None = None,
        path: str | Path | None = None,
    ) -> RunHandle:
        """Register a running run, or raise RunBusyError if a live run of ``model_type`` holds the slot."""
        pid = os.getpid() if pid is None else pid
        now = time.time()
        with self._tx() as con:
            live = self._reap(con, model_type)
            if live:
                d = dict(zip(_COLUMNS, live[0], strict=True))
                raise RunBusyError(
                    f"a {model_type} training is already running: run {d['run_id']} (pid {d['pid']} on {d['host']}, "
                    f"started {utc_stamp(d['started_at'])})",
                    fix="wait for it to finish (`agroml status`), or stop that process",
                )
            if con.execute("SELECT 1 FROM runs WHERE model_type = ? AND run_id = ?", (model_type, run_id)).fetchone():
                raise RunBusyError(
                    f"run id {run_id} is already used by another {model_type} run",
                    fix="start again in a second: run ids are made from the time",
                )
            con.execute(
                "INSERT INTO runs (run_id, model_type, arch, state, pid, pid_start, host, started_at, updated_at, "
                "epoch, metrics, path, config) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    model_type,
                    arch,
                    RUNNING,
                    pid,
                    _proc_start(pid),
                    self.host,
                    now,
                    now,
                    None,
                    None,
                    None if path is None else str(path),
                    _dumps(config),
                ),
            )
        return RunHandle(self, model_type, run_id)

    # -- reading -------------------------------------------------------------------------------------
    def _production(self) -> set[tuple[str, str]]:
        rows = self.con.execute(
            "SELECT p.model_type, p.run_id FROM promotions p WHERE p.promoted_at = "
            f"(SELECT max(q.promoted_at) FROM promotions q WHERE q.model_type = p.model_type AND {_SERVING_SQL})"
        ).fetchall()
        return {(m, r) for m, r in rows}

    def runs(self, model_type: str | None = None) -> list[RunInfo]:
        """Every run (newest first), after marking runs whose process is gone as interrupted."""
        self._live(model_type)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM runs"
        params: list[Any] = []
        if model_type is not None:
            sql += " WHERE model_type = ?"
            params.append(model_type)
        prod = self._production()
        return [_info(r, prod) for r in self.con.execute(sql + " ORDER BY started_at DESC, run_id DESC", params)]

    def status(self, model_type: str | None = None) -> list[RunInfo]:
        """The runs that are running now (dead ones are marked interrupted first)."""
        live = self._live(model_type)
        prod = self._production()
        return [_info(r, prod) for r in live]

    def get(self, run_id: str, model_type: str | None = None) -> RunInfo | None:
        """The run ``run_id`` (of ``model_type`` if given; the newest if ids repeat across types)."""
        return next((r for r in self.runs(model_type) if r.run_id == run_id), None)

    def latest(self, model_type: str, state: str = SUCCEEDED) -> RunInfo | None:
        """The newest run of ``model_type`` in ``state`` whose folder still exists."""
        for run in self.runs(model_type):
            if run.state == state and run.path and Path(run.path).is_dir():
                return run
        return None

    def production_run_id(self, model_type: str) -> str | None:
        row = self.con.execute(
            f"SELECT run_id FROM promotions WHERE model_type = ? AND {_SERVING_SQL} ORDER BY promoted_at DESC LIMIT 1",
            (model_type,),
        ).fetchone()
        return row[0] if row else None

    def by_path(self, folder: str | Path) -> RunInfo | None:
        """The run whose folder is ``folder`` (the same folder, however the path is spelled), if registered."""
        target = Path(folder).resolve()
        return next((r for r in self.runs() if r.path and Path(r.path).resolve() == target), None)

    # -- promotions (the copying is agroml.lifecycle.promotion's) ------------------------------------------
    def record_promotion(self, model_type: str, run_id: str, previous_run_id: str | None, path: str | Path) -> None:
        """Record that ``run_id`` now serves as ``model_type``'s production model, replacing ``previous_run_id``."""
        self.record_event(PromotionEvent(model_type, run_id, time.time(), previous_run_id, str(path)))

    def record_event(self, event: PromotionEvent) -> bool:
        """Add ``event`` to the audit trail; False (and nothing written) when its ``event_id`` is there already,
        so finishing an interrupted promotion twice records it once."""
        with self._tx() as con:
            if (
                event.event_id
                and con.execute("SELECT 1 FROM promotions WHERE event_id = ?", (event.event_id,)).fetchone()
            ):
                return False
            row = event.row()
            con.execute(
                f"INSERT INTO promotions ({', '.join(_EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(row))})", row
            )
        return True

    def events(self, model_type: str | None = None) -> list[PromotionEvent]:
        """The audit trail (promotions, refusals, no-ops, rollbacks), oldest first."""
        sql = f"SELECT {', '.join(_EVENT_COLUMNS)} FROM promotions"
        params: list[Any] = []
        if model_type is not None:
            sql += " WHERE model_type = ?"
            params.append(model_type)
        rows = self.con.execute(sql + " ORDER BY promoted_at, rowid", params).fetchall()
        return [PromotionEvent.from_row(r) for r in rows]


@dataclass
class PromotionEvent:
    """One row of the audit trail: what happened to ``model_type``'s production model, when, by which command.

    ``event`` is promoted, refused, noop or rolled_back; ``run_id`` the challenger (for a rollback: the
    run restored), ``champion_run_id`` the production run it was measured against, ``previous_run_id``
    the run it replaced, ``archived_to`` where that one went, ``restored_from`` the archive folder a
    rollback copied; ``comparison`` the gate's side-by-side figures.
    """

    model_type: str
    run_id: str
    at: float
    previous_run_id: str | None
    path: str
    event: str = "promoted"
    event_id: str | None = None
    command: str | None = None
    forced: bool = False
    champion_run_id: str | None = None
    archived_to: str | None = None
    restored_from: str | None = None
    reason: str | None = None
    comparison: dict[str, Any] | None = None

    def row(self) -> tuple[Any, ...]:
        return (
            self.model_type,
            self.run_id,
            self.at,
            self.previous_run_id,
            self.path,
            self.event,
            self.event_id,
            self.command,
            int(self.forced),
            self.champion_run_id,
            self.archived_to,
            self.restored_from,
            self.reason,
            _dumps(self.comparison),
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> PromotionEvent:
        d = dict(zip(_EVENT_COLUMNS, row, strict=True))
        return cls(
            model_type=d["model_type"],
            run_id=d["run_id"],
            at=d["promoted_at"],
            previous_run_id=d["previous_run_id"],
            path=d["path"],
            event=d["event"] or "promoted",  # rows from before the audit trail were all promotions
            event_id=d["event_id"],
            command=d["command"],
            forced=bool(d["forced"]),
            champion_run_id=d["champion_run_id"],
            archived_to=d["archived_to"],
            restored_from=d["restored_from"],
            reason=d["reason"],
            comparison=json.loads(d["comparison"]) if d["comparison"] else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = utc_stamp(self.at)
        return out
