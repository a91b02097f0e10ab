"""Run every benchmark in benchmarks/ one after another and print one report: figure, baseline, ratio.

Each benchmark runs in its own subprocess (its own memory, its own TensorFlow), one at a time so none
measures another's load, with the same Python as this script and the repository root on PYTHONPATH.
Its printed output is parsed for the lines that carry a figure and its named baseline (the scripts
print them in words; a script may also print a last line ``{"run_all": [{"name", "figure", "baseline",
"ratio", "goal"}]}`` that is used instead). The report gives the machine (CPUs, memory, GPU or not,
load average before and after), the package versions, the commit and the date, then one line per
figure. Every benchmark's whole output is kept in ``--out`` (default: a new folder under /tmp).

    .venv/bin/python benchmarks/run_all.py --quick          # every benchmark at a small size: < 10 min
    .venv/bin/python benchmarks/run_all.py                  # the sizes of benchmarks/README.md: hours
    .venv/bin/python benchmarks/run_all.py --quick --only fetch analysis --json

``--quick`` sizes are picked so each ratio keeps its meaning (same baseline, same code path) at a size
that runs in one to two minutes on 2 CPUs; small sizes move some ratios (fixed costs weigh more), so
compare a quick run with another quick run (docs/BENCHMARKS.md), a full run with benchmarks/README.md.
Exit status: 0 when every benchmark ran and printed its figures, 1 otherwise (the others still run).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agroml", "tensorflow", "keras", "numpy", "pandas", "pyarrow", "pillow", "httpx", "supabase")
PACKAGES += ("fastapi", "uvicorn")
NUMBER = r"([0-9][0-9,]*\.?[0-9]*)"


@dataclass
class Line:
    """One figure of a benchmark against its baseline, as the benchmark measured them in the same run."""

    name: str
    figure: str
    baseline: str
    ratio: str
    goal: str = ""


@dataclass
class Bench:
    name: str
    script: str
    what: str
    quick: list[str]
    full: list[str]
    parse: Callable[[str], list[Line]]
    quick_timeout: int = 360  # a loaded shared machine runs these 2-3x slower than a quiet one


@dataclass
class Result:
    name: str
    command: str
    seconds: float
    exit_code: int | None
    lines: list[Line] = field(default_factory=list)
    problem: str = ""


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _find(pattern: str, out: str) -> list[re.Match[str]]:
    return list(re.finditer(pattern, out, flags=re.MULTILINE))


def parse_analysis(out: str) -> list[Line]:
    lines = []
    for m in _find(rf"^export parquet: {NUMBER} s vs baseline {NUMBER} s -> ratio {NUMBER}x", out):
        rows = _find(rf"^rows: .*?{NUMBER} \(export\)", out)
        n = f", {rows[0].group(1)} rows" if rows else ""
        lines.append(
            Line(f"Parquet export{n} (wall)", f"{m[1]} s", f"pd.read_sql + pyarrow {m[2]} s", f"{m[3]}x", "<= 1.5x")
        )
    for m in _find(rf"in CPU time.*?export {NUMBER} s vs baseline {NUMBER} s -> ratio {NUMBER}x", out):
        lines.append(Line("Parquet export (CPU)", f"{m[1]} s", f"pd.read_sql + pyarrow {m[2]} s", f"{m[3]}x"))
    for m in _find(rf"^stats: {NUMBER} s \(goal <= {NUMBER} s\)", out):
        lines.append(Line("stats", f"{m[1]} s", f"goal {m[2]} s", f"{_num(m[1]) / _num(m[2]):.2f}x", "<= 1x"))
    return lines


def parse_fetch(out: str) -> list[Line]:
    lines = []
    seq = _find(rf"sequential one-at-a-time \(old way\): +{NUMBER} s", out)
    agro = _find(rf"agroml fetch_images, (\d+) at once: +{NUMBER} s", out)
    ratio = _find(rf"^  ratio: {NUMBER}x faster", out)
    if seq and agro and ratio:
        lines.append(
            Line(
                f"image cache fill, {agro[0][1]} at once",
                f"{agro[0][2]} s",
                f"sequential GETs {seq[0][1]} s",
                f"{ratio[0][1]}x faster",
                ">= 10x",
            )
        )
    warm = _find(r"warm cache: (\d+)/(\d+) cached in .*? with (\d+) requests", out)
    if warm:
        lines.append(Line("warm cache", f"{warm[0][3]} requests", f"{warm[0][2]} images", "-", "0 requests"))
    keyset = _find(rf"keyset \(id=gt.<last>\): +{NUMBER} s", out)
    offset = _find(rf"offset \(.range\): +{NUMBER} s", out)
    pratio = _find(rf"ratio: keyset {NUMBER}x faster than offset", out)
    if keyset and offset and pratio:
        lines.append(
            Line("keyset paging", f"{keyset[0][1]} s", f"offset paging {offset[0][1]} s", f"{pratio[0][1]}x faster")
        )
    for m in _find(r"^  (keyset|offset): (\d+) rows read, (\d+) read twice, (\d+) of the (\d+) rows", out):
        lines.append(
            Line(f"{m[1]} paging while rows arrive", f"{m[3]} twice, {m[4]} missed", f"{m[5]} rows", "-", "0 / 0")
        )
    return lines


def parse_scratch(out: str) -> list[Line]:
    lines = []
    for m in _find(rf"^(\d+) px \(images/s\): pipeline {NUMBER} uncached, {NUMBER} cached", out):
        lines.append(
            Line(
                f"{m[1]} px input pipeline",
                f"{m[3]} img/s cached",
                f"uncached {m[2]} img/s",
                f"{_num(m[3]) / _num(m[2]):.1f}x",
            )
        )
    sizes = [m[1] for m in _find(r"^(\d+) px \(images/s\)", out)]
    for size, m in zip(
        sizes, _find(rf"epoch {NUMBER} uncached, {NUMBER} cached -> cache {NUMBER}x", out), strict=False
    ):
        lines.append(Line(f"{size} px epoch", f"{m[2]} img/s cached", f"uncached {m[1]} img/s", f"{m[3]}x"))
    for size, m in zip(
        sizes,
        _find(rf"whole run: before {NUMBER} min \((\d+) epochs\), after {NUMBER} min .*?-> {NUMBER}x", out),
        strict=False,
    ):
        lines.append(
            Line(f"{size} px whole from-scratch run", f"{m[3]} min", f"before issue 11 {m[1]} min", f"{m[4]}x faster")
        )
    return lines


def parse_tensorboard(out: str) -> list[Line]:
    pattern = (
        rf"^(\w+): {NUMBER} s/epoch without, {NUMBER} s/epoch with TensorBoard -> ([-+0-9.]+) ms/epoch, ratio {NUMBER}x"
    )
    return [
        Line(f"{m[1]} epoch with TensorBoard", f"{m[3]} s/epoch", f"without {m[2]} s/epoch", f"{m[5]}x", "~1x")
        for m in _find(pattern, out)
    ]


def parse_feature_store(out: str) -> list[Line]:
    lines = []
    pattern = (
        rf"phase 1 \(feature extraction\): store cleared {NUMBER} s vs with the store {NUMBER} s -> ratio {NUMBER}x"
    )
    for m in _find(pattern, out):
        lines.append(
            Line("retrain phase 1, feature store", f"{m[2]} s", f"store cleared {m[1]} s", f"{m[3]}x", ">= 5x")
        )
    for m in _find(rf"test accuracy: store cleared {NUMBER}, store off {NUMBER}, with the store {NUMBER}", out):
        lines.append(Line("test accuracy, feature store", m[3], f"store cleared {m[1]}", "-", "the same"))
    return lines


def parse_api(out: str) -> list[Line]:
    lines = []
    pattern = rf"^GET (\S+): median {NUMBER} ms while training vs {NUMBER} ms idle \(baseline\): {NUMBER}x"
    for m in _find(pattern, out):
        lines.append(Line(f"GET {m[1]} while training", f"{m[2]} ms", f"idle {m[3]} ms", f"{m[4]}x", "< 200 ms"))
    pattern = rf"^load: (\d+) clients x {NUMBER} s on {NUMBER} rows.*?: {NUMBER} req/s, "
    pattern += rf"p50 {NUMBER} ms, p99 {NUMBER} ms, (\d+) errors"
    for m in _find(pattern, out):
        lines.append(
            Line(
                f"/data-stats load, {m[1]} clients, {m[3]} rows",
                f"{m[4]} req/s, p99 {m[6]} ms",
                "-",
                "-",
                f"{m[7]} errors (goal 0)",
            )
        )
    return lines


def parse_train(out: str) -> list[Line]:
    old = _find(rf"^old kind \(in-memory, fit\): +{NUMBER} s +val accuracy {NUMBER}", out)
    new = _find(rf"^agroml fast path \(.*?\): +{NUMBER} s +val accuracy {NUMBER}", out)
    ratio = _find(rf"^ratio old/new wall time: {NUMBER}x", out)
    lines = []
    if old and new and ratio:
        lines.append(
            Line(
                "train phase 1 (fast path)",
                f"{new[0][1]} s",
                f"in-memory fit {old[0][1]} s",
                f"{ratio[0][1]}x",
                ">= 5x",
            )
        )
        lines.append(Line("val accuracy, fast path", new[0][2], f"in-memory fit {old[0][2]}", "-", "within 2 points"))
    for m in _find(rf"^memory run: .*? on (\d+) images .*?peak RSS of this training process {NUMBER} GiB", out):
        lines.append(Line(f"peak RSS of train, {m[1]} images", f"{m[2]} GiB", "goal 3 GiB", "-", "< 3 GiB"))
    return lines


BENCHMARKS = [
    Bench(
        "analysis",
        "bench_analysis.py",
        "stats and a Parquet export of the local store vs pd.read_sql + pyarrow",
        ["--rows", "100000", "--repeat", "2"],
        [],
        parse_analysis,
    ),
    Bench(
        "fetch",
        "bench_fetch.py",
        "image-cache fill vs sequential GETs; keyset vs offset paging (loopback Supabase)",
        ["--images", "150", "--rows", "20000", "--repeat", "2", "--inserts", "20"],
        [],
        parse_fetch,
    ),
    Bench(
        "scratch",
        "bench_scratch.py",
        "from-scratch MobileNetV2 (preset width): pipeline and epoch images/s, uncached vs cached",
        ["--n", "200", "--sizes", "32", "--epochs", "2", "--repeats", "3"],
        [],
        parse_scratch,
        quick_timeout=480,
    ),
    Bench(
        "tensorboard",
        "bench_tensorboard.py",
        "seconds per head epoch with vs without the TensorBoard callback",
        ["--n", "400", "--epochs", "8", "--scratch-n", "0", "--repeat", "2"],
        ["--scratch-n", "0"],
        parse_tensorboard,
    ),
    Bench(
        "feature_store",
        "bench_feature_store.py",
        "a retrain after 10% more rows: phase 1 with the feature store vs the store cleared",
        ["--n", "120", "--size", "32", "--epochs", "2"],
        ["--n", "400", "--size", "96", "--epochs", "5"],
        parse_feature_store,
        quick_timeout=480,
    ),
    Bench(
        "api",
        "bench_api.py",
        "agroml serve: /health and /data-stats latency while training vs idle; /data-stats under load",
        ["--requests", "20", "--rows", "10000", "--seconds", "5", "--clients", "4", "--no-wait-epoch"],
        [],
        parse_api,
        quick_timeout=480,
    ),
    Bench(
        "train",
        "bench_train.py",
        "phase 1 on cached features vs a plain in-memory Keras fit (random base)",
        ["--n", "150", "--size", "32", "--epochs", "10", "--memory-n", "0"],
        ["--memory-n", "0"],
        parse_train,
        quick_timeout=480,
    ),
]


def parse_json_lines(out: str) -> list[Line] | None:
    """The benchmark's own machine-readable last line, when it prints one (``{"run_all": [...]}``)."""
    for text in reversed(out.splitlines()):
        if text.startswith('{"run_all"'):
            try:
                return [Line(**{k: str(v) for k, v in row.items()}) for row in json.loads(text)["run_all"]]
            except (ValueError, TypeError, KeyError):
                return None
    return None


