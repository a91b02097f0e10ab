"""The recipe: the phases that train a model with a :class:`~agroml.training.config.TrainConfig`.

- phase 1 ("head"): the head on the frozen base, by default on cached features (training/features.py);
- phase 2 ("fine_tune", ``--fine-tune-layers N``): the top N base layers unfrozen, a low learning rate,
  BatchNorm kept in inference mode, recompiled;
- from scratch (``--weights none``) one phase ("scratch") trains the whole network, BatchNorm learning,
  with rotation at any angle and a warmup + cosine learning-rate schedule run to its end.
Each phase: a stop at the first non-finite loss and a progress callback (the CLI draws it; the
registry records each epoch); the pretrained phases also EarlyStopping restoring the best weights,
ReduceLROnPlateau and a best checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agroml.core.errors import TrainingError
from agroml.core.progress import ProgressFn, no_progress, time_left_text
from agroml.training.config import TrainConfig, flag

if TYPE_CHECKING:
    import keras
    import tensorflow as tf
    from keras.optimizers.schedules import LearningRateSchedule


@dataclass(frozen=True)
class EpochStatus:
    """Where a training stands after an epoch: what the registry records and `agroml status` shows."""

    epoch: int  # across phases, from 1
    metrics: dict[str, float]
    phase: str
    phase_epoch: int  # within the phase, from 1
    phase_epochs: int  # the epochs this phase is set to run (EarlyStopping may end it sooner)
    total_epochs: int  # epochs before this phase + this phase's + the later phases'
    seconds_left: float


#: Called after every epoch with where the training stands.
EpochFn = Callable[[EpochStatus], None]


def seconds_left(epoch_seconds: Sequence[float], phase_epochs: int, later_epochs: int = 0) -> float:
    """The mean epoch time of the current phase so far times the epochs left in it and in later phases.

    The first epoch counts only until a second one is timed: it also traces the graph and fills the
    decoded-image cache, so it is often several times longer than the rest (measured on the demo
    from scratch: at epoch 4 the estimate was 1,768 s for 425 s left with it in the mean). Later
    phases are assumed to run at this phase's rate (the only rate measured yet); a pretrained phase
    that stops early makes this an upper bound. Before the first epoch ends there is nothing to
    estimate from: NaN.
    """
    if not epoch_seconds:
        return math.nan
    timed = epoch_seconds[1:] or epoch_seconds
    mean = sum(timed) / len(timed)
    return mean * (max(0, phase_epochs - len(epoch_seconds)) + max(0, later_epochs))


class EpochReporter:
    """Keras callback forwarding epochs, steps and live metrics to ``progress`` and ``on_epoch``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # built lazily: keras is imported only when training
        import keras

        class _Reporter(keras.callbacks.Callback):
            def __init__(
                self,
                phase: str,
                epochs: int,
                steps: int | None,
                progress: ProgressFn,
                on_epoch: EpochFn | None,
                first_epoch: int,
                later_epochs: int = 0,
            ) -> None:
                super().__init__()
                self.phase, self.epochs, self.steps = phase, epochs, steps
                self.progress, self.on_epoch, self.first_epoch = progress, on_epoch, first_epoch
                self.later_epochs = later_epochs
                self.epoch_seconds: list[float] = []
                self.started = time.perf_counter()

            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                self.started = time.perf_counter()
                self.progress(f"{self.phase} steps", 0, self.steps)

            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                self.progress(f"{self.phase} steps", batch + 1, self.steps, format_metrics(logs or {}))

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                self.epoch_seconds.append(time.perf_counter() - self.started)  # training and validation
                logs = {k: float(v) for k, v in (logs or {}).items()}
                status = EpochStatus(
                    epoch=self.first_epoch + epoch + 1,
                    metrics=logs,
                    phase=self.phase,
                    phase_epoch=epoch + 1,
                    phase_epochs=self.epochs,
                    total_epochs=self.first_epoch + self.epochs + self.later_epochs,
                    seconds_left=seconds_left(self.epoch_seconds, self.epochs, self.later_epochs),
                )
                info = " ".join(t for t in (time_left_text(status.seconds_left), format_metrics(logs)) if t)
                self.progress(f"{self.phase} epochs", epoch + 1, self.epochs, info)
                if self.on_epoch is not None:
                    self.on_epoch(status)

        return _Reporter(*args, **kwargs)


