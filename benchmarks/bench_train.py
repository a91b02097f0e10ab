"""Phase 1 of `agroml train` (the cached-feature fast path) against a plain Keras loop of the old kind.

Same images, same backbone and weights, same epochs, same run:
- old kind: every image decoded into one in-memory array, frozen base, ``model.fit`` for E epochs with
  validation each epoch (the base runs over every image 2E times);
- agroml: tf.data from files, the base run once per image and view, the head trained on the features.
Prints the wall-time ratio (goal >= 5x at 10 epochs) and both validation accuracies (goal: within 2
points), then the peak RSS of a child process training phase 1 on ``--memory-n`` images (goal < 3 GiB).

ImageNet weights cannot be downloaded offline, so ``--weights`` takes a local weights file; without it
one is made here (a random base whose BatchNorm statistics are set from the images: well-scaled
features, not ImageNet quality, identical for both contenders).

Quick check:  python benchmarks/bench_train.py --n 300 --size 96 --epochs 10 --memory-n 0
Full:         python benchmarks/bench_train.py --n 1400 --size 224 --epochs 10 --memory-n 11000
(``--n`` and ``--memory-n`` count demo rows; about 45% of demo rows carry a trainable label.)
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def make_store(root: Path, n: int, seed: int = 0):
    from agroml import config, demo

    settings = config.resolve({"data_dir": root / "data", "models_dir": root / "models", "min_total": 10},
                              environ={}, env_file=None)
    if not settings.db_path.exists():
        demo.generate(settings, ["pest"], n=n, seed=seed)
    return settings


def make_weights(path: Path, arch: str, size: int, paths: list[str]) -> Path:
    """A base weights file with data-set BatchNorm statistics (one training-mode pass, momentum 0)."""
    import numpy as np

    from agroml.training.backbones import build_base, get_backbone, set_bn_momentum
    from agroml.training.data import load_image_array

    backbone = get_backbone(arch)
    base = build_base(backbone, size, "none", 1.0)
    x = np.stack([load_image_array(p, size) for p in paths[:64]]).astype("float32")
    for layer in backbone.preprocessing():
        x = np.asarray(layer(x))
    set_bn_momentum(base, 0.0)
    base(x, training=True)
    set_bn_momentum(base, 0.99)
    base.save_weights(path)
    return path


def old_kind(data, arch: str, weights: str, size: int, epochs: int, batch: int) -> tuple[float, float]:
    """All images in RAM, frozen base, fit for ``epochs`` with validation: (seconds, val accuracy)."""
    import keras
    import numpy as np

    from agroml.training.backbones import build_base, get_backbone
    from agroml.training.data import load_image_array
    from agroml.training.model import build_model, compile_model

    start = time.perf_counter()
    xs = {}
    for split in ("train", "val"):
        paths, labels = data.arrays(split)
        xs[split] = (np.stack([load_image_array(p, size) for p in paths]).astype("float32"), labels)
    keras.utils.set_random_seed(0)
    backbone = get_backbone(arch)
    model = build_model(backbone, build_base(backbone, size, weights, 1.0), len(data.classes), size, scratch=False,
                        augment=False)
    compile_model(model, 1e-3, len(data.classes))
    model.fit(*xs["train"], validation_data=xs["val"], epochs=epochs, batch_size=batch, verbose=0)
    seconds = time.perf_counter() - start
    probs = model.predict(xs["val"][0], verbose=0)
    return seconds, float((probs.argmax(1) == xs["val"][1]).mean())


def fast_path(data, arch: str, weights: str, size: int, epochs: int, batch: int, views: int,
              workdir: Path) -> tuple[float, float]:
    """agroml's phase 1 (features cached, head trained on them): (seconds, val accuracy)."""
    import numpy as np

    from agroml.training.backbones import get_backbone
    from agroml.training.data import make_dataset
    from agroml.training.loop import TrainConfig
    from agroml.training.run import build_and_fit

    cfg = TrainConfig("pest", arch, weights, 1.0, size, epochs, batch, 1e-3, aug_views=views,
                      patience=epochs + 1)  # no early stop: the same number of epochs as the old loop
    start = time.perf_counter()
    model, _ = build_and_fit(cfg, get_backbone(arch), data, workdir)
    seconds = time.perf_counter() - start
    paths, labels = data.arrays("val")
    probs = model.predict(make_dataset(paths, None, size, batch), verbose=0)
    return seconds, float((np.asarray(probs).argmax(1) == labels).mean())


