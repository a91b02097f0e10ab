"""Settings (agroml/config.py): precedence with origins, the key variables, schema overrides, .env.example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agroml.core import config, schema
from agroml.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write_env(path: Path, **values: str) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def test_defaults_when_nothing_is_set(workdir):
    s = config.resolve(environ={}, env_file=None)
    assert s.data_dir == Path("data")
    assert s.db_path == Path("data/agroml.db")
    assert s.image_dir == Path("data/images")
    assert s.page_size == 1000
    assert s.source == "auto" and s.effective_source == "local"  # no Supabase configured: the local store
    assert s.supabase_key is None and s.key_var is None
    assert all(s.origins[name] == "default" for name in config.settings_fields())


def test_precedence_flag_over_env_over_dotenv_over_default(workdir):
    env_file = write_env(
        workdir / ".env",
        AGROML_PAGE_SIZE="300",
        AGROML_MODELS_DIR="m_dotenv",
        AGROML_EXPORTS_DIR="x_dotenv",
        AGROML_HTTP_TIMEOUT="7",
    )
    environ = {"AGROML_PAGE_SIZE": "200", "AGROML_MODELS_DIR": "m_env"}
    s = config.resolve({"page_size": 100, "models_dir": None}, environ=environ, env_file=env_file)
    assert (s.page_size, s.origins["page_size"]) == (100, "flag")
    # a None flag (option not given) does not count as a value
    assert (s.models_dir, s.origins["models_dir"]) == (Path("m_env"), "env")
    assert (s.exports_dir, s.origins["exports_dir"]) == (Path("x_dotenv"), ".env")
    assert (s.http_timeout, s.origins["http_timeout"]) == (7.0, ".env")
    assert (s.min_total, s.origins["min_total"]) == (100, "default")


def test_blank_environment_value_falls_through_to_dotenv(workdir):
    env_file = write_env(workdir / ".env", AGROML_SOURCE="supabase")
    s = config.resolve(environ={"AGROML_SOURCE": "  "}, env_file=env_file)
    assert (s.source, s.origins["source"]) == ("supabase", ".env")


def test_db_and_image_dir_follow_data_dir_unless_set(workdir):
    s = config.resolve(environ={"AGROML_DATA_DIR": "/srv/agro"}, env_file=None)
    assert s.db_path == Path("/srv/agro/agroml.db") and s.image_dir == Path("/srv/agro/images")
    s = config.resolve(environ={"AGROML_DATA_DIR": "/srv/agro", "AGROML_DB": "/elsewhere/x.db"}, env_file=None)
    assert s.db_path == Path("/elsewhere/x.db") and s.image_dir == Path("/srv/agro/images")


@pytest.mark.parametrize(
    ("set_vars", "winner"),
    [
        (
            {"SUPABASE_SERVICE_KEY": "k1", "SUPABASE_SERVICE_ROLE_KEY": "k2", "SUPABASE_KEY": "k3"},
            "SUPABASE_SERVICE_KEY",
        ),
        ({"SUPABASE_SERVICE_ROLE_KEY": "k2", "SUPABASE_KEY": "k3"}, "SUPABASE_SERVICE_ROLE_KEY"),
        ({"SUPABASE_KEY": "k3"}, "SUPABASE_KEY"),
        ({"SUPABASE_SERVICE_KEY": "", "SUPABASE_KEY": "k3"}, "SUPABASE_KEY"),
    ],
)
def test_key_variables_are_tried_in_order(workdir, set_vars, winner):
    s = config.resolve(environ=set_vars, env_file=None)
    assert s.key_var == winner
    assert s.supabase_key == set_vars[winner]
    assert s.origins["supabase_key"] == "env"


def test_key_from_dotenv_records_its_variable_and_is_masked(workdir):
    key = "sb_secret_abcdefghijklmnopqrstuvwxyz0123"
    s = config.resolve(environ={}, env_file=write_env(workdir / ".env", SUPABASE_SERVICE_ROLE_KEY=key))
    assert (s.key_var, s.origins["supabase_key"]) == ("SUPABASE_SERVICE_ROLE_KEY", ".env")
    row = next(r for r in s.describe() if r[0] == "SUPABASE_SERVICE_ROLE_KEY")
    assert row == ("SUPABASE_SERVICE_ROLE_KEY", "…0123", ".env")
    assert all(key[:10] not in str(r) for r in s.describe())


def test_key_order_beats_layer_order(workdir):
    """A generic SUPABASE_KEY (often the anon key) in the shell must not hide the service key in .env."""
    env_file = write_env(workdir / ".env", SUPABASE_SERVICE_KEY="service-from-dotenv")
    s = config.resolve(environ={"SUPABASE_KEY": "anon-from-env"}, env_file=env_file)
    assert (s.supabase_key, s.key_var, s.origins["supabase_key"]) == (
        "service-from-dotenv",
        "SUPABASE_SERVICE_KEY",
        ".env",
    )
    # the same variable in both: the environment wins
    s = config.resolve(environ={"SUPABASE_SERVICE_KEY": "service-from-env"}, env_file=env_file)
    assert (s.supabase_key, s.origins["supabase_key"]) == ("service-from-env", "env")


def test_mask_secret_shows_at_most_last_four():
    assert config.mask_secret(None) == ""
    assert config.mask_secret("short") == "****"
    assert config.mask_secret("0123456789abcdef") == "…cdef"


# --- every value is checked where it is read ---------------------------------------------------------
#: Every numeric setting and the values it must refuse (whatever the range, text, NaN and infinities
#: never pass; zero where the setting means a size, a time to wait or a count of workers).
BAD_NUMBERS: dict[str, tuple[str, ...]] = {
    "AGROML_PAGE_SIZE": ("lots", "0", "-1", "1.5", "nan", "inf", "1e3"),
    "AGROML_HTTP_TIMEOUT": ("soon", "0", "-1", "-0.5", "nan", "inf", "-inf", "1e999"),
    "AGROML_WORKER_TIMEOUT_S": ("later", "0", "-1", "nan", "inf"),
    "AGROML_RETRY_MAX_SECONDS": ("long", "-1", "-0.001", "nan", "inf", "-inf", "1e999"),
    "AGROML_RETRY_BASE_SECONDS": ("short", "0", "-1", "nan", "inf", "-inf"),
    "AGROML_IMAGE_CONCURRENCY": ("many", "0", "-1", "1.5", "257", "nan", "inf"),
    "AGROML_IMAGE_MAX_MB": ("big", "0", "-1", "nan", "inf", "-inf", "1e999"),
    "AGROML_MIN_TOTAL": ("ten", "-1", "2.5", "nan", "inf"),
    "AGROML_MIN_PER_CLASS": ("x", "-1", "2.5", "nan", "inf"),
    "AGROML_TRAIN_CACHE_MB": ("lots", "-1", "-0.5", "nan", "inf", "-inf", "1e999"),
    "AGROML_ALERT_ON_SUCCESS": ("yes", "2", "-1", "0.5", "nan"),
    "AGROML_ALERT_MIN_FEEDBACK_ACCURACY": ("high", "-0.1", "1.01", "nan", "inf"),
    "AGROML_ALERT_FEEDBACK_DAYS": ("week", "0", "-1", "1.5", "nan"),
    "AGROML_LOG_RETENTION_DAYS": ("forever", "-1", "2.5", "nan", "inf"),
    "AGROML_GATE_MIN_F1_GAIN": ("more", "-1.01", "1.5", "nan", "inf", "-inf"),
    "AGROML_GATE_MAX_ACCURACY_DROP": ("some", "-0.01", "1.01", "nan", "inf"),
    "AGROML_GATE_MAX_RECALL_DROP": ("some", "-0.1", "2", "nan", "-inf"),
    "AGROML_GATE_MIN_ROWS": ("few", "0", "-1", "2.5", "nan", "inf"),
    "AGROML_FEATURE_STORE_MB": ("lots", "-1", "-0.5", "nan", "inf", "-inf", "1e999"),
}
#: Values at the edge of each range that must still be accepted.
EDGE_NUMBERS = {
    "AGROML_PAGE_SIZE": ("1", 1),
    "AGROML_HTTP_TIMEOUT": ("0.01", 0.01),
    "AGROML_WORKER_TIMEOUT_S": ("0.5", 0.5),
    "AGROML_RETRY_MAX_SECONDS": ("0", 0.0),
    "AGROML_RETRY_BASE_SECONDS": ("0.001", 0.001),
    "AGROML_IMAGE_CONCURRENCY": ("256", 256),
    "AGROML_IMAGE_MAX_MB": ("0.5", 0.5),
    "AGROML_MIN_TOTAL": ("0", 0),
    "AGROML_MIN_PER_CLASS": ("0", 0),
    "AGROML_TRAIN_CACHE_MB": ("0", 0.0),
    "AGROML_ALERT_ON_SUCCESS": ("1", 1),
    "AGROML_ALERT_MIN_FEEDBACK_ACCURACY": ("1", 1.0),
    "AGROML_ALERT_FEEDBACK_DAYS": ("1", 1),
    "AGROML_LOG_RETENTION_DAYS": ("0", 0),
    "AGROML_GATE_MIN_F1_GAIN": ("1", 1.0),
    "AGROML_GATE_MAX_ACCURACY_DROP": ("0", 0.0),
    "AGROML_GATE_MAX_RECALL_DROP": ("1", 1.0),
    "AGROML_GATE_MIN_ROWS": ("1", 1),
    "AGROML_FEATURE_STORE_MB": ("0", 0.0),
}
BAD_TEXTS: dict[str, tuple[str, ...]] = {
    "AGROML_SOURCE": ("postgres", "Local", "supabase,local"),
    "AGROML_TIMEZONE": ("Mars/Olympus", "Nairobi", "../../etc/passwd", "UTC+3"),
    "SUPABASE_URL": (
        "abc.supabase.co",
        "ftp://abc.supabase.co",
        "https://",
        "https://abc.supabase.co?x=1",
        "https://user:pw@abc.supabase.co",
        "https://abc.supabase.co:port",
        "https://abc supabase.co",
    ),
    "AGROML_IMAGE_BASE_URL": ("example.org", "file:///srv/images", "https://example.org/#x"),
    "AGROML_IMAGE_HOSTS": ("https://cdn.example.org", "cdn.example.org/images", "a.org, user@b.org"),
    "AGROML_IMAGE_BUCKET": ("predictions/pest",),
    "AGROML_MODEL_BUCKET": ("models/pest",),
}
_SETTING_BY_ENV = {s.env[0]: s for s in config.SETTINGS}


def test_every_numeric_setting_has_bad_values_under_test():
    """A new numeric setting must be added to BAD_NUMBERS and EDGE_NUMBERS: no setting goes unchecked."""
    numeric = {s.env[0] for s in config.SETTINGS if s.kind in (int, float)}
    assert set(BAD_NUMBERS) == numeric == set(EDGE_NUMBERS)
    assert all(_SETTING_BY_ENV[env].rule is not None for env in [*numeric, *BAD_TEXTS])


@pytest.mark.parametrize(
    ("env", "value"),
    [(env, value) for env, values in [*BAD_NUMBERS.items(), *BAD_TEXTS.items()] for value in values],
)
def test_a_bad_value_is_refused_naming_variable_value_origin_and_range(workdir, env, value):
    setting = _SETTING_BY_ENV[env]
    with pytest.raises(ConfigError) as info:
        config.resolve(environ={env: value}, env_file=None)
    message = str(info.value)
    assert message.startswith(f"{env}={value!r} (from env) is not valid: expected {setting.rule.describe} (")
    assert f"change {env} in the environment, or unset it" in message
    assert info.value.exit_code == 1
    # the same value from .env says so
    with pytest.raises(ConfigError, match=rf"^{env}=.* \(from \.env\) is not valid") as info:
        config.resolve(environ={}, env_file=write_env(workdir / ".env", **{env: value}))
    assert f"change {env} in .env, or remove it" in str(info.value)


@pytest.mark.parametrize(
    "value",
    ["hooks.slack.com/services/T0/B0/SECRETTOKEN", "ftp://h/SECRETTOKEN", "https:///SECRETTOKEN", "https://h/a b"],
)
def test_a_bad_webhook_is_refused_without_showing_it_whole(value):
    """The webhook URL is a secret (whoever has it can post to the channel): an error shows its last 4
    characters at most; a query (Teams' signed URLs) is accepted."""
    with pytest.raises(ConfigError) as info:
        config.resolve(environ={"AGROML_ALERT_WEBHOOK": value}, env_file=None)
    message = str(info.value)
    assert message.startswith("AGROML_ALERT_WEBHOOK=") and "expected an http(s) URL with a host" in message
    assert "SECRETTOKEN" not in message and value not in message
    good = "https://example.webhook.office.com/workflows/x?api-version=1&sig=abc"
    assert config.resolve(environ={"AGROML_ALERT_WEBHOOK": good}, env_file=None).alert_webhook == good


@pytest.mark.parametrize("env", sorted(EDGE_NUMBERS))
def test_values_at_the_edge_of_each_range_are_accepted(workdir, env):
    text, want = EDGE_NUMBERS[env]
    settings = config.resolve(environ={env: text}, env_file=None)
    assert getattr(settings, _SETTING_BY_ENV[env].name) == want


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("min_total", -1, "--min-total=-1"),
        ("min_per_class", -5, "--min-per-class=-5"),
        ("timezone", "Mars/Olympus", "--timezone='Mars/Olympus'"),
        ("source", "postgres", "--source='postgres'"),
        ("image_max_mb", float("nan"), "AGROML_IMAGE_MAX_MB=nan"),  # a library caller's override
        ("http_timeout", 0, "AGROML_HTTP_TIMEOUT=0"),
    ],
)
def test_a_bad_flag_is_bad_usage_naming_the_flag(workdir, name, value, shown):
    with pytest.raises(ConfigError) as info:
        config.resolve({name: value}, environ={}, env_file=None)
    assert str(info.value).startswith(f"{shown} (from flag) is not valid: expected ")
    assert info.value.exit_code == 2


