"""From-scratch training throughput (MobileNetV2 at the preset width, ``--weights none``): where an epoch goes.

For each image size, on the same demo photos and in the same run, images per second of:
- **pipeline**: iterating ``make_dataset`` over the training split alone (no model), as it was
  (decoding every file each epoch) and with the cache (the second pass, read from memory);
- **step**: the model's compiled train step repeated on one batch already in memory: the ceiling
  the input pipeline can at best let an epoch reach; before with the augmentation layer in the step,
  after without it (from scratch it runs in the input pipeline beside the step, training/augment.py);
- **epoch**: ``model.fit`` of the training recipe (train + validation, the scratch schedule), epochs
  after the first (which traces the graph and, with the cache, fills it), uncached and cached.
Then the ratios: cached / uncached pipeline and epoch, and epoch / step (how close an epoch gets to
the step's ceiling). Figures are images per second of the training split (validation time included
in an epoch, as a user waits for it).

Before / after, in the same run: the named baseline **before** is the recipe before issue 11
(every file decoded each epoch, batch 16, a fixed 150 epochs, augmentation in the model); **after** is
today's (decoded images cached, augmented in the pipeline, the batch size and epochs of the data-scaled
schedule, training/schedule.py). Both are
projected to a whole run (epochs x measured epoch time) and their ratio printed.

``--profile DIR`` also writes a TensorFlow profiler trace of two cached epochs (open it with
``tensorboard --logdir DIR``, Profile tab: the tf.data input-pipeline analyzer shows whether the step
waits for input, and the trace viewer where a step's time goes: augmentation, convolutions, optimizer).

Quick:  python benchmarks/bench_scratch.py                       # 600 demo rows, 64 and 96 px
Own photos:  python benchmarks/bench_scratch.py --data-dir DIR   # a data folder with a local store
Digits:  python benchmarks/digits_folder.py /tmp/d/folder && AGROML_DATA_DIR=/tmp/d/data agroml import ...
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: The baseline: the from-scratch recipe before issue 11 (uncached pipeline, fixed schedule).
BEFORE_EPOCHS, BEFORE_BATCH, BEFORE_LR = 150, 16, 5e-3


def make_settings(root: Path, n: int, data_dir: Path | None):
    from agroml.core import config
    from agroml.demo import rows as demo

    settings = config.resolve(
        {"data_dir": data_dir or root / "data", "models_dir": root / "models", "min_total": 10},
        environ={},
        env_file=None,
    )
    if data_dir is None:
        demo.generate(settings, ["pest"], n=n, seed=0)
    return settings


def per_second(n_images: int, seconds: float) -> float:
    return n_images / seconds if seconds > 0 else float("inf")


def pipeline_rate(paths, labels, size: int, batch: int, cache: bool) -> float:
    """Images/s of one pass over the shuffled training pipeline (with ``cache``, the pass after the filling one)."""
    from agroml.training.data import make_dataset

    ds = make_dataset(paths, labels, size, batch, shuffle=True, seed=0, cache=cache)
    if cache:
        for _ in ds:  # the first epoch decodes and fills the cache
            pass
    start = time.perf_counter()
    for _ in ds:
        pass
    return per_second(len(paths), time.perf_counter() - start)


def new_model(data, size: int, batch: int, epochs: int, steps: int, rate: float = BEFORE_LR, augment: bool = True):
    """The from-scratch network and its compile, as ``train --weights none`` builds them (``augment``: with
    the augmentation as the model's first layer, as before; today it is done in the pipeline)."""
    import keras

    from agroml.training.backbones import build_base, get_backbone
    from agroml.training.config import SCRATCH
    from agroml.training.loop import build_optimizer, scratch_schedule
    from agroml.training.model import build_model, compile_model

    keras.utils.set_random_seed(0)
    backbone = get_backbone(SCRATCH.arch)
    base = build_base(backbone, size, "none", SCRATCH.alpha)
    model = build_model(backbone, base, len(data.classes), size, scratch=True, dropout=SCRATCH.dropout, augment=augment)
    compile_model(model, scratch_schedule(rate, epochs, steps), len(data.classes))
    build_optimizer(model)
    return model


def step_rate(data, size: int, batch: int, repeats: int, augment: bool = True) -> float:
    """Images/s of the compiled train step on one batch kept in memory (no input pipeline at all);
    ``augment``: the model's augmentation layer in the step (before) or not (today: in the pipeline)."""
    from agroml.training.data import make_dataset

    paths, labels = data.arrays("train")
    x, y = next(iter(make_dataset(paths, labels, size, batch)))
    model = new_model(data, size, batch, 10, 10, augment=augment)
    for _ in range(3):  # trace and warm up
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(repeats):
        model.train_on_batch(x, y)
    return per_second(repeats * int(x.shape[0]), time.perf_counter() - start)


def epoch_rate(
    data, size: int, batch: int, epochs: int, cache: bool, profile: Path | None = None, in_pipeline: bool = False
) -> float:
    """Images/s of the training split over ``model.fit`` epochs after the first (the first traces / fills).

    ``in_pipeline``: augmentation in the input pipeline (training/augment.py, today's from-scratch
    recipe) instead of the model's first layer. With ``profile``: a TF profiler trace of the epochs
    after the first, written there."""
    import math

    import keras

    from agroml.training.augment import augment_batches
    from agroml.training.data import make_dataset
    from agroml.training.model import augmentation_settings

    paths, labels = data.arrays("train")
    val_paths, val_labels = data.arrays("val")
    steps = max(1, math.ceil(len(paths) / batch))
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if profile is not None and epoch == 1:
                import tensorflow as tf

                tf.profiler.experimental.start(str(profile))
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

        def on_train_end(self, logs=None):
            if profile is not None and epochs > 1:
                import tensorflow as tf

                tf.profiler.experimental.stop()

    model = new_model(data, size, batch, epochs, steps, augment=not in_pipeline)
    train = make_dataset(paths, labels, size, batch, shuffle=True, seed=0, repeat=True, cache=cache)
    if in_pipeline:
        train = augment_batches(train, size, augmentation_settings(scratch=True), 0)
    model.fit(
        train,
        validation_data=make_dataset(val_paths, val_labels, size, batch, cache=cache),
        epochs=epochs,
        steps_per_epoch=steps,
        class_weight=data.class_weights(),
        verbose=0,
        shuffle=False,  # tf.data shuffles itself
        callbacks=[Timer()],
    )
    later = times[1:] or times
    return per_second(len(paths), sum(later) / len(later))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=600, help="demo rows (about 45%% carry a trainable label)")
    parser.add_argument("--data-dir", type=Path, default=None, help="a data folder with a store instead of demo rows")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--epochs", type=int, default=3, help="fit epochs per mode (the first is left out)")
    parser.add_argument("--repeats", type=int, default=20, help="train steps timed on one batch")
    parser.add_argument("--profile", type=Path, default=None, help="write a TF profiler trace of cached epochs here")
    args = parser.parse_args()

    from agroml.training.config import SCRATCH
    from agroml.training.data import load_training_data
    from agroml.training.schedule import plan_schedule

    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(Path(tmp), args.n, args.data_dir)
        data = load_training_data(settings, "pest", min_per_class=2)
        paths, labels = data.arrays("train")
        after = plan_schedule(SCRATCH, len(paths), len(data.splits["val"]))
        batch = after.batch_size
        print(
            f"{len(paths)} training / {len(data.splits['val'])} validation images, {len(data.classes)} classes, "
            f"MobileNetV2 width {SCRATCH.alpha}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}\n"
            f"before: {BEFORE_EPOCHS} epochs of batch {BEFORE_BATCH}, uncached; after: {after.epochs} epochs of "
            f"batch {batch} (lr {after.learning_rate:g}), cached ({after.reason})"
        )
        for size in args.sizes:
            pipe = pipeline_rate(paths, labels, size, BEFORE_BATCH, cache=False)
            pipe_cached = pipeline_rate(paths, labels, size, batch, cache=True)
            step = step_rate(data, size, BEFORE_BATCH, args.repeats)
            step_after = step_rate(data, size, batch, args.repeats, augment=False)
            epoch = epoch_rate(data, size, BEFORE_BATCH, args.epochs, cache=False)
            epoch_cached = epoch_rate(data, size, batch, args.epochs, cache=True, in_pipeline=True)
            profile = args.profile / f"{size}px" if args.profile else None
            if profile is not None:  # a pass of its own: tracing slows the epochs it records
                epoch_rate(data, size, batch, 3, cache=True, profile=profile, in_pipeline=True)
            run_before = BEFORE_EPOCHS * len(paths) / epoch
            run_after = after.epochs * len(paths) / epoch_cached
            print(f"{size} px (images/s): pipeline {pipe:.0f} uncached, {pipe_cached:.0f} cached; step {step:.0f}")
            print(
                f"  step at batch {batch} without the augmentation layer (done in the pipeline today): "
                f"{step_after:.0f} ({step_after / step:.2f}x the step with it at batch {BEFORE_BATCH})"
            )
            print(
                f"  epoch {epoch:.1f} uncached (augmented in the model), {epoch_cached:.1f} cached (augmented in "
                f"the pipeline) -> {epoch_cached / epoch:.2f}x"
            )
            print(
                f"  ratios: pipeline cached/uncached {pipe_cached / pipe:.1f}x; "
                f"epoch/step {epoch / step:.2f} uncached, {epoch_cached / step_after:.2f} cached; "
                f"uncached pipeline/step {pipe / step:.1f}x"
            )
            print(
                f"  whole run: before {run_before / 60:.1f} min ({BEFORE_EPOCHS} epochs), after "
                f"{run_after / 60:.1f} min ({after.epochs} epochs) -> {run_before / run_after:.2f}x faster"
            )
            if profile is not None:
                print(f"  profile: tensorboard --logdir {profile}")


if __name__ == "__main__":
    main()
