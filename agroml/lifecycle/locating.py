"""Finding runs: which folder a run reference names, and which model type and run id a folder records.

A reference is a run id, ``production``, a path to a run folder (or its model.keras), or nothing (the
newest succeeded run). Whatever names it, a run's model type is its own: the ``model_type`` in its
config.json (written by `agroml train`), else its registry row, else the ``models/<type>/`` folder it
sits in. A ``--model`` flag that says otherwise is refused (exit 2, naming both types) instead of
evaluating a pest model on disease rows or promoting it as the disease model.

Why a module of its own: evaluation and prediction find runs, and promotion evaluates (its gate), so
finding must sit below both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agroml.core.errors import ModelNotFoundError, UsageError
from agroml.core.schema import MODEL_TYPES
from agroml.lifecycle.registry import Registry

PRODUCTION = "production"
ARCHIVE = "archive"
#: Marker written into a promoted folder: which run it is, so the next promotion can archive it by name.
PROMOTED_FILE = "PROMOTED.json"
_HINT = "list runs with `agroml runs`"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def folder_run_id(folder: Path) -> str:
    """A model folder's run id: from its promotion marker, its config.json, else the folder name."""
    for name in (PROMOTED_FILE, "config.json"):
        value = _read_json(folder / name).get("run_id")
        if value:
            return str(value)
    return folder.name


def recorded_model_type(folder: Path, registry: Registry) -> str | None:
    """The model type ``folder`` was trained as: config.json's ``model_type`` (a production copy's
    PROMOTED.json too), else its registry row, else the ``<models>/<type>/`` folder it is in; None if
    nothing says (a folder from elsewhere)."""
    for name in ("config.json", PROMOTED_FILE):
        value = _read_json(folder / name).get("model_type")
        if isinstance(value, str) and value:
            return value
    run = registry.by_path(folder)
    if run is not None:
        return run.model_type
    models = registry.models_dir.resolve()
    here = folder.resolve()
    for parent in (here.parent, here.parent.parent):  # <type>/<run>, <type>/archive/<run>
        if parent.parent == models and parent.name in MODEL_TYPES:
            return parent.name
    return None


def _wrong_type(folder: Path, actual: str, wanted: str) -> UsageError:
    return UsageError(f"run {folder_run_id(folder)} is a {actual} model, not {wanted}", fix=f"use --model {actual}")


def _find(registry: Registry, model_type: str, ref: str | Path | None) -> Path:
    """The folder ``ref`` names for ``model_type`` (or a mismatch error when it names another type's run)."""
    if ref is None:
        run = registry.latest(model_type)
        if run is None:
            raise ModelNotFoundError(
                f"no succeeded {model_type} run to use",
                fix=f"train one with `agroml train --model {model_type}`, or {_HINT}",
            )
        return Path(run.path)  # type: ignore[arg-type]
    ref_s = str(ref)
    if ref_s == PRODUCTION:
        folder = registry.models_dir / model_type / PRODUCTION
        if not (folder / "model.keras").is_file():
            raise ModelNotFoundError(
                f"no production {model_type} model in {folder}",
                fix=f"promote a run with `agroml promote RUN_ID --model {model_type}`; {_HINT}",
            )
        return folder
    as_path = Path(ref_s)
    if (as_path / "model.keras").is_file():
        return as_path
    if as_path.name == "model.keras" and as_path.is_file():
        return as_path.parent
    folder = registry.models_dir / model_type / ref_s
    if (folder / "model.keras").is_file():
        return folder
    run = registry.get(ref_s, model_type)
    if run is not None and run.path and (Path(run.path) / "model.keras").is_file():
        return Path(run.path)
    if run is not None:
        raise ModelNotFoundError(
            f"run {ref_s!r} ({run.state}) has no saved model", fix=f"pick a succeeded run: {_HINT}"
        )
    other = registry.get(ref_s)  # a run id of another model type?
    if other is not None:
        raise UsageError(
            f"run {ref_s} is a {other.model_type} model, not {model_type}", fix=f"use --model {other.model_type}"
        )
    for other_type in MODEL_TYPES:
        folder = registry.models_dir / other_type / ref_s
        if other_type != model_type and (folder / "model.keras").is_file():
            raise _wrong_type(folder, recorded_model_type(folder, registry) or other_type, model_type)
    raise ModelNotFoundError(f"no {model_type} run, production model or model folder named {ref_s!r}", fix=_HINT)


def locate(registry: Registry, model_type: str, ref: str | Path | None = None) -> tuple[Path, str | None]:
    """(folder, the model type it records) of a saved model; a run of another type is a UsageError (exit 2)."""
    folder = _find(registry, model_type, ref)
    recorded = recorded_model_type(folder, registry)
    if recorded is not None and recorded != model_type:
        raise _wrong_type(folder, recorded, model_type)
    return folder, recorded


def resolve_run(registry: Registry, model_type: str, ref: str | Path | None = None) -> Path:
    """The folder of a saved ``model_type`` model: a run id, ``production``, a path, or (None) the newest
    succeeded run. A run of another model type is refused naming both types (``--model`` must match)."""
    return locate(registry, model_type, ref)[0]
