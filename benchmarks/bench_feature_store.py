"""A retrain after 10% more rows arrived: phase 1 with the feature store against the store cleared.

What it does, in one temporary folder:
1. ``--n`` demo pest rows, a base weights file, and a first ``train`` (fills the feature store);
2. 10% more rows arrive (the demo again with ``1.1 * --n`` rows and the same seed: the first ``--n`` rows
   and photos are the same, the rest are new);
3. ``train`` again with the store as step 1 left it (the retrain), then the same ``train`` with the
   store folder deleted first (the baseline: every feature computed again), and with the store off
   (``AGROML_FEATURE_STORE_MB=0``: no views made for val / test images, nothing written).

Phase 1 is feature extraction: the time spent in ``features.train_and_val_features`` (the base's
passes, and the store's reads and writes). Printed: phase-1 seconds of both, the ratio (goal: at least
5x less with the store), whole-training seconds, the store's hits / computed and the test accuracy of
both (goal: the same; both runs have the same split and seed).

Weights: ImageNet weights cannot be downloaded here, so the base is a randomly initialised backbone
with BatchNorm statistics set from the demo photos (bench_train.make_weights), saved as a weights file
and passed as ``--weights``: the same forward-pass cost as ImageNet weights, but its features carry
little signal, so the accuracy figures are low and compared only with each other.

Run:  python benchmarks/bench_feature_store.py                     (--n 1000 --size 128, ~10 min on 2 cores)
      python benchmarks/bench_feature_store.py --n 300 --size 96   (quick check)
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench_train import make_store, make_weights  # run as a script, its folder is on sys.path

#: (wall seconds, CPU seconds of this process) of each phase 1
PHASE1: list[tuple[float, float]] = []


def timed_phase1() -> None:
    """Time every call of the fast path's phase 1 (run.build_and_fit calls it through the module)."""
    from agroml.training import features

    original = features.train_and_val_features

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            PHASE1.append((time.perf_counter() - start, time.process_time() - cpu))

    features.train_and_val_features = wrapper  # type: ignore[assignment]


def one_training(settings, cfg, name: str) -> dict[str, Any]:
    from agroml.training.run import train

    start = time.perf_counter()
    result = train(settings, cfg)
    store = result.config["feature_store"]
    row = {
        "name": name,
        "phase1": PHASE1[-1][0],
        "phase1_cpu": PHASE1[-1][1],
        "total": time.perf_counter() - start,
        "test": result.metrics["test"]["accuracy"],
        "val": result.metrics["val"]["accuracy"],
        "hits": store.get("hits", 0),
        "computed": store.get("computed", 0),
        "images": {s: sum(c.values()) for s, c in result.counts.items()},
    }
    print(
        f"{name}: phase 1 {row['phase1']:.1f} s (CPU {row['phase1_cpu']:.1f} s), training {row['total']:.1f} s, "
        f"store hits {row['hits']} "
        f"computed {row['computed']}, images {row['images']}, val accuracy {row['val']:.3f}, "
        f"test accuracy {row['test']:.3f}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="demo rows before the new ones (about 45%% trainable)")
    parser.add_argument("--more", type=float, default=0.10, help="share of new rows for the retrain")
    parser.add_argument("--arch", default="mobilenetv2")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()

    from agroml.training.config import TrainConfig
    from agroml.training.data import load_training_data
    from agroml.training.feature_store import store_path

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_fs_"))
    root.mkdir(parents=True, exist_ok=True)
    timed_phase1()
    try:
        settings = make_store(root, args.n)
        weights = root / "base.weights.h5"
        if not weights.exists():
            make_weights(weights, args.arch, args.size, load_training_data(settings, "pest").arrays("train")[0])
        cfg = TrainConfig.for_weights(
            str(weights), model_type="pest", arch=args.arch, image_size=args.size, epochs=args.epochs
        )
        first = one_training(settings, cfg, "first training (fills the store)")

        from agroml.demo import rows as demo

        demo.generate(settings, ["pest"], n=round(args.n * (1 + args.more)), seed=0)
        warm = one_training(settings, cfg, f"retrain after {args.more:.0%} more rows, with the store")
        shutil.rmtree(store_path(settings.data_dir).parent)
        cold = one_training(settings, cfg, f"retrain after {args.more:.0%} more rows, store cleared")
        off = one_training(replace(settings, feature_store_mb=0), cfg, "the same, store off")

        ratio, cpu_ratio = cold["phase1"] / warm["phase1"], cold["phase1_cpu"] / warm["phase1_cpu"]
        print()
        print(f"first training phase 1: {first['phase1']:.1f} s ({first['computed']} image views computed)")
        print(
            f"phase 1 (feature extraction): store cleared {cold['phase1']:.1f} s vs with the store "
            f"{warm['phase1']:.1f} s -> ratio {ratio:.1f}x (goal >= 5x) {'OK' if ratio >= 5 else 'MISSED'}"
        )
        print(
            f"phase 1 CPU time: store cleared {cold['phase1_cpu']:.1f} s vs with the store "
            f"{warm['phase1_cpu']:.1f} s -> ratio {cpu_ratio:.1f}x; store off {off['phase1']:.1f} s "
            f"(CPU {off['phase1_cpu']:.1f} s): against it {off['phase1'] / warm['phase1']:.1f}x "
            f"(CPU {off['phase1_cpu'] / warm['phase1_cpu']:.1f}x)"
        )
        print(
            f"whole training: store cleared {cold['total']:.1f} s, store off {off['total']:.1f} s, "
            f"with the store {warm['total']:.1f} s"
        )
        print(
            f"with the store: {warm['hits']} image views reused, {warm['computed']} computed; "
            f"cleared: {cold['computed']} computed"
        )
        print(
            f"test accuracy: store cleared {cold['test']:.3f}, store off {off['test']:.3f}, with the store "
            f"{warm['test']:.3f} (val {cold['val']:.3f}, {off['val']:.3f}, {warm['val']:.3f}; "
            f"{warm['images']['test']} test images)"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
