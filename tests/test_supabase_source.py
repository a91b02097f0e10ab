"""SupabaseSource against the loopback server: keyset pages behind the row cap, retries, explained errors."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd
import pytest
from supa_rows import add_empty_tables, add_pest_table, pest_rows
from supaserver import Faults, closed_port

from agroml.core import config, schema
from agroml.core.errors import ConfigError, SourceError, UnreachableError
from agroml.core.retry import RetryPolicy, TransientError, is_retryable_status
from agroml.data import records as rec
from agroml.data.sources import open_source
from agroml.data.supabase import SupabaseSource, key_role

N = 25_000


@functools.lru_cache(maxsize=1)
def _big() -> tuple[dict, ...]:
    return tuple(pest_rows(N, seed=7))


def _settings(server, key: str | None = None, **over) -> config.Settings:
    env = {"SUPABASE_URL": server.url, "SUPABASE_SERVICE_KEY": key or server.service_key}
    env.update({k: str(v) for k, v in over.pop("env", {}).items()})
    return config.resolve(
        {"retry_base_seconds": 0.001, "retry_max_seconds": 20, "hash_salt": "s", **over}, environ=env, env_file=None
    )


@pytest.fixture
def big_server(supabase_server):
    add_pest_table(supabase_server, list(_big()))
    add_empty_tables(supabase_server)
    return supabase_server


def _rest_gets(server) -> list:
    return [r for r in server.requests if r.path.startswith("/rest/v1/")]


def _assert_exact(records: pd.DataFrame) -> None:
    """25,000 records, unique ids, and each equal to the server's row (id, url, label, confidence, time)."""
    assert len(records) == N
    assert records["id"].is_unique
    want = {r["id"]: r for r in _big()}
    assert set(records["id"]) == set(want)
    for row in records.sample(500, random_state=0).itertuples():
        raw = want[row.id]
        assert row.image_url == raw["image_url"]
        assert row.predicted_label == rec.normalize_label(raw["pest_detected"])
        assert row.confidence == pytest.approx(raw["confidence_score"])
        assert row.created_at == pd.Timestamp(raw["created_at"])
        assert (None if pd.isna(row.user_confirmed) else bool(row.user_confirmed)) == raw["user_confirmed"]


# --- paging -----------------------------------------------------------------------------------------
def test_25k_rows_behind_the_1000_row_cap_come_through_exactly(big_server):
    with SupabaseSource(_settings(big_server)) as src:
        records = pd.concat(list(src.iter_records("pest")), ignore_index=True)
    _assert_exact(records)
    gets = _rest_gets(big_server)
    assert len(gets) == N // 1000 + 1  # 25 full pages and the empty one that ends the loop
    assert all(g.query["order"] == ["id.asc"] and g.query["limit"] == ["1000"] for g in gets)
    assert all(g.query["id"][0].startswith("gt.") for g in gets[1:])  # keyset, never offset
    assert not any("offset" in g.query for g in gets)
    spec = schema.table_spec("pest")
    assert gets[0].query["select"] == [",".join(spec.select_columns())]  # only the mapped columns


def test_a_page_size_above_the_cap_still_returns_every_row(big_server):
    assert big_server.max_rows == 1000
    with SupabaseSource(_settings(big_server, page_size=5000)) as src:
        pages = list(src.fetch_rows("pest"))
    assert [len(p) for p in pages] == [1000] * 25  # the server truncated silently; we kept going
    assert len({r["id"] for p in pages for r in p}) == N
    assert all(g.query["limit"] == ["5000"] for g in _rest_gets(big_server))


def test_503_429_and_dropped_connections_are_retried_to_the_exact_rows(big_server):
    big_server.faults = Faults(seed=3, error_rate=0.10, error_statuses=(503, 429), drop_rate=0.02)
    with SupabaseSource(_settings(big_server)) as src:
        records = pd.concat(list(src.iter_records("pest")), ignore_index=True)
        retries = src.policy.retries
    _assert_exact(records)
    faults = [r.fault for r in _rest_gets(big_server) if r.fault]
    assert faults, "the server injected no fault: the test proves nothing"
    assert retries == len(faults)


def test_truncated_bodies_and_cloudflare_errors_are_retried(big_server):
    big_server.faults = Faults(seed=5, error_rate=0.15, error_statuses=(520, 522, 544, 500), truncate_rate=0.1)
    with SupabaseSource(_settings(big_server)) as src:
        n = sum(len(p) for p in src.fetch_rows("pest"))
    assert n == N
    assert {r.fault for r in _rest_gets(big_server)} >= {"truncate", "error"}


