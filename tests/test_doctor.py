"""`agroml doctor`: every check's ok / warn / fail paths, exit codes, and the key never shown."""

from __future__ import annotations

import base64
import json
import re
import secrets
import sqlite3
import time
from pathlib import Path

import pytest
from supa_rows import jpeg

from agroml.core import config
from agroml.data.records import make_records
from agroml.data.store import SCHEMA_VERSION, Store
from agroml.images.cache import ImageCache
from agroml.ops import doctor


def b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()


def make_jwt(role: str, exp: float | None = None) -> str:
    """A key shaped like Supabase's legacy keys: HS256 header, payload with iss/ref/role, a signature."""
    payload = {
        "iss": "supabase",
        "ref": "abcdefghijklmnopqrst",
        "role": role,
        "iat": 1_700_000_000,
        "exp": int(exp if exp is not None else time.time() + 10 * 365 * 86400),
    }
    signature = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return f"{b64url({'alg': 'HS256', 'typ': 'JWT'})}.{b64url(payload)}.{signature}"


def settings_with(**env: str) -> config.Settings:
    return config.resolve(environ=env, env_file=None)


def flat(text: str) -> str:
    """Text without whitespace, so a table cell that Rich wrapped over lines still matches."""
    return re.sub(r"\s", "", text)


def table_text(output: str) -> str:
    """Each table column's cells joined top to bottom (whitespace dropped), columns one after another.

    Rich wraps a long cell over several lines, interleaved with the other columns; reading column by
    column puts a wrapped value back together, so "not in the output" cannot pass by a line break.
    """
    columns: dict[int, str] = {}
    for line in output.splitlines():
        for i, cell in enumerate(line.split("│")):
            columns[i] = columns.get(i, "") + flat(cell)
    return "\n".join(columns[i] for i in sorted(columns)) + "\n" + flat(output)


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def fill_store(path: Path, model_type: str, per_class: dict[str, int]) -> None:
    """Confirmed rows for ``model_type``: ``per_class`` trainable rows of each label, each with its image
    in the cache next to the store (readiness counts only rows whose image is there)."""
    rows = [
        {
            "id": f"{model_type}-{label}-{i}",
            "source": "local",
            "model_type": model_type,
            "image_url": f"https://x.supabase.co/{label}/{i}.jpg",
            "predicted_label": label,
            "confidence": 0.8,
            "user_confirmed": True,
            "actual_label": None,
            "created_at": "2025-03-01T00:00:00Z",
        }
        for label, n in per_class.items()
        for i in range(n)
    ]
    with Store(path) as store:
        store.upsert(make_records(rows))
    with ImageCache(path.parent / "images") as cache:
        for i, row in enumerate(rows):
            cache.put(jpeg(i, size=8), url=row["image_url"])


# --- the whole command --------------------------------------------------------------------------------
def test_fresh_directory_passes_with_warnings_only(cli, workdir):
    result = cli("doctor", "--offline")
    assert result.exit_code == 0, result.output
    out = table_text(result.output)
    assert flat("no local data yet (data/agroml.db does not exist)") in out
    assert flat("run `agroml demo` or `agroml pull`") in out
    assert re.search(r"ready: \d+ ok, \d+ warnings, 0 failed", result.output)
    assert "AGROML_DATA_DIR" in out  # the settings table
    assert not (workdir / "data").exists(), "doctor must not create folders"


def test_strict_turns_warnings_into_exit_1(cli):
    result = cli("doctor", "--offline", "--strict")
    assert result.exit_code == 1
    assert "0 failed" in result.output