def test_good_texts_are_accepted(workdir):
    settings = config.resolve(
        environ={
            "AGROML_IMAGE_HOSTS": "cdn.example.org, *.example.net ,127.0.0.1:8123",
            "SUPABASE_URL": "http://localhost:54321/",
            "AGROML_IMAGE_BASE_URL": "https://old.example.org/api",
            "AGROML_TIMEZONE": "UTC",
        },
        env_file=None,
    )
    assert settings.allowed_image_hosts == ["cdn.example.org", "*.example.net", "127.0.0.1:8123"]
    assert settings.supabase_url == "http://localhost:54321"


def test_resolve_all_lists_every_bad_value_and_keeps_the_defaults(workdir):
    env_file = write_env(workdir / ".env", AGROML_HTTP_TIMEOUT="-3")
    settings, problems = config.resolve_all(
        environ={"AGROML_IMAGE_MAX_MB": "-1", "AGROML_RETRY_BASE_SECONDS": "nan", "AGROML_PAGE_SIZE": "50"},
        env_file=env_file,
    )
    assert [(p.env, p.value, p.origin) for p in problems] == [
        ("AGROML_HTTP_TIMEOUT", "-3", ".env"),
        ("AGROML_RETRY_BASE_SECONDS", "nan", "env"),
        ("AGROML_IMAGE_MAX_MB", "-1", "env"),
    ]
    assert (settings.image_max_mb, settings.origins["image_max_mb"]) == (15.0, "default (env refused)")
    assert (settings.http_timeout, settings.origins["http_timeout"]) == (30.0, "default (.env refused)")
    assert (settings.page_size, settings.origins["page_size"]) == (50, "env")  # good values stand


