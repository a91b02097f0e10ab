"""The promotion gate: the challenger and the production model (the champion), measured on the same rows.

Why the same rows, and why only rows neither trained on: each run's own test figures come from
different rows (its own split), so comparing them compares the rows as much as the models, and a row
either model trained on flatters that model. The gate takes every row of the store that is in neither
run's train nor val split (their held-out rows, plus every row newer than both runs' data), predicts
it with both models, and computes both sets of figures with :func:`compute_metrics` over the union of
their classes (a class one model does not know counts as never predicted by it).

Rules (settings, defaults in ``.env.example``): the challenger's macro F1 is at least the champion's
plus ``gate_min_f1_gain`` (0: not worse); its accuracy is at most ``gate_max_accuracy_drop`` below the
champion's; no class present in the rows has a recall more than ``gate_max_recall_drop`` below the
champion's (a class that collapses blocks promotion even when accuracy rises). With fewer than
``gate_min_rows`` rows (default 30) the figures are too rough to decide on, and the gate refuses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agroml.core.config import Settings
from agroml.core.progress import ProgressFn, no_progress
from agroml.data.store import Store
from agroml.images.cache import ImageCache
from agroml.lifecycle.evaluation import measurable
from agroml.lifecycle.metrics import compute_metrics
from agroml.lifecycle.predicting import SavedModel, load_saved_model, predict_files

#: Float slack for "not worse": two models that agree on every row must pass a 0 margin.
_EPS = 1e-9


@dataclass
class Comparison:
    """The side-by-side: rows compared, both models' figures, each rule with its verdict."""

    rows: int
    champion: dict[str, Any]
    challenger: dict[str, Any]
    rules: list[dict[str, Any]]
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(rule["passed"] for rule in self.rules)

    @property
    def failed(self) -> list[str]:
        """One line per failed rule, e.g. ``recall of aphid fell 0.45 (at most 0.10 allowed)``."""
        return [rule["detail"] for rule in self.rules if not rule["passed"]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "champion": self.champion,
            "challenger": self.challenger,
            "rules": self.rules,
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "warnings": self.warnings,
        }


