"""Shared fixtures: every test runs in its own working directory with a clean environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agroml.core.config import SETTINGS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A developer's own MLflow server must not receive the suite's tiny runs (agroml/lifecycle/tracking.py):
# the MLflow tests set their own file store.
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(autouse=True)
def no_invalid_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names under .invalid (RFC 6761) are not found, whatever this machine's resolver does.

    The DNS tests use such names for "a host that does not exist". Some resolvers answer for any name (a
    search domain, a wildcard record), which turned "name not found" into "network unreachable" on a CI
    machine; the resolver is the far side of the wire, so the suite answers for it. Other names (127.0.0.1,
    localhost) go to the real resolver.
    """
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name.rstrip(".").endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory: default data/, models/ and exports/ land under it; no settings leak in."""
    for setting in SETTINGS:
        for env in setting.env:
            monkeypatch.delenv(env, raising=False)
    for env in list(os.environ):
        if env.startswith("AGROML_") and env != "AGROML_DEBUG":
            monkeypatch.delenv(env, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def cli(runner: CliRunner, workdir: Path):
    """Invoke `agroml ARGS...` in the fresh working directory; returns the Click result."""
    from agroml.cli.main import app

    def invoke(*args: str, **kwargs):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


@pytest.fixture
def demo_data(workdir: Path):
    """A small demo data set (all model types, 60 rows each) in the fresh working directory's store."""
    from agroml.core import config
    from agroml.demo import rows as demo

    settings = config.resolve(env_file=None)
    demo.generate(settings, ["pest", "disease", "storage"], n=60, seed=0)
    return settings


@pytest.fixture
def supabase_server():
    """A loopback Supabase (PostgREST + Storage) on 127.0.0.1, fresh per test; see tests/supaserver.py.

    Example: supabase_server.add_rows("pest_feedback", rows); supabase_server.faults.error_rate = 0.1
    """
    from supaserver import start_server

    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def image_host():
    """A plain static host on 127.0.0.1 (a second, non-Supabase origin): .add(path, data, content_type)."""
    from supaserver import start_image_host

    host = start_image_host()
    yield host
    host.stop()


@pytest.fixture
def sleeper():
    """A real live process whose pid a 'running' run can name (registry tests)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory) -> Path:
    """The demo's store (all model types, 60 rows each, seed 0), made ONCE per session in a folder of its own.

    Why: drawing the demo's 180 photos takes tens of seconds on a busy CI core; tests that only read
    rows (stats series, the monitoring page) copy this store (see ``demo_store``) instead.
    """
    from agroml.core import config
    from agroml.demo import rows as demo

    folder = tmp_path_factory.mktemp("demo") / "data"
    demo.generate(config.resolve({"data_dir": folder}, environ={}, env_file=None), ["pest", "disease", "storage"], 60)
    return folder / "agroml.db"


@pytest.fixture
def demo_store(workdir: Path, demo_template: Path) -> Path:
    """The demo's rows in the fresh working directory's store (no photos: for commands that read rows only)."""
    import sqlite3

    target = workdir / "data" / "agroml.db"
    target.parent.mkdir()
    with sqlite3.connect(demo_template) as src, sqlite3.connect(target) as dst:
        src.backup(dst)  # SQLite's own copy: consistent whatever the journal holds
    return target


#: Test files whose tests take longest (real trainings, server fixtures, many child processes): collected
#: first, so the two xdist workers (one file each, --dist loadfile) start them early and the run does not
#: end waiting on one of them (longest first; the order inside a file is kept).
LONGEST_FIRST = (
    "test_train_models.py",
    "test_api.py",
    "test_api_kills.py",
    "test_rollback.py",
    "test_publish.py",
    "test_report.py",
    "test_timeline.py",
    "test_feature_store.py",
    "test_source_auto.py",
    "test_runs_compare.py",
    "test_train_speed.py",
    "test_alerts.py",
    "test_gate.py",
    "test_mlflow_tracking.py",
    "test_train_schedule.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise


def pytest_addoption(parser):
    # tests/reliability/: the default run draws a few seeded fault and kill runs; --soak draws many more
    parser.addoption("--soak", action="store_true", default=False, help="reliability suite: many more seeds (minutes)")
