"""`agroml pull` against the loopback server: exact copies, refreshes, images, and a SIGKILL mid-way."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from supa_rows import add_empty_tables, add_pest_table, jpeg, pest_rows
from supaserver import Faults, closed_port

from agroml.core import config
from agroml.data.pulling import pull
from agroml.data.store import Store

N = 25_000


@functools.lru_cache(maxsize=1)
def _big() -> tuple[dict, ...]:
    return tuple(pest_rows(N, seed=21))


@pytest.fixture
def env(workdir, supabase_server, monkeypatch):
    """The pull's settings in the environment (as a user sets them), the server behind them."""
    values = {
        "SUPABASE_URL": supabase_server.url,
        "SUPABASE_SERVICE_KEY": supabase_server.service_key,
        "AGROML_RETRY_BASE_SECONDS": "0.001",
        "AGROML_HASH_SALT": "pepper",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    add_empty_tables(supabase_server)
    return supabase_server


def _store_frame(db: Path) -> pd.DataFrame:
    with Store(db, create=False) as store:
        return store.read(include_personal=True).sort_values("id").reset_index(drop=True)


def _cache_state(root: Path) -> tuple[set[str], dict[str, str]]:
    files = {str(p.relative_to(root)) for p in root.glob("??/*") if p.is_file()}
    con = sqlite3.connect(root / "index.db")
    try:
        index = dict(con.execute("SELECT url, sha256 FROM urls").fetchall())
    finally:
        con.close()
    return files, index


def test_pull_copies_25k_rows_behind_the_cap_exactly_despite_faults(cli, env, workdir):
    add_pest_table(env, list(_big()))
    env.faults = Faults(seed=4, error_rate=0.10, error_statuses=(503, 429), drop_rate=0.02)
    result = cli("pull", "--model", "pest", "--no-images", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["models"]["pest"] == {"rows": N, "inserted": N, "updated": 0, "unchanged": N - N, "invalid": {}}
    assert report["rest_retries"] > 0 and report["images"] is None
    frame = _store_frame(workdir / "data" / "agroml.db")
    assert len(frame) == N and frame["id"].is_unique
    assert set(frame["id"]) == {r["id"] for r in _big()}
    want = {r["id"]: r for r in _big()}
    assert all(frame["image_url"][i] == want[frame["id"][i]]["image_url"] for i in range(0, N, 97))
    assert (frame["source"] == "supabase").all()


def test_a_second_pull_adds_new_rows_and_refreshes_feedback(cli, env, workdir):
    rows = pest_rows(300, seed=5)
    add_pest_table(env, rows[:250])
    assert cli("pull", "--no-images").exit_code == 0
    no_feedback = [r["id"] for r in rows[:250] if r["user_confirmed"] is None][:10]
    for row_id in no_feedback:  # farmers answer after the row was created
        env.update_rows("pest_predictions", {"id": row_id}, {"user_confirmed": True})
    env.add_rows("pest_predictions", rows[250:])
    result = cli("pull", "--no-images", "--json")
    report = json.loads(result.stdout)["models"]["pest"]
    assert report == {"rows": 300, "inserted": 50, "updated": 10, "unchanged": 240, "invalid": {}}
    frame = _store_frame(workdir / "data" / "agroml.db").set_index("id")
    assert len(frame) == 300
    assert (frame.loc[no_feedback, "feedback"] == "confirmed").all()
    table = cli("pull", "--no-images").stdout
    assert "pest" in table and "300" in table  # the human table says what changed


def test_pull_fetches_images_and_records_their_hashes(cli, env, workdir):
    def url(i: int, row_id: str) -> str:
        if i % 10 == 9:
            return "https://images.example.org/x.jpg"  # not allowed: counted, never fetched
        return env.add_object("predictions", f"pest_images/pest_{row_id}.jpg", jpeg(i))

    add_pest_table(env, pest_rows(120, seed=8, image_url=url))
    result = cli("pull", "--json")
    assert result.exit_code == 0, result.output
    images = json.loads(result.stdout)["images"]
    assert (images["fetched"], images["cached"], images["failed"]) == (108, 0, 1)  # 12 rows share one bad URL
    assert images["reasons"] == {"host_not_allowed": 1}
    assert json.loads(result.stdout)["rows_without_image"] == 12
    assert "1 images not fetched (1 host_not_allowed); their 12 rows stay without an image hash" in result.stderr
    frame = _store_frame(workdir / "data" / "agroml.db")
    hashed = frame[frame["image_hash"].notna()]
    assert len(hashed) == 108
    for row in hashed.itertuples():
        assert any((workdir / "data" / "images" / row.image_hash[:2]).glob(f"{row.image_hash}.*"))

    before = len(env.requests)
    again = json.loads(cli("pull", "--json").stdout)["images"]
    assert (again["fetched"], again["cached"], again["failed"]) == (0, 108, 1)
    assert not [r for r in env.requests[before:] if r.path.startswith("/storage/")]  # warm cache: 0 requests


def test_pull_errors_exit_1_with_the_fix(cli, env, monkeypatch):
    add_pest_table(env, pest_rows(3), table="pest_rows")
    result = cli("pull", "--model", "pest")
    assert result.exit_code == 1
    assert (
        "error: table 'pest_predictions' not found in Supabase (PGRST205: Could not find the table "
        "'public.pest_predictions' in the schema cache) (set AGROML_PEST_TABLE to the table holding pest "
        "predictions)"
    ) in result.stderr
    monkeypatch.setenv("AGROML_PEST_TABLE", "pest_rows")
    monkeypatch.setenv("AGROML_PEST_COL_SEVERITY", "pest_severity")
    result = cli("pull", "--model", "pest")
    assert result.exit_code == 1
    assert "error: column 'pest_severity' not found in table 'pest_rows' (42703" in result.stderr
    assert "(set AGROML_PEST_COL_SEVERITY to the column's real name, or - if the table has none)" in result.stderr
    monkeypatch.delenv("AGROML_PEST_COL_SEVERITY")
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", "expired-or-wrong")
    result = cli("pull", "--model", "pest")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: Supabase rejected the key (401: Invalid API key) (set "
        "SUPABASE_SERVICE_KEY to the project's service_role key"
    )
    monkeypatch.delenv("SUPABASE_SERVICE_KEY")
    result = cli("pull")
    assert result.exit_code == 1 and "SUPABASE_SERVICE_KEY is not set" in result.stderr
    assert not Path("data/agroml.db").exists() or _store_frame(Path("data/agroml.db")).empty  # nothing half-done


def test_pull_with_the_anon_key_warns_about_row_level_security(cli, env, monkeypatch):
    add_pest_table(env, pest_rows(4))
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", env.anon_key)
    result = cli("pull", "--model", "pest", "--no-images")
    assert result.exit_code == 0
    assert "row-level security hides other farmers' rows" in result.stderr


# --- an unreachable host, a flaky one ----------------------------------------------------------------------
def _retry_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("retrying in ")]


@pytest.mark.parametrize(
    ("url", "host", "what"),
    [
        ("http://127.0.0.1:{port}", "127.0.0.1:{port}", "connection refused"),
        ("http://agroml-test-{port}.invalid", "agroml-test-{port}.invalid", "name not found (DNS)"),
        ("https://agroml-test-{port}.invalid:8443/", "agroml-test-{port}.invalid:8443", "name not found (DNS)"),
    ],
)
def test_pull_from_an_unreachable_host_gives_up_after_3_quick_attempts_naming_it(
    cli, env, workdir, monkeypatch, url, host, what
):
    """Refused or unknown: no budget of retries, the host and the fix named, every retry shown."""
    port = closed_port()
    url, host = url.format(port=port), host.format(port=port)
    monkeypatch.setenv("SUPABASE_URL", url)
    monkeypatch.setenv("AGROML_RETRY_MAX_SECONDS", "600")  # the budget is not what ends it
    result = cli("pull", "--model", "pest")
    assert result.exit_code == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    assert re.fullmatch(
        rf"error: could not reach Supabase at {re.escape(host)} \({re.escape(what)}; 3 attempts in [\d.]+ s\) "
        rf"\(check SUPABASE_URL \({re.escape(url.rstrip('/'))}\) and this machine's network\)",
        error[0],
    ), error[0]
    assert "AGROML_RETRY_MAX_SECONDS" not in result.stderr  # more time would not help: never advised
    lines = _retry_lines(result.stderr)
    assert [line.split(" (", 1)[1] for line in lines] == [
        f"attempt 2/3): {host}: {what}",
        f"attempt 3/3): {host}: {what}",
    ]
    assert not (workdir / "data" / "agroml.db").exists() or _rows_in(workdir / "data" / "agroml.db") == 0


def test_a_burst_of_503s_is_retried_out_loud_and_the_copy_is_exact(cli, env, workdir):
    rows = pest_rows(
        120, seed=17, image_url=lambda i, row_id: env.add_object("predictions", f"p/{row_id}.jpg", jpeg(i))
    )
    add_pest_table(env, rows)
    env.faults = Faults(burst=3, error_statuses=(503,))  # the first 3 requests fail, then none
    result = cli("pull", "--model", "pest", "--json")
    assert result.exit_code == 0, result.output
    host = env.url.split("//")[1]
    lines = _retry_lines(result.stderr)
    assert len(lines) == 3 == len([r for r in env.requests if r.fault])
    for line in lines:
        assert re.fullmatch(rf"retrying in \d+\.\d s \(attempt \d, giving up after 120 s\): 503 from {host}", line)
    report = json.loads(result.stdout)
    assert report["rest_retries"] == 3 and report["images"]["fetched"] == 120
    frame = _store_frame(workdir / "data" / "agroml.db")
    assert list(frame["id"]) == sorted(r["id"] for r in rows)
    want = {r["id"]: r["image_url"] for r in rows}
    assert all(frame["image_url"] == frame["id"].map(want)) and frame["image_hash"].notna().all()

    # the same burst on the image downloads: each retry is a line too
    env.faults = Faults(burst=2, error_statuses=(503,), paths=("/storage/",))
    result = cli("pull", "--model", "pest", "--json", env={"AGROML_DATA_DIR": "again"})
    assert result.exit_code == 0, result.output
    assert len(_retry_lines(result.stderr)) == 2
    assert json.loads(result.stdout)["images"]["retries"] == 2


# --- killed mid-way ---------------------------------------------------------------------------------------
def _rows_in(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM predictions").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _images_in(root: Path) -> int:
    return len(list(root.glob("??/*.jpg"))) if root.exists() else 0


def _kill_pull_when(workdir: Path, ready, timeout: float = 90) -> int:
    """Start `python -m agroml.cli.main pull` in a subprocess, SIGKILL it once ``ready()``; returns its code."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agroml.cli.main", "pull"],
        cwd=workdir,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"pull ended before the kill: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("pull made no progress in time")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.mark.parametrize("phase", ["rows", "images"])
def test_a_pull_killed_mid_way_then_rerun_equals_one_clean_pull(cli, env, workdir, monkeypatch, phase):
    total = 400
    add_pest_table(
        env,
        pest_rows(
            total,
            seed=13,
            image_url=lambda i, row_id: env.add_object("predictions", f"pest_images/pest_{row_id}.jpg", jpeg(i)),
        ),
    )
    monkeypatch.setenv("AGROML_PAGE_SIZE", "25")
    # every request is slow (16 pages take 2.4 s; pull commits rows every 2 s), so the kill lands mid-pull
    env.faults = Faults(delay_s=0.15)
    db, images = workdir / "data" / "agroml.db", workdir / "data" / "images"
    if phase == "rows":
        code = _kill_pull_when(workdir, lambda: _rows_in(db) > 0)
        assert 0 < _rows_in(db) < total
    else:
        code = _kill_pull_when(workdir, lambda: _images_in(images) >= 50)
        assert _rows_in(db) == total and 50 <= _images_in(images) < total
    assert code == -signal.SIGKILL

    env.faults = Faults()
    assert cli("pull").exit_code == 0  # the rerun
    monkeypatch.setenv("AGROML_DATA_DIR", "clean")
    assert cli("pull").exit_code == 0  # one uninterrupted pull, elsewhere
    resumed, clean = _store_frame(db), _store_frame(workdir / "clean" / "agroml.db")
    assert len(resumed) == total and resumed["image_hash"].notna().all()
    pd.testing.assert_frame_equal(resumed, clean)
    assert _cache_state(images) == _cache_state(workdir / "clean" / "images")
    assert not [p for p in images.rglob("*") if p.name.endswith(".tmp")]


def test_the_library_pull_reports_progress(env, workdir):
    add_pest_table(env, pest_rows(2500, seed=1))
    settings = config.resolve({"page_size": 1000}, env_file=None)
    seen: list[tuple[str, int, int | None]] = []
    result = pull(settings, "pest", images=False, progress=lambda t, d, n=None, i="": seen.append((t, d, n)))
    assert result.models["pest"].inserted == 2500
    assert [s for s in seen if s[0] == "rows pest"] == [
        ("rows pest", 1000, 2500),
        ("rows pest", 2000, 2500),
        ("rows pest", 2500, 2500),
        ("rows pest", 2500, 2500),
    ]


def test_pull_since_reads_only_rows_created_from_that_date(cli, env, workdir):
    rows = pest_rows(200, seed=3)  # one row every 37 minutes from 2024-01-01
    add_pest_table(env, rows)
    result = cli("pull", "--since", "2024-01-03", "--until", "2024-01-04T12:00:00", "--no-images", "--json")
    assert result.exit_code == 0, result.output
    want = [r for r in rows if "2024-01-03" <= r["created_at"] < "2024-01-04T12:00:00"]
    assert 0 < len(want) < 200
    assert json.loads(result.stdout)["models"]["pest"]["inserted"] == len(want)
    assert set(_store_frame(workdir / "data" / "agroml.db")["id"]) == {r["id"] for r in want}
