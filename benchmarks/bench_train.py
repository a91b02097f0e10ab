"""Phase 1 of `agroml train` (the cached-feature fast path) against a plain Keras loop of the old kind.

Same images, same backbone and weights, same epochs, same run:
- old kind: every image decoded into one in-memory array, frozen base, ``model.fit`` for E epochs with
  validation each epoch (the base runs over every image E times);
- agroml: tf.data from files, the base run once per image and view, the head trained on the features.
Prints the wall-time ratio (goal >= 5x at 10 epochs), both loops' validation accuracy (goal: within 2
points) and test accuracy (used by neither loop to pick weights), then the peak RSS of a child process
running a whole ``agroml train`` on ``--memory-n`` demo rows (goal < 3 GiB for about 5,000 images).

``--aug-views`` defaults to 1 here: the old loop sees no augmentation, so one clean view is the same
training data; agroml's own default (2: one augmented view more) costs one more base pass per image.

ImageNet weights cannot be downloaded offline, so ``--weights`` takes a local file: a base weights file,
or a saved agroml model (``model.keras``) whose backbone is used, e.g. one trained from scratch on other
demo photos (benchmarks/README.md says how). Without it a random base is made here (BatchNorm statistics
set from the images): fine for timing, but its features are mostly noise, where heads differ by several
points from seed to seed and recipe details (agroml standardizes features, weights classes, keeps the
best epoch) swing the result; so the accuracy goal is judged only with ``--weights``.

Quick check:  python benchmarks/bench_train.py --n 300 --size 96 --epochs 10 --memory-n 0
Full:         python benchmarks/bench_train.py --n 1400 --weights MODEL.keras --memory-n 11000
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
    from agroml.core import config
    from agroml.demo import rows as demo

    settings = config.resolve(
        {"data_dir": root / "data", "models_dir": root / "models", "min_total": 10}, environ={}, env_file=None
    )
    if not settings.db_path.exists():
        demo.generate(settings, ["pest"], n=n, seed=seed)
    return settings


def make_weights(path: Path, arch: str, size: int, paths: list[str]) -> Path:
    """A base weights file with data-set BatchNorm statistics (one training-mode pass, momentum 0)."""
    import keras
    import numpy as np

    from agroml.images.pixels import load_image_array
    from agroml.training.backbones import build_base, get_backbone, set_bn_momentum

    keras.utils.set_random_seed(0)  # the same random base in every run
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


def base_weights(path: Path, out: Path) -> Path:
    """``path`` itself (a base weights file), or the base of a saved agroml model (``model.keras``)
    written to ``out`` as a weights file: a base trained from scratch on other demo photos gives
    features that carry signal, so the two loops' accuracies can be told apart from noise."""
    if path.suffix != ".keras":
        return path
    import keras

    model = keras.models.load_model(path, compile=False)
    bases = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(bases) != 1:
        raise SystemExit(f"{path}: expected one backbone inside the model, found {len(bases)}")
    bases[0].save_weights(out)
    return out


def old_kind(data, arch: str, weights: str, size: int, epochs: int, batch: int) -> tuple[float, dict[str, float]]:
    """All images in RAM, frozen base, fit for ``epochs`` with validation: (seconds, accuracy per split)."""
    import keras
    import numpy as np

    from agroml.images.pixels import load_image_array
    from agroml.training.backbones import build_base, get_backbone
    from agroml.training.model import build_model, compile_model

    start = time.perf_counter()
    xs = {}
    for split in ("train", "val"):
        paths, labels = data.arrays(split)
        xs[split] = (np.stack([load_image_array(p, size) for p in paths]).astype("float32"), labels)
    keras.utils.set_random_seed(0)
    backbone = get_backbone(arch)
    model = build_model(
        backbone, build_base(backbone, size, weights, 1.0), len(data.classes), size, scratch=False, augment=False
    )
    compile_model(model, 1e-3, len(data.classes))
    model.fit(*xs["train"], validation_data=xs["val"], epochs=epochs, batch_size=batch, verbose=0)
    seconds = time.perf_counter() - start
    return seconds, accuracies(model, data, size, batch)


def accuracies(model, data, size: int, batch: int) -> dict[str, float]:
    """Top-1 accuracy on val (what the goal names; agroml's phase 1 also picks its best epoch on it) and
    on test (used by neither loop: the unbiased one)."""
    from agroml.training.run import predict_split

    out = {}
    for split in ("val", "test"):
        labels, probs = predict_split(model, data, split, size, batch)
        out[split] = float((probs.argmax(1) == labels).mean())
    return out


