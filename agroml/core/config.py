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
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

from agroml.core.errors import ConfigError
from agroml.core.schema import AUTO_SOURCE, DEFAULT_SPECS, MODEL_TYPES, SOURCES, SPEC_FIELDS

#: The environment names for the Supabase key, in the order they are tried.
KEY_VARS: tuple[str, ...] = ("SUPABASE_SERVICE_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_KEY")


@dataclass(frozen=True)
class Rule:
    """The values a setting accepts: ``accepts`` checks a converted value, ``describe`` names the range.

    Why every setting has one: a bad value is not noticed where it is set but far away, where it is
    used (AGROML_IMAGE_MAX_MB=-1 refused every image as too_large, a NaN retry time never retried). So
    each value is checked once, where it is read, and its error names the range.
    """

    describe: str
    accepts: Callable[[Any], bool]


def _number(low: float, *, above: bool = False, unit: str = "") -> Rule:
    """A finite number >= ``low`` (> ``low`` with ``above``): NaN and infinities never pass."""
    bound = f"> {low:g}" if above else f">= {low:g}"
    return Rule(f"a finite number{unit} {bound}", lambda v: math.isfinite(v) and (v > low if above else v >= low))


def _whole(low: int, high: int | None = None) -> Rule:
    if high is None:
        return Rule(f"a whole number >= {low}", lambda v: v >= low)
    return Rule(f"a whole number from {low} to {high}", lambda v: low <= v <= high)


def _one_of(*choices: str) -> Rule:
    return Rule(f"one of {', '.join(choices)}", lambda v: v in choices)


def _is_http_url(value: str) -> bool:
    """http(s), a host, a numeric port if any; no credentials, query, fragment or blanks."""
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not (parts.username or parts.password or parts.query or parts.fragment)
        and not any(c.isspace() for c in value)
    )


def _is_zone(value: str) -> bool:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _is_host_list(value: str) -> bool:
    """``host``, ``host:port`` or ``*.domain`` entries: one with a scheme or path would never match a URL."""
    return not any(c in entry.strip() for entry in value.split(",") for c in "/?#@ \t")


def _are_origins(value: str) -> bool:
    """``https://host[:port]`` entries (a browser's Origin header has no path), or ``*``."""
    entries = [e.strip() for e in value.split(",") if e.strip()]
    return all(e == "*" or (_is_http_url(e) and urlsplit(e).path in ("", "/")) for e in entries)


_SECONDS_ABOVE_0 = _number(0, above=True, unit=" of seconds")
_COUNT = _whole(0)


def _is_webhook_url(value: str) -> bool:
    """http(s) with a host and no blanks; a query is allowed (Teams' workflow URLs carry their signature in it)."""
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in value)


