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
from collections import Counter
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


#: One group of answered rows: (crop, region, predicted, feedback, training label or "").
WrongKey = tuple[str, str, str, str, str]


def _pairs(groups: Iterable[tuple[WrongKey, int]], off_diagonal: bool) -> list[dict[str, Any]]:
    """[{"predicted", "actual", "n"}] of labelled rows, most frequent first (ties by name)."""
    sums: Counter[tuple[str, str]] = Counter()
    for (_, _, predicted, _, label), n in groups:
        if label and not (off_diagonal and label == predicted):
            sums[(predicted, label)] += n
    ranked = sorted(((n, p, a) for (p, a), n in sums.items()), key=lambda t: (-t[0], t[1], t[2]))
    return [{"predicted": p, "actual": a, "n": n} for n, p, a in ranked]


class WrongFolder:
    """Counts per (crop, region, predicted, feedback, training label), a chunk at a time; :meth:`result` at the end.

    Why plain counters and not a frame: the groups are few (crops x regions x class pairs), and
    :meth:`result` slices them dozens of ways; a pandas groupby per slice cost ~1 s per ``stats``
    call on a 150-row store, a loop over a few hundred tuples costs a millisecond.
    """

    def __init__(self) -> None:
        self.counts: Counter[WrongKey] = Counter()

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
            self.add_counts(frame.groupby(_KEYS, sort=False).size().items())

    def add_counts(self, groups: Iterable[tuple[WrongKey, int]]) -> None:
        """Fold groups already counted (``Store.wrong_counts``: SQLite's GROUP BY), keys as :meth:`add` makes them."""
        for key, n in groups:
            crop, region, predicted, feedback, label = (str(v) for v in key)
            self.counts[(crop, region, predicted, feedback, label)] += int(n)

    def result(self, top: int = 10) -> dict[str, Any]:
        """The ``where_wrong`` block (see :func:`where_wrong`)."""
        groups = list(self.counts.items())
        by_feedback: Counter[str] = Counter()
        for key, n in groups:
            by_feedback[key[3]] += n
        return {
            **accuracy_block(by_feedback[rec.CONFIRMED], sum(by_feedback[f] for f in _ANSWERED)),
            "corrected": by_feedback[rec.CORRECTED],
            "rejected": by_feedback[rec.REJECTED],
            "most_confused": _pairs(groups, off_diagonal=True)[:top],
            "by_crop": _breakdown(groups, 0, top),
            "by_region": _breakdown(groups, 1, top),
        }


def _breakdown(groups: list[tuple[WrongKey, int]], position: int, top: int) -> list[dict[str, Any]]:
    """Per crop (``position`` 0) or region (1): accuracy with its interval, the sparse confusion, the worst pairs."""
    parts: dict[str, list[tuple[WrongKey, int]]] = {}
    for key, n in groups:
        parts.setdefault(key[position], []).append((key, n))
    out = []
    for value, part in parts.items():
        by_feedback: Counter[str] = Counter()
        for key, n in part:
            by_feedback[key[3]] += n
        out.append(
            {
                "key": value,
                **accuracy_block(by_feedback[rec.CONFIRMED], sum(by_feedback.values())),
                "corrected": by_feedback[rec.CORRECTED],
                "rejected": by_feedback[rec.REJECTED],
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


__all__ = ["COLUMNS", "UNKNOWN", "WrongFolder", "WrongKey", "accuracy_block", "where_wrong", "wilson"]
