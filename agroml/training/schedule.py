"""The from-scratch schedule as a budget that scales with the data: how many epochs, at which batch
size and learning rate, and whether EarlyStopping may end the run, chosen from the number of training
and validation images once they are known.

Why a budget and not fixed numbers: the old preset (150 epochs, batch 16, lr 5e-3) was tuned on the
600-row demo's 188 training images, where 150 epochs are 1,800 optimizer steps. On 1,800 images the
same 150 epochs are 12,000 steps and half an hour on two cores; on 20,000 images over three hours.
What a random network needs is a number of optimizer *steps* (of a batch that grows with the data),
not a number of passes. So:

- the batch size grows with the data (16 below 1,000 training images, 32 below 5,000, 64 above: more
  images per step where there are images to spare; per image it is not faster on two loaded CPUs,
  measured 0.81x of batch 16 at 64 px, benchmarks/README.md),
  and the learning rate with it, by the square root of the batch ratio (the usual rule for Adam);
- the epochs are the backbone's target steps (:data:`TARGET_STEPS`, fewer for EfficientNetB0:
  :data:`BACKBONE_STEPS`) divided by the steps of one epoch, kept between
  :data:`MIN_EPOCHS` (a big set still sees every image that often) and :data:`MAX_EPOCHS` (a tiny one
  does not loop for ever on the same photos);
- EarlyStopping (best weights restored) only when the validation split has :data:`TRUSTED_VAL`
  images or more: on a few dozen, "best val_loss" is noise and restoring it picks weights from
  mid-schedule at a high rate (measured on the demo: test 0.63 restored vs 0.78 last, README).

A value the user gave (``--epochs``, ``--batch-size``, ``--lr``, from a flag, ``--config`` or
``--like``) always wins; the preset marks the values to choose with 0 (:data:`AUTO`). The choice and
its reason are recorded as config.json's ``"schedule"``.

The pretrained recipe was checked for the same scaling and needs none: its phase 1 trains a head on
cached features (an epoch over 20,000 features takes seconds), EarlyStopping with ReduceLROnPlateau
already ends it when validation stops improving, and fine-tuning is opt-in with its own epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from agroml.training.config import AUTO, AUTO_FIELDS, TrainConfig

#: Optimizer steps of a from-scratch MobileNetV2 run, whatever the batch size (so more data, a bigger
#: batch, more images seen). On the demo's 188 training images: 150 epochs of batch 16 (measured: 100
#: epochs gave test 0.73 / 0.78 on seeds 0 / 1, 150 gave 0.927 on seed 0); on 1,259 digits 45 epochs of
#: batch 32 (measured: the same images seen as the demo's, 22 epochs, gave test 0.922 / 0.87 on seeds 0 / 1).
TARGET_STEPS = 1800
#: Backbones that get another number of steps. EfficientNetB0: its step costs 3.8x MobileNetV2 0.35's
#: at 64 px on two cores, so 1,800 steps would be about 25 minutes on 1,259 digits; it also learns
#: in fewer (squeeze-and-excitation, swish): on the digits 680 steps gave test 0.929 and 720 gave
#: 0.896 (seed 0, 17 and 18 epochs of batch 32; 296 s quiet), so 1,200 keeps the run near 8 minutes with
#: a margin on accuracy (benchmarks/README.md). ResNet50 keeps the MobileNetV2 budget: nothing measured
#: says it learns in fewer steps (it is the slowest: about 24 minutes on the demo).
BACKBONE_STEPS = {"efficientnetb0": 1200}
MIN_EPOCHS = 10
MAX_EPOCHS = 150
#: (fewest training images, batch size), largest first.
BATCH_STEPS = ((5000, 64), (1000, 32), (0, 16))
#: The batch size the base learning rate was tuned at, and that rate.
BASE_BATCH = 16
BASE_LR = 5e-3
#: Validation images from which EarlyStopping is trusted from scratch.
TRUSTED_VAL = 200
#: From scratch, EarlyStopping waits this share of the schedule (at least the preset's patience).
PATIENCE_SHARE = 0.25


@dataclass(frozen=True)
class Schedule:
    """What a from-scratch run trains with, and why (config.json's ``"schedule"``)."""

    epochs: int
    batch_size: int
    learning_rate: float
    steps_per_epoch: int
    early_stopping: bool
    patience: int
    chosen: tuple[str, ...]  # the fields this module chose (the others the user gave)
    reason: str

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "early_stopping": self.early_stopping,
            "patience": self.patience if self.early_stopping else None,
            "chosen": list(self.chosen),
            "reason": self.reason,
        }