@dataclass(frozen=True)
class Setting:
    """One documented setting: its attribute, environment name(s), default, meaning and valid values.

    ``flag`` is the command-line option that also sets it (named in errors when the value came from
    there); ``rule`` is checked on every value read, whatever its origin (None: any text or path).
    """

    name: str
    env: tuple[str, ...]
    default: Any
    help: str
    kind: type = str
    secret: bool = False
    rule: Rule | None = None
    flag: str | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", ("AGROML_DATA_DIR",), "data", "Folder for the local store and image cache.", Path),
    Setting("db_path", ("AGROML_DB",), None, "Local store file (default <data_dir>/agroml.db).", Path),
    Setting("image_dir", ("AGROML_IMAGE_DIR",), None, "Image cache folder (default <data_dir>/images).", Path),
    Setting("models_dir", ("AGROML_MODELS_DIR",), "models", "Training runs, registry and promoted models.", Path),
    Setting("exports_dir", ("AGROML_EXPORTS_DIR",), "exports", "Where `agroml export` writes.", Path, flag="--out"),
    Setting(
        "source",
        ("AGROML_SOURCE",),
        "auto",
        "Where records are read: local (the store), supabase, or auto (supabase when SUPABASE_URL and a key "
        "are set, else local); with supabase, train and retrain pull what is new into the store first.",
        rule=_one_of(*SOURCES),
        flag="--source",
    ),
    Setting(
        "supabase_url",
        ("SUPABASE_URL",),
        None,
        "Your project URL, https://<ref>.supabase.co.",
        rule=Rule("an http(s) URL with a host, such as https://<ref>.supabase.co", _is_http_url),
    ),
    Setting("supabase_key", KEY_VARS, None, "Service-role key (reads every farmer's rows).", str, True),
    Setting("page_size", ("AGROML_PAGE_SIZE",), 1000, "Rows per PostgREST page (keyset paging).", int, rule=_whole(1)),
    Setting(
        "http_timeout",
        ("AGROML_HTTP_TIMEOUT",),
        30.0,
        "Seconds before one HTTP request times out.",
        float,
        rule=_SECONDS_ABOVE_0,
    ),
    Setting(
        "retry_max_seconds",
        ("AGROML_RETRY_MAX_SECONDS",),
        120.0,
        "Total seconds one request may spend retrying 429/5xx/dropped connections (0: never retry); "
        "a refused connection or unknown host name gets 3 quick attempts instead.",
        float,
        rule=_number(0, unit=" of seconds"),
    ),
    Setting(
        "retry_base_seconds",
        ("AGROML_RETRY_BASE_SECONDS",),
        0.5,
        "First retry's largest wait; each retry doubles it (full jitter, 30 s cap).",
        float,
        rule=_SECONDS_ABOVE_0,
    ),
    Setting(
        "image_hosts",
        ("AGROML_IMAGE_HOSTS",),
        "",
        "Comma-separated extra hosts images may be fetched from (SUPABASE_URL's host is always allowed).",
        rule=Rule("comma-separated host, host:port or *.domain entries, without scheme or path", _is_host_list),
    ),
    Setting(
        "image_base_url",
        ("AGROML_IMAGE_BASE_URL",),
        None,
        "Base URL that relative /uploads/... image paths are resolved against.",
        rule=Rule("an http(s) URL with a host, such as https://example.org", _is_http_url),
    ),
    Setting(
        "image_bucket",
        ("AGROML_IMAGE_BUCKET",),
        "predictions",
        "Storage bucket for bare image paths.",
        rule=Rule("a bucket name without '/'", lambda v: "/" not in v),
    ),
    Setting(
        "image_concurrency",
        ("AGROML_IMAGE_CONCURRENCY",),
        16,
        "Images downloaded at once.",
        int,
        rule=_whole(1, 256),
    ),
    Setting(
        "image_max_mb",
        ("AGROML_IMAGE_MAX_MB",),
        15.0,
        "Largest image accepted, in MB.",
        float,
        rule=_number(0, above=True, unit=" of MB"),
    ),
    Setting(
        "timezone",
        ("AGROML_TIMEZONE",),
        "Africa/Nairobi",
        "Farm local time zone for seasons and months.",
        rule=Rule("an IANA time zone name such as Africa/Nairobi", _is_zone),
        flag="--timezone",
    ),
    Setting(
        "hash_salt",
        ("AGROML_HASH_SALT",),
        None,
        "Salt for farmer_key hashes (default: a random salt kept in the store).",
        str,
        True,
    ),
    Setting(
        "min_total",
        ("AGROML_MIN_TOTAL",),
        100,
        "Trainable rows needed before training.",
        int,
        rule=_COUNT,
        flag="--min-total",
    ),
    Setting(
        "min_per_class",
        ("AGROML_MIN_PER_CLASS",),
        10,
        "Trainable rows needed per class.",
        int,
        rule=_COUNT,
        flag="--min-per-class",
    ),
    Setting(
        "train_cache_mb",
        ("AGROML_TRAIN_CACHE_MB",),
        1024.0,
        "MB of memory training may keep decoded images in after the first epoch (over it, or 0: on disk "
        "under <data_dir>/train_cache for the run).",
        float,
        rule=_number(0, unit=" of MB"),
    ),
    Setting(
        "alert_webhook",
        ("AGROML_ALERT_WEBHOOK",),
        None,
        "Slack-compatible incoming-webhook URL (Discord's /slack URL and Teams accept the same) told when a "
        "train or retrain fails, the gate refuses a model or feedback accuracy falls.",
        str,
        True,
        rule=Rule("an http(s) URL with a host", _is_webhook_url),
    ),
    Setting(
        "alert_on_success",
        ("AGROML_ALERT_ON_SUCCESS",),
        0,
        "1: also send an alert when retrain promotes a model.",
        int,
        rule=_whole(0, 1),
    ),
    Setting(
        "alert_min_feedback_accuracy",
        ("AGROML_ALERT_MIN_FEEDBACK_ACCURACY",),
        0.7,
        "Alert when the deployed model's feedback accuracy over the last AGROML_ALERT_FEEDBACK_DAYS days is below "
        "this (0: never).",
        float,
        rule=Rule("a number from 0 to 1", lambda v: math.isfinite(v) and 0 <= v <= 1),
    ),
    Setting(
        "alert_feedback_days",
        ("AGROML_ALERT_FEEDBACK_DAYS",),
        30,
        "Days of feedback the accuracy alert looks at.",
        int,
        rule=_whole(1),
    ),
    Setting("log_dir", ("AGROML_LOG_DIR",), "training_logs", "Where `agroml retrain` writes its log files.", Path),
    Setting(
        "log_retention_days",
        ("AGROML_LOG_RETENTION_DAYS",),
        180,
        "Retrain logs older than this many days are removed (0: keep every log).",
        int,
        rule=_COUNT,
    ),
    Setting(
        "gate_min_f1_gain",
        ("AGROML_GATE_MIN_F1_GAIN",),
        0.0,
        "Promotion gate: the challenger's macro F1 must be at least the production model's plus this "
        "(0: not worse; 1 refuses every challenger).",
        float,
        rule=Rule("a finite number from -1 to 1", lambda v: math.isfinite(v) and -1 <= v <= 1),
    ),
    Setting(
        "gate_max_accuracy_drop",
        ("AGROML_GATE_MAX_ACCURACY_DROP",),
        0.01,
        "Promotion gate: how much lower than the production model's the challenger's accuracy may be.",
        float,
        rule=Rule("a finite number from 0 to 1", lambda v: math.isfinite(v) and 0 <= v <= 1),
    ),
    Setting(
        "gate_max_recall_drop",
        ("AGROML_GATE_MAX_RECALL_DROP",),
        0.10,
        "Promotion gate: how much any one class's recall may fall below the production model's.",
        float,
        rule=Rule("a finite number from 0 to 1", lambda v: math.isfinite(v) and 0 <= v <= 1),
    ),
    Setting(
        "gate_min_rows",
        ("AGROML_GATE_MIN_ROWS",),
        30,
        "Promotion gate: rows neither model trained on needed to compare them (fewer: refused unless --force).",
        int,
        rule=_whole(1),
    ),
    Setting(
        "model_bucket",
        ("AGROML_MODEL_BUCKET",),
        "models",
        "Storage bucket `agroml publish` uploads the production model to (<type>/<run_id>/, <type>/production.json).",
        rule=Rule("a bucket name without '/'", lambda v: bool(v) and "/" not in v),
    ),
    Setting(
        "api_token",
        ("AGROML_API_TOKEN",),
        None,
        "Bearer token every API route but /health requires (`agroml serve`); without it the API refuses "
        "non-loopback hosts and answers 503.",
        str,
        True,
    ),
    Setting(
        "api_cors_origins",
        ("AGROML_API_CORS_ORIGINS",),
        "",
        "Comma-separated origins browsers may call the API from (empty: CORS off).",
        rule=Rule("comma-separated http(s) origins such as https://admin.example.org", _are_origins),
    ),
    Setting(
        "feature_store_mb",
        ("AGROML_FEATURE_STORE_MB",),
        2048.0,
        "MB of base-network features kept in <data_dir>/features/ so a retrain computes only new images' "
        "(least recently used removed past it; 0: off, as `train --no-feature-store`).",
        float,
        rule=_number(0, unit=" of MB"),
    ),
    Setting(
        "worker_timeout_s",
        ("AGROML_WORKER_TIMEOUT_S",),
        600.0,
        "Seconds a worker of --strategy multiworker may keep the others waiting before the run fails.",
        float,
        rule=_SECONDS_ABOVE_0,
    ),
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
    source: str = "auto"
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
    train_cache_mb: float = 1024.0
    alert_webhook: str | None = None
    alert_on_success: int = 0
    alert_min_feedback_accuracy: float = 0.7
    alert_feedback_days: int = 30
    log_dir: Path = Path("training_logs")
    log_retention_days: int = 180
    gate_min_f1_gain: float = 0.0
    gate_max_accuracy_drop: float = 0.01
    gate_max_recall_drop: float = 0.10
    gate_min_rows: int = 30
    model_bucket: str = "models"
    api_token: str | None = None
    api_cors_origins: str = ""
    feature_store_mb: float = 2048.0
    worker_timeout_s: float = 600.0
    #: AGROML_<MODEL>_TABLE / AGROML_<MODEL>_COL_<FIELD> overrides: {model: {"table"|field: name}}.
    schema_overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    #: Which environment variable supplied the key (doctor shows the name, never the value).
    key_var: str | None = None

    @property
    def effective_source(self) -> str:
        """``local`` or ``supabase``: what ``source`` means here (auto: supabase when a URL and a key are set)."""
        if self.source == AUTO_SOURCE:
            return "supabase" if self.supabase_url and self.supabase_key else "local"
        return self.source

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