def run_one(bench: Bench, quick: bool, out_dir: Path) -> Result:
    args = bench.quick if quick else bench.full
    cmd = [sys.executable, str(ROOT / "benchmarks" / bench.script), *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    shown = " ".join(["python", f"benchmarks/{bench.script}", *args])
    print(f"[{bench.name}] {shown}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    log = out_dir / f"{bench.name}.log"
    # a session of its own: on timeout the benchmark's children (servers, workers) are stopped with it
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=bench.quick_timeout if quick else None)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        code = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):  # what a finished benchmark left behind
            os.killpg(proc.pid, signal.SIGKILL)
    seconds = time.perf_counter() - start
    log.write_text(f"$ {shown}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    lines = parse_json_lines(stdout)
    if lines is None:
        lines = bench.parse(stdout)
    result = Result(bench.name, shown, round(seconds, 1), code, lines)
    if code is None:
        result.problem = f"stopped after {bench.quick_timeout} s (quick-mode limit); output in {log}"
    elif code != 0:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        result.problem = f"exit {code}: {last[:200]}; output in {log}"
    elif not lines:
        result.problem = f"ran but printed none of the figures this script reads; output in {log}"
    status = "ok" if not result.problem else result.problem
    print(f"[{bench.name}] {seconds:.0f} s: {status}", file=sys.stderr, flush=True)
    return result


def machine() -> dict[str, object]:
    """What the figures were measured on: CPUs, memory, GPU, load, versions, commit, date."""
    mem_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = re.search(r"MemTotal:\s+(\d+)", meminfo.read_text())
        mem_gib = round(int(kib[1]) / 2**20, 1) if kib else None
    gpu = "none found (no nvidia-smi)"
    if shutil.which("nvidia-smi"):
        probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        gpu = probe.stdout.strip() or "nvidia-smi found no GPU"
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "memory_gib": mem_gib,
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": commit.stdout.strip() or "unknown",
        "packages": versions,
    }


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"