def test_json_shape(cli):
    result = cli("doctor", "--offline", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert set(report) >= {"ok", "checks", "settings"}
    for check in report["checks"]:
        assert set(check) == {"name", "status", "detail", "fix"}
        assert check["status"] in ("ok", "warn", "fail")
    names = [c["name"] for c in report["checks"]]
    for expected in (
        "python",
        "packages",
        "tensorflow",
        "data folder",
        "models folder",
        "exports folder",
        "disk",
        "settings",
        "store",
        "supabase key",
        "supabase online",
        "weights mobilenetv2",
        "readiness pest",
    ):
        assert expected in names
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["tensorflow"]["status"] == "ok" and "CPU" in checks["tensorflow"]["detail"]
    assert checks["supabase online"]["detail"] == "skipped (--offline)"
    settings = {s["name"]: s for s in report["settings"]}
    assert settings["AGROML_DATA_DIR"] == {"name": "AGROML_DATA_DIR", "value": "data", "origin": "default"}


def test_data_dir_below_a_file_fails_even_as_root(cli, workdir, monkeypatch):
    (workdir / "afile").write_text("not a folder")
    monkeypatch.setenv("AGROML_DATA_DIR", str(workdir / "afile" / "data"))
    result = cli("doctor", "--offline", "--json")
    assert result.exit_code == 1
    check = {c["name"]: c for c in json.loads(result.stdout)["checks"]}["data folder"]
    assert check == {
        "name": "data folder",
        "status": "fail",
        "detail": f"cannot create {workdir}/afile/data: {workdir}/afile is a file, not a folder",
        "fix": "set AGROML_DATA_DIR to a writable folder",
    }
    table = cli("doctor", "--offline")
    assert table.exit_code == 1
    assert "not ready" in table.output and "1 failed" in table.output


def test_data_dir_that_is_a_file_fails(workdir):
    (workdir / "data").write_text("oops")
    check = doctor.check_folder("data", Path("data"), "AGROML_DATA_DIR")
    assert (check.status, check.detail) == ("fail", "data is a file, not a folder")
    assert check.fix == "move it aside or set AGROML_DATA_DIR to a writable folder"


def chmod_stops_writes(folder: Path) -> bool:
    """False for root (CAP_DAC_OVERRIDE writes through chmod): then the file-parent test covers it."""
    probe = folder / "chmod-probe"
    probe.mkdir()
    probe.chmod(0o500)
    try:
        (probe / "x").touch()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o700)
    return False


def test_read_only_data_dir_fails(cli, workdir, tmp_path_factory):
    if not chmod_stops_writes(tmp_path_factory.mktemp("probe")):
        pytest.skip("this user writes through chmod (root); the file-parent test covers unwritable data/")
    (workdir / "data").mkdir()
    (workdir / "data").chmod(0o500)
    try:
        result = cli("doctor", "--offline", "--json")
    finally:
        (workdir / "data").chmod(0o700)
    assert result.exit_code == 1
    check = {c["name"]: c for c in json.loads(result.stdout)["checks"]}["data folder"]
    assert check["status"] == "fail"
    assert check["detail"] == "cannot write in data: Permission denied"
    assert check["fix"] == "make data writable or set AGROML_DATA_DIR to a writable folder"


def test_existing_writable_folders_are_ok(workdir):
    (workdir / "models").mkdir()
    check = doctor.check_folder("models", Path("models"), "AGROML_MODELS_DIR")
    assert (check.status, check.detail) == ("ok", "models is writable")
    assert not list((workdir / "models").iterdir()), "the probe file must be removed"


