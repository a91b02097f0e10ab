"""Benchmark: the same rows trained with ``--strategy one`` and on two workers (``multiworker``, TF_CONFIG
on 127.0.0.1): test accuracy and wall time of each, per seed.

The named baseline is ``--strategy one`` (one process, TensorFlow's default strategy, Keras ``fit``),
measured in the same run on the same rows: the two-worker run's accuracy is compared with it, and its
wall time printed as a ratio to it. Each run is tests/multiworker_child.py (the library's ``train``, the
call `agroml train` makes), MobileNetV2 0.35 from scratch at 32 px, batch 8 per replica (two workers:
a global batch of 16 at twice the learning rate, half the steps), on :data:`shape_photos.COLOURS`
(classes told apart by colour: a task this model learns from scratch in a few epochs; the shapes at
32 px stay at chance for 20). Every run gets a store of its own with the same rows; the split.json
hashes printed must be equal per seed (the same split, the same test images).

What to expect: accuracy comparable (the issue 15 acceptance). Wall time: on a machine with fewer than
two free cores per worker, two workers are not faster (they share the cores and add a gRPC all-reduce
per step); the ratio is printed so a machine with a core pair per worker can show the gain.

    .venv/bin/python benchmarks/bench_strategies.py                  # seeds 0 and 1, 100 rows a colour, 12 epochs
    .venv/bin/python benchmarks/bench_strategies.py --seeds 0 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from shape_photos import add_colours

from agroml.core import config

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "tests" / "multiworker_child.py"


def _ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGROML_") and k != "TF_CONFIG"}
    return {**env, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _store(root: Path, rows: int) -> None:
    settings = config.resolve(
        {"data_dir": root / "data", "models_dir": root / "models", "min_total": 12, "min_per_class": 4},
        environ={},
        env_file=None,
    )
    add_colours(settings, rows)


def run(root: Path, strategy: str, workers: int, epochs: int, seed: int) -> dict:
    """Train the store under ``root`` with ``workers`` processes; the chief's figures and the wall time."""
    ports = _ports(workers)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    start = time.perf_counter()
    procs = []
    for i in range(workers):
        tf_config = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        procs.append(
            subprocess.Popen(
                [sys.executable, str(CHILD), str(root), strategy, str(epochs), str(root / f"out{i}.json"), str(seed)],
                env=_env(**(tf_config if strategy == "multiworker" else {})),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for i, proc in enumerate(procs):
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{strategy} worker {i} failed ({proc.returncode}):\n{err[-3000:]}")
    wall = time.perf_counter() - start
    chief = json.loads((root / "out0.json").read_text())
    saved = json.loads((Path(chief["path"]) / "config.json").read_text())
    history = (Path(chief["path"]) / "history.csv").read_text().strip().splitlines()
    return {
        "test": chief["test_accuracy"],
        "val": chief["val_accuracy"],
        "train_s": chief["seconds"],
        "wall_s": wall,
        "split": saved["split_sha256"][:12],
        "last_loss": float(history[-1].split(",")[3]),  # epoch,phase,accuracy,loss,...
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100, help="rows per colour (3 colours)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    print(f"{3 * args.rows} rows (3 colours), MobileNetV2 0.35 from scratch, 32 px, {args.epochs} epochs, batch 8")
    print("| seed | strategy | test acc. | val acc. | last train loss | train() s | wall s | split sha256 |")
    print("|---|---|---|---|---|---|---|---|")
    ratios, gaps = [], []
    with tempfile.TemporaryDirectory(prefix="bench-strategies-") as tmp:
        for seed in args.seeds:
            results = {}
            for strategy, workers in (("one", 1), ("multiworker", 2)):
                root = Path(tmp) / f"{seed}-{strategy}"
                _store(root, args.rows)
                r = results[strategy] = run(root, strategy, workers, args.epochs, seed)
                label = "one (baseline)" if workers == 1 else "multiworker, 2 workers"
                print(
                    f"| {seed} | {label} | {r['test']:.3f} | {r['val']:.3f} | {r['last_loss']:.3f} | "
                    f"{r['train_s']:.0f} | {r['wall_s']:.0f} | {r['split']} |",
                    flush=True,
                )
            one, two = results["one"], results["multiworker"]
            if one["split"] != two["split"]:
                raise SystemExit(f"seed {seed}: the two runs split differently ({one['split']} vs {two['split']})")
            ratios.append(two["wall_s"] / one["wall_s"])
            gaps.append(two["test"] - one["test"])
    print(f"two workers / one, wall time: {', '.join(f'{r:.2f}x' for r in ratios)} (seeds {args.seeds})")
    print(f"test accuracy, two workers - one: {', '.join(f'{g:+.3f}' for g in gaps)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
