"""``train(...)``: one training run, from the store to a complete folder ``models/<type>/<run_id>/``.

Why a ``.partial`` folder renamed at the end: a run killed half-way (Ctrl-C, SIGTERM, OOM) must never
leave a half-written model where a good one is expected; the rename is atomic, so the run folder
either has every file or does not exist. The registry records the run's state (running, succeeded,
failed, interrupted) and refuses a second training of the same model type while one is alive.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agroml.core.config import Settings
from agroml.core.files import to_jsonable, write_json
from agroml.core.progress import ProgressFn, no_progress
from agroml.images.pixels import load_image_array
from agroml.lifecycle import plots, tracking
from agroml.lifecycle.metrics import compute_metrics
from agroml.lifecycle.registry import Registry
from agroml.training import augment, distributed, feature_store, features, outputs
from agroml.training.backbones import Backbone, build_base, get_backbone
from agroml.training.config import TrainConfig
from agroml.training.data import CachePlan, TrainingData, load_training_data, make_dataset, plan_cache
from agroml.training.loop import EpochFn, EpochStatus, fit_phase, scratch_schedule
from agroml.training.model import (
    augmentation_settings,
    build_feature_extractor,
    build_model,
    compile_model,
    copy_head,
    inference_model,
    unfreeze_top,
)
from agroml.training.schedule import TRUSTED_VAL, apply_schedule

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


@dataclass
class TrainResult:
    """What a finished run produced; ``metrics`` is metrics.json ({"val": {...}, "test": {...}})."""

    run_id: str
    path: Path
    model_type: str
    classes: list[str]
    metrics: dict[str, Any]
    counts: dict[str, dict[str, int]]
    config: dict[str, Any]
    seconds: float
    tflite: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    #: The trained Keras model in memory (for notebooks and tests); the saved copy is path/model.keras.
    model: keras.Model | None = field(default=None, repr=False)
    #: A non-chief worker of --strategy multiworker ("worker 1 of 2 (host:port)"): it wrote nothing.
    worker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """What `agroml train --json` prints (and the API returns)."""
        return {
            "run_id": self.run_id,
            "path": str(self.path) if self.worker is None else None,
            "metrics": self.metrics,
            "tflite": self.tflite,
            "warnings": self.warnings,
        }


def make_run_id(arch: str, now: datetime | None = None) -> str:
    """UTC timestamp + backbone, e.g. ``20261126T130501Z-mobilenetv2``: sortable and self-describing."""
    return f"{(now or datetime.now(UTC)).strftime('%Y%m%dT%H%M%SZ')}-{arch}"


def train(
    settings: Settings, cfg: TrainConfig, progress: ProgressFn = no_progress, run_id: str | None = None
) -> TrainResult:
    """Train one model as ``cfg`` says and write its run folder (``models/<type>/<run_id>/``).

    ``cfg`` is checked first (a UsageError, exit 2, before any data is read); see
    :func:`agroml.training.config.resolve_config` for a config built from flags, a file or an earlier run.
    ``run_id``: one chosen before the call (the API answers with it before the worker starts); default a new one.
    """

    cfg.check()
    backbone = get_backbone(cfg.arch)
    cfg = replace(cfg, arch=backbone.name)  # config.json records the name the library uses
    dist = distributed.start(cfg.strategy, settings.worker_timeout_s)  # before any other TensorFlow op
    data = load_training_data(
        settings, cfg.model_type, min_per_class=cfg.min_per_class, strict=cfg.strict, seed=cfg.seed, progress=progress
    )
    split_sha256 = distributed.check_same_split(dist, data.split_ids())  # every worker, the same split
    warnings = list(data.warnings) + dist.warnings(cfg)
    cfg, schedule = apply_schedule(cfg, len(data.splits["train"]), len(data.splits["val"]))  # AUTO from scratch
    fast = dist.training_config(cfg).fast and not cfg.scratch  # multiworker: phase 1 through the images
    images_train = image_pipeline_trains(dist.training_config(cfg))
    if cfg.scratch and cfg.fine_tune_layers:
        warnings.append("--fine-tune-layers ignored with --weights none: the whole network trains from the start")
    run_id = run_id or make_run_id(backbone.name)
    cache = pipeline_cache(cfg, data, settings.train_cache_mb, Path(settings.data_dir) / "train_cache")
    if not cache.used and cache.budget_mb > 0 and images_train:
        warnings.append(cache.reason)
    config = {
        "run_id": run_id,
        **asdict(cfg),
        "augmentation": {
            **augmentation_settings(cfg.scratch),
            "where": augment.where(cfg.scratch, fast),
        },
        "split": list(SPLIT_FRACTIONS),
        "classes": data.classes,
        "data_fingerprint": data.fingerprint(),
        "counts": data.counts(),
        "skipped": data.skipped,
        "dropped_classes": data.dropped_classes,
        "class_weights": data.class_weights(),
        "train_cache": cache.to_dict(),
        "schedule": schedule,
        "versions": outputs.package_versions(),
        "distribution": dist.to_dict(cfg, len(data.splits["train"])),
        "split_sha256": split_sha256,
    }
    if not dist.is_chief:  # only the chief writes: no run folder, no registry row (training/distributed.py)
        start = time.time()
        with distributed.worker_dir() as scratch, dist.scope():
            worker_cfg = dist.training_config(cfg)
            # over the memory budget the decoded images go to the worker's own temporary folder: the
            # chief's under data_dir may be on the same shared filesystem
            worker_cache = (scratch / "train_cache") if cache.disk_path else cache.used
            if isinstance(worker_cache, Path):
                worker_cache.mkdir()
            trained, _ = build_and_fit(
                worker_cfg, backbone, data, scratch, progress, None, worker_cache, fit=dist.fit()
            )
        return TrainResult(
            run_id, Path(), cfg.model_type, data.classes, {}, data.counts(), config, time.time() - start,
            warnings=warnings, model=inference_model(distributed.plain_copy(dist, trained)), worker=dist.role,
        )  # fmt: skip
    type_dir = Path(settings.models_dir) / cfg.model_type
    store = None
    start = time.time()
    with (
        Registry(settings.models_dir) as registry,
        registry.start(cfg.model_type, run_id, backbone.name, to_jsonable(config)) as handle,
    ):
        _remove_stale_partials(type_dir)  # the registry just proved no other training of this type is alive
        partial = type_dir / f".{run_id}.partial"
        partial.mkdir(parents=True)
        try:

            def record(status: EpochStatus) -> None:
                handle.update(
                    status.epoch,
                    status.metrics,
                    phase=status.phase,
                    phase_epoch=status.phase_epoch,
                    phase_epochs=status.phase_epochs,
                    total_epochs=status.total_epochs,
                    seconds_left=status.seconds_left,
                )

            store = feature_store.open_store(settings.data_dir, settings.feature_store_mb, fast)
            disk = Path(cache.disk_path) if cache.disk_path and images_train else None
            if disk is not None:  # a killed run's files under this key would be half written: start afresh
                shutil.rmtree(disk, ignore_errors=True)
                disk.mkdir(parents=True)
            result = _train_into(
                partial, cfg, backbone, data, config, progress, record, disk or cache.used, store, dist
            )
            final = type_dir / run_id
            os.replace(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            if store is not None:
                store.close()
            if cache.disk_path:
                shutil.rmtree(cache.disk_path, ignore_errors=True)
        handle.finish("succeeded", to_jsonable(result["metrics"]), path=final)
    warnings += tracking.log_run(final)  # MLflow, only when MLFLOW_TRACKING_URI is set; a failure is a warning
    return TrainResult(
        run_id=run_id,
        path=final,
        model_type=cfg.model_type,
        classes=data.classes,
        metrics=result["metrics"],
        counts=data.counts(),
        config=config,
        seconds=time.time() - start,
        tflite=result["tflite"],
        warnings=warnings + result["warnings"],
        model=result["model"],
    )


def image_pipeline_trains(cfg: TrainConfig) -> bool:
    """Whether any phase runs model.fit over the image pipeline (the fast head trains on features)."""
    return cfg.scratch or not cfg.fast or (cfg.fine_tune_layers > 0 and cfg.fine_tune_epochs > 0)


def pipeline_cache(cfg: TrainConfig, data: TrainingData, budget_mb: float, disk_root: Path | None = None) -> CachePlan:
    """Whether the train and val pipelines keep decoded images (train shuffled, val in order): in memory,
    or over the budget in ``disk_root/<model type>-<size>px-<key>`` (key: a hash of the images in
    their order, the size and the seed, so runs of other data or another size never share files)."""
    disk = None
    if disk_root is not None:
        listed = [cfg.image_size, cfg.seed, *(e.image_hash for s in ("train", "val") for e in data.splits[s])]
        key = hashlib.sha256(json.dumps(listed).encode()).hexdigest()[:16]
        disk = disk_root / f"{cfg.model_type}-{cfg.image_size}px-{key}"
    return plan_cache(len(data.splits["train"]), len(data.splits["val"]), cfg.image_size, budget_mb, disk)


def _remove_stale_partials(type_dir: Path) -> None:
    if type_dir.is_dir():
        for stale in type_dir.glob(".*.partial"):
            shutil.rmtree(stale, ignore_errors=True)


def build_and_fit(
    cfg: TrainConfig,
    backbone: Backbone,
    data: TrainingData,
    workdir: Path,
    progress: ProgressFn = no_progress,
    on_epoch: EpochFn | None = None,
    cache: bool | Path = False,
    store: feature_store.FeatureStore | None = None,
    fit: distributed.FitFn = fit_phase,
) -> tuple[Any, list[dict]]:
    """Build the network and run the recipe's phases; returns (the trained model, history rows).

    ``cache``: the train and val pipelines keep decoded images after the first epoch, in memory
    (True) or in files in that existing folder (decide with :func:`pipeline_cache`). ``store``: the fast
    path reads and fills it (feature_store.py). ``fit`` trains a phase (loop.fit_phase, or a strategy's:
    distributed.Distribution.fit); call it in the strategy's scope.

    The model has the best weights of a pretrained phase (EarlyStopping restores them), or from scratch
    the last weights of the schedule (see loop.callbacks for why).
    """
    import keras

    keras.utils.set_random_seed(cfg.seed)
    size, n_classes = cfg.image_size, len(data.classes)
    base = build_base(backbone, size, cfg.weights, cfg.alpha)
    train_paths, y_train = data.arrays("train")
    val_paths, y_val = data.arrays("val")
    class_weight = data.class_weights()
    steps = max(1, math.ceil(len(train_paths) / cfg.batch_size))
    val_cache = str(cache / "val") if isinstance(cache, Path) else cache
    train_cache = str(cache / "train") if isinstance(cache, Path) else cache
    val_ds = make_dataset(val_paths, y_val, size, cfg.batch_size, cache=val_cache)
    fine_tune_epochs = cfg.fine_tune_epochs if cfg.fine_tune_layers > 0 else 0

    def train_ds() -> tf.data.Dataset:
        return make_dataset(
            train_paths, y_train, size, cfg.batch_size, shuffle=True, seed=cfg.seed, repeat=True, cache=train_cache
        )

    rows: list[dict] = []
    if cfg.scratch:  # augmented in the pipeline, beside the step (training/augment.py), not in the model
        model = build_model(
            backbone, base, n_classes, size, scratch=True, dropout=cfg.dropout, seed=cfg.seed, augment=False
        )
        compile_model(model, scratch_schedule(cfg.learning_rate, cfg.epochs, steps), n_classes, cfg.run_eagerly)
        rows += fit(
            model,
            "scratch",
            cfg,
            augment.augment_batches(train_ds(), size, augmentation_settings(scratch=True), cfg.seed),
            val_ds,
            cfg.epochs,
            steps,
            class_weight,
            workdir,
            progress,
            on_epoch,
            stop_early=len(val_paths) >= TRUSTED_VAL,  # as schedule.plan_schedule recorded
        )
        return model, rows
    extractor = build_feature_extractor(backbone, base, size)
    if cfg.fast:
        train_feats, val_feats = features.train_and_val_features(
            extractor, train_paths, val_paths, cfg, progress, store, data.arrays("test")[0]
        )
        stats = features.feature_stats(train_feats[0])
    else:  # one pass for the head's feature standardization, then every epoch through the whole network
        stats = features.feature_stats(
            features.extract_features(
                extractor, train_paths, size, cfg.batch_size, task="features (train)", progress=progress
            )
        )
    model = build_model(backbone, base, n_classes, size, scratch=False, dropout=cfg.dropout, seed=cfg.seed, stats=stats)
    if cfg.fast:
        head, rows = features.fit_head_on_features(
            train_feats,
            y_train,
            val_feats,
            y_val,
            n_classes,
            cfg,
            class_weight,
            workdir,
            progress,
            on_epoch,
            fine_tune_epochs,
        )
        copy_head(head, model)
    else:
        compile_model(model, cfg.learning_rate, n_classes, cfg.run_eagerly)
        rows += fit(
            model,
            "head",
            cfg,
            train_ds(),
            val_ds,
            cfg.epochs,
            steps,
            class_weight,
            workdir,
            progress,
            on_epoch,
            later_epochs=fine_tune_epochs,
        )
    if fine_tune_epochs > 0:
        unfreeze_top(base, cfg.fine_tune_layers)
        # recompiled: Keras fixes the trainable variables at compile time
        compile_model(model, cfg.fine_tune_learning_rate, n_classes, cfg.run_eagerly)
        rows += fit(
            model,
            "fine_tune",
            cfg,
            train_ds(),
            val_ds,
            cfg.fine_tune_epochs,
            steps,
            class_weight,
            workdir,
            progress,
            on_epoch,
            first_epoch=len(rows),
        )
    return model, rows


def predict_split(
    model: keras.Model, data: TrainingData, split: str, size: int, batch_size: int
) -> tuple[np.ndarray, ...]:
    """(uint8 images are not kept) -> (integer labels, probabilities) of one split, in split order."""
    paths, labels = data.arrays(split)
    if not paths:
        return labels, np.zeros((0, len(data.classes)), dtype="float32")
    probs = model.predict(make_dataset(paths, None, size, batch_size), verbose=0)
    return labels, np.asarray(probs)


def _train_into(
    folder: Path,
    cfg: TrainConfig,
    backbone: Backbone,
    data: TrainingData,
    config: dict[str, Any],
    progress: ProgressFn,
    on_epoch: EpochFn,
    cache: bool | Path,
    store: feature_store.FeatureStore | None = None,
    dist: distributed.Distribution | None = None,
) -> dict[str, Any]:
    """Train (under ``dist``'s strategy) and write every output file into ``folder`` (the .partial folder)."""

    dist = dist or distributed.Distribution("one")
    phases_cfg = dist.training_config(cfg)
    with dist.scope():
        trained, rows = build_and_fit(phases_cfg, backbone, data, folder, progress, on_epoch, cache, store, dist.fit())
    config["feature_store"], store_warnings = feature_store.finish(store, phases_cfg.fast and not cfg.scratch)
    model = inference_model(distributed.plain_copy(dist, trained))
    for checkpoint in folder.glob("best_*.weights.h5"):  # the best weights are in the model now
        checkpoint.unlink()
    # a fresh optimizer: Adam's moment slots would triple the file (ResNet50: 280 MB instead of 95 MB)
    compile_model(model, cfg.learning_rate, len(data.classes), cfg.run_eagerly)
    size, warnings = cfg.image_size, list(store_warnings)
    metrics: dict[str, Any] = {}
    for split in ("val", "test"):
        y, probs = predict_split(model, data, split, size, cfg.batch_size)
        metrics[split] = compute_metrics(y, probs, data.classes) if len(y) else {}
        if not len(y):
            warnings.append(f"no {split} images (classes too small for a {split} share): no {split} metrics")
    model.save(folder / "model.keras")
    write_json(folder / "labels.json", data.classes)
    write_json(folder / "config.json", config)
    write_json(folder / "split.json", data.split_ids())
    write_json(folder / "metrics.json", metrics)
    history = outputs.write_history_csv(folder / "history.csv", rows)
    plots.training_curves_png(history, folder / "curves.png")
    if metrics["test"]:
        plots.confusion_matrix_png(metrics["test"]["confusion_matrix"], data.classes, folder / "confusion_matrix.png")
    tflite = None
    if cfg.tflite:
        tflite = _tflite(model, folder, cfg, data)
        if not tflite["ok"]:
            warnings.append(
                f"TFLite top-1 agreement {tflite['top1_agreement']} is under "
                f"{outputs.TFLITE_MIN_AGREEMENT}: do not ship model.tflite"
            )
        write_json(folder / "tflite.json", tflite)
    card = outputs.model_card(
        config["run_id"], cfg.model_type, config, data.counts(), metrics, data.dropped_classes, data.skipped
    )
    (folder / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    return {"metrics": metrics, "tflite": tflite, "warnings": warnings, "model": model}


def _tflite(model: keras.Model, folder: Path, cfg: TrainConfig, data: TrainingData) -> dict[str, Any]:
    """model.tflite, checked against the Keras model on the test split (val if test is empty)."""

    split = "test" if data.splits["test"] else "val"
    paths, _ = data.arrays(split)
    images = np.stack([load_image_array(p, cfg.image_size) for p in paths])
    keras_probs = np.asarray(model.predict(images, verbose=0))
    assert cfg.tflite is not None  # _tflite runs only when a mode was asked for
    outputs.export_tflite(model, folder / "model.tflite", cfg.tflite, images)
    return {"mode": cfg.tflite, "split": split, **outputs.check_tflite(folder / "model.tflite", images, keras_probs)}
