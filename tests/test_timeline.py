"""`agroml stats --by month|week`: the feedback series, checked against plain SQL on the store, with
deployments marked from the registry (or promote's markers), and where the deployed model is wrong."""

from __future__ import annotations

import itertools
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agroml.data import records as rec
from agroml.data.confusion import wilson
from agroml.data.store import Store
from agroml.lifecycle.registry import Registry

# Africa/Nairobi has kept UTC+3 since 1960: its local month in SQL is the UTC time plus 3 hours.
LOCAL_MONTH = "strftime('%Y-%m', created_at / 1000000 + 3 * 3600, 'unixepoch')"
# The label rules of reference/agroshield-schema.md, from the raw columns (not agroml's derived ones).
# (IS / IS NOT: SQL's NULL-safe comparisons, so every predicate is true or false, never NULL)
CORRECTED = "user_confirmed IS NOT NULL AND actual_label IS NOT NULL AND actual_label IS NOT predicted_label"
CONFIRMED = f"user_confirmed IS 1 AND NOT ({CORRECTED})"
REJECTED = f"user_confirmed IS 0 AND NOT ({CORRECTED})"


def sql_months(db: Path) -> dict[tuple[str, str], dict[str, int]]:
    """{(model, month): counts} straight from data/agroml.db with sqlite3."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            f"SELECT model_type, {LOCAL_MONTH}, sum(invalid_reason IS NULL),"
            f" sum(invalid_reason IS NULL AND {CONFIRMED}), sum(invalid_reason IS NULL AND {CORRECTED}),"
            f" sum(invalid_reason IS NULL AND {REJECTED}),"
            " sum(invalid_reason IS NOT NULL) FROM predictions GROUP BY 1, 2"
        ).fetchall()
        per_class = con.execute(
            f"SELECT model_type, {LOCAL_MONTH}, predicted_label, sum({CONFIRMED}),"
            f" sum(({CONFIRMED}) OR ({CORRECTED}) OR ({REJECTED})) FROM predictions WHERE invalid_reason IS NULL"
            " GROUP BY 1, 2, 3"
        ).fetchall()
    finally:
        con.close()
    out: dict[tuple[str, str], dict] = {}
    for model, month, valid, confirmed, corrected, rejected, invalid in rows:
        out[(model, month)] = {
            "predictions": valid,
            "confirmed": confirmed,
            "corrected": corrected,
            "rejected": rejected,
            "trainable": confirmed + corrected,
            "invalid": invalid,
            "classes": {},
        }
    for model, month, label, confirmed, answered in per_class:
        if answered:
            out[(model, month)]["classes"][label] = (confirmed, answered)
    return out


def test_stats_by_month_json_matches_plain_sql_on_the_demo(cli, demo_store):
    result = cli("stats", "--by", "month", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    expected = sql_months(Path("data/agroml.db"))
    assert report["by"] == "month" and report["timezone"] == "Africa/Nairobi"
    seen = set()
    for model, block in report["models"].items():
        months = [p["period"] for p in block["periods"]]
        assert len(months) > 12, "the demo spans more than a year"
        assert months == sorted(months) and len(set(months)) == len(months)
        for p in block["periods"]:
            want = expected.get((model, p["period"]))
            if want is None:  # a gap inside the span: shown, as zeros
                assert p["predictions"] == p["answered"] == p["trainable"] == 0 and p["feedback_accuracy"] is None
                continue
            seen.add((model, p["period"]))
            got = {k: p[k] for k in ("predictions", "confirmed", "corrected", "rejected", "trainable", "invalid")}
            assert got == {k: v for k, v in want.items() if k != "classes"}, (model, p["period"])
            answered = want["confirmed"] + want["corrected"] + want["rejected"]
            assert p["answered"] == answered
            assert p["feedback_rate"] == pytest.approx(answered / want["predictions"])
            if answered:
                assert p["feedback_accuracy"] == pytest.approx(want["confirmed"] / answered)
                assert p["ci_low"] <= p["feedback_accuracy"] <= p["ci_high"]
            classes = {c: (v["confirmed"], v["answered"]) for c, v in p["classes"].items()}
            assert classes == want["classes"], (model, p["period"])
    assert seen == set(expected), "every month with rows is in the series"


def test_wilson_interval_matches_published_values_and_stays_inside_0_1():
    # Wilson 95% score intervals as published (Newcombe 1998, Stat Med 17:857, table II: 15/148, 0/10)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(0, 0) is None
    # the interval narrows as answers accumulate: a month of 8 answers is not a crisis
    assert wilson(4, 8)[1] - wilson(4, 8)[0] > 2 * (wilson(400, 800)[1] - wilson(400, 800)[0])


def test_weeks_add_up_to_the_months_and_run_without_gaps(cli, demo_store):
    months = json.loads(cli("stats", "--by", "month", "--model", "pest", "--json").stdout)["models"]["pest"]
    weeks = json.loads(cli("stats", "--by", "week", "--model", "pest", "--json").stdout)["models"]["pest"]
    for key in ("predictions", "confirmed", "corrected", "rejected", "trainable"):
        assert sum(p[key] for p in weeks["periods"]) == sum(p[key] for p in months["periods"]) > 0
    starts = [datetime.fromisoformat(p["start"]) for p in weeks["periods"]]
    assert all(s.weekday() == 0 for s in starts)  # ISO weeks start on Monday
    assert all((b - a).days == 7 for a, b in itertools.pairwise(starts))
    for p in weeks["periods"]:
        year, week, _ = datetime.fromisoformat(p["start"]).isocalendar()
        assert p["period"] == f"{year}-W{week:02d}"


def _promote_at(models: Path, model: str, run_id: str, when: datetime, previous: str | None = None) -> None:
    """A promotion recorded by the registry, then dated ``when`` (promote records the current time)."""
    with Registry(models) as registry:
        registry.record_promotion(model, run_id, previous, models / model / "production")
        registry.con.execute("UPDATE promotions SET promoted_at = ? WHERE run_id = ?", (when.timestamp(), run_id))
        registry.con.commit()


def test_the_periods_in_which_a_production_model_went_live_are_marked(cli, demo_store, tmp_path):
    models = Path("models")
    _promote_at(models, "pest", "run-a", datetime(2024, 6, 30, 22, 0, tzinfo=UTC))  # 1 July in Nairobi
    _promote_at(models, "pest", "run-b", datetime(2025, 3, 15, 9, 0, tzinfo=UTC), previous="run-a")
    _promote_at(models, "pest", "run-later", datetime(2026, 11, 1, tzinfo=UTC), previous="run-b")
    plot = tmp_path / "charts" / "feedback.png"
    result = cli("stats", "--by", "month", "--model", "pest", "--plot", plot, "--json")
    assert result.exit_code == 0, result.output
    block = json.loads(result.stdout)["models"]["pest"]
    marked = {p["period"]: [d["run_id"] for d in p["deployments"]] for p in block["periods"] if p["deployments"]}
    assert marked == {"2024-07": ["run-a"], "2025-03": ["run-b"]}  # the month in farm local time
    assert [(d["run_id"], d["period"]) for d in block["deployments"]] == [
        ("run-a", "2024-07"),
        ("run-b", "2025-03"),
        ("run-later", "2026-11"),  # after the last row: listed, not in a period
    ]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(plot) as image:
        assert image.size[0] >= 800 and image.size[1] >= 500
    text = cli("stats", "--by", "month", "--model", "pest")
    assert text.exit_code == 0 and "run-a" in text.stdout and "run-later went live 2026-11-01" in text.stdout


def test_without_a_registry_the_deployments_come_from_the_promoted_markers(cli, demo_store):
    """A models folder copied from another machine (no registry.db): production/ and archive/ markers."""
    for folder, run, when in (
        ("production", "run-new", "2025-02-01T10:00:00Z"),
        ("archive/run-old", "run-old", "2024-09-10T10:00:00Z"),
    ):
        path = Path("models/pest") / folder
        path.mkdir(parents=True)
        (path / "PROMOTED.json").write_text(json.dumps({"run_id": run, "model_type": "pest", "promoted_at": when}))
    Path("models/pest/archive/broken").mkdir()
    (Path("models/pest/archive/broken") / "PROMOTED.json").write_text("{not json")
    result = cli("stats", "--by", "month", "--model", "pest", "--json")
    assert result.exit_code == 0, result.output
    block = json.loads(result.stdout)["models"]["pest"]
    found = [(d["run_id"], d["period"]) for d in block["deployments"]]
    assert found == [("run-old", "2024-09"), ("run-new", "2025-02")]
    assert "PROMOTED.json markers" in result.stderr
    assert not Path("models/registry.db").exists(), "reading deployments creates no registry"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--by", "year"], 2, "year"),
        (["--by", "month", "--timezone", "Mars/Olympus"], 2, "IANA time zone"),
        (["--by", "month", "--plot", "."], 2, "directory"),
    ],
)
def test_bad_series_options_are_refused_clearly(cli, demo_store, args, code, message):
    result = cli("stats", *args)
    assert result.exit_code == code
    assert message in result.output.replace("\n", " ")


def test_the_plot_alone_means_the_monthly_series(cli, demo_store):
    result = cli("stats", "--model", "storage", "--plot", "s.png", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["by"] == "month" and Path("s.png").stat().st_size > 10_000


# --- where the deployed model is wrong ----------------------------------------------------------------
HOSTILE = "[bold]Nyeri[/]<script>"  # Rich markup and HTML: shown as written, read as neither
# id, crop, location, predicted, user_confirmed, actual
WRONG_ROWS = [
    ("w1", "maize", "Molo", "aphids", True, None),
    ("w2", "maize", "Molo", "aphids", False, "fall_armyworm"),
    ("w3", "maize", "Molo", "aphids", False, "fall_armyworm"),
    ("w4", "maize", HOSTILE, "stem_borer", False, "fall_armyworm"),
    ("w5", "maize", HOSTILE, "stem_borer", False, None),  # rejected: counts against, no pair
    ("w6", "beans", HOSTILE, "aphids", True, None),
    ("w7", "beans", "Molo", "aphids", True, None),
    ("w8", None, None, "leaf_miner", False, "aphids"),  # no crop, no location: "unknown", kept
    ("w9", "beans", "Molo", "aphids", None, None),  # no feedback: not in any of it
]


@pytest.fixture
def wrong_store(workdir):
    rows = [
        dict(
            id=i,
            source="test",
            model_type="pest",
            image_url=f"test://{i}.jpg",
            predicted_label=p,
            confidence=0.8,
            user_confirmed=c,
            actual_label=a,
            crop=crop,
            location=loc,
            created_at="2025-03-10T08:00:00Z",
        )
        for i, crop, loc, p, c, a in WRONG_ROWS
    ]
    with Store(Path("data/agroml.db")) as store:
        store.upsert(rec.make_records(rows))


def test_where_wrong_counts_per_crop_and_region_and_ranks_the_confused_pairs(cli, wrong_store):
    result = cli("stats", "--model", "pest", "--json")
    assert result.exit_code == 0, result.output
    wrong = json.loads(result.stdout)["models"]["pest"]["where_wrong"]
    assert (wrong["answered"], wrong["confirmed"], wrong["corrected"], wrong["rejected"]) == (8, 3, 4, 1)
    assert wrong["most_confused"] == [
        {"predicted": "aphids", "actual": "fall_armyworm", "n": 2},
        {"predicted": "leaf_miner", "actual": "aphids", "n": 1},
        {"predicted": "stem_borer", "actual": "fall_armyworm", "n": 1},
    ]
    crops = {b["key"]: b for b in wrong["by_crop"]}
    assert set(crops) == {"maize", "beans", "unknown"}
    assert (crops["maize"]["answered"], crops["maize"]["confirmed"], crops["maize"]["rejected"]) == (5, 1, 1)
    assert crops["maize"]["confusion"] == [
        {"predicted": "aphids", "actual": "fall_armyworm", "n": 2},
        {"predicted": "aphids", "actual": "aphids", "n": 1},  # the diagonal: confirmations
        {"predicted": "stem_borer", "actual": "fall_armyworm", "n": 1},
    ]
    assert [b["key"] for b in wrong["by_crop"]] == ["unknown", "maize", "beans"]  # worst accuracy first
    regions = {b["key"]: b for b in wrong["by_region"]}
    assert (regions[HOSTILE]["answered"], regions[HOSTILE]["confirmed"]) == (3, 1)
    lo, hi = regions[HOSTILE]["ci_low"], regions[HOSTILE]["ci_high"]
    assert (lo, hi) == pytest.approx(wilson(1, 3))

    dist = json.loads(cli("distribution", "--model", "pest", "--json").stdout)
    assert dist["where_wrong"] == wrong, "distribution and stats say the same"
    text = cli("stats", "--model", "pest")
    assert text.exit_code == 0
    assert HOSTILE in text.stdout, "a farm location is shown as written, never read as markup"
    assert "aphids" in text.stdout and "fall_armyworm" in text.stdout and "most confused" in text.stdout
