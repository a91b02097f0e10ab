"""Classification metrics, pure numpy: what training writes to metrics.json and evaluation reports.

Why its own module: one definition of every figure (top-k for integer labels, macro F1 over the
classes present, ECE). Training (on its held-out splits) and evaluation (on rows a model never saw)
both call :func:`compute_metrics`, checked against hand-computed cases in the tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agroml.core.errors import NotEnoughDataError, UsageError

ECE_BINS = 10


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, top-3, macro F1, per-class precision/recall/F1/support, confusion matrix, ECE, n.

    ``y_true`` holds integer class indices into ``class_names``; ``probs`` is (n, k) with one column
    per class. Top-k uses k = min(3, number of classes) and counts a row right when its true class is
    among the k highest probabilities (ties broken by class order). Macro F1 averages the classes that
    occur in the truth or the predictions (a class neither present nor predicted has no F1 to speak of;
    this is scikit-learn's default). ECE: confidence = top probability, 10 equal-width bins (lo, hi],
    sum over bins of (rows in bin / n) * |accuracy in bin - mean confidence in bin|.
    """
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if p.ndim != 2 or p.shape[0] != y.shape[0] or p.shape[1] != k:
        raise UsageError(f"probabilities of shape {p.shape} do not match {y.shape[0]} labels and {k} classes")
    n = int(y.shape[0])
    if n == 0:
        raise NotEnoughDataError("no rows to evaluate")
    if y.min() < 0 or y.max() >= k:
        raise UsageError(f"label index {int(y.max() if y.max() >= k else y.min())} is outside the {k} classes")

    pred = p.argmax(axis=1)
    topk = min(3, k)
    ranked = np.argsort(-p, axis=1, kind="stable")[:, :topk]
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)

    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = (support > 0) | (predicted > 0)

    confidence = p.max(axis=1)
    correct = pred == y
    bins = np.clip(np.ceil(confidence * ECE_BINS).astype(np.int64) - 1, 0, ECE_BINS - 1)
    ece = 0.0
    for b in range(ECE_BINS):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())

    return {
        "n": n,
        "accuracy": float(correct.mean()),
        "top3_accuracy": float((ranked == y[:, None]).any(axis=1).mean()),
        "top_k": topk,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "ece": float(ece),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }
