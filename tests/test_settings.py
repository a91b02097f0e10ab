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
    assert s.source == "local"
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


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("AGROML_PAGE_SIZE", "lots"),
        ("AGROML_IMAGE_CONCURRENCY", "1.5"),
        ("AGROML_MIN_TOTAL", "ten"),
        ("AGROML_HTTP_TIMEOUT", "soon"),
    ],
)
def test_bad_numbers_name_the_variable(workdir, env, value):
    with pytest.raises(ConfigError) as info:
        config.resolve(environ={env: value}, env_file=None)
    kind = "number" if env == "AGROML_HTTP_TIMEOUT" else "whole number"
    assert str(info.value) == (
        f"{env}={value!r} is not a valid {kind} (set {env} in the environment or .env to a {kind})"
    )


def test_bad_number_in_dotenv_names_the_variable(workdir):
    with pytest.raises(ConfigError, match=r"^AGROML_MIN_PER_CLASS='x' is not a valid"):
        config.resolve(environ={}, env_file=write_env(workdir / ".env", AGROML_MIN_PER_CLASS="x"))


def test_page_size_must_be_positive_and_source_known(workdir):
    with pytest.raises(ConfigError, match="AGROML_PAGE_SIZE=0 must be at least 1"):
        config.resolve(environ={"AGROML_PAGE_SIZE": "0"}, env_file=None)
    with pytest.raises(ConfigError, match="unknown source 'postgres': valid sources are local, supabase"):
        config.resolve(environ={"AGROML_SOURCE": "postgres"}, env_file=None)
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