def test_unknown_override_is_a_programming_error(workdir):
    with pytest.raises(ConfigError, match="unknown setting"):
        config.resolve({"no_such_thing": 1}, environ={}, env_file=None)


def test_supabase_url_trailing_slash_is_dropped(workdir):
    s = config.resolve(environ={"SUPABASE_URL": "https://abc.supabase.co/"}, env_file=None)
    assert s.supabase_url == "https://abc.supabase.co"


def test_schema_overrides_reach_table_spec(workdir):
    env_file = write_env(workdir / ".env", AGROML_PEST_TABLE="dotenv_table", AGROML_DISEASE_COL_GROWTH_STAGE="-")
    environ = {"AGROML_PEST_TABLE": "bugs", "AGROML_PEST_COL_PREDICTED": "bug_name", "AGROML_PEST_COL_EXTRA": "a, b"}
    s = config.resolve(environ=environ, env_file=env_file)
    assert s.origins["AGROML_PEST_TABLE"] == "env"
    assert s.origins["AGROML_DISEASE_COL_GROWTH_STAGE"] == ".env"
    pest = schema.table_spec("pest", s.schema_overrides)
    assert pest.table == "bugs"
    assert pest.column("predicted") == "bug_name"
    assert pest.column("actual") == "actual_pest"  # untouched fields keep the default
    assert pest.extra == ("a", "b")
    assert "bug_name" in pest.select_columns() and "pest_detected" not in pest.select_columns()
    assert schema.table_spec("disease", s.schema_overrides).column("growth_stage") is None
    assert schema.table_spec("storage", s.schema_overrides) == schema.DEFAULT_SPECS["storage"]
    described = {name: (value, origin) for name, value, origin in s.describe()}
    assert described["AGROML_PEST_COL_PREDICTED"] == ("bug_name", "env")


