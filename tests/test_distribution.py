"""`agroml distribution`: counts by key, seasons in farm local time, month series, the PNG chart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from agroml.core import config
from agroml.core.errors import ConfigError, UsageError
from agroml.data import analysis
from agroml.data import records as rec
from agroml.data.sources import LocalSource
from agroml.data.store import Store

# id, predicted, user_confirmed, actual, crop, location, created_at (UTC), invalid_reason
ROWS = [
    ("p1", "aphids", True, None, "maize", "Nakuru", "2025-03-10T08:00:00Z", None),
    ("p2", "aphids", True, None, "maize", "Nakuru", "2025-04-10T08:00:00Z", None),
    ("p3", "aphids", True, None, "maize", "Kiambu", "2025-02-28T22:00:00Z", None),  # 1 March in Nairobi
    ("p4", "aphids", False, "armyworm", "maize", "Kiambu", "2025-07-01T08:00:00Z", None),
    ("p5", "aphids", False, None, "maize", None, "2025-07-02T08:00:00Z", None),
    ("p6", "aphids", None, None, "maize", "Nakuru", "2025-10-05T08:00:00Z", None),
    ("p7", "aphids", None, None, "beans", "Nakuru", "2025-11-05T08:00:00Z", None),
    ("p8", "armyworm", True, None, "beans", "Kiambu", "2024-06-15T08:00:00Z", None),
    ("p9", "armyworm", True, None, "beans", "Kiambu", "2024-06-20T08:00:00Z", None),
    ("p10", "armyworm", False, "aphids", "beans", "Nakuru", "2025-01-15T08:00:00Z", None),
    ("p11", "armyworm", None, None, "beans", None, "2025-12-31T22:30:00Z", None),  # 1 January 2026 in Nairobi
    ("p12", "healthy", None, None, None, "Nakuru", "2025-05-20T08:00:00Z", None),
    ("x1", "aphids", True, None, "maize", "Nakuru", "2025-03-11T08:00:00Z", "no_image"),
    ("x2", "armyworm", True, None, "beans", "Kiambu", "2025-03-13T08:00:00Z", "bad_confidence"),
]


@pytest.fixture
def store(workdir: Path) -> config.Settings:
    settings = config.resolve(env_file=None)
    frame = rec.make_records(
        dict(
            id=i,
            source="test",
            model_type="pest",
            image_url=None if bad == "no_image" else f"test://{i}.jpg",
            predicted_label=p,
            confidence=0.8,
            user_confirmed=c,
            actual_label=a,
            crop=crop,
            location=loc,
            created_at=t,
            invalid_reason=bad,
        )
        for i, p, c, a, crop, loc, t, bad in ROWS
    )
    with Store(settings.db_path) as s:
        s.upsert(frame)
    return settings


def dist(cli, *args: str) -> dict:
    result = cli("distribution", "--model", "pest", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def table(report: dict) -> list[tuple[str, int, int]]:
    return [(c["key"], c["rows"], c["trainable"]) for c in report["counts"]]


# --- seasons -------------------------------------------------------------------------------------
def test_season_of_every_month():
    assert [analysis.season_of_month(m) for m in range(1, 13)] == [
        "transition",
        "transition",
        "long_rains",
        "long_rains",
        "long_rains",
        "dry_season",
        "dry_season",
        "dry_season",
        "dry_season",
        "short_rains",
        "short_rains",
        "short_rains",
    ]


def test_seasons_use_the_farm_time_zone():
    times = pd.Series(pd.to_datetime(["2025-02-28T22:00:00Z", "2025-05-31T20:59:00Z", "2025-05-31T21:00:00Z"]))
    assert analysis.seasons(times).tolist() == ["long_rains", "long_rains", "dry_season"]
    assert analysis.seasons(times, "UTC").tolist() == ["transition", "long_rains", "long_rains"]
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        analysis.seasons(times, "Mars/Olympus")


# --- counts by key -------------------------------------------------------------------------------
def test_by_class_rows_by_predicted_and_trainable_by_label(cli, store):
    report = dist(cli, "--by", "class")
    assert table(report) == [("aphids", 7, 4), ("armyworm", 4, 3), ("healthy", 1, 0)]
    assert (report["total"], report["trainable"]) == (12, 7)
    assert report["invalid"] == {"no_image": 1, "bad_confidence": 1}
    assert report["by"] == "class" and report["model_type"] == "pest" and report["source"] == "local"


def test_by_crop_and_region_count_missing_values_as_unknown(cli, store):
    assert table(dist(cli, "--by", "crop")) == [("maize", 6, 4), ("beans", 5, 3), ("unknown", 1, 0)]
    assert table(dist(cli, "--by", "region")) == [("Nakuru", 6, 3), ("Kiambu", 4, 4), ("unknown", 2, 0)]


def test_by_season_in_nairobi_time_and_another_zone(cli, store, monkeypatch):
    assert table(dist(cli, "--by", "season")) == [
        ("transition", 2, 1),
        ("long_rains", 4, 3),
        ("dry_season", 4, 3),
        ("short_rains", 2, 0),
    ]
    # in UTC, p3 is in February and p11 in December
    utc = dist(cli, "--by", "season", "--timezone", "UTC")
    assert table(utc) == [("transition", 2, 2), ("long_rains", 3, 2), ("dry_season", 4, 3), ("short_rains", 3, 0)]
    assert utc["timezone"] == "UTC"
    monkeypatch.setenv("AGROML_TIMEZONE", "UTC")
    assert table(dist(cli, "--by", "season")) == table(utc)


def test_by_month_of_year(cli, store):
    assert table(dist(cli, "--by", "month")) == [
        ("Jan", 2, 1),
        ("Mar", 2, 2),
        ("Apr", 1, 1),
        ("May", 1, 0),
        ("Jun", 2, 2),
        ("Jul", 2, 1),
        ("Oct", 1, 0),
        ("Nov", 1, 0),
    ]


def test_class_season_tables_and_month_series(cli, store):
    report = dist(cli)
    assert report["seasons"] == ["transition", "long_rains", "dry_season", "short_rains"]
    assert report["class_season"]["rows"] == {
        "aphids": {"transition": 0, "long_rains": 3, "dry_season": 2, "short_rains": 2},
        "armyworm": {"transition": 2, "long_rains": 0, "dry_season": 2, "short_rains": 0},
        "healthy": {"transition": 0, "long_rains": 1, "dry_season": 0, "short_rains": 0},
    }
    assert report["class_season"]["trainable"] == {
        "aphids": {"transition": 1, "long_rains": 3, "dry_season": 0, "short_rains": 0},
        "armyworm": {"transition": 0, "long_rains": 0, "dry_season": 3, "short_rains": 0},
    }
    months = report["months"]
    assert months[0]["month"] == "2024-06" and months[-1]["month"] == "2026-01" and len(months) == 20
    nonzero = {m["month"]: (m["rows"], m["trainable"]) for m in months if m["rows"]}
    assert nonzero == {
        "2024-06": (2, 2),
        "2025-01": (1, 1),
        "2025-03": (2, 2),
        "2025-04": (1, 1),
        "2025-05": (1, 0),
        "2025-07": (2, 1),
        "2025-10": (1, 0),
        "2025-11": (1, 0),
        "2026-01": (1, 0),
    }
    assert sum(m["rows"] for m in months) == report["total"]


def test_since_until_window(cli, store):
    report = dist(cli, "--since", "2025-01-01", "--until", "2025-07-01T08:00:01")
    # p1, p2, p3, p4, p10, p12 (p4 at 08:00:00 is inside: until is exclusive at 08:00:01)
    assert table(report) == [("aphids", 4, 4), ("armyworm", 1, 1), ("healthy", 1, 0)]
    assert report["invalid"] == {"no_image": 1, "bad_confidence": 1}


def test_library_rejects_an_unknown_key(store):
    with LocalSource(store) as source, pytest.raises(UsageError, match="valid keys are class, crop, region"):
        analysis.distribution_report(source, "pest", by="county")


# --- CLI rendering, errors and the chart ---------------------------------------------------------
def test_human_output_has_tables_with_bars(cli, store):
    result = cli("distribution", "--model", "pest", "--by", "crop")
    assert result.exit_code == 0
    out = result.stdout
    assert "pest: rows by crop" in out and "maize" in out and "█" in out
    assert "predicted class x season" in out and "3 (3)" in out  # aphids in long_rains: 3 rows, 3 trainable
    assert "rows per month" in out and "2026-01" in out
    assert "warning: pest: 2 invalid rows left out (1 bad_confidence, 1 no_image)" in result.stderr


def test_unknown_key_and_zone_are_refused(cli, store):
    result = cli("distribution", "--by", "county")
    assert result.exit_code == 2 and "'county' is not one of" in " ".join(result.output.split())
    result = cli("distribution", "--timezone", "Mars/Olympus")
    assert result.exit_code == 2  # a bad flag is bad usage
    assert result.stderr.strip() == (
        "error: --timezone='Mars/Olympus' (from flag) is not valid: expected an IANA time zone name such as "
        "Africa/Nairobi (change the value given to --timezone)"
    )


def test_empty_model_type_reports_zeros(cli, store):
    result = cli("distribution", "--model", "storage", "--json", "--plot", "storage.png")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert (report["total"], report["counts"], report["months"]) == (0, [], [])
    assert "no storage rows in the local source" in result.stderr
    assert Image.open("storage.png").format == "PNG"


def test_no_data(cli, workdir):
    result = cli("distribution")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no data: run `agroml demo` or `agroml pull`"


def test_plot_writes_a_valid_png_atomically(cli, store, workdir):
    result = cli("distribution", "--model", "pest", "--by", "region", "--plot", "charts/pest.png")
    assert result.exit_code == 0, result.output
    with Image.open(workdir / "charts/pest.png") as image:
        assert image.format == "PNG"
        assert image.width > 800 and image.height > 600
    assert "chart written to charts/pest.png" in result.stderr
    assert [p.name for p in (workdir / "charts").iterdir()] == ["pest.png"]  # no temporary file left


def test_plot_to_an_unwritable_folder_exits_1_and_names_it(cli, store, workdir):
    Path("a_file").write_text("not a folder")
    result = cli("distribution", "--plot", "a_file/pest.png")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: cannot write a_file/pest.png: a_file is not a folder (choose a writable file path)"
    )
    assert result.stdout == ""
    assert Path("a_file").read_text() == "not a folder"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only folders")
def test_plot_to_a_read_only_folder(cli, store, workdir):
    Path("ro").mkdir(mode=0o500)
    result = cli("distribution", "--plot", "ro/pest.png")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot write ro/pest.png: ")


def test_distribution_on_demo_data(cli, demo_data, workdir):
    for by in analysis.DISTRIBUTION_KEYS:
        report = dist(cli, "--by", by)
        assert sum(c["rows"] for c in report["counts"]) == report["total"] > 0, by
        assert sum(c["trainable"] for c in report["counts"]) == report["trainable"], by
    rows = report["class_season"]["rows"]
    assert sum(sum(r.values()) for r in rows.values()) == report["total"]
    result = cli("distribution", "--model", "disease", "--plot", "disease.png")
    assert result.exit_code == 0 and Image.open(workdir / "disease.png").format == "PNG"
