"""`agroml doctor`: is this machine ready to pull, train and export, and if not, what to do.

Each check is a small named function returning one or more :class:`Check` lines (ok / warn / fail,
what was found, how to fix it). :func:`run_checks` guards every one, so a check that crashes becomes
a "fail" line instead of hiding the others: a doctor that dies on the first problem is no doctor.

Why it never prints the Supabase key: doctor output is exactly what people paste into chat and CI logs.
It shows the key's role (read from the key itself), the NAME of the variable it came from and at most
its last 4 characters; :func:`run_checks` also scrubs every line in case a check quotes it by accident.

Why ``--offline`` exists: CI runs doctor as a smoke check with no network and a budget of seconds; only
the Supabase online checks touch the network, TensorFlow is imported once.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from agroml.core import config
from agroml.core.config import Settings, jwt_payload, key_role, mask_secret
from agroml.core.errors import AgromlError, ConfigError, NoDataError, SourceError, UnreachableError
from agroml.core.schema import MODEL_TYPES, table_spec
from agroml.core.sqlite import can_access
from agroml.data.analysis import readiness, readiness_verdict
from agroml.data.sources import missing_images
from agroml.data.store import DAMAGED_FIX, Store
from agroml.data.supabase import KEY_FIX, SupabaseSource
from agroml.images.fetch import probe_image

OK, WARN, FAIL = "ok", "warn", "fail"
STATUSES: tuple[str, ...] = (OK, WARN, FAIL)

#: Distributions agroml needs at run time (their import names differ for pillow and python-dotenv).
PACKAGES: tuple[str, ...] = (
    "typer",
    "rich",
    "supabase",
    "tensorflow",
    "pillow",
    "numpy",
    "pandas",
    "pyarrow",
    "python-dotenv",
    "matplotlib",
)
MIN_PYTHON = (3, 11)
#: Below this much free space a demo data set plus one training run may not fit.
MIN_FREE_BYTES = 1 << 30

#: The file names Keras applications download ImageNet weights to (include_top=False), per backbone.
#: MobileNetV2's name carries alpha and input size, so any size counts (a glob).
WEIGHT_FILES: dict[str, str] = {
    "mobilenetv2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_*_no_top.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "efficientnetb0": "efficientnetb0_notop.h5",
}

PACKAGE_FIX = "pip install -e ."
DATA_FIX = "run `agroml demo` or `agroml pull`"
WRITE_FIX = "make the store writable for this user (chmod u+w), or set AGROML_DB to a writable copy"


@dataclass
class Check:
    """One line of the doctor's report. ``fix`` is empty when there is nothing to do."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Report:
    """Everything doctor found: the checks, and each setting with its (masked) value and origin."""

    checks: list[Check]
    settings: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the checks carry the findings; kept for the one result shape

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.to_dict() for c in self.checks], "settings": self.settings}


def doctor_exit_code(checks: Iterable[Check], strict: bool = False) -> int:
    """1 on any failure (or, with ``strict``, any warning), else 0: what CI gates on."""
    bad = {FAIL, WARN} if strict else {FAIL}
    return 1 if any(c.status in bad for c in checks) else 0


# --- environment ----------------------------------------------------------------------------------
def check_python() -> Check:
    found = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return Check(
            "python",
            FAIL,
            f"Python {found} ({sys.executable}); agroml needs >= {need}",
            f"create the virtual environment with Python {need} or newer",
        )
    return Check("python", OK, f"Python {found} ({sys.executable})")


def _minimums() -> dict[str, tuple[int, ...]]:
    """{distribution: minimum version} from agroml's own metadata (pyproject's ``name>=x.y``)."""
    try:
        requires = md.requires("agroml") or []
    except md.PackageNotFoundError:
        return {}
    out = {}
    for req in requires:
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\[[^]]*\])?\s*>=\s*([0-9][0-9.]*)", req)
        if m and "extra ==" not in req:
            out[_canon(m.group(1))] = _version_tuple(m.group(2))
    return out


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3])


def check_packages() -> Check:
    minimums = _minimums()
    found, missing, old = [], [], []
    for name in PACKAGES:
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
            continue
        need = minimums.get(_canon(name))
        if need and _version_tuple(version) < need:
            old.append(f"{name} {version} < {'.'.join(map(str, need))}")
        found.append(f"{name} {version}")
    if missing or old:
        problems = ([f"missing: {', '.join(missing)}"] if missing else []) + (
            [f"too old: {', '.join(old)}"] if old else []
        )
        return Check("packages", FAIL, "; ".join(problems), PACKAGE_FIX)
    return Check("packages", OK, ", ".join(found))