_KINDS = {int: "whole number", float: "number"}
_ORIGIN_FIX = {
    "env": "change {name} in the environment, or unset it{default}",
    ".env": "change {name} in .env, or remove it{default}",
    "flag": "change the value given to {name}",
}


class SettingError(ConfigError):
    """One setting's value is not valid. Names the variable (or flag), the value, where it came from and
    what is valid, so the user can fix it without reading the code."""

    def __init__(self, setting: Setting, raw: Any, origin: str) -> None:
        name = setting.flag if origin == "flag" and setting.flag else setting.env[0]
        valid = setting.rule.describe if setting.rule else f"a {_KINDS.get(setting.kind, setting.kind.__name__)}"
        default = "" if setting.default in (None, "") else f" to use the default {setting.default}"
        super().__init__(
            f"{name}={mask_secret(str(raw)) if setting.secret else repr(raw)} (from {origin}) is not valid: "
            f"expected {valid}",
            fix=_ORIGIN_FIX.get(origin, _ORIGIN_FIX["env"]).format(name=name, default=default),
        )
        self.setting, self.env, self.value, self.origin = setting, name, raw, origin
        self.exit_code = 2 if origin == "flag" else 1  # a bad flag is bad usage; a bad setting a failed run


def _checked(setting: Setting, raw: Any, origin: str) -> Any:
    """``raw`` converted to the setting's kind and checked against its rule; SettingError otherwise."""
    if raw is None:
        return None
    value = raw
    if setting.kind is not str and not isinstance(raw, setting.kind):
        try:
            value = setting.kind(raw)
        except (TypeError, ValueError, OverflowError):
            raise SettingError(setting, raw, origin) from None
    if setting.rule is not None and not setting.rule.accepts(value):
        raise SettingError(setting, raw, origin)
    return value


