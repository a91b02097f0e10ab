"""Settings: flag > environment > ``.env`` > default, resolved once, each value with its origin.

Why one resolve(): every command needs the same answer to "where is the store, which source, which
key", and ``agroml doctor`` must be able to say where each value came from. Table and column names
per model type are settings too (``AGROML_PEST_TABLE``, ``AGROML_PEST_COL_PREDICTED``...), so a
differently named schema needs no code change; their defaults live in :mod:`agroml.data.records`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from agroml.core.errors import ConfigError
from agroml.core.schema import DEFAULT_SPECS, MODEL_TYPES, SPEC_FIELDS

#: The environment names for the Supabase key, in the order they are tried.
KEY_VARS: tuple[str, ...] = ("SUPABASE_SERVICE_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_KEY")


@dataclass(frozen=True)
class Setting:
    """One documented setting: its attribute, environment name(s), default and meaning."""

    name: str
    env: tuple[str, ...]
    default: Any
    help: str
    kind: type = str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", ("AGROML_DATA_DIR",), "data", "Folder for the local store and image cache.", Path),
    Setting("db_path", ("AGROML_DB",), None, "Local store file (default <data_dir>/agroml.db).", Path),
    Setting("image_dir", ("AGROML_IMAGE_DIR",), None, "Image cache folder (default <data_dir>/images).", Path),
    Setting("models_dir", ("AGROML_MODELS_DIR",), "models", "Training runs, registry and promoted models.", Path),
    Setting("exports_dir", ("AGROML_EXPORTS_DIR",), "exports", "Where `agroml export` writes.", Path),
    Setting("source", ("AGROML_SOURCE",), "local", "Where records are read: local (the store) or supabase."),
    Setting("supabase_url", ("SUPABASE_URL",), None, "Your project URL, https://<ref>.supabase.co."),
    Setting("supabase_key", KEY_VARS, None, "Service-role key (reads every farmer's rows).", str, True),
    Setting("page_size", ("AGROML_PAGE_SIZE",), 1000, "Rows per PostgREST page (keyset paging).", int),
    Setting("http_timeout", ("AGROML_HTTP_TIMEOUT",), 30.0, "Seconds before one HTTP request times out.", float),
    Setting(
        "retry_max_seconds",
        ("AGROML_RETRY_MAX_SECONDS",),
        120.0,
        "Total seconds one request may spend retrying 429/5xx/network errors.",
        float,
    ),
    Setting(
        "retry_base_seconds",
        ("AGROML_RETRY_BASE_SECONDS",),
        0.5,
        "First retry's largest wait; each retry doubles it (full jitter, 30 s cap).",
        float,
    ),
    Setting(
        "image_hosts",
        ("AGROML_IMAGE_HOSTS",),
        "",
        "Comma-separated extra hosts images may be fetched from (SUPABASE_URL's host is always allowed).",
    ),
    Setting(
        "image_base_url",
        ("AGROML_IMAGE_BASE_URL",),
        None,
        "Base URL that relative /uploads/... image paths are resolved against.",
    ),
    Setting("image_bucket", ("AGROML_IMAGE_BUCKET",), "predictions", "Storage bucket for bare image paths."),
    Setting("image_concurrency", ("AGROML_IMAGE_CONCURRENCY",), 16, "Images downloaded at once.", int),
    Setting("image_max_mb", ("AGROML_IMAGE_MAX_MB",), 15.0, "Largest image accepted, in MB.", float),
    Setting("timezone", ("AGROML_TIMEZONE",), "Africa/Nairobi", "Farm local time zone for seasons and months."),
    Setting(
        "hash_salt",
        ("AGROML_HASH_SALT",),
        None,
        "Salt for farmer_key hashes (default: a random salt kept in the store).",
        str,
        True,
    ),
    Setting("min_total", ("AGROML_MIN_TOTAL",), 100, "Trainable rows needed before training.", int),
    Setting("min_per_class", ("AGROML_MIN_PER_CLASS",), 10, "Trainable rows needed per class.", int),
)

_BY_NAME = {s.name: s for s in SETTINGS}
TABLE_ENV = "AGROML_{model}_TABLE"
COLUMN_ENV = "AGROML_{model}_COL_{field}"


@dataclass
class Settings:
    """The resolved settings; ``origins`` says where each came from (flag, env, .env, default)."""

    data_dir: Path = Path("data")
    db_path: Path = Path("data/agroml.db")
    image_dir: Path = Path("data/images")
    models_dir: Path = Path("models")
    exports_dir: Path = Path("exports")
    source: str = "local"
    supabase_url: str | None = None
    supabase_key: str | None = None
    page_size: int = 1000
    http_timeout: float = 30.0
    retry_max_seconds: float = 120.0
    retry_base_seconds: float = 0.5
    image_hosts: str = ""
    image_base_url: str | None = None
    image_bucket: str = "predictions"
    image_concurrency: int = 16
    image_max_mb: float = 15.0
    timezone: str = "Africa/Nairobi"
    hash_salt: str | None = None
    min_total: int = 100
    min_per_class: int = 10
    #: AGROML_<MODEL>_TABLE / AGROML_<MODEL>_COL_<FIELD> overrides: {model: {"table"|field: name}}.
    schema_overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    #: Which environment variable supplied the key (doctor shows the name, never the value).
    key_var: str | None = None

    @property
    def allowed_image_hosts(self) -> list[str]:
        return [h.strip().lower() for h in self.image_hosts.split(",") if h.strip()]

    def describe(self) -> list[tuple[str, str, str]]:
        """(name, shown value, origin) for every setting, secrets reduced to their last 4 characters."""
        rows = []
        for s in SETTINGS:
            value = getattr(self, s.name)
            shown = mask_secret(value) if s.secret else ("" if value is None else str(value))
            rows.append(
                (
                    s.env[0] if len(s.env) == 1 else (self.key_var or s.env[0]),
                    shown,
                    self.origins.get(s.name, "default"),
                )
            )
        for model, spec in sorted(self.schema_overrides.items()):
            for key, value in sorted(spec.items()):
                env = (
                    TABLE_ENV.format(model=model.upper())
                    if key == "table"
                    else COLUMN_ENV.format(model=model.upper(), field=key.upper())
                )
                rows.append((env, value, self.origins.get(env, "env")))
        return rows


def mask_secret(value: str | None) -> str:
    """Show at most the last 4 characters of a secret: enough to tell two keys apart."""
    if not value:
        return ""
    return "…" + value[-4:] if len(value) > 8 else "****"


def _convert(setting: Setting, raw: Any) -> Any:
    if raw is None:
        return None
    if setting.kind is str or isinstance(raw, setting.kind):
        return raw
    try:
        return setting.kind(raw)
    except (TypeError, ValueError):
        env = setting.env[0]
        kind = {"int": "whole number", "float": "number"}.get(setting.kind.__name__, setting.kind.__name__)
        raise ConfigError(
            f"{env}={raw!r} is not a valid {kind}", fix=f"set {env} in the environment or .env to a {kind}"
        ) from None


def resolve(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | None = ".env",
) -> Settings:
    """Merge flags (``overrides``, None values ignored), the environment, ``.env`` and defaults.

    The environment wins over ``.env`` (as python-dotenv's ``override=False`` does) so a cron job
    can change one value without editing the file.
    """
    environ = os.environ if environ is None else environ
    dotenv: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        dotenv = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(overrides) - set(_BY_NAME)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")

    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    key_var = None
    for s in SETTINGS:
        if s.name in overrides:
            values[s.name], origins[s.name] = _convert(s, overrides[s.name]), "flag"
            continue
        # Variable order first, then environment before .env (python-dotenv's merge does the same): a
        # generic SUPABASE_KEY (often the anon key) in the environment must not hide SUPABASE_SERVICE_KEY in .env.
        found = next(
            (
                (e, layer, origin)
                for e in s.env
                for layer, origin in ((environ, "env"), (dotenv, ".env"))
                if layer.get(e, "").strip()
            ),
            None,
        )
        if found:
            hit, layer, origin = found
            values[s.name], origins[s.name] = _convert(s, layer[hit].strip()), origin
            if s.name == "supabase_key":
                key_var = hit
        else:
            values[s.name], origins[s.name] = _convert(s, s.default), "default"

    data_dir = Path(values["data_dir"])
    if values["db_path"] is None:
        values["db_path"] = data_dir / "agroml.db"
    if values["image_dir"] is None:
        values["image_dir"] = data_dir / "images"
    if values["source"] not in ("local", "supabase"):
        raise ConfigError(
            f"unknown source {values['source']!r}: valid sources are local, supabase",
            fix="use --source local|supabase or set AGROML_SOURCE",
        )
    if values["page_size"] < 1:
        raise ConfigError(f"AGROML_PAGE_SIZE={values['page_size']} must be at least 1")
    if values["supabase_url"]:
        values["supabase_url"] = values["supabase_url"].rstrip("/")

    schema_overrides: dict[str, dict[str, str]] = {}
    for layer, origin in ((dotenv, ".env"), (environ, "env")):  # environment last: it wins
        for env, value in layer.items():
            parsed = _parse_schema_env(env)
            if parsed and value.strip():
                model, key = parsed
                schema_overrides.setdefault(model, {})[key] = value.strip()
                origins[env] = origin
    return Settings(**values, schema_overrides=schema_overrides, origins=origins, key_var=key_var)


def _parse_schema_env(env: str) -> tuple[str, str] | None:
    """``AGROML_PEST_TABLE`` -> ("pest", "table"); ``AGROML_PEST_COL_PREDICTED`` -> ("pest", "predicted")."""

    for model in MODEL_TYPES:
        prefix = f"AGROML_{model.upper()}_"
        if not env.startswith(prefix):
            continue
        rest = env[len(prefix) :]
        if rest == "TABLE":
            return model, "table"
        if rest.startswith("COL_") and len(rest) > 4:
            return model, rest[4:].lower()
    return None


def settings_fields() -> list[str]:
    """Names of the plain settings (for tests and docs)."""
    return [f.name for f in fields(Settings) if f.name in _BY_NAME]


def env_example_text() -> str:
    """The text of ``.env.example``: every setting with its default, then the table/column mapping.

    Generated from :data:`SETTINGS` and ``schema.DEFAULT_SPECS`` so the file cannot drift from the
    code; tests/test_settings.py checks the committed file against this.
    """

    lines = [
        "# agroml settings. Copy this file to .env and uncomment what you change.",
        "# Precedence: command-line flag > environment > .env > the default shown here.",
        "# `agroml doctor` lists every value and where it came from (secrets masked).",
        "# Generated by agroml.core.config.env_example_text(); tests/test_settings.py keeps it in step.",
    ]
    for s in SETTINGS:
        lines += ["", f"# {s.help}"]
        if len(s.env) > 1:
            lines.append(f"# Also read from {', '.join(s.env[1:])} (first one set wins, in this order).")
        if s.secret:
            lines.append("# Secret: never printed (doctor shows its last 4 characters at most).")
        lines.append(f"# {s.env[0]}={'' if s.default is None else s.default}")
    lines += [
        "",
        "# --- Table and column names per model type (defaults: the AgroShield schema) ---",
        "# AGROML_<MODEL>_TABLE renames a table; AGROML_<MODEL>_COL_<FIELD> renames the column of a field.",
        "# A column set to - (or none) means the table has no such column. COL_EXTRA is a comma-separated",
        "# list of columns kept verbatim in the record's JSON `extra` field.",
    ]
    for model, spec in DEFAULT_SPECS.items():
        prefix = f"AGROML_{model.upper()}"
        lines += ["", f"# {model}", f"# {prefix}_TABLE={spec.table}"]
        lines += [f"# {prefix}_COL_{f.upper()}={spec.columns.get(f) or '-'}" for f in SPEC_FIELDS]
        lines.append(f"# {prefix}_COL_EXTRA={','.join(spec.extra) or '-'}")
    return "\n".join(lines) + "\n"


def key_role(key: str) -> str | None:
    """The role a Supabase key grants, read from the key itself (no verification: we only want to warn).

    New-style keys say it in their prefix; legacy keys are JWTs whose payload has a ``role`` claim.
    """
    if key.startswith("sb_secret_"):
        return "service_role"
    if key.startswith("sb_publishable_"):
        return "anon"
    payload = jwt_payload(key)
    role = payload.get("role") if payload else None
    return role if isinstance(role, str) else None


def jwt_payload(key: str) -> dict[str, Any] | None:
    """The payload of a JWT-shaped key, unverified (enough to read its role and expiry), or None."""
    parts = key.split(".")
    if len(parts) != 3:
        return None
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    return payload if isinstance(payload, dict) else None