def test_bad_setting_is_a_failed_check_not_a_crash(cli, monkeypatch):
    monkeypatch.setenv("AGROML_PAGE_SIZE", "lots")
    result = cli("doctor", "--offline", "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["setting AGROML_PAGE_SIZE"] == {
        "name": "setting AGROML_PAGE_SIZE",
        "status": "fail",
        "detail": "AGROML_PAGE_SIZE='lots' (from env) is not valid: expected a whole number >= 1",
        "fix": "change AGROML_PAGE_SIZE in the environment, or unset it to use the default 1000",
    }
    assert checks["python"]["status"] == "ok"  # the checks that need no settings still ran


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("AGROML_IMAGE_MAX_MB", "-1"),
        ("AGROML_IMAGE_MAX_MB", "0"),
        ("AGROML_HTTP_TIMEOUT", "nan"),
        ("AGROML_HTTP_TIMEOUT", "-5"),
        ("AGROML_RETRY_MAX_SECONDS", "inf"),
        ("AGROML_RETRY_BASE_SECONDS", "nan"),
        ("AGROML_IMAGE_CONCURRENCY", "0"),
        ("AGROML_PAGE_SIZE", "0"),
        ("AGROML_MIN_TOTAL", "-1"),
        ("AGROML_SOURCE", "postgres"),
        ("AGROML_TIMEZONE", "Mars/Olympus"),
        ("SUPABASE_URL", "abc.supabase.co"),
    ],
)
def test_every_bad_setting_is_its_own_failed_line_and_the_rest_still_run(cli, workdir, monkeypatch, env, value):
    (workdir / ".env").write_text("AGROML_HTTP_TIMEOUT=0\n")  # a second bad one, from .env
    if env == "AGROML_HTTP_TIMEOUT":
        (workdir / ".env").write_text("AGROML_IMAGE_CONCURRENCY=-2\n")
    monkeypatch.setenv(env, value)
    result = cli("doctor", "--offline", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    failed = {c["name"]: c for c in report["checks"] if c["status"] == "fail"}
    second = "AGROML_IMAGE_CONCURRENCY" if env == "AGROML_HTTP_TIMEOUT" else "AGROML_HTTP_TIMEOUT"
    assert set(failed) == {f"setting {env}", f"setting {second}"}
    assert failed[f"setting {env}"]["detail"].startswith(f"{env}={value!r} (from env) is not valid: expected ")
    assert "(from .env) is not valid" in failed[f"setting {second}"]["detail"]
    names = {c["name"] for c in report["checks"]}
    assert {"store", "readiness pest", "supabase key", "data folder"} <= names  # the rest still ran
    shown = {row["name"]: row for row in report["settings"]}
    assert shown[env]["origin"] == "default (env refused)"
    table = cli("doctor", "--offline")
    assert table.exit_code == 1 and f"setting{env}" in table_text(table.output) and "2 failed" in table.output


def test_bad_column_mapping_fails_the_settings_check(workdir):
    check = doctor.check_settings(settings_with(AGROML_PEST_COL_PREDICTD="x"))
    assert check.status == "fail" and "AGROML_PEST_COL_PREDICTD" in check.detail


def test_settings_check_lists_what_is_not_default(workdir):
    check = doctor.check_settings(settings_with(AGROML_MIN_TOTAL="5", AGROML_PEST_TABLE="bugs"))
    assert check.status == "ok"
    assert "AGROML_MIN_TOTAL (env)" in check.detail and "AGROML_PEST_TABLE (env)" in check.detail


# --- the store ---------------------------------------------------------------------------------------
def test_corrupt_store_fails_with_the_store_message(cli, workdir):
    (workdir / "data").mkdir()
    (workdir / "data" / "agroml.db").write_bytes(b"\x00garbage, not SQLite at all" * 300)
    result = cli("doctor", "--offline", "--json")
    assert result.exit_code == 1
    check = {c["name"]: c for c in json.loads(result.stdout)["checks"]}["store"]
    assert check["status"] == "fail"
    assert check["detail"] == "data/agroml.db is damaged or not an SQLite database (file is not a database)"
    assert check["fix"] == (
        "restore it from a backup, or move it aside and run `agroml pull` or `agroml demo` to start a fresh store"
    )


def test_foreign_sqlite_file_fails(workdir):
    (workdir / "data").mkdir()
    with sqlite3.connect(workdir / "data" / "agroml.db") as con:
        con.execute("CREATE TABLE users (id INTEGER)")
    con.close()
    check, counts = doctor.check_store(settings_with())
    assert (check.status, counts) == ("fail", None)
    assert check.detail == "data/agroml.db is not an agroml store (it holds tables: users)"
    assert check.fix == "point AGROML_DB (or AGROML_DATA_DIR) at another file"


def test_empty_file_is_no_data_yet(workdir):
    (workdir / "data").mkdir()
    (workdir / "data" / "agroml.db").touch()
    check, _ = doctor.check_store(settings_with())
    assert (check.status, check.detail) == ("warn", "no local data yet (data/agroml.db is empty)")


def test_a_store_other_accounts_can_read_is_a_warning(workdir):
    fill_store(workdir / "data" / "agroml.db", "pest", {"aphids": 12, "fall_armyworm": 12})
    assert (workdir / "data" / "agroml.db").stat().st_mode & 0o777 == 0o600  # as agroml makes it
    (workdir / "data" / "agroml.db").chmod(0o644)  # as an older agroml made it
    check, counts = doctor.check_store(settings_with())
    assert (check.status, check.fix) == ("warn", "chmod 600 data/agroml.db")
    assert check.detail.endswith("; mode 0644: other accounts can read its farmer ids and hash salt")
    assert counts is not None


def test_a_damaged_page_fails_the_quick_check(workdir):
    fill_store(workdir / "data" / "agroml.db", "pest", {"aphids": 300, "fall_armyworm": 300})
    path = workdir / "data" / "agroml.db"
    data = bytearray(path.read_bytes())
    middle = len(data) // 4096 // 2 * 4096
    data[middle : middle + 4096] = b"\xab" * 4096
    path.write_bytes(bytes(data))
    check, counts = doctor.check_store(settings_with())
    assert (check.status, counts) == ("fail", None)
    assert check.detail.startswith("data/agroml.db is damaged")
    assert check.fix.startswith("restore it from a backup, or move it aside")


def test_store_rows_and_readiness(workdir):
    fill_store(workdir / "data" / "agroml.db", "pest", {"aphids": 12, "fall_armyworm": 12})
    fill_store(workdir / "data" / "agroml.db", "disease", {"maize_rust": 12, "healthy": 2})
    settings = settings_with(AGROML_MIN_TOTAL="20", AGROML_MIN_PER_CLASS="5")
    checks = by_name(doctor.run_checks(settings, offline=True))
    assert checks["store"].status == "ok"
    assert checks["store"].detail == f"data/agroml.db: schema v{SCHEMA_VERSION}, rows pest 24, disease 14, storage 0"
    assert checks["readiness pest"].status == "ok"
    assert "24 trainable rows" in checks["readiness pest"].detail
    assert checks["readiness disease"].status == "warn"
    assert "short classes: healthy" in checks["readiness disease"].detail
    assert checks["readiness storage"].status == "warn"
    assert doctor.doctor_exit_code(checks.values()) == 0
    assert doctor.doctor_exit_code(checks.values(), strict=True) == 1


def test_readiness_counts_only_rows_whose_image_is_cached(workdir):
    fill_store(workdir / "data" / "agroml.db", "pest", {"aphids": 12, "fall_armyworm": 12})
    settings = settings_with(AGROML_MIN_TOTAL="20", AGROML_MIN_PER_CLASS="5")
    assert by_name(doctor.run_checks(settings, offline=True))["readiness pest"].status == "ok"
    files = sorted((workdir / "data" / "images").glob("??/*.jpg"))
    assert len(files) == 24
    for path in files[:5]:  # gone from the cache: training could not use those rows
        path.unlink()
    check = by_name(doctor.run_checks(settings, offline=True))["readiness pest"]
    assert check.status == "warn"
    assert "1 more trainable rows needed" in check.detail
    assert "5 trainable rows lack their image in the cache" in check.detail


# --- the Supabase key --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "status", "expected"),
    [
        (make_jwt("service_role"), "ok", "service_role key from SUPABASE_SERVICE_KEY (…"),
        ("sb_secret_" + "x" * 30 + "9f3a", "ok", "service_role key from SUPABASE_SERVICE_KEY (…9f3a)"),
        (make_jwt("anon"), "warn", "anon key from SUPABASE_SERVICE_KEY (…"),
        ("sb_publishable_" + "y" * 30, "warn", "anon key from"),
        (make_jwt("authenticated"), "warn", "has role 'authenticated', not service_role"),
        ("not-a-jwt-at-all-0123456789", "warn", "cannot read its role"),
        ("aaaa.!!!!.bbbb", "warn", "cannot read its role"),
        (make_jwt("service_role", exp=time.time() - 86400), "fail", "expired on"),
    ],
)
def test_key_roles(workdir, key, status, expected):
    check = doctor.check_supabase_key(settings_with(SUPABASE_URL="https://abc.supabase.co", SUPABASE_SERVICE_KEY=key))
    assert check.status == status, check
    assert expected in check.detail
    assert key not in check.detail + check.fix and key[:20] not in check.detail + check.fix