def resolve(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | None = ".env",
) -> Settings:
    """Merge flags (``overrides``, None values ignored), the environment, ``.env`` and defaults.

    The environment wins over ``.env`` (as python-dotenv's ``override=False`` does) so a cron job
    can change one value without editing the file. Every value is checked against its setting's rule
    here, where it is read: the first bad one raises :class:`SettingError` (``agroml doctor`` lists
    them all, through :func:`resolve_all`).
    """
    settings, problems = resolve_all(overrides, environ, env_file)
    if problems:
        raise problems[0]
    return settings


def resolve_all(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | None = ".env",
) -> tuple[Settings, list[SettingError]]:
    """Like :func:`resolve`, but a bad value is replaced by its default and returned with the others.

    For ``agroml doctor``: it must show every bad setting as a failed check and still run the checks
    that the remaining settings allow. The origin of a replaced value says so ("default (env refused)").
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
    problems: list[SettingError] = []
    key_var = None
    for s in SETTINGS:
        if s.name in overrides:
            raw, origin = overrides[s.name], "flag"
        else:
            # Variable order first, then environment before .env (python-dotenv's merge does the same): a
            # generic SUPABASE_KEY (often the anon key) in the environment must not hide SUPABASE_SERVICE_KEY
            # in .env.
            found = next(
                (
                    (e, layer, origin)
                    for e in s.env
                    for layer, origin in ((environ, "env"), (dotenv, ".env"))
                    if layer.get(e, "").strip()
                ),
                None,
            )
            if found is None:
                raw, origin = s.default, "default"
            else:
                hit, layer, origin = found
                raw = layer[hit].strip()
                if s.name == "supabase_key":
                    key_var = hit
        try:
            values[s.name], origins[s.name] = _checked(s, raw, origin), origin
        except SettingError as exc:
            problems.append(exc)
            values[s.name], origins[s.name] = _checked(s, s.default, "default"), f"default ({origin} refused)"

    data_dir = Path(values["data_dir"])
    if values["db_path"] is None:
        values["db_path"] = data_dir / "agroml.db"
    if values["image_dir"] is None:
        values["image_dir"] = data_dir / "images"
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
    settings = Settings(**values, schema_overrides=schema_overrides, origins=origins, key_var=key_var)
    return settings, problems


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
        if s.rule is not None:
            lines.append(f"# Valid: {s.rule.describe}.")
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