def check_tensorflow() -> Check:
    """Import TensorFlow (once: it costs seconds) and list the devices training would use."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except Exception as exc:  # ImportError, or a broken native library raising anything
        return Check("tensorflow", FAIL, f"cannot import tensorflow: {type(exc).__name__}: {exc}", PACKAGE_FIX)
    devices = tf.config.list_physical_devices()
    names = [d.name.replace("/physical_device:", "") for d in devices]
    gpus = [n for n in names if n.startswith("GPU")]
    # CPU-only is fine (training is slower, not wrong), so it is not a warning
    note = "" if gpus else " (no GPU: training runs on the CPU)"
    return Check("tensorflow", OK, f"TensorFlow {tf.__version__}, devices: {', '.join(names) or 'none'}{note}")


# --- folders and disk -----------------------------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _can_write_in(folder: Path) -> str | None:
    """None if a file can be created in ``folder`` (tried for real: os.access lies for root and ACLs)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".agroml-doctor-", dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(tmp)
    return None


def check_folder(label: str, path: Path, env: str, target: str = "a writable folder") -> Check:
    """``path`` is a writable folder, or could be created as one: without side effects on the disk.

    ``target`` says what ``env`` should name instead (AGROML_DB names a file, not a folder).
    """
    name = f"{label} folder"
    fix = f"make {path} writable or set {env} to {target}"
    if path.exists() and not path.is_dir():
        return Check(name, FAIL, f"{path} is a file, not a folder", f"move it aside or set {env} to {target}")
    parent = _nearest_existing(path)
    if not parent.is_dir():
        return Check(name, FAIL, f"cannot create {path}: {parent} is a file, not a folder", f"set {env} to {target}")
    problem = _can_write_in(parent)
    if problem:
        where = str(path) if parent == path.absolute() else f"{parent} (to create {path})"
        return Check(name, FAIL, f"cannot write in {where}: {problem}", fix)
    if path.is_dir():
        return Check(name, OK, f"{path} is writable")
    return Check(name, OK, f"{path} does not exist yet; it will be created in {parent}")


def check_disk(settings: Settings) -> Check:
    parent = _nearest_existing(Path(settings.data_dir))
    free = shutil.disk_usage(parent).free
    detail = f"{free / (1 << 30):.1f} GB free on the disk of {parent}"
    if free < MIN_FREE_BYTES:
        return Check(
            "disk",
            WARN,
            detail + " (under 1 GB)",
            "free disk space or set AGROML_DATA_DIR / AGROML_MODELS_DIR to a bigger disk",
        )
    return Check("disk", OK, detail)


# --- the local store and readiness ----------------------------------------------------------------
def check_store(settings: Settings) -> tuple[Check, dict[str, Any] | None]:
    """The store reads back whole (``PRAGMA quick_check``), its schema version and rows per model type, and
    whether it is writable and private; also its feedback counts for readiness."""

    path = Path(settings.db_path)
    if not path.exists():
        return Check("store", WARN, f"no local data yet ({path} does not exist)", DATA_FIX), None
    try:
        store = Store(path, create=False)
    except NoDataError:
        return Check("store", WARN, f"no local data yet ({path} is empty)", DATA_FIX), None
    except AgromlError as exc:  # damaged, foreign, newer or unreadable store: its own message says what to do
        return Check("store", FAIL, exc.message, exc.fix or ""), None
    with store:
        try:
            problems = store.quick_check()
            if problems:
                found = "; ".join(" ".join(p.split()) for p in problems)[:300]
                return Check("store", FAIL, f"{path} is damaged: {found}", DAMAGED_FIX), None
            rows = {m: store.count(m) for m in MODEL_TYPES}
            counts = {m: store.feedback_counts(m) for m in MODEL_TYPES}
        except AgromlError as exc:
            return Check("store", FAIL, exc.message, exc.fix or ""), None
        detail = f"{path}: schema v{store.schema_version}, rows " + ", ".join(f"{m} {n}" for m, n in rows.items())
    if not any(rows.values()):
        return Check("store", WARN, detail + " (empty)", DATA_FIX), counts
    if not can_access(path, os.W_OK):
        return Check("store", WARN, f"{detail}; read-only: pull, demo and import cannot add rows", WRITE_FIX), counts
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return (
            Check(
                "store",
                WARN,
                f"{detail}; mode {mode:04o}: other accounts can read its farmer ids and hash salt",
                f"chmod 600 {path}",
            ),
            counts,
        )
    return Check("store", OK, detail), counts


