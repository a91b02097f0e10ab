"""`agroml runs --compare`: two or more runs side by side, read from their run folders.

What is compared, and against what: every run against the FIRST one named (the baseline), so "rows
more" and "rows added" read as "what this run has that the baseline had not".
- settings: the keys of config.json that differ between the runs, nested ones flattened
  (``augmentation.rotation_turns``). Keys that say what a run IS rather than how it was asked to train
  are left out and listed in :data:`NOT_SETTINGS`: the run id and the package versions always differ
  and are not a choice; the data keys (fingerprint, counts, classes, class weights...) are the data
  section's; ``train_cache`` is a memory-budget decision made at run time; ``schedule`` records how epochs, batch size
  and learning rate were chosen (their values are the top-level keys, compared there) and
  ``feature_store`` what the run reused; ``distribution`` what the strategy resolved to (replicas, the
  global batch: ``strategy``, the setting, is compared) and ``split_sha256`` the split's hash (data).
  Any other key, including
  ones a newer agroml adds, is compared; a key one run does not record (an older agroml) shows as None.
- data: the fingerprint (same rows, labels and images or not), rows per split and in all, and from
  split.json the row ids added and removed against the baseline, and whether the test split is the
  same (only then are test metrics measured on the same images).
- metrics: val and test accuracy, macro F1, top-3, ECE and n from metrics.json; test F1 per class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agroml.core.errors import ModelNotFoundError, UsageError
from agroml.core.schema import MODEL_TYPES
from agroml.lifecycle.promotion import resolve_run
from agroml.lifecycle.registry import Registry

#: config.json keys that are not settings (see the module docstring for why each is left out).
NOT_SETTINGS = (
    "run_id",
    "versions",
    "train_cache",
    "data_fingerprint",
    "counts",
    "classes",
    "class_weights",
    "skipped",
    "dropped_classes",
    "schedule",
    "feature_store",
    "distribution",
    "split_sha256",
)
#: metrics.json figures shown side by side, per split.
METRICS = ("accuracy", "macro_f1", "top3_accuracy", "ece", "n")
SPLITS = ("train", "val", "test")


@dataclass
class RunFolder:
    """One compared run: its id, folder and the three JSON files the comparison reads."""

    run_id: str
    path: Path
    config: dict[str, Any]
    split: dict[str, list[str]]
    metrics: dict[str, Any]


@dataclass
class Comparison:
    """The runs side by side; every list holds one value per run, in the order the runs were named."""

    run_ids: list[str]
    paths: list[str]
    model_types: list[str | None]
    settings: dict[str, list[Any]]  # flattened config key -> values, only the keys that differ
    data: dict[str, Any]
    metrics: dict[str, dict[str, list[Any]]]  # split -> figure -> values
    per_class_f1: dict[str, list[float | None]]  # class -> test F1 (None: the run has no such class)
    versions: dict[str, list[Any]]  # package versions that differ (not settings, shown apart)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The `agroml runs --compare --json` document."""
        return {
            "run_ids": self.run_ids,
            "paths": self.paths,
            "model_types": self.model_types,
            "settings": self.settings,
            "not_compared": list(NOT_SETTINGS),
            "data": self.data,
            "metrics": self.metrics,
            "per_class_f1": self.per_class_f1,
            "versions": self.versions,
        }


def compare_runs(registry: Registry, refs: list[str], model_type: str | None = None) -> Comparison:
    """Compare the runs ``refs`` name (run ids or run folders; ``production`` too with ``model_type``)."""
    if len(refs) < 2:
        raise UsageError(f"--compare needs at least two runs, got {len(refs)}", fix="agroml runs --compare RUN_A RUN_B")
    runs = [read_run(find_run(registry, ref, model_type)) for ref in refs]
    seen: dict[Path, str] = {}
    for ref, run in zip(refs, runs, strict=True):
        if run.path.resolve() in seen:
            raise UsageError(f"{ref} and {seen[run.path.resolve()]} are the same run", fix="name different runs")
        seen[run.path.resolve()] = ref
    types = [_str_or_none(r.config.get("model_type")) for r in runs]
    warnings = []
    if len({t for t in types if t}) > 1:
        warnings.append(f"the runs are of different model types ({', '.join(str(t) for t in types)})")
    for r in runs:
        if not r.metrics:
            warnings.append(f"run {r.run_id} has no readable metrics.json: its metrics show as empty")
    flat = [flatten({k: v for k, v in r.config.items() if k not in NOT_SETTINGS}) for r in runs]
    return Comparison(
        run_ids=[r.run_id for r in runs],
        paths=[str(r.path) for r in runs],
        model_types=types,
        settings=differing(flat),
        data=data_section(runs),
        metrics={s: {m: [(r.metrics.get(s) or {}).get(m) for r in runs] for m in METRICS} for s in ("val", "test")},
        per_class_f1=per_class_f1(runs),
        versions=differing([flatten(r.config.get("versions") or {}) for r in runs]),
        warnings=warnings,
    )


