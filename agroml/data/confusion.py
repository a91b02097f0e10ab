"""Where the deployed model is wrong, from farmers' answers: per crop, per region, and the most confused pairs.

Why from answers: a farmer who corrects a prediction tells us both what the model said and what the
photo shows, so (predicted, farmer's answer) pairs are the deployed model's confusion matrix as far as
the field knows it; confirmations are its diagonal. A rejection without an answer says "wrong" but not
what instead: it counts against the accuracy of its crop and region, never in a pair.

Folded a chunk at a time (:class:`WrongFolder`), so ``stats`` and ``distribution`` add it to a pass
they already make (or one cheap pass of five columns) and memory stays flat. Rows without a crop or
location are counted under "unknown", never dropped. Every accuracy carries its Wilson 95% interval:
a region with 6 answers is not a finding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from agroml.data import records as rec

#: The record columns the fold reads.
COLUMNS: tuple[str, ...] = ("predicted_label", "feedback", "label", "crop", "location")
#: The bucket for rows without a crop or location (the same word ``distribution`` uses).
UNKNOWN = "unknown"
#: The z of a two-sided 95% interval.
Z95 = 1.959963984540054
_ANSWERED = (rec.CONFIRMED, rec.CORRECTED, rec.REJECTED)
_KEYS = ["crop", "region", "predicted_label", "feedback", "label"]


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes / trials`` (None without trials).

    Why Wilson and not p +- z*sqrt(p(1-p)/n): the normal interval collapses to a point at 0 or 100%
    and leaves [0, 1] for small n, exactly the months and regions where a reader needs to see the
    uncertainty; Wilson's stays inside [0, 1] and is honest at n = 5.
    """
    if trials <= 0:
        return None
    p = successes / trials
    denom = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def accuracy_block(confirmed: int, answered: int) -> dict[str, Any]:
    """``{"answered", "confirmed", "feedback_accuracy", "ci_low", "ci_high"}`` (None without answers)."""
    ci = wilson(confirmed, answered)
    return {
        "answered": int(answered),
        "confirmed": int(confirmed),
        "feedback_accuracy": confirmed / answered if answered else None,
        "ci_low": None if ci is None else ci[0],
        "ci_high": None if ci is None else ci[1],
    }


def _pairs(frame: pd.DataFrame, off_diagonal: bool) -> list[dict[str, Any]]:
    """[{"predicted", "actual", "n"}] of labelled rows, most frequent first (ties by name)."""
    labelled = frame[frame["label"] != ""]
    if off_diagonal:
        labelled = labelled[labelled["label"] != labelled["predicted_label"]]
    if labelled.empty:
        return []
    sums = labelled.groupby(["predicted_label", "label"])["n"].sum()
    ranked = sorted(((int(n), str(p), str(a)) for (p, a), n in sums.items()), key=lambda t: (-t[0], t[1], t[2]))
    return [{"predicted": p, "actual": a, "n": n} for n, p, a in ranked]


class WrongFolder:
    """Counts per (crop, region, predicted, feedback, training label), a chunk at a time; :meth:`result` at the end."""

    def __init__(self) -> None:
        self._parts: list[pd.DataFrame] = []

    def add(self, chunk: pd.DataFrame) -> None:
        """Fold VALID records (the caller leaves invalid ones out) with at least :data:`COLUMNS`."""
        if chunk.empty:
            return
        frame = pd.DataFrame(
            {
                "crop": chunk["crop"].astype(object).where(chunk["crop"].notna(), UNKNOWN),
                "region": chunk["location"].astype(object).where(chunk["location"].notna(), UNKNOWN),
                "predicted_label": chunk["predicted_label"].astype(object).fillna(""),
                "feedback": chunk["feedback"].astype(object).fillna(rec.NO_FEEDBACK),
                "label": chunk["label"].astype(object).where(chunk["label"].notna(), ""),
            }
        )
        frame = frame[frame["feedback"].isin(_ANSWERED)]
        if not frame.empty:
            self._parts.append(frame.groupby(_KEYS, sort=False).size().reset_index(name="n"))

    def result(self, top: int = 10) -> dict[str, Any]:
        """The ``where_wrong`` block (see :func:`where_wrong`)."""
        if self._parts:
            groups = pd.concat(self._parts, ignore_index=True).groupby(_KEYS, sort=False)["n"].sum().reset_index()
        else:
            groups = pd.DataFrame({k: pd.Series([], dtype=object) for k in _KEYS} | {"n": pd.Series([], dtype="int64")})
        counts = {f: int(groups.loc[groups["feedback"] == f, "n"].sum()) for f in _ANSWERED}
        return {
            **accuracy_block(counts[rec.CONFIRMED], sum(counts.values())),
            "corrected": counts[rec.CORRECTED],
            "rejected": counts[rec.REJECTED],
            "most_confused": _pairs(groups, off_diagonal=True)[:top],
            "by_crop": _breakdown(groups, "crop", top),
            "by_region": _breakdown(groups, "region", top),
        }


def _breakdown(groups: pd.DataFrame, key: str, top: int) -> list[dict[str, Any]]:
    """Per value of ``key`` (crop or region): accuracy with its interval, the sparse confusion, the worst pairs."""
    out = []
    for value, part in groups.groupby(key, sort=False):
        by_feedback = part.groupby("feedback")["n"].sum()
        answered = int(by_feedback.sum())
        confirmed = int(by_feedback.get(rec.CONFIRMED, 0))
        out.append(
            {
                "key": str(value),
                **accuracy_block(confirmed, answered),
                "corrected": int(by_feedback.get(rec.CORRECTED, 0)),
                "rejected": int(by_feedback.get(rec.REJECTED, 0)),
                # (predicted, answer, n) incl. the diagonal: this crop's / region's confusion matrix, sparse
                "confusion": _pairs(part, off_diagonal=False),
                "most_confused": _pairs(part, off_diagonal=True)[:top],
            }
        )
    # worst first: the lowest accuracy among the places with answers, most answers first on a tie
    return sorted(out, key=lambda b: (b["feedback_accuracy"], -b["answered"], b["key"]))


def where_wrong(chunks: Iterable[pd.DataFrame], top: int = 10) -> dict[str, Any]:
    """Where the deployed model is wrong, from VALID record chunks (columns :data:`COLUMNS` at least).

    Returns ``{"answered", "confirmed", "feedback_accuracy", "ci_low", "ci_high", "corrected",
    "rejected", "most_confused": [{"predicted", "actual", "n"}] (corrections only, top ``top``),
    "by_crop" / "by_region": [{"key", <the same accuracy fields>, "corrected", "rejected",
    "confusion" (sparse, with the diagonal), "most_confused"}] worst accuracy first}``.
    """
    folder = WrongFolder()
    for chunk in chunks:
        folder.add(chunk)
    return folder.result(top)


__all__ = ["COLUMNS", "UNKNOWN", "WrongFolder", "accuracy_block", "where_wrong", "wilson"]
