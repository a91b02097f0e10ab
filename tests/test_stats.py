"""`agroml stats` and the analysis behind it, on a real SQLite store with hand-counted data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from supa_rows import jpeg

from agroml.core import config
from agroml.data import analysis
from agroml.data import records as rec
from agroml.data.sources import LocalSource
from agroml.data.store import Store
from agroml.images.cache import ImageCache
from agroml.ops import doctor

NO_DATA = "no data: run `agroml demo` or `agroml pull`"

# id, predicted, user_confirmed, actual, created_at (UTC), invalid_reason
PEST_ROWS = [
    ("p1", "aphids", True, None, "2025-03-10T08:00:00Z", None),
    ("p2", "aphids", True, None, "2025-04-10T08:00:00Z", None),
    ("p3", "aphids", True, None, "2025-02-28T22:00:00Z", None),
    ("p4", "aphids", False, "armyworm", "2025-07-01T08:00:00Z", None),  # correction: trainable as armyworm
    ("p5", "aphids", False, None, "2025-07-02T08:00:00Z", None),  # rejected: not trainable, counts as wrong
    ("p6", "aphids", None, None, "2025-10-05T08:00:00Z", None),
    ("p7", "aphids", None, None, "2025-11-05T08:00:00Z", None),
    ("p8", "armyworm", True, None, "2024-06-15T08:00:00Z", None),
    ("p9", "armyworm", True, None, "2024-06-20T08:00:00Z", None),
    ("p10", "armyworm", False, "aphids", "2025-01-15T08:00:00Z", None),
    ("p11", "armyworm", None, None, "2025-12-31T22:30:00Z", None),
    ("p12", "healthy", None, None, "2025-05-20T08:00:00Z", None),
    # invalid rows: confirmed aphids/armyworm that must not show up in any number but "invalid"
    ("x1", "aphids", True, None, "2025-03-11T08:00:00Z", "no_image"),
    ("x2", "aphids", True, None, "2025-03-12T08:00:00Z", "no_image"),
    ("x3", "armyworm", True, None, "2025-03-13T08:00:00Z", "bad_confidence"),
]
DISEASE_ROWS = [
    ("d1", "rust", True, None, "2025-03-10T08:00:00Z", None),
    ("d2", "healthy", True, None, "2025-03-11T08:00:00Z", None),
]


def make(model: str, rows) -> pd.DataFrame:
    return rec.make_records(
        dict(
            id=i,
            source="test",
            model_type=model,
            image_url=None if bad == "no_image" else f"test://{i}.jpg",
            predicted_label=p,
            confidence=0.8,
            user_confirmed=c,
            actual_label=a,
            created_at=t,
            invalid_reason=bad,
        )
        for i, p, c, a, t, bad in rows
    )


@pytest.fixture
def store(workdir: Path) -> config.Settings:
    """The rows above in the store, every image in the cache (indexed by URL, as a fetch leaves it)."""
    settings = config.resolve(env_file=None)
    with Store(settings.db_path) as s:
        s.upsert(make("pest", PEST_ROWS))
        s.upsert(make("disease", DISEASE_ROWS))
    with ImageCache(settings.image_dir) as cache:
        for i, (row_id, *_rest) in enumerate(PEST_ROWS + DISEASE_ROWS):
            cache.put(jpeg(i, size=8), url=f"test://{row_id}.jpg")
    return settings


def stats_json(cli, *args: str) -> dict:
    result = cli("stats", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- numbers ---------------------------------------------------------------------------------------
def test_counts_accuracy_and_classes_are_exact(cli, store):
    pest = stats_json(cli, "--model", "pest")["models"]["pest"]
    assert {k: pest[k] for k in ("total", "confirmed", "corrected", "rejected", "no_feedback", "trainable")} == {
        "total": 12,
        "confirmed": 5,
        "corrected": 2,
        "rejected": 1,
        "no_feedback": 4,
        "trainable": 7,
    }
    assert pest["invalid"] == {"no_image": 2, "bad_confidence": 1}
    assert pest["feedback_rate"] == pytest.approx(8 / 12)
    assert pest["feedback_accuracy"] == pytest.approx(5 / 8)
    assert pest["classes"] == {
        # aphids: 3 confirmed + p10 corrected to aphids; 3 right of 5 answered (p4 corrected, p5 rejected)
        "aphids": {"predicted": 7, "trainable": 4, "feedback_accuracy": pytest.approx(3 / 5)},
        # armyworm: 2 confirmed + p4 corrected to armyworm; 2 right of 3 answered
        "armyworm": {"predicted": 4, "trainable": 3, "feedback_accuracy": pytest.approx(2 / 3)},
        "healthy": {"predicted": 1, "trainable": 0, "feedback_accuracy": None},
    }
    assert pest["deployed_confusion"] == [
        {"predicted": "aphids", "actual": "aphids", "n": 3},
        {"predicted": "armyworm", "actual": "armyworm", "n": 2},
        {"predicted": "aphids", "actual": "armyworm", "n": 1},
        {"predicted": "armyworm", "actual": "aphids", "n": 1},
    ]


def test_model_types_are_kept_apart_and_an_empty_one_reports_zeros(cli, store):
    result = cli("stats", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert list(report["models"]) == ["pest", "disease", "storage"]
    disease = report["models"]["disease"]
    assert (disease["total"], disease["confirmed"], disease["trainable"]) == (2, 2, 2)
    assert disease["classes"]["rust"] == {"predicted": 1, "trainable": 1, "feedback_accuracy": 1.0}
    storage = report["models"]["storage"]
    assert (storage["total"], storage["trainable"], storage["classes"], storage["invalid"]) == (0, 0, {}, {})
    assert storage["feedback_accuracy"] is None and storage["feedback_rate"] == 0.0
    assert storage["ready"]["ok"] is False
    assert (
        "warning: no storage rows in the local source (run `agroml demo --model storage` or "
        "`agroml pull --model storage`)"
    ) in result.stderr
    assert "pest: 3 invalid rows left out (1 bad_confidence, 2 no_image)" in result.stderr


def test_since_until_window(cli, store):
    since = stats_json(cli, "--model", "pest", "--since", "2025-01-01")["models"]["pest"]
    # p8, p9 (June 2024 confirmations) fall out
    assert (since["total"], since["confirmed"], since["trainable"]) == (10, 3, 5)
    assert since["invalid"] == {"no_image": 2, "bad_confidence": 1}
    until = stats_json(cli, "--model", "pest", "--until", "2025-01-01")["models"]["pest"]
    assert (until["total"], until["confirmed"], until["trainable"], until["invalid"]) == (2, 2, 2, {})
    both = stats_json(cli, "--model", "pest", "--since", "2025-03-10", "--until", "2025-03-10T08:00:01")
    assert both["models"]["pest"]["total"] == 1  # since inclusive, until exclusive
    assert both["since"].startswith("2025-03-10T00:00:00") and both["until"].startswith("2025-03-10T08:00:01")
    result = cli("stats", "--json", "--model", "pest", "--since", "2030-01-01")
    empty = json.loads(result.stdout)["models"]["pest"]
    assert (empty["total"], empty["invalid"], empty["ready"]["ok"]) == (0, {}, False)
    assert "warning: no pest rows in the local source in this time window" in result.stderr


def test_readiness_verdict_and_flags(cli, store):
    ready = stats_json(cli, "--model", "pest")["models"]["pest"]["ready"]
    assert ready == {
        "ok": False,
        "min_total": 100,
        "min_per_class": 10,
        "short_classes": ["aphids", "armyworm", "healthy"],
        "trainable": 7,
        "needed": 93,
        "classes_ready": 0,
        "missing_images": 0,
    }
    # healthy is predicted but never labelled: short even at a minimum of 1
    ready = stats_json(cli, "--model", "pest", "--min-total", "7", "--min-per-class", "3")["models"]["pest"]["ready"]
    assert (ready["ok"], ready["short_classes"], ready["needed"]) == (False, ["healthy"], 0)
    ready = stats_json(cli, "--model", "pest", "--min-total", "7", "--min-per-class", "0")["models"]["pest"]["ready"]
    assert ready["ok"] is True
    ready = stats_json(cli, "--model", "pest", "--min-total", "8", "--min-per-class", "0")["models"]["pest"]["ready"]
    assert (ready["ok"], ready["needed"]) == (False, 1)

    text = cli("stats", "--model", "pest").stdout
    assert (
        "pest: not ready: 93 more trainable rows needed; short classes: aphids, armyworm, healthy (minimum 10)"
    ) in text
    text = cli("stats", "--model", "pest", "--min-total", "7", "--min-per-class", "0").stdout
    assert "pest: ready to train (7 trainable rows, 3 classes)" in text


def test_readiness_settings_from_environment(cli, store, monkeypatch):
    monkeypatch.setenv("AGROML_MIN_TOTAL", "7")
    monkeypatch.setenv("AGROML_MIN_PER_CLASS", "3")
    ready = stats_json(cli, "--model", "pest")["models"]["pest"]["ready"]
    assert (ready["min_total"], ready["min_per_class"], ready["short_classes"]) == (7, 3, ["healthy"])


def test_readiness_needs_two_classes():
    counts = rec.feedback_counts(
        make("pest", [(f"r{i}", "aphids", True, None, "2025-03-10T08:00:00Z", None) for i in range(20)])
    )
    ready = analysis.readiness(counts, min_total=10, min_per_class=5)
    assert (ready["ok"], ready["short_classes"], ready["classes_ready"]) == (False, [], 1)
    assert analysis.readiness_verdict(ready) == (
        "not ready: only 1 class with trainable rows (a classifier needs at least 2)"
    )
    with pytest.raises(ValueError):
        analysis.readiness(pd.concat([counts, counts.assign(model_type="disease")]), 10, 5)


def test_feedback_counts_from_records_match_the_store(store):
    with LocalSource(store) as source:
        frame = pd.concat(list(source.iter_records("pest")), ignore_index=True)
        from_sql = source.feedback_counts("pest")
    from_frame = rec.feedback_counts(frame)
    assert list(from_frame.columns) == list(from_sql.columns)

    def canon(df: pd.DataFrame) -> list[tuple]:
        return sorted(tuple("" if pd.isna(v) else v for v in row) for row in df.itertuples(index=False, name=None))

    assert canon(from_frame) == canon(from_sql)
    assert analysis.model_stats(from_frame, 7, 3) == analysis.model_stats(from_sql, 7, 3)
    assert rec.feedback_counts(frame.iloc[:0]).empty


def _trainable_hashes(settings: config.Settings, model: str) -> list[str]:
    with Store(settings.db_path, create=False) as s:
        frame = s.read(model, valid_only=True, columns=["label", "image_hash"])
    return list(frame.loc[frame["label"].notna(), "image_hash"])


def test_readiness_counts_only_rows_whose_image_is_in_the_cache(cli, demo_data):
    """Images deleted from the cache: `train` could not use their rows, so stats and doctor do not count them."""
    flags = ("--model", "pest", "--min-total", "10", "--min-per-class", "1")
    before = stats_json(cli, *flags)["models"]["pest"]
    hashes = _trainable_hashes(demo_data, "pest")
    assert before["ready"]["ok"] and before["ready"]["missing_images"] == 0
    assert before["ready"]["trainable"] == before["trainable"] == len(hashes) > 20

    cache = demo_data.image_dir
    gone = sorted(set(hashes))[::3]  # every third photo of a trainable row
    for sha in gone:
        for path in cache.glob(f"{sha[:2]}/{sha}.*"):
            path.unlink()
    lost = sum(1 for h in hashes if h in set(gone))
    after = stats_json(cli, *flags)["models"]["pest"]
    assert after["trainable"] == before["trainable"]  # the feedback did not change...
    assert after["ready"]["trainable"] == len(hashes) - lost  # ...what training can use did
    assert after["ready"]["missing_images"] == lost > 0
    text = cli("stats", *flags).stdout
    assert f"{lost} trainable rows lack their image in the cache (`agroml pull` fetches them)" in " ".join(text.split())

    for path in cache.glob("??/*.*"):  # the whole cache gone: not ready, and it says why
        path.unlink()
    ready = stats_json(cli, *flags)["models"]["pest"]["ready"]
    assert (ready["ok"], ready["trainable"], ready["missing_images"]) == (False, 0, len(hashes))
    settings = config.resolve({"min_total": 10, "min_per_class": 1}, env_file=None)
    check = {c.name: c for c in doctor.check_readiness(settings, doctor.check_store(settings)[1])}
    assert check["readiness pest"].status == "warn"
    assert f"{len(hashes)} trainable rows lack their image in the cache" in check["readiness pest"].detail


# --- output ----------------------------------------------------------------------------------------
def test_json_shape_has_every_documented_key_and_type(cli, store):
    report = stats_json(cli)
    assert isinstance(report["generated_at"], str) and pd.Timestamp(report["generated_at"]).tzinfo is not None
    assert report["source"] == "local"
    ints = ("total", "confirmed", "corrected", "rejected", "no_feedback", "trainable")
    for model, block in report["models"].items():
        for key in ints:
            assert type(block[key]) is int, (model, key)
        assert isinstance(block["invalid"], dict) and all(type(v) is int for v in block["invalid"].values())
        assert isinstance(block["feedback_rate"], float)
        assert block["feedback_accuracy"] is None or isinstance(block["feedback_accuracy"], float)
        for label, c in block["classes"].items():
            assert isinstance(label, str)
            assert type(c["predicted"]) is int and type(c["trainable"]) is int
            assert c["feedback_accuracy"] is None or isinstance(c["feedback_accuracy"], float)
        ready = block["ready"]
        assert type(ready["ok"]) is bool and type(ready["min_total"]) is int and type(ready["min_per_class"]) is int
        assert isinstance(ready["short_classes"], list) and all(isinstance(s, str) for s in ready["short_classes"])
        assert type(ready["missing_images"]) is int


def test_human_output_shows_tables_percentages_and_provenance(cli, store):
    result = cli("stats", "--model", "pest")
    assert result.exit_code == 0
    out = result.stdout
    assert "Feedback per model type" in out and "pest: classes" in out
    assert "62.5%" in out  # overall feedback accuracy 5/8
    assert "60.0%" in out and "66.7%" in out  # per predicted class
    assert "█" in out  # trainable bars
    assert "source local · generated 20" in out


def test_unknown_model_type_exits_2_listing_valid_ones(cli, store):
    result = cli("stats", "--model", "locust")
    assert result.exit_code == 2
    flat = " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())  # Rich draws the message in a box
    assert "Invalid value for '--model' / '-m'" in flat
    assert "'locust' is not one of 'pest', 'disease', 'storage', 'all'" in flat


# --- no data ---------------------------------------------------------------------------------------
def test_missing_store_is_no_data(cli):
    result = cli("stats")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {NO_DATA}"
    assert result.stdout == ""
    assert not Path("data/agroml.db").exists()  # reading never creates a store


def test_empty_store_is_no_data(cli, workdir):
    Store(config.resolve(env_file=None).db_path).close()
    for args in (("stats",), ("stats", "--model", "pest", "--json")):
        result = cli(*args)
        assert result.exit_code == 1
        assert result.stderr.strip() == f"error: {NO_DATA}"


def test_stats_on_demo_data(cli, demo_data):
    report = stats_json(cli)
    for model, block in report["models"].items():
        assert block["total"] > 0, model
        assert block["total"] == block["confirmed"] + block["corrected"] + block["rejected"] + block["no_feedback"]
        assert block["trainable"] == block["confirmed"] + block["corrected"]
        assert block["trainable"] == sum(c["trainable"] for c in block["classes"].values())
        assert block["total"] == sum(c["predicted"] for c in block["classes"].values())
        assert 0 < block["feedback_rate"] <= 1


def test_since_not_before_until_is_bad_usage(cli, store):
    for command in ("stats", "distribution"):
        result = cli(command, "--since", "2025-02-01", "--until", "2025-01-01")
        assert result.exit_code == 2
        assert result.stderr.strip() == (
            "error: --since 2025-02-01T00:00:00+00:00 is not before --until "
            "2025-01-01T00:00:00+00:00 (give an earlier --since or a later --until)"
        )


def test_stats_upgrades_a_schema_v1_store_and_uses_the_feedback_index(cli, store):
    with Store(store.db_path) as s:  # make it look like a store written before the feedback index
        s.con.execute("DROP INDEX predictions_feedback")
        s.con.execute("UPDATE agroml_meta SET value = '1' WHERE key = 'schema_version'")
    assert stats_json(cli, "--model", "pest")["models"]["pest"]["trainable"] == 7
    with Store(store.db_path) as s:
        assert s.schema_version == 2
        keys = ", ".join(rec.COUNT_KEYS)
        plan = s.con.execute(
            f"EXPLAIN QUERY PLAN SELECT {keys}, count(*) FROM predictions WHERE model_type = 'pest' GROUP BY {keys}"
        ).fetchall()
        # read in index order: no sort of every row (what keeps stats fast on a million rows)
        assert any("COVERING INDEX predictions_feedback" in row[-1] for row in plan)
        assert not any("TEMP B-TREE" in row[-1] for row in plan)