def check_readiness(settings: Settings, counts: dict[str, Any] | None) -> list[Check]:
    """Per model type: enough trainable rows with their image cached, overall and per class, to train
    honestly (local store); rows whose image is gone from the cache are counted apart, as `stats` does."""
    need = f"needs {settings.min_total} trainable rows and {settings.min_per_class} per class"
    if counts is None:
        return [Check(f"readiness {m}", WARN, f"no local data ({need})", DATA_FIX) for m in MODEL_TYPES]
    with Store(settings.db_path, create=False) as store:
        missing = {m: missing_images(store, settings.image_dir, m) for m in MODEL_TYPES}
    out = []
    for model in MODEL_TYPES:
        result = readiness(counts[model], settings.min_total, settings.min_per_class, missing[model])
        verdict = readiness_verdict(result)
        if result["ok"]:
            out.append(Check(f"readiness {model}", OK, verdict))
            continue
        out.append(
            Check(
                f"readiness {model}",
                WARN,
                f"{verdict} ({need})",
                "collect more farmer feedback (`agroml pull`), or lower AGROML_MIN_TOTAL / AGROML_MIN_PER_CLASS",
            )
        )
    return out


# --- settings and the Supabase key ----------------------------------------------------------------
def settings_rows(settings: Settings) -> list[dict[str, str]]:
    return [{"name": n, "value": v, "origin": o} for n, v, o in settings.describe()]


def check_settings(settings: Settings) -> Check:
    """Summarize where the settings came from; the table mappings must resolve (a typo fails here)."""

    rows = settings.describe()
    changed = [f"{n} ({o})" for n, _, o in rows if o != "default"]
    for model in MODEL_TYPES:
        try:
            table_spec(model, settings.schema_overrides)
        except ConfigError as exc:
            return Check("settings", FAIL, exc.message, exc.fix or "fix or remove the AGROML_<MODEL>_COL_* setting")
    detail = (
        f"{len(rows)} settings; not default: {', '.join(changed)}" if changed else f"{len(rows)} settings, all defaults"
    )
    return Check("settings", OK, detail)


def check_setting_values(problems: Sequence[config.SettingError]) -> list[Check]:
    """One failed line per setting whose value was refused (its default stands in for the other checks)."""
    return [Check(f"setting {p.env}", FAIL, p.message, p.fix or "") for p in problems]


def check_supabase_key(settings: Settings) -> Check:
    name, key = "supabase key", settings.supabase_key
    var = settings.key_var or "SUPABASE_SERVICE_KEY"
    if not key:
        if settings.source == "supabase":  # auto without a key is simply local
            return Check(
                name,
                WARN,
                "AGROML_SOURCE is supabase but no key is set",
                "set SUPABASE_SERVICE_KEY (the service-role key) in the environment or .env",
            )
        return Check(name, OK, "not configured (local only)")
    where = f"from {var} ({mask_secret(key)})"
    role = key_role(key)
    if role is None:
        return Check(
            name,
            WARN,
            f"key {where}: cannot read its role (neither a JWT nor an sb_ key)",
            f"check that {var} holds the service-role key from the Supabase dashboard",
        )
    if role == "anon":
        return Check(
            name,
            WARN,
            f"anon key {where}: row-level security shows only a farmer's own rows; use the service-role key",
            "set SUPABASE_SERVICE_KEY to the service-role key",
        )
    if role != "service_role":
        return Check(
            name,
            WARN,
            f"key {where} has role {role!r}, not service_role",
            "set SUPABASE_SERVICE_KEY to the service-role key",
        )
    exp = (jwt_payload(key) or {}).get("exp")
    if isinstance(exp, int | float) and exp < datetime.now(UTC).timestamp():
        when = datetime.fromtimestamp(exp, UTC).date().isoformat()
        return Check(
            name, FAIL, f"service_role key {where} expired on {when}", f"copy a current service-role key into {var}"
        )
    url = "" if settings.supabase_url else "; SUPABASE_URL is not set"
    return Check(
        name,
        WARN if url else OK,
        f"service_role key {where}{url}",
        "set SUPABASE_URL to https://<ref>.supabase.co" if url else "",
    )