class StopOnNonFiniteLoss:
    """Keras callback raising a TrainingError at the first batch whose loss is NaN or infinite.

    Why not keras.callbacks.TerminateOnNaN: it prints to stdout (reserved for --json) and only stops
    fit, which then returns as if the phase had ended; the run went on to save a model predicting NaN.
    Raising fails the run: no folder is left, the registry records it failed with this message.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # built lazily: keras is imported only when training
        import keras

        class _Stop(keras.callbacks.Callback):
            def __init__(self, phase: str, first_epoch: int, rate_flag: str, rate: float) -> None:
                super().__init__()
                self.phase, self.first_epoch, self.rate_flag, self.rate = phase, first_epoch, rate_flag, rate
                self.epoch = 0

            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                self.epoch = epoch

            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                self._check((logs or {}).get("loss"), "training loss")

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                self._check((logs or {}).get("val_loss"), "validation loss")

            def _check(self, loss: Any, what: str) -> None:
                if loss is not None and not math.isfinite(float(loss)):
                    raise TrainingError(
                        f"the {what} became {float(loss)} in epoch {self.first_epoch + self.epoch + 1} "
                        f"({self.phase} phase): the model diverged and was not saved",
                        fix=f"lower {self.rate_flag} below this run's {self.rate:g}, e.g. to {self.rate / 10:g}",
                    )

        return _Stop(*args, **kwargs)


def format_metrics(logs: dict[str, Any]) -> str:
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    return " ".join(f"{k}={float(logs[k]):.3f}" for k in keys if k in logs)


def scratch_schedule(learning_rate: float, epochs: int, steps: int) -> LearningRateSchedule:
    """Linear warmup (a tenth of the run, at most 5 epochs) from lr/10 to lr, then cosine decay to 0.

    Why not ReduceLROnPlateau from scratch: on a few hundred images validation loss is noisy and
    plateaus early, so it halves the rate before a random network has learned anything (measured:
    MobileNetV2 from scratch stuck near 0.4 test accuracy); a fixed schedule trains it to the end.
    """
    import keras

    total = max(1, epochs * steps)
    warmup = min(5 * steps, total // 10)
    return keras.optimizers.schedules.CosineDecay(
        learning_rate / 10 if warmup else learning_rate,
        max(1, total - warmup),
        alpha=0.0,
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def callbacks(
    phase: str,
    cfg: TrainConfig,
    epochs: int,
    steps: int | None,
    workdir: Path,
    progress: ProgressFn,
    on_epoch: EpochFn | None,
    first_epoch: int,
    later_epochs: int = 0,
    stop_early: bool = False,
) -> list[Any]:
    """Pretrained phases: EarlyStopping (best weights restored), ReduceLROnPlateau and the best
    checkpoint. Both: a stop at the first non-finite loss and the progress reporter.

    From scratch the schedule runs to its end and the last weights are kept, unless ``stop_early``
    (a validation split large enough to trust, training/schedule.py): then EarlyStopping restoring
    the best weights, never ReduceLROnPlateau (the cosine decay sets the rate). Why not always: the
    cosine decay ends at a rate near zero, where the weights have settled; "best" val_loss on a few
    dozen validation images is noise, and restoring it picks weights from mid-schedule at a high rate
    (measured on the 600-row demo: test 0.63 restored vs 0.78 last; README, "Training").
    """
    import keras

    patience = cfg.patience
    stopping = (
        [keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)]
        if phase == "scratch" and stop_early
        else []
        if phase == "scratch"
        else [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=max(2, patience // 3), min_lr=1e-6
            ),
        ]
    )
    rate = "fine_tune_learning_rate" if phase == "fine_tune" else "learning_rate"
    # From scratch no best checkpoint: the last weights are kept (or EarlyStopping restores the best from
    # memory), so the file was written only to be deleted, and writing it (weights and Adam's slots, an
    # h5 dataset per variable) was about a fifth of the main thread's time in the demo's epochs (py-spy)
    checkpoint = (
        []
        if phase == "scratch"
        else [
            keras.callbacks.ModelCheckpoint(
                str(workdir / f"best_{phase}.weights.h5"),
                monitor="val_loss",
                save_best_only=True,
                save_weights_only=True,
            )
        ]
    )
    return [
        StopOnNonFiniteLoss(phase, first_epoch, flag(rate), getattr(cfg, rate)),
        *stopping,
        *checkpoint,
        EpochReporter(phase, epochs, steps, progress, on_epoch, first_epoch, later_epochs),
        *tensorboard_logger(cfg, workdir, phase),
    ]


#: A run's TensorBoard logs: ``<run>/tensorboard/<phase>/{train,validation}/`` (one TensorBoard run per phase).
TENSORBOARD_DIR = "tensorboard"


def tensorboard_logger(cfg: TrainConfig, workdir: Path, phase: str) -> list[Any]:
    """Keras' own TensorBoard callback (none with ``--no-tensorboard``), writing into ``workdir``.

    ``workdir`` is the run's .partial folder, so the logs move with the atomic rename and a failed run
    leaves none behind. One folder per phase: each phase is its own model.fit, whose epochs count from
    0 again. Epoch scalars only (loss, accuracy, top-3, learning rate): no weight histograms, no graph,
    no profiler (profile_batch=0): measured about 70 ms of CPU per epoch of the head phase, the cheapest
    epochs (benchmarks/bench_tensorboard.py).
    """
    if not cfg.tensorboard:
        return []
    import keras

    return [
        keras.callbacks.TensorBoard(
            log_dir=str(workdir / TENSORBOARD_DIR / phase),
            histogram_freq=0,
            write_graph=False,
            write_images=False,
            profile_batch=0,
            update_freq="epoch",
        )
    ]


def history_rows(phase: str, history: Any, first_epoch: int) -> list[dict[str, Any]]:
    """A Keras History as rows {epoch, phase, metric: value...} for history.csv and curves.png."""
    hist = history.history
    n = len(next(iter(hist.values()), []))
    return [
        {"epoch": first_epoch + i + 1, "phase": phase, **{k: float(v[i]) for k, v in hist.items()}} for i in range(n)
    ]


def build_optimizer(model: keras.Model) -> None:
    """Make the compiled optimizer's slot variables now, eagerly, in the model's strategy scope.

    Why: with no distribution strategy Keras 3 defers this to the first trace of the train step, where
    creating variables (Adam: two per weight, 316 for MobileNetV2) costs about 30 ms each in graph mode
    and makes tf.function trace the whole step a second time. Measured on the 2-core machine, MobileNetV2
    0.35 from scratch at 96 px: the first train step 38 s without, 22 s with (under cProfile).
    """
    if model.optimizer is not None and not model.optimizer.built:
        with model.distribute_strategy.scope():
            model.optimizer.build(model.trainable_variables)


def fit_phase(
    model: keras.Model,
    phase: str,
    cfg: TrainConfig,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    epochs: int,
    steps: int,
    class_weight: dict[int, float],
    workdir: Path,
    progress: ProgressFn = no_progress,
    on_epoch: EpochFn | None = None,
    first_epoch: int = 0,
    later_epochs: int = 0,
    stop_early: bool = False,
) -> list[dict[str, Any]]:
    """model.fit over the image pipeline for one phase; returns its history rows.

    ``later_epochs``: the epochs the phases after this one are set to run (for the time-left estimate).
    ``stop_early``: EarlyStopping from scratch too (see :func:`callbacks`).
    """
    build_optimizer(model)
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        steps_per_epoch=steps,
        class_weight=class_weight,
        verbose=0,
        shuffle=False,  # tf.data shuffles itself
        callbacks=callbacks(
            phase, cfg, epochs, steps, workdir, progress, on_epoch, first_epoch, later_epochs, stop_early
        ),
    )
    return history_rows(phase, history, first_epoch)
