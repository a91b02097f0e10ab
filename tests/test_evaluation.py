"""compute_metrics on hand-computed cases; `agroml evaluate` on a real saved model and a real store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from model_helpers import add_rows, write_run

from agroml.core import config
from agroml.core.errors import NotEnoughDataError, UsageError
from agroml.lifecycle.evaluation import evaluate
from agroml.lifecycle.metrics import compute_metrics

# --- compute_metrics: every figure below was worked out by hand -------------------------------------
HAND_Y = np.array([0, 0, 1, 1, 2, 3])
HAND_P = np.array(
    [
        [0.70, 0.10, 0.10, 0.10],  # true a, predicted a (right), conf .7
        [0.10, 0.60, 0.20, 0.10],  # true a, predicted b; a is 3rd: top-3 right
        [0.05, 0.90, 0.03, 0.02],  # true b, right, conf .9
        [0.50, 0.10, 0.20, 0.20],  # true b, predicted a; b is last: top-3 wrong
        [0.10, 0.10, 0.40, 0.40],  # true c, tie c/d broken by class order: c (right), conf .4
        [0.30, 0.30, 0.35, 0.05],  # true d, predicted c; d is last: top-3 wrong, conf .35
    ]
)


def test_hand_case_accuracy_top3_confusion():
    m = compute_metrics(HAND_Y, HAND_P, ["a", "b", "c", "d"])
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["top_k"] == 3
    assert m["top3_accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]]


def test_hand_case_per_class_and_macro_f1():
    m = compute_metrics(HAND_Y, HAND_P, ["a", "b", "c", "d"])
    pc = m["per_class"]
    assert pc["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert pc["d"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1})
    assert m["macro_f1"] == pytest.approx((0.5 + 0.5 + 2 / 3 + 0.0) / 4)


def test_hand_case_ece():
    # bins (lo, hi]: .7->(.6,.7] right; .6->(.5,.6] wrong; .9->(.8,.9] right; .5->(.4,.5] wrong;
    # .4 and .35 share (.3,.4]: accuracy 1/2, confidence .375
    expected = (abs(1 - 0.7) + abs(0 - 0.6) + abs(1 - 0.9) + abs(0 - 0.5)) / 6 + (2 / 6) * abs(0.5 - 0.375)
    assert compute_metrics(HAND_Y, HAND_P, ["a", "b", "c", "d"])["ece"] == pytest.approx(expected)


def test_top_k_shrinks_with_few_classes_and_integer_labels_are_used_as_indices():
    y = np.array([1, 0, 1])
    p = np.array([[0.2, 0.8], [0.9, 0.1], [0.6, 0.4]])
    m = compute_metrics(y, p, ["x", "y"])
    assert m["top_k"] == 2 and m["top3_accuracy"] == 1.0
    assert m["accuracy"] == pytest.approx(2 / 3)
    # confidences .8 in (.7,.8] right, .9 in (.8,.9] right, .6 in (.5,.6] wrong: one row per bin
    assert m["ece"] == pytest.approx((abs(1 - 0.8) + abs(1 - 0.9) + abs(0 - 0.6)) / 3)


def test_class_never_seen_nor_predicted_is_left_out_of_macro_f1():
    m = compute_metrics(np.array([0, 1]), np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]]), ["a", "b", "c"])
    assert m["macro_f1"] == 1.0
    assert m["per_class"]["c"]["support"] == 0


def test_bad_inputs_are_refused():
    with pytest.raises(UsageError, match="do not match"):
        compute_metrics(np.array([0, 1]), np.ones((2, 3)) / 3, ["a", "b"])
    with pytest.raises(UsageError, match="outside the 2 classes"):
        compute_metrics(np.array([0, 2]), np.ones((2, 2)) / 2, ["a", "b"])
    with pytest.raises(NotEnoughDataError):
        compute_metrics(np.array([], dtype=int), np.zeros((0, 2)), ["a", "b"])


# --- evaluate a saved model ---------------------------------------------------------------------------
CLASSES = ["red", "green", "blue"]


@pytest.fixture
def evaluated_run(workdir: Path):
    """A store whose train rows are deliberately mislabelled (the model gets them all wrong) and whose
    val/test rows are right: an evaluation that touched a training row cannot score 1.0."""
    settings = config.resolve(env_file=None)
    wrong = {"red": "green", "green": "blue", "blue": "red"}
    train = add_rows(settings, "pest", [(f"tr{c}{i}", c, wrong[c]) for c in CLASSES for i in range(4)])
    val = add_rows(settings, "pest", [(f"va{c}", c, c) for c in CLASSES], start=datetime(2026, 2, 1, tzinfo=UTC))
    test = add_rows(
        settings,
        "pest",
        [(f"te{c}{i}", c, c) for c in CLASSES for i in range(3)],
        start=datetime(2026, 3, 1, tzinfo=UTC),
    )
    folder = write_run(settings.models_dir, "pest", "run1", CLASSES, {"train": train, "val": val, "test": test})
    return settings, folder, train, test


def test_evaluate_uses_exactly_the_test_split(evaluated_run):
    settings, folder, _train, test = evaluated_run
    result = evaluate(settings, "pest", "run1")
    split = json.loads((folder / "split.json").read_text())
    assert sorted(result.evaluated_ids) == sorted(split["test"]) == sorted(test)
    assert not set(result.evaluated_ids) & set(split["train"])
    assert result.rows == "test" and result.skipped == {}
    m = result.metrics
    assert (m["n"], m["accuracy"], m["macro_f1"]) == (9, 1.0, 1.0)
    assert m["confusion_matrix"] == [[3, 0, 0], [0, 3, 0], [0, 0, 3]]
    assert result.latency_ms["p50"] > 0 and result.latency_ms["p95"] >= result.latency_ms["p50"]
    assert result.model_size_bytes == (folder / "model.keras").stat().st_size
    out = Path(result.out_dir)
    assert out.parent == folder and out.name.startswith("eval_")
    assert json.loads((out / "metrics.json").read_text())["metrics"]["accuracy"] == 1.0
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "predictions.csv").read_text().splitlines()) == 10
    by_path = evaluate(settings, "pest", str(folder), out=out.parent / "by_path")  # a folder works as well
    assert by_path.evaluated_ids == result.evaluated_ids and by_path.run_id == "run1"


def test_evaluate_newer_rows_only(evaluated_run):
    settings, _folder, _train, _test = evaluated_run
    newer = add_rows(
        settings,
        "pest",
        [("new-red", "red", "red"), ("new-blue", "blue", "green")],
        start=datetime(2026, 4, 1, tzinfo=UTC),
    )
    result = evaluate(settings, "pest", "run1", newer=True)
    assert sorted(result.evaluated_ids) == sorted(newer)
    assert result.rows == "newer" and result.metrics["accuracy"] == 0.5


def test_evaluate_counts_rows_it_cannot_use(evaluated_run, workdir):
    settings, _folder, _train, test = evaluated_run
    # a test row whose image file got damaged, and one relabelled to a class the model does not know
    from agroml.data.store import Store

    with Store(settings.db_path) as store:
        frame = store.read("pest")
    damaged = frame.loc[frame["id"] == test[0], "image_hash"].item()
    next(settings.image_dir.glob(f"*/{damaged}.*")).write_bytes(b"not a png any more")
    add_rows(settings, "pest", [(test[1], "cyan", "cyan")], start=datetime(2026, 3, 1, tzinfo=UTC))
    result = evaluate(settings, "pest", "run1")
    assert result.skipped == {"label not in the model's classes": 1, "unreadable image": 1}
    assert result.metrics["n"] == 7 and len(result.evaluated_ids) == 7
    assert "1 row(s) left out: unreadable image" in result.warnings


def test_evaluate_cli_json_and_default_run(evaluated_run, cli, tmp_path):
    result = cli("evaluate", "--model", "pest", "--json", "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run_id"] == "run1" and data["metrics"]["accuracy"] == 1.0
    assert set(data["metrics"]) >= {"accuracy", "top3_accuracy", "macro_f1", "per_class", "confusion_matrix", "ece"}
    assert set(data["latency_ms"]) >= {"p50", "p95"} and data["model_size_bytes"] > 0
    assert (tmp_path / "report" / "confusion_matrix.png").is_file()


def test_evaluate_cli_table(evaluated_run, cli):
    result = cli("evaluate", "run1", "--model", "pest")
    assert result.exit_code == 0, result.output
    assert "run run1 on 9 test rows: accuracy 1.000" in result.stdout
    assert "confusion matrix" in result.stdout and "precision" in result.stdout
    assert cli("promote", "run1").exit_code == 0
    prod = cli("evaluate", "production", "--json")
    assert prod.exit_code == 0, prod.output
    data = json.loads(prod.stdout)
    assert data["run_id"] == "run1" and data["model_path"] == "models/pest/production"
    assert data["metrics"]["n"] == 9 and data["out_dir"].startswith("models/pest/production/eval_")


def test_evaluate_unknown_run_says_how_to_find_runs(evaluated_run, cli):
    result = cli("evaluate", "nope", "--model", "pest")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: no pest run, production model or model folder named 'nope' (list runs with `agroml runs`)"
    )


def test_evaluate_without_split_file_refuses(evaluated_run):
    settings, folder, *_ = evaluated_run
    (folder / "split.json").unlink()
    from agroml.core.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="cannot tell which rows the model never trained on"):
        evaluate(settings, "pest", "run1")


# --- plots ---------------------------------------------------------------------------------------------
def test_plots_write_pngs_atomically(tmp_path):
    from agroml.lifecycle.plots import confusion_matrix_png, training_curves_png

    cm = confusion_matrix_png(
        [[5, 1, 0], [2, 7, 1], [0, 0, 9]], ["fall_armyworm", "aphids", "stem_borer"], tmp_path / "cm.png"
    )
    history = {
        "loss": [1.2, 0.8, 0.6, 0.5, 0.4],
        "val_loss": [1.1, 0.9, 0.7, 0.65, 0.6],
        "accuracy": [0.4, 0.6, 0.75, 0.8, 0.85],
        "val_accuracy": [0.45, 0.6, 0.7, 0.74, 0.78],
        "phase": [1, 1, 1, 2, 2],
    }
    curves = training_curves_png(history, tmp_path / "curves.png")
    for png in (cm, curves):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "curves.png"]  # no temp file left


# --- end to end with the real `agroml train` -----------------------------------------------------------
@pytest.mark.e2e
def test_train_then_evaluate_reproduces_its_test_metrics_and_predicts(cli, demo_data, monkeypatch):
    from model_helpers import TRAIN_ARGS, has_train_command

    from agroml.lifecycle.predicting import predict

    if not has_train_command():
        pytest.skip("`agroml train` is not registered in this build")
    monkeypatch.setenv("AGROML_MIN_TOTAL", "10")
    monkeypatch.setenv("AGROML_MIN_PER_CLASS", "3")
    trained = cli(*TRAIN_ARGS, "--json")
    assert trained.exit_code == 0, trained.output
    run = json.loads(trained.stdout)
    folder = Path(run["path"])
    split = json.loads((folder / "split.json").read_text())

    result = evaluate(demo_data, "pest", run["run_id"])
    assert sorted(result.evaluated_ids) == sorted(split["test"])
    assert not set(result.evaluated_ids) & set(split["train"]) and not set(result.evaluated_ids) & set(split["val"])
    recorded = json.loads((folder / "metrics.json").read_text())["test"]
    # same rows, same decode and resize, same model: the figures training wrote are reproduced
    for key in ("n", "accuracy", "top3_accuracy", "macro_f1", "confusion_matrix"):
        assert result.metrics[key] == recorded[key], key
    assert result.metrics["ece"] == pytest.approx(recorded["ece"], abs=1e-4)

    classes = json.loads((folder / "labels.json").read_text())
    classes = classes["classes"] if isinstance(classes, dict) else classes
    from agroml.data.store import Store
    from agroml.images.cache import ImageCache

    with Store(demo_data.db_path) as store:
        frame = store.read("pest")
    image_hash = frame.loc[frame["id"] == split["test"][0], "image_hash"].item()
    image = ImageCache(demo_data.image_dir).find(image_hash)
    answer = predict(demo_data, "pest", [str(image)], ref=run["run_id"], top=2)
    assert answer.failed == 0 and len(answer.predictions[0].top) == 2
    assert {t["label"] for t in answer.predictions[0].top} <= set(classes)


def test_empty_test_split_and_inconsistent_folder_are_clear_errors(evaluated_run):
    from agroml.core.errors import ModelNotFoundError

    settings, folder, train, _test = evaluated_run
    (folder / "split.json").write_text(json.dumps({"train": train, "val": [], "test": []}))
    with pytest.raises(NotEnoughDataError) as err:
        evaluate(settings, "pest", "run1")
    assert str(err.value) == (
        "no rows of its test split to evaluate run1 on (none found) "
        "(check the image cache and the store (`agroml stats`))"
    )
    (folder / "labels.json").write_text(json.dumps(["red", "green"]))  # the model has 3 outputs
    with pytest.raises(ModelNotFoundError, match=r"has 3 outputs but labels\.json names 2 classes"):
        evaluate(settings, "pest", "run1")