def render(info: dict[str, object], results: list[Result], quick: bool, wall: float) -> str:
    packages = info["packages"]
    assert isinstance(packages, dict)
    out = [
        f"agroml benchmarks ({'--quick' if quick else 'full'}), {info['date_utc']} UTC, commit {info['commit']}",
        f"machine: {info['cpus']} CPUs, {info['memory_gib']} GiB memory, GPU: {info['gpu']}; {info['platform']}",
        f"load average (1, 5, 15 min): before {info['load_before']}, after {info['load_after']}",
        f"python {info['python']}; " + ", ".join(f"{k} {v}" for k, v in packages.items()),
        f"wall time: {wall:.0f} s",
        "",
        "| benchmark | figure | agroml | baseline (same run) | ratio | goal |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for line in r.lines:
            out.append(f"| {r.name} | {line.name} | {line.figure} | {line.baseline} | {line.ratio} | {line.goal} |")
        if r.problem:
            out.append(f"| {r.name} | FAILED | {r.problem} | | | |")
    out.append("")
    out += [f"{r.name}: {r.seconds:.0f} s  {r.command}" for r in results]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: every benchmark in under 10 min in all")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS], help="run only these")
    parser.add_argument("--out", type=Path, help="keep each benchmark's output here (default: a new /tmp folder)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON document")
    args = parser.parse_args(argv)
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="agroml-bench-all-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    info = machine()
    info["load_before"] = load_average()
    start = time.perf_counter()
    results = [run_one(b, args.quick, out_dir) for b in chosen]
    wall = time.perf_counter() - start
    info["load_after"] = load_average()
    if args.json:
        doc = {"quick": args.quick, "machine": info, "wall_s": round(wall, 1), "results": [asdict(r) for r in results]}
        print(json.dumps(doc, indent=2))
    else:
        print(render(info, results, args.quick, wall))
    print(f"outputs of each benchmark: {out_dir}", file=sys.stderr)
    return 0 if all(not r.problem for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