def test_anon_key_warning_says_why_and_what_to_do(workdir):
    check = doctor.check_supabase_key(
        settings_with(SUPABASE_URL="https://abc.supabase.co", SUPABASE_KEY=make_jwt("anon"))
    )
    assert check.status == "warn"
    assert check.detail.startswith("anon key from SUPABASE_KEY (…")
    assert check.detail.endswith("): row-level security shows only a farmer's own rows; use the service-role key")
    assert check.fix == "set SUPABASE_SERVICE_KEY to the service-role key"


def test_key_role_reader():
    assert doctor.key_role(make_jwt("service_role")) == "service_role"
    assert doctor.key_role(make_jwt("anon")) == "anon"
    assert doctor.key_role("a." + b64url(["not", "a", "dict"]) + ".c") is None
    assert doctor.key_role("a." + base64.urlsafe_b64encode(b"\xff\xfe").decode() + ".c") is None


def test_no_key(workdir):
    check = doctor.check_supabase_key(settings_with())
    assert (check.status, check.detail) == ("ok", "not configured (local only)")
    check = doctor.check_supabase_key(settings_with(AGROML_SOURCE="supabase"))
    assert check.status == "warn" and "SUPABASE_SERVICE_KEY" in check.fix


def test_key_without_url_warns(workdir):
    check = doctor.check_supabase_key(settings_with(SUPABASE_SERVICE_KEY=make_jwt("service_role")))
    assert check.status == "warn" and "SUPABASE_URL is not set" in check.detail