def test_retrying_is_bounded_in_time_and_says_what_to_do(supabase_server):
    add_pest_table(supabase_server, pest_rows(3))
    supabase_server.faults = Faults(error_rate=1.0, error_statuses=(503,))
    with SupabaseSource(_settings(supabase_server, retry_max_seconds=0.05)) as src, pytest.raises(SourceError) as err:
        list(src.fetch_rows("pest"))
    assert "pest_predictions" in str(err.value) and "503 from" in str(err.value)
    assert "AGROML_RETRY_MAX_SECONDS" in str(err.value)


def test_a_redirect_from_the_rest_api_is_not_followed_and_the_key_stays_home(supabase_server, image_host):
    add_pest_table(supabase_server, pest_rows(3))
    target = image_host.url + "/rest/v1/pest_predictions"
    supabase_server.add_redirect("/rest/v1/pest_predictions", target, status=301)
    with SupabaseSource(_settings(supabase_server)) as src, pytest.raises(ConfigError) as err:
        list(src.fetch_rows("pest"))
    host = supabase_server.url.split("//")[1]
    assert str(err.value) == (
        f"Supabase at {host} answered 301, a redirect to {target}; agroml does not follow redirects with the key "
        "(set SUPABASE_URL to the project's own https://<ref>.supabase.co URL)"
    )
    assert not image_host.requests and len(_rest_gets(supabase_server)) == 1  # not followed, not retried


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "no-such-project-{port}.invalid"])
def test_an_unreachable_host_gets_3_quick_attempts_whatever_the_budget(supabase_server, host):
    host = host.format(port=closed_port())
    notices: list[str] = []
    settings = _settings(supabase_server, supabase_url=f"http://{host}", retry_max_seconds=3600)
    with SupabaseSource(settings, notice=notices.append) as src, pytest.raises(UnreachableError) as err:
        src.model_types()
    assert src.requests == 3 and src.policy.retries == 2 and len(notices) == 2
    assert str(err.value).startswith(f"could not reach Supabase at {host} (")
    assert "3 attempts in" in str(err.value) and "RETRY_MAX_SECONDS" not in str(err.value)
    what = "connection refused" if "127" in host else "name not found (DNS)"
    assert all(n.endswith(f"{host}: {what}") for n in notices), notices


def test_since_and_until_are_sent_to_the_server(big_server):
    rows = _big()
    since, until = rows[1000]["created_at"], rows[3500]["created_at"]
    with SupabaseSource(_settings(big_server)) as src:
        got = [r for p in src.fetch_rows("pest", since=since, until=until) for r in p]
    want = {r["id"] for r in rows if since <= r["created_at"] < until}  # same-offset ISO strings sort as times
    assert {r["id"] for r in got} == want and len(got) == 2500
    first = _rest_gets(big_server)[0]
    iso = [pd.Timestamp(t).isoformat() for t in (since, until)]
    assert first.query["created_at"] == [f"gte.{iso[0]}", f"lt.{iso[1]}"]


def test_feedback_counts_match_the_server_rows(big_server):
    with SupabaseSource(_settings(big_server)) as src:
        counts = src.feedback_counts("pest")
    assert counts["n"].sum() == N
    confirmed = sum(1 for r in _big() if r["user_confirmed"] is True and r["actual_pest"] is None)
    assert counts.loc[counts["feedback"] == "confirmed", "n"].sum() == confirmed


# --- errors that say what to do -----------------------------------------------------------------------
def test_a_bad_key_names_the_setting(supabase_server):
    add_pest_table(supabase_server, pest_rows(3))
    with SupabaseSource(_settings(supabase_server, key="not-a-key")) as src, pytest.raises(ConfigError) as err:
        list(src.fetch_rows("pest"))
    assert "SUPABASE_SERVICE_KEY" in str(err.value) and "401" in str(err.value)
    assert len(_rest_gets(supabase_server)) == 1  # a 4xx is never retried


def test_missing_url_or_key_is_a_config_error(supabase_server):
    with pytest.raises(ConfigError, match="SUPABASE_URL"):
        SupabaseSource(config.resolve({}, environ={}, env_file=None))
    with pytest.raises(ConfigError, match="SUPABASE_SERVICE_KEY"):
        SupabaseSource(config.resolve({}, environ={"SUPABASE_URL": supabase_server.url}, env_file=None))