def _used_keys(folder: Path) -> set[str]:
    """The row keys a run trained or early-stopped on (split.json's train and val); empty if it has none."""
    try:
        split = json.loads((folder / "split.json").read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(split, dict):
        return set()
    return {str(i) for name in ("train", "val") for i in (split.get(name) or [])}


def comparison_rows(
    settings: Settings, model_type: str, folders: list[Path], classes: list[str], skipped: dict[str, int]
) -> tuple[list[Path], np.ndarray]:
    """(image files, class indices into ``classes``) of the rows no folder in ``folders`` trained on.

    split.json ids are ``<id>`` or ``<source>:<id>`` depending on the agroml that wrote them, so a
    row counts as used when either spelling is in a run's train or val split.
    """
    if not Path(settings.db_path).is_file():
        skipped["no local store (AGROML_DB): nothing to compare on"] = 1
        return [], np.zeros(0, dtype=np.int64)
    used: set[str] = set()
    for folder in folders:
        used |= _used_keys(folder)
    with Store(settings.db_path, create=False) as store:
        frame = store.read(model_type, columns=["source", "id", "label", "image_hash", "image_url", "invalid_reason"])
    index = {c: i for i, c in enumerate(classes)}
    files: list[Path] = []
    labels: list[int] = []
    with ImageCache(settings.image_dir) as cache:
        for row in frame.itertuples(index=False):
            if str(row.id) in used or f"{row.source}:{row.id}" in used:
                continue
            path, reason = measurable(cache, row, index, "label known to neither model")
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            files.append(path)  # type: ignore[arg-type]
            labels.append(index[row.label])
    return files, np.asarray(labels, dtype=np.int64)


def _union_probs(saved: SavedModel, probs: np.ndarray, classes: list[str]) -> np.ndarray:
    """``probs`` in the column order of ``classes`` (a class the model lacks gets probability 0)."""
    out = np.zeros((probs.shape[0], len(classes)))
    for j, name in enumerate(saved.classes):
        out[:, classes.index(name)] = probs[:, j]
    return out


def _figures(run_id: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "recall": {name: row["recall"] for name, row in metrics["per_class"].items() if row["support"] > 0},
    }


def judge(champion: dict[str, Any], challenger: dict[str, Any], rows: int, settings: Settings) -> list[dict[str, Any]]:
    """Each rule of the gate with its verdict and a one-line detail (pure: figures in, verdicts out)."""
    if rows < settings.gate_min_rows:
        return [
            {
                "rule": "rows",
                "passed": False,
                "detail": f"only {rows} row(s) that neither model trained on, {settings.gate_min_rows} needed "
                "(AGROML_GATE_MIN_ROWS) to compare them",
            }
        ]
    rules = []
    gain = settings.gate_min_f1_gain
    need = champion["macro_f1"] + gain
    rules.append(
        {
            "rule": "macro_f1",
            "passed": challenger["macro_f1"] >= need - _EPS,
            "detail": f"macro F1 {challenger['macro_f1']:.3f} vs {champion['macro_f1']:.3f}"
            + (f" (+{gain:g} required, AGROML_GATE_MIN_F1_GAIN)" if gain else " (must not be lower)"),
        }
    )
    drop = settings.gate_max_accuracy_drop
    rules.append(
        {
            "rule": "accuracy",
            "passed": challenger["accuracy"] >= champion["accuracy"] - drop - _EPS,
            "detail": f"accuracy {challenger['accuracy']:.3f} vs {champion['accuracy']:.3f} "
            f"(at most {drop:g} lower allowed, AGROML_GATE_MAX_ACCURACY_DROP)",
        }
    )
    max_drop = settings.gate_max_recall_drop
    for name, before in champion["recall"].items():
        after = challenger["recall"].get(name, 0.0)
        rules.append(
            {
                "rule": f"recall:{name}",
                "passed": after >= before - max_drop - _EPS,
                "detail": f"recall of {name} {after:.3f} vs {before:.3f} "
                f"(at most {max_drop:g} lower allowed, AGROML_GATE_MAX_RECALL_DROP)",
            }
        )
    return rules


def compare(
    settings: Settings,
    model_type: str,
    challenger: Path,
    champion: Path,
    *,
    batch_size: int = 32,
    progress: ProgressFn = no_progress,
) -> Comparison:
    """Measure both models on the rows neither trained on and apply the gate's rules."""
    new, old = load_saved_model(challenger), load_saved_model(champion)
    classes = [*new.classes, *(c for c in old.classes if c not in new.classes)]
    skipped: dict[str, int] = {}
    warnings = [
        f"{folder} has no split.json: the rows it trained on cannot be told apart, so they count as unseen"
        for folder in (challenger, champion)
        if not (folder / "split.json").is_file()
    ]
    files, y = comparison_rows(settings, model_type, [challenger, champion], classes, skipped)
    figures = []
    ok = np.ones(len(files), dtype=bool)
    probs_by_model = []
    for saved in (old, new):
        probs, readable, _, errors = predict_files(saved, files, batch_size=batch_size, progress=progress)
        full = np.zeros((len(files), len(saved.classes)))
        full[readable] = probs
        probs_by_model.append((saved, full))
        ok &= readable
        for reason, count in errors.items():
            skipped[reason] = max(skipped.get(reason, 0), count)
    rows = int(ok.sum())
    for saved, full in probs_by_model:
        if rows:
            figures.append(
                _figures(saved.run_id, compute_metrics(y[ok], _union_probs(saved, full[ok], classes), classes))
            )
        else:
            figures.append({"run_id": saved.run_id, "accuracy": None, "macro_f1": None, "recall": {}})
    champion_figures, challenger_figures = figures
    rules = judge(champion_figures, challenger_figures, rows, settings)
    return Comparison(rows, champion_figures, challenger_figures, rules, skipped, warnings)