@pytest.mark.parametrize("args", [("doctor", "--offline"), ("doctor", "--offline", "--json")])
def test_key_never_in_output(cli, monkeypatch, args):
    key = make_jwt("service_role")
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co")
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", key)
    result = cli(*args)
    assert result.exit_code == 0, result.output
    for text in (result.output, table_text(result.output)):
        assert key not in text
        assert key[:20] not in text
        assert key.split(".")[1][:20] not in text and key.split(".")[2][:20] not in text
    # the check did run and did show what may be shown
    assert "SUPABASE_SERVICE_KEY" in result.output and "…" + key[-4:] in result.output


def test_a_check_quoting_the_key_is_scrubbed(workdir):
    key = make_jwt("service_role")
    checks = doctor._redact([doctor.Check("x", "fail", f"boom with {key}", f"retry {key}")], [key])
    assert key not in checks[0].detail and key not in checks[0].fix
    assert checks[0].detail == f"boom with …{key[-4:]}"


# --- online checks, weights, crash guard, exit codes --------------------------------------------------
def test_online_checks_skipped_offline_or_unconfigured(workdir):
    assert doctor.check_online(settings_with(), offline=False) == [
        doctor.Check("supabase online", "ok", "skipped (Supabase not configured)")
    ]
    configured = settings_with(SUPABASE_URL="http://127.0.0.1:9", SUPABASE_SERVICE_KEY=make_jwt("service_role"))
    assert doctor.check_online(configured, offline=True) == [
        doctor.Check("supabase online", "ok", "skipped (--offline)")
    ]


