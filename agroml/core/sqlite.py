"""SQLite: one way to open agroml's databases (the store, the image index, the run registry) and write them.

Why one module: each database needs the same settings (WAL so readers never wait for a writer, a busy
timeout so two commands queue instead of failing, autocommit with explicit ``BEGIN IMMEDIATE``
transactions), and the same answer when the file is damaged or cannot be written. SQLite reports a
damaged page only when a query reaches it, which can be in the middle of ``stats`` or ``export``; so
the connection's own ``execute`` and ``fetch*`` turn storage errors into one :class:`StoreError` line
that names the file and the fix, wherever they happen. Programming errors (a constraint, bad SQL)
stay as they are: they are bugs, and their traceback is what fixes them.

Permissions: ``private=True`` creates the file 0600 before SQLite opens it; SQLite gives the ``-wal``
and ``-shm`` files it makes the mode of the database file, so the three stay owner-only together.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agroml.core.errors import StoreError
from agroml.core.files import PRIVATE_MODE

#: How long a statement waits for another process's write lock before it fails ("database is locked").
BUSY_TIMEOUT_S = 30.0

# SQLite's primary result codes (the low byte of ``sqlite_errorcode``).
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 3, 5, 6, 8, 10, 11, 13, 14, 26
#: Errors in the code or the data, not the file: they keep their type and traceback.
_BUGS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.DataError, sqlite3.NotSupportedError)


def can_access(path: Path, mode: int) -> bool:
    """os.access for the effective user where the OS supports it (what SQLite's open() is checked as)."""
    effective = os.access in os.supports_effective_ids
    return os.access(path, mode, effective_ids=effective)


def storage_error(exc: sqlite3.Error, path: Path, setting: str, damaged_fix: str) -> Exception:
    """The one-line :class:`StoreError` for a storage failure of ``path``; ``exc`` itself if it is a bug.

    ``setting`` names the variable that points agroml at another file or folder; ``damaged_fix`` says
    how to recover this database when it is damaged (it differs between the store and the registry).
    """
    if isinstance(exc, _BUGS) or not isinstance(exc, sqlite3.DatabaseError):
        return exc
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    name = getattr(exc, "sqlite_errorname", "") or ""
    folder = path.parent
    if primary in (_CORRUPT, _NOTADB):
        return StoreError(f"{path} is damaged or not an SQLite database ({exc})", fix=damaged_fix)
    if primary in (_READONLY, _CANTOPEN, _PERM):
        if name == "SQLITE_READONLY_DIRECTORY" or (folder.is_dir() and not can_access(folder, os.W_OK | os.X_OK)):
            return StoreError(
                f"{folder} is read-only: SQLite must create {path.name}-wal and {path.name}-shm beside {path}",
                fix=f"make {folder} writable for this user, or set {setting} to a writable place",
            )
        if path.exists() and not can_access(path, os.R_OK):
            return StoreError(
                f"cannot read {path}: permission denied",
                fix=f"run agroml as the user that owns it, or set {setting} to a file this user can read",
            )
        if path.exists() and not can_access(path, os.W_OK):
            return StoreError(
                f"{path} is read-only ({exc})",
                fix=f"make it writable (chmod u+w {path}), or set {setting} to a writable copy",
            )
        return StoreError(f"cannot open {path} ({exc})", fix=f"check the file and its folder, or set {setting}")
    if primary == _FULL:
        return StoreError(f"the disk holding {path} is full ({exc})", fix="free disk space, then run the command again")
    if primary in (_BUSY, _LOCKED):
        return StoreError(
            f"{path} is locked by another process ({exc})",
            fix="wait for the other agroml command to finish, then run this one again",
        )
    if primary == _IOERR:
        return StoreError(f"cannot read or write {path}: disk I/O error ({exc})", fix=f"check the disk; {damaged_fix}")
    return StoreError(f"{path}: {exc}", fix=damaged_fix)


class _Cursor(sqlite3.Cursor):
    """A cursor whose reads and writes raise :func:`storage_error` instead of a bare sqlite3 error."""

    connection: Connection

    def _fail(self, exc: sqlite3.Error) -> Exception:
        return self.connection.storage_error(exc)

    def execute(self, *args: Any) -> _Cursor:
        try:
            return super().execute(*args)
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def executemany(self, *args: Any) -> _Cursor:
        try:
            return super().executemany(*args)
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def fetchmany(self, *args: Any) -> list[Any]:
        try:
            return super().fetchmany(*args)
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc


class Connection(sqlite3.Connection):
    """An sqlite3 connection that knows its file, so a storage error can name it and say what to do."""

    path: Path
    setting: str
    damaged_fix: str

    def storage_error(self, exc: sqlite3.Error) -> Exception:
        return storage_error(exc, self.path, self.setting, self.damaged_fix)

    def cursor(self, factory: Any = None) -> Any:
        return super().cursor(factory or _Cursor)

    # sqlite3.Connection.execute makes a plain cursor in C, whatever cursor() says: go through ours.
    def execute(self, *args: Any) -> _Cursor:
        return self.cursor().execute(*args)

    def executemany(self, *args: Any) -> _Cursor:
        return self.cursor().executemany(*args)


def _create_private(path: Path, setting: str) -> None:
    """Create ``path`` empty and 0600 (whatever the umask) unless it exists, so SQLite never makes it 0644."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(
            f"cannot create {path}: {exc.strerror}", fix=f"make {path.parent} writable, or set {setting}"
        ) from None
    os.close(fd)


def connect(
    path: str | Path,
    *,
    setting: str,
    damaged_fix: str,
    wal: bool = True,
    private: bool = False,
    timeout: float = BUSY_TIMEOUT_S,
) -> Connection:
    """Open ``path`` (``":memory:"`` too) in autocommit mode with a busy timeout, and WAL unless ``wal=False``.

    ``wal=False`` is for a file that may not be agroml's: switching a foreign database to WAL would
    change it, so the store checks what the file holds first and calls :func:`enable_wal` itself.
    ``private`` creates a missing file 0600 first (the store holds farmer ids and the hash salt).
    """
    memory = str(path) == ":memory:"
    where = Path(path)
    if private and not memory:
        _create_private(where, setting)
    try:
        con = sqlite3.connect(where, timeout=timeout, isolation_level=None, check_same_thread=False, factory=Connection)
    except sqlite3.Error as exc:
        raise storage_error(exc, where, setting, damaged_fix) from exc
    con.path, con.setting, con.damaged_fix = where, setting, damaged_fix
    try:
        con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        if wal and not memory:
            enable_wal(con)
    except BaseException:
        con.close()
        raise
    return con


def enable_wal(con: Connection) -> None:
    """Switch to WAL (readers never block the writer); a file system that cannot do it is a StoreError."""
    if con.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
        raise StoreError(f"{con.path}: cannot switch to WAL mode", fix="put it on a local disk")


@contextlib.contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction: ``BEGIN IMMEDIATE`` takes the write lock up front, so a check-then-write inside
    is atomic and two writers never deadlock upgrading a read lock. Commits on success, rolls back on any
    exception (a rollback that fails, e.g. after SQLite already rolled back, never hides the first error).
    """
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            with contextlib.suppress(sqlite3.Error, StoreError):
                con.execute("ROLLBACK")
        raise
