"""The demo data set: deterministic rows and photos, idempotent reruns, realistic metadata, the CLI."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from agroml.core import config
from agroml.core.errors import UsageError
from agroml.data import records
from agroml.data.store import Store
from agroml.demo import rows as demo
from agroml.images.cache import ImageCache


def _settings(root: Path) -> config.Settings:
    return config.resolve({"data_dir": str(root)}, environ={}, env_file=None)


def _rows(settings: config.Settings, model_type: str) -> pd.DataFrame:
    with Store(settings.db_path) as store:
        return store.read(model_type).sort_values("id").reset_index(drop=True)


def test_same_seed_gives_identical_rows_and_photos_and_another_seed_does_not(workdir):
    first, second, other = _settings(workdir / "a"), _settings(workdir / "b"), _settings(workdir / "c")
    demo.generate(first, ["pest"], n=8, seed=3)
    demo.generate(second, ["pest"], n=8, seed=3)
    demo.generate(other, ["pest"], n=8, seed=4)
    a, b, c = _rows(first, "pest"), _rows(second, "pest"), _rows(other, "pest")
    cols = [
        "id",
        "predicted_label",
        "actual_label",
        "feedback",
        "label",
        "confidence",
        "created_at",
        "image_hash",
        "crop",
        "location",
        "latitude",
        "extra",
    ]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert a["image_hash"].notna().all()
    assert not set(a["id"]) & set(c["id"])
    assert not set(a["image_hash"]) & set(c["image_hash"])


def test_a_process_pool_draws_the_same_bytes_as_one_process(workdir):
    serial, pooled = _settings(workdir / "serial"), _settings(workdir / "pooled")
    demo.generate(serial, ["storage"], n=4, seed=5, workers=1)
    demo.generate(pooled, ["storage"], n=4, seed=5, workers=2)
    assert list(_rows(serial, "storage")["image_hash"]) == list(_rows(pooled, "storage")["image_hash"])


def test_rerun_changes_nothing_and_a_smaller_n_is_a_prefix(workdir):
    settings = _settings(workdir / "data")
    first = demo.generate(settings, ["disease"], n=10, seed=0)
    assert (first.models["disease"].upsert.inserted, first.models["disease"].upsert.updated) == (10, 0)
    again = demo.generate(settings, ["disease"], n=10, seed=0)
    assert again.models["disease"].upsert.unchanged == 10
    fewer = demo.generate(settings, ["disease"], n=4, seed=0)
    assert (fewer.models["disease"].upsert.inserted, fewer.models["disease"].upsert.unchanged) == (0, 4)
    with Store(settings.db_path) as store:
        assert store.count("disease") == 10


def test_photos_decode_and_sit_in_the_cache_under_their_hash(workdir):
    settings = _settings(workdir / "data")
    summary = demo.generate(settings, ["pest", "storage"], n=6, seed=1)
    assert {m: s.images for m, s in summary.models.items()} == {"pest": 6, "storage": 6}
    rows = pd.concat([_rows(settings, "pest"), _rows(settings, "storage")])
    with ImageCache(settings.image_dir) as cache:
        for url, sha in zip(rows["image_url"], rows["image_hash"], strict=True):
            assert url.startswith("demo://") and url.endswith(".jpg")
            path = cache.lookup(url)
            assert path is not None, url
            data = path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == sha
            with Image.open(io.BytesIO(data)) as img:
                assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (256, 256))


@pytest.mark.parametrize("model_type", ["pest", "disease", "storage"])
def test_rows_have_the_feedback_mix_classes_and_metadata_of_the_issue(model_type):
    rows = demo.plan_rows(model_type, 600, seed=0)
    frame = records.make_records([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    truth = [r["_truth"] for r in rows]
    share = frame["feedback"].value_counts(normalize=True).to_dict()
    if model_type == "storage":  # no corrected-class column: a correction can only be a rejection
        assert frame["actual_label"].isna().all()
        assert share.get("corrected", 0) == 0
        assert share["rejected"] == pytest.approx(0.15, abs=0.02)
    else:
        assert share["corrected"] == pytest.approx(0.10, abs=0.02)
        assert share["rejected"] == pytest.approx(0.05, abs=0.02)
        assert "healthy" in truth
    assert share["confirmed"] == pytest.approx(0.35, abs=0.02)
    assert share["none"] == pytest.approx(0.50, abs=0.02)

    counts = Counter(truth)
    assert set(counts) == set(demo.CLASSES[model_type])
    assert max(counts.values()) >= 2 * min(counts.values())  # imbalanced, as real feedback is
    for label, t, fb, pred in zip(frame["label"], truth, frame["feedback"], frame["predicted_label"], strict=True):
        if fb in ("confirmed", "corrected"):
            assert label == t  # the training label is what the photo shows
        if fb in ("corrected", "rejected"):
            assert pred != t
    assert frame["confidence"].between(0.3, 0.99).all()
    assert frame["created_at"].min() >= pd.Timestamp("2024-01-01", tz="UTC")
    assert frame["created_at"].max() < pd.Timestamp("2026-01-01", tz="UTC")
    assert frame["latitude"].dropna().between(-4.8, 5.0).all() and frame["longitude"].dropna().between(33.9, 41.9).all()
    assert frame["location"].str.endswith("County").all()
    assert frame["farmer_id"].nunique() > 10
    assert all(isinstance(json.loads(e), dict) for e in frame["extra"])
    assert frame["invalid_reason"].isna().all()


def test_fall_armyworm_peaks_in_the_long_rains():
    rows = [r for r in demo.plan_rows("pest", 600, seed=0) if r["_truth"] == "fall_armyworm"]
    months = Counter((r["created_at"] + pd.Timedelta(hours=3)).month for r in rows)
    long_rains = sum(months[m] for m in (3, 4, 5)) / 3
    dry = sum(months[m] for m in (6, 7, 8, 9)) / 4
    assert long_rains > 2 * dry


def test_n_below_one_is_a_usage_error(workdir):
    with pytest.raises(UsageError, match="--n 0 must be at least 1"):
        demo.generate(_settings(workdir / "data"), ["pest"], n=0)


def test_cli_demo_prints_a_summary_the_store_and_what_to_run_next(cli):
    result = cli("demo", "--model", "pest", "--n", "6", "--seed", "2")
    assert result.exit_code == 0, result.output
    assert "demo data (seed 2)" in result.stdout
    assert "fall_armyworm" in result.stdout
    assert "store data/agroml.db" in result.stdout
    assert "agroml stats" in result.stderr and "agroml train --model pest" in result.stderr
    again = cli("demo", "--model", "pest", "--n", "6", "--seed", "2", "--json")
    report = json.loads(again.stdout)
    assert report["models"]["pest"]["unchanged"] == 6
    assert report["models"]["pest"]["images"] == 6
    assert sum(report["models"]["pest"]["classes"].values()) == 6


def test_cli_demo_rejects_an_unknown_model_type(cli):
    result = cli("demo", "--model", "weeds")
    assert result.exit_code == 2
    assert "weeds" in result.stderr


# --- bounded size, batches, kills ------------------------------------------------------------------
def test_n_above_the_cap_is_a_usage_error_before_anything_is_planned(cli):
    for n in ("100001", "99999999999999999999999"):
        result = cli("demo", "--model", "pest", "--n", n)
        assert result.exit_code == 2
        assert result.stderr.strip() == (
            f"error: --n {n} is more than the demo makes: at most 100,000 rows per model type "
            "(use --n 100000 or fewer; real data comes from `agroml pull` or `agroml import`)"
        )
    assert not Path("data/agroml.db").exists()


def test_rows_planned_in_batches_equal_rows_planned_at_once():
    whole = demo.plan_rows("disease", 230, seed=4)
    batches = [row for start in range(0, 230, 70) for row in demo.plan_rows("disease", min(230, start + 70), 4, start)]
    assert batches == whole


def test_generate_writes_in_batches_with_the_same_result(workdir, monkeypatch):
    once = _settings(workdir / "once")
    demo.generate(once, ["pest"], n=25, seed=1)
    monkeypatch.setattr(demo, "WRITE_BATCH", 7)
    batched = _settings(workdir / "batched")
    summary = demo.generate(batched, ["pest"], n=25, seed=1)
    assert summary.models["pest"].upsert.inserted == 25 and sum(summary.models["pest"].classes.values()) == 25
    pd.testing.assert_frame_equal(
        _rows(once, "pest").drop(columns=["farmer_key", "ingested_at"], errors="ignore"),
        _rows(batched, "pest").drop(columns=["farmer_key", "ingested_at"], errors="ignore"),
    )


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid``, read from /proc (zombies count as gone)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_kill_9_of_demo_leaves_no_process_behind_and_the_next_run_cleans_up(workdir):
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("AGROML_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agroml", "demo", "--model", "pest", "--n", "2000", "--seed", "9"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # mid-run: the workers are up and photos are being written
            children = _children(proc.pid)
            if len(children) >= 2 and len(list((workdir / "data" / "images").glob("*/*.jpg"))) >= 5:
                break
            time.sleep(0.2)
        assert len(children) >= 2, "the demo never started its drawing workers"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 15
        while _alive(children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(children) == set(), "processes of the killed demo are still running"
    finally:  # never leave this test's own orphans behind, whatever happened
        proc.kill()
        for pid in _alive(children | _children(proc.pid)):
            os.kill(pid, signal.SIGKILL)
    images = workdir / "data" / "images"
    stale = images / "ab" / ".abcdef.jpg.k1ll3d.tmp"  # what a kill between write and rename leaves
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"half a photo")
    again = demo.generate(_settings(workdir / "data"), ["pest"], n=5, seed=9)
    assert not stale.exists() and not list(images.glob("*/.*.tmp")) and not list(images.glob(".*.tmp"))
    assert again.warnings[0].startswith("removed ") and again.warnings[0].endswith("left in the image cache")