def test_store_and_image_folders_moved_out_of_data_are_checked(workdir):
    (workdir / "afile").write_text("x")
    settings = settings_with(AGROML_DB=str(workdir / "afile" / "db" / "agroml.db"), AGROML_IMAGE_DIR="cache/images")
    checks = by_name(doctor.run_checks(settings, offline=True))
    assert checks["store folder"].status == "fail"
    assert checks["store folder"].fix == "set AGROML_DB to a file in a writable folder"
    assert checks["image cache folder"].status == "ok"
    assert "image cache folder" not in by_name(doctor.run_checks(settings_with(), offline=True))


def test_online_checks_against_a_closed_port_report_a_problem(workdir):
    """Configured and online: the Supabase source's checks run (or doctor says they are missing), no crash."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key = make_jwt("service_role")
    settings = settings_with(
        SUPABASE_URL=f"http://127.0.0.1:{port}",
        SUPABASE_SERVICE_KEY=key,
        AGROML_HTTP_TIMEOUT="2",
        AGROML_RETRY_MAX_SECONDS="1",
    )
    online = doctor.check_online(settings, offline=False)
    assert online, "no online check line"
    assert any(c.status in ("warn", "fail") for c in online), online
    report = doctor.run_checks(settings, offline=False)
    assert all(key not in c.detail + c.fix and key[:20] not in c.detail + c.fix for c in report)


def test_weights_found_in_keras_home(workdir, monkeypatch):
    home = workdir / "keras_home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "efficientnetb0_notop.h5").write_bytes(b"weights")
    (home / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5").write_bytes(b"w")
    (home / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5").touch()  # empty: a failed download
    monkeypatch.setenv("KERAS_HOME", str(home))
    checks = by_name(doctor.check_weights())
    assert checks["weights efficientnetb0"].status == "ok"
    assert checks["weights mobilenetv2"].status == "ok"
    assert checks["weights resnet50"].status == "warn"
    assert checks["weights resnet50"].detail == f"ImageNet weights not cached in {home / 'models'}"
    assert checks["weights resnet50"].fix == "run once online, or train with --weights PATH / --weights none"


def test_weight_file_names_match_keras():
    """The names doctor looks for are the ones the installed Keras downloads to."""
    import inspect

    from keras.src.applications import efficientnet, mobilenet_v2, resnet

    assert '"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_"' in inspect.getsource(mobilenet_v2)
    assert '_no_top.h5"' in inspect.getsource(mobilenet_v2)
    assert '"_weights_tf_dim_ordering_tf_kernels_notop.h5"' in inspect.getsource(resnet).replace("{weights_name}", "")
    assert 'file_suffix = "_notop.h5"' in inspect.getsource(efficientnet)
    assert 'name="efficientnetb0"' in inspect.getsource(efficientnet)


def test_a_crashing_check_becomes_a_failed_line():
    checks = doctor._guarded("boom", lambda: 1 / 0)
    assert checks == [
        doctor.Check(
            "boom",
            "fail",
            "check crashed: ZeroDivisionError: division by zero",
            "report this as an agroml bug (AGROML_DEBUG=1 shows the traceback)",
        )
    ]


def test_exit_codes():
    ok, warn, fail = (doctor.Check("a", s, "") for s in ("ok", "warn", "fail"))
    assert doctor.doctor_exit_code([ok]) == 0
    assert doctor.doctor_exit_code([ok, warn]) == 0
    assert doctor.doctor_exit_code([ok, warn], strict=True) == 1
    assert doctor.doctor_exit_code([ok, fail]) == 1
    assert doctor.doctor_exit_code([ok], strict=True) == 0


def test_packages_and_python():
    assert doctor.check_python().status == "ok"
    packages = doctor.check_packages()
    assert packages.status == "ok"
    for name in doctor.PACKAGES:
        assert f"{name} " in packages.detail
