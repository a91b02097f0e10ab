"""A damaged or unwritable store, through every command that opens it: one `error:` line naming the file
and the fix, exit 1, never a traceback, and the file left exactly as it was (nothing more is lost).

Damage: garbage over a table page in the middle of the file, a truncated file, a file that is not a
database. Unwritable: a read-only store file, a read-only data folder. Root writes through file modes,
so the read-only cases drop the two capabilities that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) for
the test's thread: root then meets file modes as their owner, like any user.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from model_helpers import color_png
from supa_rows import add_empty_tables, add_pest_table, pest_rows

from agroml.core import config
from agroml.demo import rows as demo

DB = Path("data/agroml.db")
PAGE = 4096
TRAIN = ("train", "--model", "pest", "--weights", "none", "--image-size", "32", "--epochs", "1", "--min-per-class", "2")
COMMANDS: dict[str, tuple[str, ...]] = {
    "stats": ("stats",),
    "export": ("export", "--model", "pest", "--format", "csv"),
    "train": TRAIN,
    "demo": ("demo", "--n", "60"),
    "import": ("import", "collection", "--model", "pest"),
    "pull": ("pull", "--model", "pest", "--no-images"),
    "doctor": ("doctor", "--offline", "--json"),
}


@functools.cache
def golden_store() -> bytes:
    """The demo store the tests damage (60 rows per model type, seed 0: what `agroml demo --n 60` makes)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = config.resolve({"data_dir": Path(tmp) / "data"}, environ={}, env_file=None)
        demo.generate(settings, ["pest", "disease", "storage"], n=60, seed=0)
        return settings.db_path.read_bytes()


@pytest.fixture
def env(workdir, supabase_server, monkeypatch):
    """The working directory with a pest table to pull, a collection to import, and demo-sized thresholds."""
    for key, value in {
        "SUPABASE_URL": supabase_server.url,
        "SUPABASE_SERVICE_KEY": supabase_server.service_key,
        "AGROML_RETRY_BASE_SECONDS": "0.001",
        "AGROML_MIN_TOTAL": "10",
        # the commands under test read the local store: with auto, Supabase being configured would be read instead
        "AGROML_SOURCE": "local",
    }.items():
        monkeypatch.setenv(key, value)
    add_pest_table(supabase_server, pest_rows(5, seed=3))
    add_empty_tables(supabase_server)
    for label, color in (("aphids", "red"), ("healthy", "green")):
        (workdir / "collection" / label).mkdir(parents=True)
        (workdir / "collection" / label / "a.png").write_bytes(color_png(color))
    (workdir / "data").mkdir()
    return workdir


def _pest_leaf_in_the_middle(data: bytes) -> int:
    """The 1-based number of a leaf page of the predictions table holding pest rows, near the file's middle."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.db"
        path.write_bytes(data)
        con = sqlite3.connect(path)
        try:
            pages = [
                p for (p,) in con.execute("SELECT pageno FROM dbstat WHERE name = 'predictions' AND pagetype = 'leaf'")
            ]
        finally:
            con.close()
    pest = [p for p in pages if b"pest" in data[(p - 1) * PAGE : p * PAGE]]
    middle = len(data) // PAGE // 2
    return min(pest, key=lambda p: abs(p - middle))


def damage(kind: str) -> bytes:
    """Write the golden store damaged as ``kind`` to data/agroml.db; returns the bytes written."""
    data = bytearray(golden_store())
    if kind == "page":
        page = _pest_leaf_in_the_middle(bytes(data))
        data[(page - 1) * PAGE : page * PAGE] = bytes(range(256)) * (PAGE // 256)
    elif kind == "truncated":
        del data[len(data) // 2 :]
    elif kind == "not a database":
        data = bytearray(b"id,label\n1,aphids\n" * 500)
    DB.write_bytes(bytes(data))
    return bytes(data)


def one_error_line(result) -> str:
    """The single stderr line of a failed command (no traceback, nothing else)."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


DAMAGED = (
    "error: data/agroml.db is damaged or not an SQLite database ({why}) (restore it from a backup, or move it "
    "aside and run `agroml pull` or `agroml demo` to start a fresh store)"
)