def fast_path(
    data, arch: str, weights: str, size: int, epochs: int, batch: int, views: int, workdir: Path
) -> tuple[float, dict[str, float]]:
    """agroml's phase 1 (features cached, head trained on them): (seconds, accuracy per split)."""
    from agroml.training.backbones import get_backbone
    from agroml.training.config import TrainConfig
    from agroml.training.run import build_and_fit

    cfg = TrainConfig.for_weights(
        weights,
        model_type="pest",
        arch=arch,
        image_size=size,
        epochs=epochs,
        batch_size=batch,
        aug_views=views,
        patience=epochs + 1,
    )  # no early stop: the same number of epochs as the old loop
    start = time.perf_counter()
    model, _ = build_and_fit(cfg, get_backbone(arch), data, workdir)
    seconds = time.perf_counter() - start
    return seconds, accuracies(model, data, size, batch)


def memory_child(args: argparse.Namespace) -> None:
    """Run in a child: a whole ``agroml train`` run (data, phase 1 on the fast path, val and test
    metrics, model.keras, plots, registry) on the store the parent made; the parent reads this
    process's peak RSS, so demo drawing and weight making do not count."""
    from agroml.training.config import resolve_config
    from agroml.training.run import train

    root = Path(args.root)
    settings = make_store(root, 0)
    flags = {
        "model_type": "pest",
        "arch": args.arch,
        "weights": str(root / "base.weights.h5"),
        "image_size": args.size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "aug_views": args.aug_views,
    }
    result = train(settings, resolve_config(settings, flags))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    images = sum(sum(per_class.values()) for per_class in result.counts.values())
    print(
        f"memory run: agroml train on {images} images in {result.seconds:.0f} s (--aug-views {args.aug_views}, "
        f"test accuracy {result.metrics['test']['accuracy']:.3f}); peak RSS of this training process {peak:.2f} GiB "
        f"(goal < 3 GiB)",
        flush=True,
    )


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
    if args.weights:
        weights = str(base_weights(Path(args.weights), root / "given_base.weights.h5"))
    else:
        weights = str(make_weights(root / "base.weights.h5", args.arch, args.size, data.arrays("train")[0]))
    counts = {s: len(v) for s, v in data.splits.items()}
    print(
        f"{args.arch} at {args.size}px, {args.epochs} epochs, images per split {counts}, "
        f"weights {args.weights or 'a random base made here'}"
    )
    old_s, old_acc = old_kind(data, args.arch, weights, args.size, args.epochs, args.batch_size)
    print(
        f"old kind (in-memory, fit):        {old_s:8.1f} s   val accuracy {old_acc['val']:.3f}   "
        f"test accuracy {old_acc['test']:.3f}"
    )
    new_s, new_acc = fast_path(data, args.arch, weights, args.size, args.epochs, args.batch_size, args.aug_views, root)
    views = f"{args.aug_views} view{'s' if args.aug_views > 1 else ''}"
    print(
        f"agroml fast path ({views}):{' ' * (14 - len(views))}{new_s:8.1f} s   "
        f"val accuracy {new_acc['val']:.3f}   test accuracy {new_acc['test']:.3f}"
    )
    ratio, val_diff = old_s / new_s, abs(old_acc["val"] - new_acc["val"]) * 100
    verdict = ("OK" if val_diff <= 2 else "MISSED") if args.weights else "not judged: a random base, pass --weights"
    print(
        f"ratio old/new wall time: {ratio:.2f}x (goal >= 5x) {'OK' if ratio >= 5 else 'MISSED'}; "
        f"val accuracy difference {val_diff:.1f} points (goal <= 2) {verdict}; "
        f"test accuracy difference {abs(old_acc['test'] - new_acc['test']) * 100:.1f} points"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1400, help="demo rows for the speed comparison")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--arch", default="mobilenetv2")
    parser.add_argument(
        "--weights", default=None, help="a base weights file or a saved model.keras (default: a random base made here)"
    )
    parser.add_argument(
        "--aug-views",
        type=int,
        default=1,
        help="fast-path views per image (default 1: the old loop sees no augmentation either)",
    )
    parser.add_argument("--memory-n", type=int, default=11000, help="demo rows for the memory run (0: skip)")
    parser.add_argument("--memory-root", default=None, help="keep/reuse the memory run's store in this folder")
    parser.add_argument(
        "--speed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the speed comparison (--no-speed: memory only)",
    )
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
            child = [
                sys.executable,
                __file__,
                "--child",
                "--root",
                str(memory_root),
                "--size",
                str(args.size),
                "--epochs",
                str(args.epochs),
                "--arch",
                args.arch,
                "--memory-n",
                str(args.memory_n),
                "--aug-views",
                str(args.aug_views),
                "--batch-size",
                str(args.batch_size),
            ]
            subprocess.run(child, check=True)  # it prints its own peak RSS (getrusage of itself)


if __name__ == "__main__":
    main()