def check_online(settings: Settings, offline: bool) -> list[Check]:
    """Reachability, tables, columns and one image: the Supabase source's own checks, when it has them."""
    name = "supabase online"
    if offline:
        return [Check(name, OK, "skipped (--offline)")]
    if not (settings.supabase_url and settings.supabase_key):
        return [Check(name, OK, "skipped (Supabase not configured)")]
    return online_checks(settings)


# --- ImageNet weights ------------------------------------------------------------------------------
def keras_model_dirs() -> list[Path]:
    """Where Keras keeps downloaded weights, found as Keras finds it (keras.src.backend.config, file_utils).

    $KERAS_HOME, else ~/.keras (or /tmp/.keras when home is not writable); downloads fall back to
    /tmp/.keras when that folder exists but is not writable.
    """
    home = os.environ.get("KERAS_HOME")
    if not home:
        user = os.path.expanduser("~")
        home = os.path.join(user if os.access(user, os.W_OK) else "/tmp", ".keras")
    dirs = [Path(home) / "models"]
    if Path(home).exists() and not os.access(home, os.W_OK):
        dirs.append(Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / ".keras" / "models")
    return dirs


def check_weights() -> list[Check]:
    dirs = keras_model_dirs()
    out = []
    for backbone, pattern in WEIGHT_FILES.items():
        hits = [p for d in dirs if d.is_dir() for p in sorted(d.glob(pattern)) if p.stat().st_size > 0]
        if hits:
            out.append(Check(f"weights {backbone}", OK, f"ImageNet weights cached: {hits[0]}"))
        else:
            out.append(
                Check(
                    f"weights {backbone}",
                    WARN,
                    f"ImageNet weights not cached in {dirs[0]}",
                    "run once online, or train with --weights PATH / --weights none",
                )
            )
    return out


# --- running them ----------------------------------------------------------------------------------
def _guarded(name: str, fn: Callable[[], Check | Sequence[Check]]) -> list[Check]:
    try:
        result = fn()
    except Exception as exc:  # one broken check must not hide the others
        return [
            Check(
                name,
                FAIL,
                f"check crashed: {type(exc).__name__}: {exc}",
                "report this as an agroml bug (AGROML_DEBUG=1 shows the traceback)",
            )
        ]
    return [result] if isinstance(result, Check) else list(result)


def _redact(checks: list[Check], secrets: Iterable[str | None]) -> list[Check]:
    """Replace any secret a check quoted (a crash message, a URL with the key) with its masked form."""
    known = [s for s in secrets if s is not None and len(s) >= 8]
    for check in checks:
        for secret in known:
            check.detail = check.detail.replace(secret, mask_secret(secret))
            check.fix = check.fix.replace(secret, mask_secret(secret))
    return checks


def environment_checks() -> list[Check]:
    """The checks that need no settings: Python, packages, TensorFlow, cached weights."""
    checks: list[Check] = []
    checks += _guarded("python", check_python)
    checks += _guarded("packages", check_packages)
    checks += _guarded("tensorflow", check_tensorflow)
    checks += _guarded("weights", check_weights)
    return checks


def run_checks(settings: Settings, offline: bool = False, problems: Sequence[config.SettingError] = ()) -> list[Check]:
    """Every check, in the order a person fixes things: environment, folders, settings, data, Supabase.

    ``problems`` are the settings :func:`agroml.core.config.resolve_all` refused: each is a failed line.
    """
    checks = environment_checks()
    folder = "a writable folder"
    folders = [
        ("data", Path(settings.data_dir), "AGROML_DATA_DIR", folder),
        ("models", Path(settings.models_dir), "AGROML_MODELS_DIR", folder),
        ("exports", Path(settings.exports_dir), "AGROML_EXPORTS_DIR", folder),
    ]
    # the store and the image cache live in data/ unless their own settings move them elsewhere
    data = Path(settings.data_dir).absolute()
    if Path(settings.db_path).absolute().parent != data:
        folders.append(("store", Path(settings.db_path).parent, "AGROML_DB", "a file in a writable folder"))
    if not Path(settings.image_dir).absolute().is_relative_to(data):
        folders.append(("image cache", Path(settings.image_dir), "AGROML_IMAGE_DIR", folder))
    for label, path, env, target in folders:
        checks += _guarded(f"{label} folder", partial(check_folder, label, path, env, target))
    checks += _guarded("disk", lambda: check_disk(settings))
    checks += _guarded("settings", lambda: check_settings(settings))
    checks += check_setting_values(problems)
    counts: dict[str, Any] | None = None

    def store() -> Check:
        nonlocal counts
        check, counts = check_store(settings)
        return check

    checks += _guarded("store", store)
    checks += _guarded("readiness", lambda: check_readiness(settings, counts))
    checks += _guarded("supabase key", lambda: check_supabase_key(settings))
    checks += _guarded("supabase online", lambda: check_online(settings, offline))
    return _redact(checks, [settings.supabase_key, settings.hash_salt, settings.api_token])