def batch_for(n_train: int) -> int:
    """The batch size for ``n_train`` training images (:data:`BATCH_STEPS`)."""
    return next(batch for least, batch in BATCH_STEPS if n_train >= least)


def rate_for(batch_size: int) -> float:
    """:data:`BASE_LR` scaled by the square root of ``batch_size / BASE_BATCH``."""
    return float(f"{BASE_LR * math.sqrt(batch_size / BASE_BATCH):.3g}")


def target_steps(arch: str) -> int:
    """The from-scratch step budget of backbone ``arch`` (:data:`BACKBONE_STEPS`, else :data:`TARGET_STEPS`)."""
    return BACKBONE_STEPS.get((arch or "").strip().lower(), TARGET_STEPS)


def epochs_for(n_train: int, batch_size: int, target: int = TARGET_STEPS) -> int:
    """``target`` steps in whole epochs of ``n_train`` images, within [MIN_EPOCHS, MAX_EPOCHS]."""
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    return min(MAX_EPOCHS, max(MIN_EPOCHS, round(target / steps_per_epoch)))


def plan_schedule(cfg: TrainConfig, n_train: int, n_val: int) -> Schedule:
    """The schedule of a from-scratch ``cfg`` on ``n_train`` / ``n_val`` images; its :data:`AUTO` values
    chosen here, every other value kept as given."""
    chosen = tuple(name for name in AUTO_FIELDS if getattr(cfg, name) == AUTO)
    batch = cfg.batch_size or batch_for(n_train)
    rate = cfg.learning_rate or rate_for(batch)
    target = target_steps(cfg.arch)
    epochs = cfg.epochs or epochs_for(n_train, batch, target)
    steps_per_epoch = max(1, math.ceil(n_train / batch))
    early = n_val >= TRUSTED_VAL
    patience = max(cfg.patience, math.ceil(PATIENCE_SHARE * epochs))
    parts = []
    if "batch_size" in chosen:
        parts.append(f"batch {batch} for {n_train} training images")
    if "learning_rate" in chosen:
        parts.append(f"lr {rate:g} = {BASE_LR:g} x sqrt({batch}/{BASE_BATCH})")
    if "epochs" in chosen:
        raw = target / steps_per_epoch
        bound = f"the {'floor' if raw < MIN_EPOCHS else 'ceiling'} of {MIN_EPOCHS}-{MAX_EPOCHS} epochs, "
        parts.append(
            f"{epochs} epochs ({epochs * steps_per_epoch} steps of {batch}): "
            f"{bound if epochs != round(raw) else ''}{target} target steps for {cfg.arch} / {steps_per_epoch} "
            "per epoch"
        )
    given = [name for name in AUTO_FIELDS if name not in chosen]
    if given:
        parts.append(f"{', '.join(given)} as given")
    parts.append(
        f"EarlyStopping (patience {patience}, best weights restored): {n_val} validation images >= {TRUSTED_VAL}"
        if early
        else f"no EarlyStopping: {n_val} validation images < {TRUSTED_VAL} are too few to trust; the schedule runs "
        "to its end and the last weights are kept"
    )
    return Schedule(epochs, batch, rate, steps_per_epoch, early, patience, chosen, "; ".join(parts))


def apply_schedule(cfg: TrainConfig, n_train: int, n_val: int) -> tuple[TrainConfig, dict[str, Any]]:
    """``cfg`` with its schedule filled in, and config.json's ``"schedule"`` entry.

    From scratch: :func:`plan_schedule`. Pretrained: the preset as given (see the module docstring).
    """
    if not cfg.scratch:
        return cfg, {
            "steps_per_epoch": max(1, math.ceil(n_train / cfg.batch_size)),
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "learning_rate": cfg.learning_rate,
            "early_stopping": True,
            "patience": cfg.patience,
            "chosen": [],
            "reason": "pretrained: the head trains on cached features, EarlyStopping and ReduceLROnPlateau end "
            "it when validation stops improving; nothing to scale",
        }
    plan = plan_schedule(cfg, n_train, n_val)
    cfg = replace(
        cfg, epochs=plan.epochs, batch_size=plan.batch_size, learning_rate=plan.learning_rate, patience=plan.patience
    )
    return cfg, plan.to_dict()