@pytest.mark.parametrize(
    ("kind", "commands", "why"),
    [
        # stats and import read or write only pages that are whole here; doctor's quick_check reads every page
        ("page", ("export", "train", "demo"), "database disk image is malformed"),
        ("truncated", ("stats", "export", "train", "demo", "import", "pull"), "database disk image is malformed"),
        ("not a database", ("stats", "export", "train", "demo", "import", "pull"), "file is not a database"),
    ],
)
def test_a_damaged_store_is_one_line_naming_it_and_the_fix(cli, env, kind, commands, why):
    for name in commands:
        before = damage(kind)
        line = one_error_line(cli(*COMMANDS[name]))
        assert line == DAMAGED.format(why=why), name
        assert DB.read_bytes() == before, f"{name} changed the damaged store"
    before = damage(kind)
    result = cli(*COMMANDS["doctor"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    check = {c["name"]: c for c in json.loads(result.stdout)["checks"]}["store"]
    assert check["status"] == "fail" and check["detail"].startswith("data/agroml.db is damaged")
    assert check["fix"].startswith("restore it from a backup, or move it aside")
    assert DB.read_bytes() == before


def test_a_damaged_image_index_is_one_line_too(cli, env):
    DB.write_bytes(golden_store())
    (env / "data" / "images").mkdir()
    (env / "data" / "images" / "index.db").write_bytes(b"not an index" * 400)
    line = one_error_line(cli(*COMMANDS["import"]))
    assert line.startswith("error: data/images/index.db is damaged or not an SQLite database")
    assert "the cached images stay" in line


def test_a_damaged_run_registry_is_one_line_too(cli, env):
    (env / "models").mkdir()
    (env / "models" / "registry.db").write_bytes(b"not a registry" * 400)
    for command in (("runs",), ("status",), ("evaluate", "--model", "pest"), ("promote", "r1", "--model", "pest")):
        line = one_error_line(cli(*command))
        assert line.startswith("error: models/registry.db is damaged or not an SQLite database"), command
        assert "the run folders under models stay" in line


# --- read-only -------------------------------------------------------------------------------------------
_CAP_VERSION_3 = 0x20080522
_DAC_CAPS = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@contextlib.contextmanager
def file_modes_enforced() -> Iterator[None]:
    """Inside: this thread meets file modes even as root (its DAC override capabilities are off)."""
    if os.geteuid() != 0:
        yield  # an ordinary user meets file modes anyway
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capget")
    except (OSError, AttributeError) as exc:
        pytest.skip(f"root here cannot drop its file-mode override ({exc})")
    saved = data[0].effective
    data[0].effective = saved & ~_DAC_CAPS
    if libc.capset(ctypes.byref(header), data) != 0:
        pytest.skip("root here cannot drop its file-mode override (capset refused)")
    try:
        yield
    finally:
        data[0].effective = saved
        assert libc.capset(ctypes.byref(header), data) == 0


def _fresh_store() -> bytes:
    for extra in (DB.with_name("agroml.db-wal"), DB.with_name("agroml.db-shm")):
        extra.unlink(missing_ok=True)
    DB.write_bytes(golden_store())
    return golden_store()


def test_a_read_only_store_file_is_read_but_not_written(cli, env):
    _fresh_store()
    DB.chmod(0o444)
    try:
        with file_modes_enforced():
            for name in ("demo", "import", "pull"):
                line = one_error_line(cli(*COMMANDS[name]))
                assert line == (
                    "error: data/agroml.db is read-only (attempt to write a readonly database) "
                    "(make it writable (chmod u+w data/agroml.db), or set AGROML_DB to a writable copy)"
                ), name
            stats = cli("stats", "--json")  # reading needs no write access
            assert stats.exit_code == 0 and json.loads(stats.stdout)
            doctor = cli(*COMMANDS["doctor"])
        store = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}["store"]
        assert store["status"] == "warn" and "read-only: pull, demo and import cannot add rows" in store["detail"]
        assert DB.read_bytes() == golden_store()
    finally:
        DB.chmod(0o600)


def test_a_read_only_data_folder_is_named_by_every_command(cli, env):
    _fresh_store()
    (env / "data").chmod(0o555)
    try:
        with file_modes_enforced():
            for name in ("stats", "export", "train", "demo", "import", "pull"):
                line = one_error_line(cli(*COMMANDS[name]))
                assert line == (
                    "error: data is read-only: SQLite must create agroml.db-wal and agroml.db-shm beside "
                    "data/agroml.db (make data writable for this user, or set AGROML_DB to a writable place)"
                ), name
            doctor = cli(*COMMANDS["doctor"])
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert doctor.exit_code == 1 and checks["store"]["status"] == "fail"
        assert checks["store"]["detail"].startswith("data is read-only")
        assert DB.read_bytes() == golden_store()
    finally:
        (env / "data").chmod(0o755)
