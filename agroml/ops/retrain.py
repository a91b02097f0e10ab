"""``agroml retrain``: the whole loop, unattended: pull, readiness, new-data check, train, gate, promote, publish.

Why one command: cron and Windows Task Scheduler run one command line and act on its exit code; a
person reads the log afterwards. So every step is decided here, the same way each month:

1. one retrain per model type at a time: a lock file ``models/<type>/.retrain.lock`` (filelock's
   descriptor lock: released by the operating system when the holder dies, even by SIGKILL); a second
   invocation finds it held and stops at once with exit 0, saying which process runs;
2. with Supabase as the source, pull what is new into the store (agroml.ops.snapshot);
3. the deployed model's feedback accuracy (alert when low);
4. readiness (agroml.data.analysis): not ready is "nothing to do", exit 0;
5. new data: the trainable rows (labelled, valid, image in the cache) that the newest successful run
   of the type did not see (its ``split.json``, plus ``retrain_rows.json`` that retrain writes beside it:
   rows left out of the split, e.g. a class below its minimum, are not new next month). Fewer than
   ``min_new``: nothing to do, exit 0. Why the newest successful run and not only the production one:
   a run the gate refused was trained on those rows already; the same rows are not trained twice;
6. train with the production model's recorded config (``--config FILE`` replaces it; with no
   production model, the newest run's, else the defaults), from the store;
7. the gate (agroml.lifecycle.promotion.promote, recorded as command "retrain"): promoted, exit 0;
   refused, exit 3; then publish with ``publish=True``.

Each run writes ``<log_dir>/<UTC time>-<type>.log`` (what it did, each step's figures, the error with
its fix), line by line so a killed run's log says how far it came; logs older than
``AGROML_LOG_RETENTION_DAYS`` are removed. Alerts (agroml.ops.alerts) on failure, refusal and, when
asked, promotion; a webhook that fails is logged and changes nothing else.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from agroml.core import schema
from agroml.core.config import Settings
from agroml.core.errors import AgromlError, NoDataError, RunBusyError, UsageError
from agroml.core.files import json_text, write_json
from agroml.core.progress import NoticeFn, ProgressFn, no_notice, no_progress
from agroml.data.analysis import readiness_verdict, stats_report
from agroml.data.sources import LocalSource
from agroml.images.cache import ImageCache
from agroml.lifecycle.promotion import PRODUCTION, promote
from agroml.lifecycle.publishing import publish as publish_production
from agroml.lifecycle.registry import Registry
from agroml.ops import alerts
from agroml.ops.snapshot import pull_summary, refresh
from agroml.training.config import STRATEGIES, resolve_config
from agroml.training.data import read_labelled_rows
from agroml.training.distributed import writes
from agroml.training.run import train

#: What one model type's retrain came to, and the exit code each maps to (the worst one wins for `all`).
PROMOTED, NOTHING_TO_DO, BUSY, REFUSED, FAILED = "promoted", "nothing_to_do", "busy", "refused", "failed"
#: A non-chief worker of --strategy multiworker: it trained in sync; the chief gates and promotes.
WORKER = "worker"
EXIT_CODES: dict[str, int] = {PROMOTED: 0, NOTHING_TO_DO: 0, BUSY: 0, REFUSED: 3, FAILED: 1, WORKER: 0}
#: Which outcome decides the exit code of a retrain of several types: a failure first, then a refusal.
_SEVERITY = (FAILED, REFUSED, PROMOTED, WORKER, BUSY, NOTHING_TO_DO)
#: The rows a run saw that its split.json does not list (written by retrain into the run folder).
ROWS_FILE = "retrain_rows.json"
LOCK_NAME = ".retrain.lock"
_LOG_NAME = re.compile(r"^\d{8}T\d{6}Z-[a-z]+(-\d+)?\.log$")


@dataclass
class ModelRetrain:
    """One model type's retrain: its outcome, the one-line reason, and the figures behind it."""

    model_type: str
    outcome: str = NOTHING_TO_DO
    reason: str = ""
    log: str | None = None
    run_id: str | None = None
    new_rows: int | None = None
    config_from: str | None = None
    test: dict[str, float] = field(default_factory=dict)
    comparison: dict[str, Any] | None = None
    published: bool = False
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "run_id": self.run_id,
            "new_rows": self.new_rows,
            "config_from": self.config_from,
            "test": self.test,
            "comparison": self.comparison,
            "published": self.published,
            "log": self.log,
            "alerts": self.alerts,
        }


