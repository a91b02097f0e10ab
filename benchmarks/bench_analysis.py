"""Benchmark: `stats` and a Parquet `export` on a 1,000,000-row local store.

Builds the store (vectorized numpy -> record frame -> Store.upsert in chunks), then times, each in a
fresh Python process so every peak-memory figure (ru_maxrss of that process) belongs to one
measurement alone:

1. stats: ``agroml.data.analysis.stats_report(LocalSource(settings), ["pest"], ...)``; goal <= 3 s;
2. export: ``agroml.data.exporting.export_records(..., scope="all", fmt="parquet")`` against the baseline
   "read the same rows with pandas.read_sql and write them with pyarrow"
   (``pd.read_sql("SELECT * FROM predictions", con)`` -> ``pa.Table.from_pandas`` -> ``pq.write_table``),
   measured in the same run, alternating; goal: export <= 1.5x the baseline.

Each measurement runs ``--repeat`` times (default 3) and the fastest run is reported (the least
disturbed by other work on a shared machine); peak RSS is the largest of its runs.

    .venv/bin/python benchmarks/bench_analysis.py                 # build in a temp dir, measure, delete
    .venv/bin/python benchmarks/bench_analysis.py --keep /tmp/b   # keep (or reuse) the store there
    .venv/bin/python benchmarks/bench_analysis.py --rows 200000   # a quicker, smaller run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_STATS_S = 3.0
GOAL_EXPORT_RATIO = 1.5
CLASSES = ("fall_armyworm", "aphids", "stem_borer", "whiteflies", "locusts", "healthy")
CROPS = ("maize", "beans", "tomato", "cassava", "potato", "sorghum")
COUNTIES = ("Nakuru", "Kisumu", "Machakos", "Kiambu", "Meru", "Uasin Gishu", "Kakamega", "Nyeri")


# --- building the store ---------------------------------------------------------------------------
def synthetic_records(n: int, start: int, seed: int):
    """``n`` pest records (ids start..start+n) with the feedback mix and invalid rows of real data."""
    import numpy as np
    import pandas as pd

    from agroml.data import records as rec

    rng = np.random.default_rng(seed + start)
    ids = np.char.add("bench-", np.arange(start, start + n).astype(str)).astype(object)
    predicted = np.array(CLASSES, dtype=object)[rng.choice(len(CLASSES), n, p=[0.3, 0.2, 0.15, 0.15, 0.05, 0.15])]
    fb = rng.random(n)
    confirmed = pd.array(np.where(fb < 0.35, True, False), dtype="boolean")
    confirmed[fb >= 0.5] = pd.NA  # 35% confirmed, 15% false, 50% no feedback
    corrected = (fb >= 0.35) & (fb < 0.45)  # two thirds of the "false" rows carry a correction
    shifted = np.array(CLASSES, dtype=object)[(pd.Categorical(predicted, categories=CLASSES).codes + 1) % len(CLASSES)]
    actual = np.where(corrected, shifted, None)
    feedback = np.select([fb < 0.35, corrected, fb < 0.5], ["confirmed", "corrected", "rejected"], "none").astype(
        object
    )
    label = np.where(fb < 0.35, predicted, np.where(corrected, actual, None))
    invalid = np.where(
        rng.random(n) < 0.01, np.array(["no_image", "bad_confidence"], dtype=object)[rng.integers(0, 2, n)], None
    )
    urls = np.char.add(
        np.char.add("https://x.supabase.co/storage/v1/object/public/predictions/pest_images/", ids.astype(str)), ".jpg"
    ).astype(object)
    urls[invalid == "no_image"] = None
    lat = rng.uniform(-4.5, 4.5, n)
    lat[rng.random(n) < 0.2] = np.nan
    farmers = np.char.add("farmer-", rng.integers(0, 5000, n).astype(str)).astype(object)
    keys = np.char.add("k", rng.integers(0, 5000, n).astype(str)).astype(object)
    created = (pd.Timestamp("2024-01-01", tz="UTC").value // 1000 + rng.integers(0, 730 * 86_400_000_000, n)).astype(
        "datetime64[us]"
    )
    extra = np.where(rng.random(n) < 0.3, '{"image_metadata": {"h": 480, "w": 640}}', None)
    frame = pd.DataFrame(
        {
            "id": ids,
            "source": "bench",
            "model_type": "pest",
            "image_url": urls,
            "image_hash": None,
            "predicted_label": predicted,
            "confidence": rng.uniform(0.3, 1, n),
            "user_confirmed": confirmed,
            "actual_label": actual,
            "feedback": feedback,
            "label": label,
            "feedback_text": None,
            "crop": np.array(CROPS, dtype=object)[rng.integers(0, len(CROPS), n)],
            "location": np.array(COUNTIES, dtype=object)[rng.integers(0, len(COUNTIES), n)],
            "latitude": lat,
            "longitude": rng.uniform(34, 41, n) + lat * 0,
            "severity": np.array(["low", "moderate", "high", None], dtype=object)[rng.integers(0, 4, n)],
            "growth_stage": None,
            "farmer_id": farmers,
            "farmer_key": keys,
            "created_at": pd.DatetimeIndex(created).tz_localize("UTC"),
            "invalid_reason": invalid,
            "extra": extra,
        }
    )
    return frame[list(rec.arrow_schema(include_personal=True).names)]


def build_store(db: Path, rows: int, chunk: int = 100_000) -> float:
    from agroml.data.store import Store

    start = time.perf_counter()
    with Store(db) as store:
        for first in range(0, rows, chunk):
            store.upsert(synthetic_records(min(chunk, rows - first), first, seed=0))
            print(
                f"  built {min(first + chunk, rows):,} rows  {time.perf_counter() - start:5.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return time.perf_counter() - start


# --- measurements (each in its own process) -------------------------------------------------------
def _settings(db: Path, out: Path):
    from agroml.core import config

    return config.resolve({"db_path": db, "exports_dir": out}, environ={}, env_file=None)


def measure(name: str, db: Path, out: Path) -> dict:
    """Run one measurement in this (fresh) process; returns wall time, rows and peak RSS."""
    import pandas as pd  # imported before the clock starts, as in every measurement
    import pyarrow as pa
    import pyarrow.parquet as pq

    from agroml.data import analysis
    from agroml.data.exporting import export_records
    from agroml.data.sources import LocalSource

    settings = _settings(db, out)
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu_start = _cpu_s()
    start = time.perf_counter()
    if name == "stats":
        with LocalSource(settings) as source:
            report = analysis.stats_report(source, ["pest"], None, None, settings.min_total, settings.min_per_class)
        rows = report.models["pest"]["total"]
    elif name == "export":
        with LocalSource(settings) as source:
            result = export_records(source, "pest", "all", "parquet", out)
        rows = result.files[0].rows
    elif name == "baseline":
        import sqlite3

        con = sqlite3.connect(db)
        df = pd.read_sql("SELECT * FROM predictions", con)
        con.close()
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), out / "baseline.parquet")
        rows = len(df)
    else:
        raise SystemExit(f"unknown measurement {name!r}")
    wall = time.perf_counter() - start
    cpu = _cpu_s() - cpu_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "name": name,
        "wall_s": wall,
        "cpu_s": cpu,
        "rows": rows,
        "peak_rss_mb": peak_mb,
        "after_imports_rss_mb": base_mb,
    }


def _cpu_s() -> float:
    """CPU seconds of this process (all threads): steadier than wall time on a machine shared with others."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_measurement(name: str, db: Path, out: Path) -> dict:
    """``measure`` in a fresh interpreter, so its ru_maxrss is this measurement's peak alone."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--measure", name, "--db", str(db), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"measurement {name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best(runs: list[dict]) -> dict:
    fastest = min(runs, key=lambda r: r["wall_s"])
    return {
        **fastest,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "all_s": [r["wall_s"] for r in runs],
        "cpu_s": min(r["cpu_s"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the store in this folder and keep it")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.db, args.out)))
        return

    folder = args.keep or Path(tempfile.mkdtemp(prefix="agroml-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    db, out = folder / "agroml.db", folder / "out"
    try:
        if db.exists():
            print(f"reusing {db}", file=sys.stderr)
        else:
            print(f"building {args.rows:,} rows in {db}", file=sys.stderr)
            print(
                f"build: {build_store(db, args.rows):.1f} s for {args.rows:,} rows "
                f"({db.stat().st_size / 2**20:.0f} MiB)"
            )
        runs: dict[str, list[dict]] = {"stats": [], "export": [], "baseline": []}
        for i in range(args.repeat):
            # alternate the order so a slow spell on a shared machine hurts both sides alike
            for name in (("baseline", "export") if i % 2 == 0 else ("export", "baseline")) + ("stats",):
                runs[name].append(run_measurement(name, db, out))
                print(
                    f"  {name}: {runs[name][-1]['wall_s']:.2f} s (cpu {runs[name][-1]['cpu_s']:.2f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        stats, export, baseline = best(runs["stats"]), best(runs["export"]), best(runs["baseline"])
        ratio = export["wall_s"] / baseline["wall_s"]
        print(
            f"rows: {stats['rows']:,} (stats), {export['rows']:,} (export), {baseline['rows']:,} (baseline); "
            f"best of {args.repeat}"
        )
        print(
            f"stats: {stats['wall_s']:.2f} s (goal <= {GOAL_STATS_S:g} s) "
            f"{'OK' if stats['wall_s'] <= GOAL_STATS_S else 'MISSED'}"
        )
        print(
            f"export parquet: {export['wall_s']:.2f} s vs baseline {baseline['wall_s']:.2f} s -> ratio "
            f"{ratio:.2f}x (goal <= {GOAL_EXPORT_RATIO:g}x) {'OK' if ratio <= GOAL_EXPORT_RATIO else 'MISSED'}"
        )
        print(
            f"  in CPU time (steadier when others share the machine): export {export['cpu_s']:.2f} s vs baseline "
            f"{baseline['cpu_s']:.2f} s -> ratio {export['cpu_s'] / baseline['cpu_s']:.2f}x; "
            f"stats {stats['cpu_s']:.2f} s"
        )
        print(f"  load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
        for m in (stats, export, baseline):
            print(
                f"peak RSS {m['name']}: {m['peak_rss_mb']:.0f} MiB (after imports {m['after_imports_rss_mb']:.0f} "
                f"MiB); runs {', '.join(f'{s:.2f}' for s in m['all_s'])} s"
            )
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