def find_run(registry: Registry, ref: str, model_type: str | None) -> Path:
    """The folder of a run: a run folder's path, a run id of any type, or (with a type) what
    :func:`~agroml.lifecycle.promotion.resolve_run` accepts, ``production`` included."""
    as_path = Path(ref)
    if (as_path / "config.json").is_file():
        return as_path
    if model_type is not None:
        return resolve_run(registry, model_type, ref)
    run = registry.get(ref)
    if run is not None and run.path and Path(run.path).is_dir():
        return Path(run.path)
    for type_ in MODEL_TYPES:
        folder = registry.models_dir / type_ / ref
        if (folder / "config.json").is_file():
            return folder
    if run is not None:
        raise ModelNotFoundError(f"run {ref!r} ({run.state}) left no run folder", fix="pick a succeeded run")
    raise ModelNotFoundError(
        f"no run or run folder named {ref!r}", fix="list runs with `agroml runs`; `production` needs --model"
    )


def read_run(folder: Path) -> RunFolder:
    config = _read_json(folder / "config.json")
    if not config:
        raise ModelNotFoundError(f"{folder} has no readable config.json", fix="name a run folder `agroml train` wrote")
    split = _read_json(folder / "split.json")
    return RunFolder(
        run_id=str(config.get("run_id") or folder.name),
        path=folder,
        config=config,
        split={s: list(split.get(s) or []) for s in SPLITS} if split else {},
        metrics=_read_json(folder / "metrics.json"),
    )


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: ``{"augmentation": {"zoom": 0.1}}`` -> ``{"augmentation.zoom": 0.1}``."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def differing(flat: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Keys whose values are not all equal (a missing key counts as None), in first-seen order."""
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return {k: [f.get(k) for f in flat] for k in keys if any(f.get(k) != flat[0].get(k) for f in flat[1:])}


def data_section(runs: list[RunFolder]) -> dict[str, Any]:
    """Fingerprints, rows per split, and the rows and test split against the first run."""
    base = runs[0]
    base_ids = _all_ids(base)
    rows = [_rows(r) for r in runs]
    fingerprints = [_str_or_none(r.config.get("data_fingerprint")) for r in runs]
    section: dict[str, Any] = {
        "fingerprints": fingerprints,
        "same_data": [fingerprints[0] is not None and f == fingerprints[0] for f in fingerprints],
        "rows": rows,
        "rows_more": [r["total"] - rows[0]["total"] for r in rows],
        "classes": [list(r.config.get("classes") or []) for r in runs],
    }
    if all(r.split for r in runs):
        section["rows_added"] = [len(_all_ids(r) - base_ids) for r in runs]
        section["rows_removed"] = [len(base_ids - _all_ids(r)) for r in runs]
        section["same_test_split"] = [sorted(r.split["test"]) == sorted(base.split["test"]) for r in runs]
    return section


def per_class_f1(runs: list[RunFolder]) -> dict[str, list[float | None]]:
    per_run = [((r.metrics.get("test") or {}).get("per_class") or {}) for r in runs]
    classes = list(dict.fromkeys(c for p in per_run for c in p))
    return {c: [(p[c].get("f1") if c in p else None) for p in per_run] for c in classes}


def _rows(run: RunFolder) -> dict[str, int]:
    """Rows per split: config.json's counts, else split.json's ids (a folder of an older agroml)."""
    counts = run.config.get("counts")
    if isinstance(counts, dict) and counts:
        out = {s: sum((counts.get(s) or {}).values()) for s in SPLITS}
    else:
        out = {s: len(run.split.get(s, [])) for s in SPLITS}
    return {**out, "total": sum(out.values())}


def _all_ids(run: RunFolder) -> set[str]:
    return {i for s in SPLITS for i in run.split.get(s, [])}


def _str_or_none(value: Any) -> str | None:
    return str(value) if value else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
