"""Optional MLflow tracking: a finished run's settings, per-epoch and test metrics and files, and the
registered model's ``production`` alias on promotion.

On only when MLFLOW_TRACKING_URI is set in the environment (MLflow's own variable; not read from .env,
as MLflow does not) AND the mlflow package is installed (``pip install 'agroml[mlflow]'``). Otherwise
every function here returns at once and mlflow is never imported, so a plain install pays nothing.

Why after the run, from the run folder, and not from a Keras callback: the run folder is the record
(config.json, history.csv, metrics.json), so MLflow gets exactly what the folder holds, the training
loop stays free of it, and a tracking server that is down or slow cannot stop or corrupt a training:
any failure here becomes a warning and the run stays saved and registered locally.

What goes where, per run (an MLflow run named by the agroml run id, tag ``agroml.run_id``, in the
experiment ``agroml-<type>``, or MLFLOW_EXPERIMENT_NAME when set):
- params: config.json flattened (``augmentation.zoom``), long values cut to 500 characters;
- metrics: every history.csv column per epoch (step = the epoch across phases), then ``val_*`` and
  ``test_*`` figures of metrics.json and ``test_f1.<class>`` (step 0);
- artifacts: every file of the run folder (model, plots, MODEL_CARD.md, tensorboard/...);
- a new version of the registered model ``agroml-<type>`` whose source is the run's artifacts, tagged
  ``agroml_run_id``; `agroml promote` points that model's ``production`` alias at it.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
ALIAS = "production"
RUN_TAG = "agroml.run_id"
VERSION_TAG = "agroml_run_id"
#: Figures of metrics.json logged per split (the confusion matrix and class names are in the artifacts).
FIGURES = ("accuracy", "macro_f1", "top3_accuracy", "ece", "n")
_BATCH = 900  # MLflow's log_batch takes at most 1,000 metrics and 100 params per call
_PARAM_LEN = 500


def registered_model(model_type: str) -> str:
    return f"agroml-{model_type}"


def tracking_uri() -> str | None:
    return os.environ.get(URI_ENV) or None


def installed() -> bool:
    """Whether mlflow can be imported, without importing it (find_spec reads the path only)."""
    try:
        return importlib.util.find_spec("mlflow") is not None
    except ValueError:  # sys.modules["mlflow"] is None: imports of it are blocked
        return False


def _off_warning() -> list[str]:
    """[] when tracking is off by choice (no URI); a warning when the URI asks for it and mlflow is missing."""
    if tracking_uri() and not installed():
        return [f"{URI_ENV} is set but mlflow is not installed: not tracked (pip install 'agroml[mlflow]')"]
    return []


def _failed(what: str, exc: BaseException) -> list[str]:
    first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:300]
    return [f"MLflow tracking at {tracking_uri()} failed ({what}): {first}; the local run and registry are unaffected"]


def log_run(folder: Path) -> list[str]:
    """Log the finished run in ``folder`` to MLflow when tracking is on; returns warnings (never raises)."""
    if not (tracking_uri() and installed()):
        return _off_warning()
    try:
        _log_run(Path(folder))
    except Exception as exc:  # a server that is down, refuses or times out: the run itself succeeded
        return _failed(f"logging run {Path(folder).name}", exc)
    return []


def set_production_alias(model_type: str, run_id: str) -> list[str]:
    """Point ``agroml-<type>``'s ``production`` alias at ``run_id``'s model version; returns warnings."""
    if not (tracking_uri() and installed()):
        return _off_warning()
    try:
        with _quiet_mlflow():
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri())
            name = registered_model(model_type)
            versions = [
                v for v in client.search_model_versions(f"name='{name}'") if (v.tags or {}).get(VERSION_TAG) == run_id
            ]
            if not versions:
                return [
                    f"run {run_id} is not in MLflow's registered model {name} (trained before tracking was on?): "
                    f"its {ALIAS} alias is unchanged"
                ]
            newest = max(versions, key=lambda v: int(v.version))
            client.set_registered_model_alias(name, ALIAS, newest.version)
    except Exception as exc:
        return _failed(f"setting the {ALIAS} alias of {run_id}", exc)
    return []


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow logs INFO lines ("Creating a new experiment") to stderr: the library's output is its result."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _log_run(folder: Path) -> None:
    with _quiet_mlflow():
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        config = _read_json(folder / "config.json")
        run_id = str(config.get("run_id") or folder.name)
        model_type = str(config.get("model_type") or folder.parent.name)
        client = MlflowClient(tracking_uri())
        experiment_name = os.environ.get(EXPERIMENT_ENV) or f"agroml-{model_type}"
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
        tags = {RUN_TAG: run_id, "agroml.model_type": model_type, "agroml.path": str(folder)}
        run = client.create_run(experiment_id, run_name=run_id, tags=tags)
        mlflow_run = run.info.run_id
        try:
            params = [Param(k, _param_text(v)) for k, v in _flatten(config).items()]
            metrics = [Metric(k, v, ts, step) for k, v, ts, step in _metrics(folder)]
            for i in range(0, len(params), 100):
                client.log_batch(mlflow_run, params=params[i : i + 100])
            for i in range(0, len(metrics), _BATCH):
                client.log_batch(mlflow_run, metrics=metrics[i : i + _BATCH])
            client.log_artifacts(mlflow_run, str(folder))
            name = registered_model(model_type)
            if not client.search_registered_models(f"name='{name}'"):
                client.create_registered_model(name, tags={"agroml.model_type": model_type})
            client.create_model_version(
                name, source=run.info.artifact_uri, run_id=mlflow_run, tags={VERSION_TAG: run_id}
            )
        except BaseException:
            client.set_terminated(mlflow_run, "FAILED")
            raise
        client.set_terminated(mlflow_run, "FINISHED")


def _metrics(folder: Path) -> Iterator[tuple[str, float, int, int]]:
    """(key, value, timestamp ms, step): history.csv per epoch, then metrics.json's val / test figures."""
    now = int(time.time() * 1000)
    history = folder / "history.csv"
    if history.is_file():
        with history.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                step = int(row.get("epoch") or 0)
                for key, text in row.items():
                    value = _number(text)
                    if key not in ("epoch", "phase") and value is not None:
                        yield _key(key), value, now, step
    figures = _read_json(folder / "metrics.json")
    for split in ("val", "test"):
        split_figures = figures.get(split) or {}
        for name in FIGURES:
            value = _number(split_figures.get(name))
            if value is not None:
                yield f"{split}_{name}", value, now, 0
        if split == "test":
            for cls, row in (split_figures.get("per_class") or {}).items():
                value = _number((row or {}).get("f1"))
                if value is not None:
                    yield f"test_f1.{_key(cls)}", value, now, 0


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[_key(f"{prefix}{key}")] = value
    return out


def _key(name: str) -> str:
    """MLflow keys take letters, digits, ``_ - . / `` and spaces: anything else becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", str(name))[:250]


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:_PARAM_LEN]


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