@dataclass
class RetrainResult:
    """Every requested model type's retrain; :attr:`exit_code` is what a scheduler acts on."""

    models: list[ModelRetrain]
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 promoted or nothing to do, 1 a type failed, 3 a type was trained but refused by the gate."""
        outcomes = {m.outcome for m in self.models}
        worst = next((o for o in _SEVERITY if o in outcomes), NOTHING_TO_DO)
        return EXIT_CODES[worst]

    def to_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "models": [m.to_dict() for m in self.models],
            "warnings": self.warnings,
        }


# --- the log file ------------------------------------------------------------------------------------
class RetrainLog:
    """``<log_dir>/<UTC time>-<type>.log``, one timestamped line per write.

    Why appended line by line (each line one ``os.write`` on an O_APPEND descriptor) rather than written
    atomically at the end: the log of a run killed half-way must still say how far it came.
    """

    def __init__(self, log_dir: Path, model_type: str, now: datetime) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        path, n = log_dir / f"{stamp}-{model_type}.log", 1
        while True:  # two runs in the same second (the second one finds the lock held) keep both logs
            try:
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666)
                break
            except FileExistsError:
                n += 1
                path = log_dir / f"{stamp}-{model_type}-{n}.log"
        self.path = path

    def write(self, message: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = "".join(f"{stamp} {line}\n" for line in message.splitlines() or [""])
        os.write(self.fd, text.encode("utf-8"))

    def close(self) -> None:
        os.close(self.fd)


def remove_old_logs(log_dir: Path, days: int, now: datetime) -> int:
    """Remove retrain logs (named as :class:`RetrainLog` names them) older than ``days``; 0 keeps all."""
    if days <= 0 or not log_dir.is_dir():
        return 0
    cutoff = now.timestamp() - days * 86400
    removed = 0
    for path in log_dir.iterdir():
        with suppress(OSError):  # gone meanwhile (another retrain's sweep): nothing to do
            if _LOG_NAME.match(path.name) and path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


# --- one retrain per type at a time -------------------------------------------------------------------
@contextmanager
def type_lock(models_dir: Path, model_type: str) -> Iterator[str | None]:
    """Hold ``models/<type>/.retrain.lock``; yields None when taken, else who holds it (pid and start).

    The holder writes its pid and start time into the file, so the second invocation can say who runs.
    """
    from filelock import lock_descriptor, unlock_descriptor

    folder = models_dir / model_type
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+b") as handle:
        if not lock_descriptor(handle.fileno(), blocking=False):
            holder = "another process"
            with suppress(OSError, ValueError):  # Windows locks the bytes against reading too
                handle.seek(0)
                info = json.loads(handle.read() or b"{}")
                holder = f"pid {info['pid']} on {info['host']}, started {info['started']}"
            yield holder
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": _stamp()}).encode())
            handle.flush()
            yield None
        finally:
            unlock_descriptor(handle.fileno())


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- new data ----------------------------------------------------------------------------------------------
def trainable_ids(settings: Settings, model_type: str) -> set[str]:
    """Ids of the valid, labelled rows of ``model_type`` whose image is in the cache (what training can use)."""
    try:
        rows = read_labelled_rows(settings, model_type)
    except NoDataError:
        return set()
    with ImageCache(settings.image_dir) as cache:
        return {
            str(row_id)
            for row_id, _label, image_hash, url in rows
            if (image_hash and cache.find(image_hash)) or (url and cache.lookup(url))
        }


def seen_ids(folder: Path) -> set[str]:
    """The rows a run saw: its split.json (ids with or without their ``source:`` prefix) and retrain_rows.json."""
    seen: set[str] = set()
    for name in ("split.json", ROWS_FILE):
        with suppress(OSError, ValueError):
            data = json.loads((folder / name).read_text(encoding="utf-8"))
            groups = data.values() if isinstance(data, dict) else []
            for ids in groups:
                if isinstance(ids, list):
                    seen.update(str(i) for i in ids)
    return seen | {i.split(":", 1)[1] for i in seen if ":" in i}


def reference_run(registry: Registry, models_dir: Path, model_type: str) -> Path | None:
    """The folder of the newest successful run of ``model_type`` (else the production copy), or None."""
    latest = registry.latest(model_type)
    if latest is not None and latest.path:
        return Path(latest.path)
    production = models_dir / model_type / PRODUCTION
    return production if (production / "config.json").is_file() else None


# --- the loop ----------------------------------------------------------------------------------------------
def retrain(
    settings: Settings,
    model_type: str,
    *,
    min_new: int = 1,
    config_file: str | Path | None = None,
    publish: bool = False,
    progress: ProgressFn = no_progress,
    notice: NoticeFn = no_notice,
    strategy: str | None = None,
) -> RetrainResult:
    """Retrain ``model_type`` (or ``all``, one type after the other) if there is enough new data.

    Never raises for what goes wrong in a type's loop: the failure is that type's outcome (exit 1), in
    its log, and alerted. Bad arguments (an unknown model type, ``min_new`` < 0) are a UsageError first.
    ``strategy``: the run's --strategy instead of the recorded config's (README, "Several machines").
    """
    types = schema.expand_model_types(model_type)
    if min_new < 0:
        raise UsageError(f"--min-new {min_new} must be 0 or more")
    if strategy is not None and strategy not in STRATEGIES:
        raise UsageError(f"unknown --strategy {strategy!r}", fix="use --strategy " + "|".join(STRATEGIES))
    now = datetime.now(UTC)
    removed = remove_old_logs(Path(settings.log_dir), settings.log_retention_days, now)
    models = [
        _retrain_type(settings, t, min_new, config_file, publish, progress, notice, removed if i == 0 else 0, strategy)
        for i, t in enumerate(types)
    ]
    warnings = [a["warning"] for m in models for a in m.alerts if a.get("warning")]
    return RetrainResult(models, warnings)


def _retrain_type(
    settings: Settings,
    model_type: str,
    min_new: int,
    config_file: str | Path | None,
    publish: bool,
    progress: ProgressFn,
    notice: NoticeFn,
    removed_logs: int,
    strategy: str | None = None,
) -> ModelRetrain:
    out = ModelRetrain(model_type)
    log = RetrainLog(Path(settings.log_dir), model_type, datetime.now(UTC))
    out.log = str(log.path)
    started = time.monotonic()
    try:
        log.write(
            f"agroml {_version()} retrain --model {model_type} on {socket.gethostname()} (pid {os.getpid()}): "
            f"min_new {min_new}, config {config_file or 'the production model`s'}, publish {'yes' if publish else 'no'}"
        )
        if removed_logs:
            log.write(f"removed {removed_logs} retrain logs older than {settings.log_retention_days} days")
        # a non-chief worker writes nothing under models/ (which may be the chief's, shared): no lock
        lock = type_lock(Path(settings.models_dir), model_type) if writes(strategy or "") else nullcontext(None)
        with lock as holder:
            if holder is not None:
                out.outcome, out.reason = BUSY, f"a {model_type} retrain is already running ({holder}): nothing to do"
            else:
                _steps(settings, model_type, min_new, config_file, publish, progress, notice, out, log, strategy)
    except KeyboardInterrupt:
        log.write("interrupted (Ctrl-C or SIGTERM): nothing was promoted")
        log.close()
        raise
    except RunBusyError as exc:  # a manual `agroml train` of this type runs: the next schedule will do it
        out.outcome, out.reason = BUSY, f"{exc.message}: nothing to do"
    except Exception as exc:
        out.outcome, out.reason = FAILED, alerts.failure_text(f"retrain {model_type}", exc)
        log.write(f"error: {exc}")
        if not isinstance(exc, AgromlError):  # a bug, not a condition with a fix: keep what shows where
            log.write(traceback.format_exc().rstrip())
        _alert(settings, alerts.FAILED, out.reason, out, log)
    log.write(f"outcome: {out.outcome} (exit {out.exit_code}) after {time.monotonic() - started:.0f} s: {out.reason}")
    log.close()
    return out


def _steps(
    settings: Settings,
    model_type: str,
    min_new: int,
    config_file: str | Path | None,
    publish: bool,
    progress: ProgressFn,
    notice: NoticeFn,
    out: ModelRetrain,
    log: RetrainLog,
    strategy: str | None = None,
) -> None:
    """The loop for one type under its lock; fills ``out`` and the log, raises on failure."""
    where = settings.effective_source
    log.write(f"source: {where} (AGROML_SOURCE {settings.source}); store {settings.db_path}")
    pulled = refresh(settings, model_type, progress, notice)
    if pulled is not None:
        log.write(pull_summary(pulled))
        for warning in pulled.warnings:
            log.write(f"pull warning: {warning}")

    try:
        with LocalSource(settings) as source:
            low = alerts.feedback_accuracy_text(settings, source, model_type)
            report = stats_report(
                source, [model_type], min_total=settings.min_total, min_per_class=settings.min_per_class
            )
    except NoDataError as exc:
        out.reason = f"not ready: {exc.message}"
        log.write(out.reason)
        return
    if low is not None:
        log.write(f"feedback: {low}")
        _alert(settings, alerts.LOW_FEEDBACK, low, out, log)
    ready = report.models[model_type]["ready"]
    verdict = readiness_verdict(ready)
    log.write(f"data: {verdict} (AGROML_MIN_TOTAL {ready['min_total']}, AGROML_MIN_PER_CLASS {ready['min_per_class']})")
    if not ready["ok"]:
        out.reason = verdict
        return

    models_dir = Path(settings.models_dir)
    with Registry(models_dir) as registry:
        reference = reference_run(registry, models_dir, model_type)
    current = trainable_ids(settings, model_type)
    if reference is not None:
        out.new_rows = len(current - seen_ids(reference))
        log.write(f"new data: {out.new_rows} trainable rows the run {reference.name} did not see (--min-new {min_new})")
        if out.new_rows < min_new:
            out.reason = (
                f"no new data: {out.new_rows} new trainable rows since run {reference.name} (--min-new {min_new})"
            )
            return
    else:
        out.new_rows = len(current)
        log.write(f"new data: no earlier {model_type} run; {out.new_rows} trainable rows")

    cfg, out.config_from = _config(settings, model_type, config_file, models_dir, strategy)
    log.write(f"config: from {out.config_from}: {json_text(_short_config(cfg), indent=None)}")
    result = train(settings, cfg, progress=progress)
    out.run_id = result.run_id
    if result.worker is not None:  # --strategy multiworker, not the chief: it wrote nothing
        out.outcome, out.reason = WORKER, f"trained in sync as {result.worker}; the chief gates and promotes"
        log.write(out.reason)
        return
    write_json(result.path / ROWS_FILE, {"trainable": sorted(current)})
    test = result.metrics.get("test") or {}
    out.test = {k: float(test[k]) for k in ("accuracy", "macro_f1") if k in test}
    counts = {split: sum(n.values()) for split, n in result.counts.items()}
    log.write(
        f"train: run {result.run_id} in {result.seconds:.0f} s on {counts} images; test accuracy "
        f"{out.test.get('accuracy', float('nan')):.3f}, macro F1 {out.test.get('macro_f1', float('nan')):.3f}"
    )
    for warning in result.warnings:
        log.write(f"train warning: {warning}")

    with Registry(models_dir) as registry:
        promotion = promote(
            registry, model_type, result.run_id, settings=settings, command="retrain", progress=progress
        )
    out.comparison = promotion.comparison
    for line in _comparison_lines(promotion.comparison):
        log.write(f"gate: {line}")
    if promotion.refused:
        out.outcome = REFUSED
        out.reason = (
            f"the gate refused run {result.run_id}: {promotion.reason}; production stays {promotion.champion_run_id}"
        )
        log.write(out.reason)
        _alert(settings, alerts.REFUSED, f"retrain {model_type}: {out.reason}", out, log)
        return
    out.outcome = PROMOTED
    first = "" if promotion.champion_run_id else " (the first production model: no gate)"
    out.reason = (
        f"run {result.run_id} promoted to production{first}, replacing {promotion.previous_run_id or 'nothing'}"
    )
    log.write(out.reason)
    if publish:
        _publish(settings, model_type, out, log, progress, notice)
    _alert(settings, alerts.PROMOTED, f"retrain {model_type}: {out.reason}", out, log)


def _config(
    settings: Settings, model_type: str, config_file: str | Path | None, models_dir: Path, strategy: str | None = None
) -> tuple[Any, str]:
    """The new run's TrainConfig and where it came from: --config, the production model, the newest run, defaults.
    ``strategy`` (retrain --strategy) wins over the one recorded."""
    flags = {"model_type": model_type, **({"strategy": strategy} if strategy else {})}
    if config_file is not None:
        return resolve_config(settings, flags, config_file=config_file), f"--config {config_file}"
    production = models_dir / model_type / PRODUCTION
    if (production / "config.json").is_file():
        return resolve_config(settings, flags, like=str(production)), f"the production model ({production})"
    with Registry(models_dir) as registry:
        latest = registry.latest(model_type)
    if latest is not None and latest.path:
        return resolve_config(settings, flags, like=latest.path), f"the newest run {latest.run_id}"
    return resolve_config(settings, flags), "the defaults (no production model or earlier run)"


def _short_config(cfg: Any) -> dict[str, Any]:
    keys = ("arch", "weights", "image_size", "epochs", "fine_tune_epochs", "batch_size", "seed", "min_per_class")
    keys += ("strategy",)  # type: ignore[assignment]
    return {k: getattr(cfg, k) for k in keys if hasattr(cfg, k)}


def _comparison_lines(comparison: dict[str, Any] | None) -> list[str]:
    """The gate's side-by-side as log lines (whatever its shape: the gate owns it)."""
    if not comparison:
        return []
    return [json_text(comparison, indent=None)]