def test_a_missing_table_names_the_table_and_its_setting(supabase_server):
    add_pest_table(supabase_server, pest_rows(3), table="pest_feedback")
    with SupabaseSource(_settings(supabase_server)) as src, pytest.raises(ConfigError) as err:
        list(src.fetch_rows("pest"))
    assert str(err.value).startswith("table 'pest_predictions' not found in Supabase (PGRST205")
    assert "set AGROML_PEST_TABLE" in str(err.value)
    with SupabaseSource(_settings(supabase_server, env={"AGROML_PEST_TABLE": "pest_feedback"})) as src:
        assert sum(len(p) for p in src.fetch_rows("pest")) == 3  # the fix it names works


def test_a_missing_column_names_the_column_and_its_setting(supabase_server):
    cols = [c for c in schema.table_spec("pest").select_columns() if c != "actual_pest"] + ["corrected_pest"]
    rows = [{**r, "corrected_pest": r["actual_pest"]} for r in pest_rows(3)]
    add_pest_table(supabase_server, rows, columns=cols)
    with SupabaseSource(_settings(supabase_server)) as src, pytest.raises(ConfigError) as err:
        list(src.fetch_rows("pest"))
    assert str(err.value).startswith("column 'actual_pest' not found in table 'pest_predictions' (42703")
    assert "set AGROML_PEST_COL_ACTUAL to the column's real name" in str(err.value)
    with SupabaseSource(_settings(supabase_server, env={"AGROML_PEST_COL_ACTUAL": "corrected_pest"})) as src:
        assert sum(len(p) for p in src.fetch_rows("pest")) == 3


def test_the_anon_key_seeing_no_rows_warns_about_row_level_security(supabase_server):
    add_pest_table(supabase_server, pest_rows(5))
    with SupabaseSource(_settings(supabase_server, key=supabase_server.anon_key)) as src:
        assert src.role == "anon"
        assert list(src.fetch_rows("pest")) == []
        assert len(src.warnings) == 1 and "row-level security" in src.warnings[0]
        assert "SUPABASE_SERVICE_KEY" in src.warnings[0]
    with SupabaseSource(_settings(supabase_server)) as src:
        assert sum(len(p) for p in src.fetch_rows("pest")) == 5 and src.warnings == []


def test_key_role_reads_the_jwt_without_verifying(supabase_server):
    assert key_role(supabase_server.service_key) == "service_role"
    assert key_role(supabase_server.anon_key) == "anon"
    assert key_role("sb_publishable_abc") == "anon" and key_role("garbage") is None


def test_retry_policy_retries_only_transient_failures():
    assert all(is_retryable_status(s) for s in (429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 544))
    assert not any(is_retryable_status(s) for s in (400, 401, 403, 404, 409, 416))
    waits: list[float] = []
    policy = RetryPolicy(max_seconds=10, base=0.01, cap=0.05, seed=1, sleep=waits.append)
    tries = iter([TransientError("http_503"), TransientError("network"), "ok"])

    def attempt():
        item = next(tries)
        if isinstance(item, Exception):
            raise item
        return item

    assert policy.call(attempt) == "ok" and policy.retries == 2
    assert len(waits) == 2 and all(0 <= w <= 0.05 for w in waits)
    assert policy.delay(0, retry_after=0.04) >= 0.04  # a server's Retry-After is honoured (within the cap)


# --- through the commands ------------------------------------------------------------------------------
@pytest.fixture
def live_env(big_server, monkeypatch):
    monkeypatch.setenv("SUPABASE_URL", big_server.url)
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", big_server.service_key)
    monkeypatch.setenv("AGROML_RETRY_BASE_SECONDS", "0.001")
    return big_server


