"""agroml.core.sqlite: the one way agroml opens its databases, their transactions, errors and file modes."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from agroml.core import sqlite
from agroml.core.errors import StoreError
from agroml.data.store import Store
from agroml.images.cache import ImageCache
from agroml.lifecycle.registry import Registry


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test: umask(0o077)."""
    saved = os.umask(0o022)

    def set_(value: int) -> None:
        os.umask(value)

    yield set_
    os.umask(saved)


def open_db(path: Path, **kw) -> sqlite.Connection:
    return sqlite.connect(path, setting="AGROML_TEST_DB", damaged_fix="move it aside", **kw)


def test_connect_is_wal_autocommit_with_a_busy_timeout(tmp_path):
    con = open_db(tmp_path / "t.db")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
        assert con.isolation_level is None and not con.in_transaction
    finally:
        con.close()
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).close()
    open_db(foreign, wal=False).close()  # wal=False leaves another program's journal mode alone
    assert sqlite3.connect(foreign).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_transaction_commits_rolls_back_and_keeps_the_first_error(tmp_path):
    con = open_db(tmp_path / "t.db")
    con.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    with sqlite.transaction(con):
        con.execute("INSERT INTO t VALUES ('a')")
    with pytest.raises(sqlite3.IntegrityError), sqlite.transaction(con):  # a bug keeps its type and traceback
        con.execute("INSERT INTO t VALUES ('b')")
        con.execute("INSERT INTO t VALUES ('a')")
    with pytest.raises(KeyError), sqlite.transaction(con):
        con.execute("INSERT INTO t VALUES ('c')")
        con.execute("ROLLBACK")  # already rolled back: the second ROLLBACK must not hide the KeyError
        raise KeyError("first")
    assert [k for (k,) in con.execute("SELECT k FROM t")] == ["a"] and not con.in_transaction
    con.close()


def _error(cls: type, code: int, name: str, text: str) -> sqlite3.Error:
    exc = cls(text)
    exc.sqlite_errorcode, exc.sqlite_errorname = code, name
    return exc


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (_error(sqlite3.DatabaseError, 11, "SQLITE_CORRUPT", "database disk image is malformed"), "is damaged"),
        (_error(sqlite3.DatabaseError, 26, "SQLITE_NOTADB", "file is not a database"), "not an SQLite database"),
        (_error(sqlite3.OperationalError, 5, "SQLITE_BUSY", "database is locked"), "is locked by another process"),
        (_error(sqlite3.OperationalError, 13, "SQLITE_FULL", "database or disk is full"), "is full"),
        (_error(sqlite3.OperationalError, 10, "SQLITE_IOERR", "disk I/O error"), "disk I/O error"),
        (_error(sqlite3.OperationalError, 1544, "SQLITE_READONLY_DIRECTORY", "readonly"), "is read-only"),
    ],
)
def test_storage_errors_become_one_line_naming_the_file(tmp_path, exc, message):
    error = sqlite.storage_error(exc, tmp_path / "s.db", "AGROML_DB", "move it aside")
    assert isinstance(error, StoreError) and message in error.message and str(tmp_path / "s.db") in error.message
    assert "\n" not in str(error)


def test_programming_errors_stay_bugs(tmp_path):
    for exc in (sqlite3.IntegrityError("UNIQUE"), sqlite3.ProgrammingError("closed")):
        assert sqlite.storage_error(exc, tmp_path / "s.db", "AGROML_DB", "fix") is exc


def test_a_damaged_page_is_a_store_error_at_the_query_that_reaches_it(tmp_path):
    path = tmp_path / "t.db"
    con = open_db(path)
    con.execute("CREATE TABLE t (x)")
    con.executemany("INSERT INTO t VALUES (?)", [("x" * 500,) for _ in range(100)])
    con.close()
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(data))
    con = open_db(path)
    with pytest.raises(StoreError, match=r"t\.db is damaged or not an SQLite database \(database disk image"):
        for _ in con.execute("SELECT * FROM t"):
            pass
    with pytest.raises(StoreError, match="is damaged"):
        con.execute("SELECT * FROM t").fetchall()
    con.close()


# --- file modes --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o000])
def test_the_store_and_its_wal_files_are_owner_only_whatever_the_umask(tmp_path, umask, mask):
    umask(mask)
    path = tmp_path / "data" / "agroml.db"
    with Store(path) as store:
        store.salt()
        assert {p.name: mode(p) for p in path.parent.iterdir()} == {
            "agroml.db": 0o600,
            "agroml.db-wal": 0o600,
            "agroml.db-shm": 0o600,
        }
    assert mode(path) == 0o600


def test_an_existing_store_keeps_its_mode(tmp_path):
    path = tmp_path / "agroml.db"
    Store(path).close()
    path.chmod(0o640)  # a deliberate choice (a group that runs stats) is not undone behind the user's back
    Store(path).close()
    assert mode(path) == 0o640


def test_the_image_index_and_the_registry_follow_the_umask(tmp_path, umask):
    umask(0o022)
    with ImageCache(tmp_path / "images") as cache:
        cache.lookup("https://x.test/a.jpg")
        assert mode(tmp_path / "images" / "index.db") == 0o644
    with Registry(tmp_path / "models") as registry:
        registry.runs()
        assert mode(tmp_path / "models" / "registry.db") == 0o644