def _publish(
    settings: Settings, model_type: str, out: ModelRetrain, log: RetrainLog, progress: ProgressFn, notice: NoticeFn
) -> None:
    """Upload the new production model (agroml.lifecycle.publishing); a failure is the retrain's failure.

    Why exit 1 then, though the model is promoted here: the backend still serves the old one, which a
    person must know; publishing again (`agroml publish`) finishes it, production.json never half-points.
    """
    with Registry(Path(settings.models_dir)) as registry:
        published = publish_production(settings, registry, model_type, progress=progress, notice=notice)
    out.published = True
    sizes = sum(int(f.get("size", 0)) for f in published.files.values())
    log.write(
        f"publish: {len(published.files)} files ({sizes / 1e6:.1f} MB) to {published.bucket}/{published.prefix}/, "
        f"then {published.production_json} (was {published.previous_run_id or 'none'})"
    )
    for warning in published.warnings:
        log.write(f"publish warning: {warning}")
    out.reason += f"; published to {published.bucket}/{published.prefix}/"


def _alert(settings: Settings, event: str, text: str, out: ModelRetrain, log: RetrainLog) -> None:
    """Send an alert; the log says whether it went (a webhook failure changes nothing else)."""
    alert = alerts.send(settings, event, text)
    if alert is None:
        return
    out.alerts.append(alert.to_dict())
    log.write(f"alert ({event}): {'sent' if alert.sent else alert.warning}")


def _version() -> str:
    try:
        return version("agroml")
    except PackageNotFoundError:
        return "(not installed)"