def test_stats_source_supabase_counts_all_25k_rows(cli, live_env):
    live_env.faults = Faults(seed=11, error_rate=0.10, error_statuses=(503, 429), drop_rate=0.02)
    result = cli("stats", "--source", "supabase", "--model", "pest", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["source"] == "supabase" and report["models"]["pest"]["total"] == N
    assert any(r.fault for r in _rest_gets(live_env))


def test_export_source_supabase_writes_all_25k_rows(cli, live_env, workdir: Path):
    live_env.faults = Faults(seed=12, error_rate=0.10, error_statuses=(503, 429), drop_rate=0.02)
    result = cli(
        "export",
        "--source",
        "supabase",
        "--model",
        "pest",
        "--scope",
        "all",
        "--format",
        "parquet",
        "--out",
        "out",
        "--json",
    )
    assert result.exit_code == 0, result.output
    files = list((workdir / "out").glob("pest_all_*.parquet"))
    assert len(files) == 1
    _assert_exact(pd.read_parquet(files[0]))


def test_agroml_source_setting_selects_supabase(workdir, live_env, monkeypatch):
    monkeypatch.setenv("AGROML_SOURCE", "supabase")
    src = open_source(config.resolve(env_file=None))
    try:
        assert src.name == "supabase" and src.model_types() == ["pest"]
    finally:
        src.close()


def test_stats_with_a_bad_key_exits_1_naming_the_setting(cli, supabase_server, monkeypatch):
    add_pest_table(supabase_server, pest_rows(3))
    monkeypatch.setenv("SUPABASE_URL", supabase_server.url)
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", "wrong")
    result = cli("stats", "--source", "supabase", "--model", "pest")
    assert result.exit_code == 1
    assert "error: Supabase rejected the key (401: Invalid API key) (set SUPABASE_SERVICE_KEY" in result.stderr


# --- doctor's online checks ---------------------------------------------------------------------------
def _doctor_server(server, image_url=None):
    from supa_rows import jpeg

    def url(i, row_id):
        return image_url or server.add_object("predictions", f"pest_images/pest_{row_id}.jpg", jpeg(i))

    add_pest_table(server, pest_rows(3, image_url=url))
    add_empty_tables(server)


def test_online_checks_pass_on_a_healthy_project(workdir, supabase_server):
    from agroml.ops.doctor import online_checks

    _doctor_server(supabase_server)
    checks = online_checks(_settings(supabase_server))
    assert [(c.name, c.status) for c in checks] == [
        ("supabase rest", "ok"),
        ("supabase key", "ok"),
        ("table pest", "ok"),
        ("table disease", "ok"),
        ("table storage", "ok"),
        ("image", "ok"),
    ]
    assert "role service_role" in checks[1].detail and "16 mapped columns" in checks[2].detail
    assert not any(supabase_server.service_key in c.detail + c.fix for c in checks)
    assert not (workdir / "data").exists()  # doctor stores nothing


def test_online_checks_name_each_problem_and_its_fix(workdir, supabase_server):
    from agroml.ops.doctor import online_checks

    _doctor_server(supabase_server, image_url="https://images.example.org/a.jpg")
    supabase_server.drop_table("storage_predictions")
    checks = {c.name: c for c in online_checks(_settings(supabase_server))}
    assert checks["table storage"].status == "fail" and "AGROML_STORAGE_TABLE" in checks["table storage"].fix
    assert checks["table pest"].status == "ok"
    assert checks["image"].status == "fail" and "host_not_allowed" in checks["image"].detail
    assert checks["image"].fix == "add the image host to AGROML_IMAGE_HOSTS"

    bad_key = online_checks(_settings(supabase_server, key="wrong-key-123456"))
    assert [(c.name, c.status) for c in bad_key] == [("supabase rest", "ok"), ("supabase key", "fail")]
    assert "SUPABASE_SERVICE_KEY" in bad_key[1].fix
    anon = {c.name: c for c in online_checks(_settings(supabase_server, key=supabase_server.anon_key))}
    assert anon["supabase key"].status == "warn" and "row-level security" in anon["supabase key"].detail

    down = online_checks(_settings(supabase_server, supabase_url="http://127.0.0.1:9", retry_max_seconds=0.05))
    assert [(c.name, c.status) for c in down] == [("supabase rest", "fail")]
    assert down[0].detail.startswith("cannot reach http://127.0.0.1:9") and "SUPABASE_URL" in down[0].fix


def test_stats_with_the_anon_key_says_why_it_sees_nothing(supabase_server, cli, monkeypatch):
    add_pest_table(supabase_server, pest_rows(5))
    add_empty_tables(supabase_server)
    monkeypatch.setenv("SUPABASE_URL", supabase_server.url)
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", supabase_server.anon_key)
    result = cli("stats", "--source", "supabase", "--model", "pest")
    assert result.exit_code == 1
    assert "no data visible in the supabase source: no rows in 'pest_predictions' with the anon key" in result.output
    assert "row-level security" in result.output