def memory_child(args: argparse.Namespace) -> None:
    """Run in a child: phase 1 only (data loading, features, head, whole model) on the store the parent
    made; the parent reads this process's peak RSS, so demo drawing and weight making do not count."""
    from agroml.training.data import load_training_data

    root = Path(args.root)
    data = load_training_data(make_store(root, 0), "pest")
    print(f"memory run: {sum(len(v) for v in data.splits.values())} trainable images", flush=True)
    seconds, accuracy = fast_path(data, args.arch, str(root / "base.weights.h5"), args.size, args.epochs,
                                  args.batch_size, args.aug_views, root)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
    print(f"phase 1 in {seconds:.0f} s (val accuracy {accuracy:.3f}); peak RSS of this training process "
          f"{peak:.2f} GiB (goal < 3 GiB)", flush=True)


def prepare_memory_run(root: Path, args: argparse.Namespace) -> None:
    """The memory run's store (``--memory-n`` demo rows) and base weights, made in this process."""
    from agroml.training.data import load_training_data

    settings = make_store(root, args.memory_n, seed=1)
    if not (root / "base.weights.h5").exists():
        paths = load_training_data(settings, "pest").arrays("train")[0]
        make_weights(root / "base.weights.h5", args.arch, args.size, paths[:16])


def speed(root: Path, args: argparse.Namespace) -> None:
    """The old loop and the fast path on the same images, weights and epochs; prints the ratio."""
    from agroml.training.data import load_training_data

    settings = make_store(root / "speed", args.n)
    data = load_training_data(settings, "pest")
    weights = args.weights or str(make_weights(root / "base.weights.h5", args.arch, args.size,
                                               data.arrays("train")[0]))
    counts = {s: len(v) for s, v in data.splits.items()}
    print(f"{args.arch} at {args.size}px, {args.epochs} epochs, images per split {counts}, weights {weights}")
    old_s, old_acc = old_kind(data, args.arch, weights, args.size, args.epochs, args.batch_size)
    print(f"old kind (in-memory, fit):       {old_s:8.1f} s   val accuracy {old_acc:.3f}")
    new_s, new_acc = fast_path(data, args.arch, weights, args.size, args.epochs, args.batch_size, args.aug_views,
                               root)
    print(f"agroml fast path ({args.aug_views} views):     {new_s:8.1f} s   val accuracy {new_acc:.3f}")
    print(f"ratio old/new wall time: {old_s / new_s:.2f}x (goal >= 5x); "
          f"val accuracy difference {abs(old_acc - new_acc) * 100:.1f} points (goal <= 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1400, help="demo rows for the speed comparison")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--arch", default="mobilenetv2")
    parser.add_argument("--weights", default=None, help="a base weights file (default: made here)")
    parser.add_argument("--aug-views", type=int, default=2)
    parser.add_argument("--memory-n", type=int, default=11000, help="demo rows for the memory run (0: skip)")
    parser.add_argument("--memory-root", default=None, help="keep/reuse the memory run's store in this folder")
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True,
                        help="run the speed comparison (--no-speed: memory only)")
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        memory_child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.speed:
            speed(root, args)
        if args.memory_n:
            memory_root = Path(args.memory_root) if args.memory_root else root / "memory"
            prepare_memory_run(memory_root, args)
            child = [sys.executable, __file__, "--child", "--root", str(memory_root), "--size", str(args.size),
                     "--epochs", str(args.epochs), "--arch", args.arch, "--memory-n", str(args.memory_n),
                     "--aug-views", str(args.aug_views), "--batch-size", str(args.batch_size)]
            subprocess.run(child, check=True)  # it prints its own peak RSS (getrusage of itself)


if __name__ == "__main__":
    main()