def test_unknown_column_override_is_an_error_naming_it(workdir):
    s = config.resolve(environ={"AGROML_PEST_COL_PREDICTD": "x"}, env_file=None)
    with pytest.raises(ConfigError, match="AGROML_PEST_COL_PREDICTD"):
        schema.table_spec("pest", s.schema_overrides)


# --- .env.example -----------------------------------------------------------------------------------
def test_env_example_is_current():
    text = (ROOT / ".env.example").read_text()
    assert text == config.env_example_text(), (
        ".env.example is out of date: regenerate it with "
        "python -c \"from agroml.core.config import env_example_text as t; print(t(), end='')\" > .env.example"
    )


def test_env_example_names_every_setting_with_its_default():
    text = (ROOT / ".env.example").read_text()
    for s in config.SETTINGS:
        default = "" if s.default is None else str(s.default)
        assert re.search(rf"^# {s.env[0]}={re.escape(default)}$", text, re.M), s.env[0]
        for alias in s.env[1:]:
            assert alias in text
    for model, spec in schema.DEFAULT_SPECS.items():
        assert f"# AGROML_{model.upper()}_TABLE={spec.table}\n" in text
        for field in schema.SPEC_FIELDS:
            assert f"# AGROML_{model.upper()}_COL_{field.upper()}=" in text


def test_env_example_uncommented_gives_the_defaults(workdir):
    """Every value in the file, switched on, must resolve to exactly the built-in defaults."""
    text = (ROOT / ".env.example").read_text()
    assignments = [line[2:] for line in text.splitlines() if re.match(r"^# [A-Z][A-Z0-9_]*=", line)]
    env_file = workdir / ".env"
    env_file.write_text("\n".join(assignments) + "\n")
    on = config.resolve(environ={}, env_file=env_file)
    off = config.resolve(environ={}, env_file=None)
    for name in config.settings_fields():
        assert getattr(on, name) == getattr(off, name), name
    for model in schema.DEFAULT_SPECS:
        assert schema.table_spec(model, on.schema_overrides) == schema.DEFAULT_SPECS[model]