def diagnose(
    overrides: dict[str, Any] | None = None,
    offline: bool = False,
    env_file: str | Path | None = ".env",
    environ: dict[str, str] | None = None,
) -> Report:
    """Resolve the settings and run every check; a broken setting is a failed check, not a crash.

    Doctor is where people go when the settings are wrong, so every bad value (AGROML_PAGE_SIZE=abc,
    AGROML_IMAGE_MAX_MB=-1) shows up as its own failed line, and the other checks still run with that
    setting's default in its place.
    """

    try:
        settings, problems = config.resolve_all(overrides, environ=environ, env_file=env_file)
    except ConfigError as exc:
        checks = [Check("settings", FAIL, exc.message, exc.fix or "fix the setting in the environment or .env")]
        return Report(checks=environment_checks() + checks)
    return Report(checks=run_checks(settings, offline, problems), settings=settings_rows(settings))


# --- online (Supabase) checks ---------------------------------------------------------------------------------------
_IMAGE_FIXES = {
    "host_not_allowed": "add the image host to AGROML_IMAGE_HOSTS",
    "private_address": "add the host to AGROML_IMAGE_HOSTS if it is yours",
    "no_base_url": "set AGROML_IMAGE_BASE_URL to the host that served /uploads/...",
    "not_found": "check the bucket (AGROML_IMAGE_BUCKET) and that the object exists",
    "forbidden": KEY_FIX,
    "unreachable": "check the image host's name and this machine's network",
}


def online_checks(settings: Settings) -> list[Any]:
    """``agroml doctor``'s Supabase checks: REST reachable and key accepted, each table with its mapped
    columns (selected with limit=1), one image downloaded and decoded (nothing stored).

    Retries are cut to 10 s and each request to 10 s, so doctor answers quickly on a dead network.
    """
    quick = replace(
        settings, retry_max_seconds=min(settings.retry_max_seconds, 10.0), http_timeout=min(settings.http_timeout, 10.0)
    )
    try:
        source = SupabaseSource(quick)
    except AgromlError as exc:
        return [Check("supabase", FAIL, exc.message, exc.fix or "")]
    with source:
        try:
            source.probe_table(MODEL_TYPES[0])
        except SourceError as exc:
            if isinstance(exc, UnreachableError) or "network" in exc.message:
                return [
                    Check(
                        "supabase rest",
                        FAIL,
                        f"cannot reach {settings.supabase_url}: {exc.message}",
                        "check SUPABASE_URL and the network",
                    )
                ]
        except ConfigError as exc:
            if exc.message.startswith("Supabase rejected the key"):
                return [
                    Check("supabase rest", OK, f"{settings.supabase_url} answers"),
                    Check("supabase key", FAIL, exc.message, exc.fix or ""),
                ]
        checks = [Check("supabase rest", OK, f"{settings.supabase_url} answers")]
        if source.role == "anon":
            checks.append(
                Check("supabase key", WARN, "anon key: row-level security hides other farmers' rows", KEY_FIX)
            )
        else:
            checks.append(Check("supabase key", OK, f"key accepted (role {source.role or 'unknown'})"))
        for mt in MODEL_TYPES:
            spec = source.spec(mt)
            try:
                source.probe_table(mt)
            except AgromlError as exc:
                checks.append(Check(f"table {mt}", FAIL, exc.message, exc.fix or ""))
            else:
                checks.append(
                    Check(f"table {mt}", OK, f"{spec.table}: all {len(spec.select_columns())} mapped columns present")
                )
        try:
            url = source.first_image_url()
        except AgromlError:
            url = None  # the table checks above already say what is wrong
    if url is None:
        return [*checks, Check("image", WARN, "no row with an image URL to try", "")]
    reason, detail = probe_image(url, quick)
    if reason is None:
        return [*checks, Check("image", OK, f"downloaded and decoded one image ({detail})")]
    return [
        *checks,
        Check(
            "image",
            FAIL,
            f"{url}: {reason}: {detail}",
            _IMAGE_FIXES.get(reason, "check that image URL and AGROML_IMAGE_HOSTS"),
        ),
    ]
