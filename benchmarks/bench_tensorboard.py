"""What the TensorBoard logs cost a training: the same phases with and without the callback.

Baseline: the identical fit with ``tensorboard=False``, measured in the same process, alternating
on / off so machine load hits both alike. Two phases:
- ``head``: the head on cached features (training/features.py), the cheapest epochs agroml runs, where
  a fixed per-epoch cost weighs most;
- ``scratch``: MobileNetV2 0.35 trained through model.fit on images (training/loop.fit_phase).
Prints per-epoch CPU seconds (``--wall``: wall seconds) on and off, the difference in ms per epoch
and the ratio on / off.

    .venv/bin/python benchmarks/bench_tensorboard.py                 # defaults below
    .venv/bin/python benchmarks/bench_tensorboard.py --n 1400 --epochs 20 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

#: CPU seconds of this process (all threads): on a shared, loaded machine wall time measures the other
#: processes; --wall measures wall time instead.
CLOCK = time.process_time


def time_head(cfg, n: int, dim: int, classes: int, workdir: Path) -> float:
    from agroml.training.features import fit_head_on_features

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(cfg.aug_views, n, dim)).astype("float32")
    y = rng.integers(0, classes, n)
    val = rng.normal(size=(n // 5, dim)).astype("float32")
    yv = rng.integers(0, classes, n // 5)
    start = CLOCK()
    fit_head_on_features(feats, y, val, yv, classes, cfg, {i: 1.0 for i in range(classes)}, workdir)
    return CLOCK() - start


def time_scratch(cfg, n: int, classes: int, workdir: Path) -> float:
    import tensorflow as tf

    from agroml.training.backbones import build_base, get_backbone
    from agroml.training.loop import fit_phase
    from agroml.training.model import build_model, compile_model

    rng = np.random.default_rng(0)
    size = cfg.image_size
    x = rng.integers(0, 255, (n, size, size, 3)).astype("uint8")
    y = rng.integers(0, classes, n)
    train = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(cfg.batch_size)
    val = tf.data.Dataset.from_tensor_slices((x[: n // 5], y[: n // 5])).batch(cfg.batch_size)
    backbone = get_backbone("mobilenetv2")
    model = build_model(backbone, build_base(backbone, size, "none", 0.35), classes, size, scratch=True, seed=0)
    compile_model(model, 1e-3, classes)
    steps = -(-n // cfg.batch_size)
    start = CLOCK()
    fit_phase(model, "scratch", cfg, train, val, cfg.epochs, steps, {i: 1.0 for i in range(classes)}, workdir)
    return CLOCK() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1400, help="training images (features) of the head phase")
    parser.add_argument("--epochs", type=int, default=20, help="head epochs")
    parser.add_argument("--scratch-n", type=int, default=256, help="training images of the scratch phase (0: skip it)")
    parser.add_argument("--scratch-epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=96, help="scratch image size")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--wall", action="store_true", help="time wall seconds instead of CPU seconds")
    args = parser.parse_args()
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter

    from agroml.training.config import TrainConfig

    head_cfg = TrainConfig.for_weights("imagenet", model_type="pest", epochs=args.epochs, patience=args.epochs + 1)
    scratch_cfg = TrainConfig.for_weights(
        "none", model_type="pest", epochs=args.scratch_epochs, image_size=args.size, batch_size=32
    )
    results: dict[str, dict[bool, list[float]]] = {"head": {True: [], False: []}, "scratch": {True: [], False: []}}
    for _ in range(args.repeat):
        for on in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                t = time_head(replace(head_cfg, tensorboard=on), args.n, 1280, 5, Path(tmp))
                results["head"][on].append(t / args.epochs)
                assert on == (Path(tmp) / "tensorboard").is_dir()
            if not args.scratch_n:  # --scratch-n 0: the head phase only
                continue
            with tempfile.TemporaryDirectory() as tmp:
                t = time_scratch(replace(scratch_cfg, tensorboard=on), args.scratch_n, 5, Path(tmp))
                results["scratch"][on].append(t / args.scratch_epochs)
    for phase, times in results.items():
        if not times[True]:
            continue
        on, off = min(times[True]), min(times[False])
        print(
            f"{phase}: {off:.3f} s/epoch without, {on:.3f} s/epoch with TensorBoard -> "
            f"{(on - off) * 1000:+.1f} ms/epoch, ratio {on / off:.3f}x "
            f"(best of {args.repeat}; medians {statistics.median(times[False]):.3f} / "
            f"{statistics.median(times[True]):.3f})"
        )


if __name__ == "__main__":
    main()
