"""Command: `agroml train`, one training run of one model type into models/<type>/<run_id>/.

Every training flag defaults to None here and only the flags the user typed reach the library, so the
preset of the weights (agroml.training.config) decides the rest; the `[default: ...]` texts below are
read from the same preset objects, so help and code cannot disagree.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from agroml.cli import output
from agroml.cli.options import JsonOpt, MinPerClassOpt, ModelType, SourceOpt
from agroml.core import config
from agroml.ops.alerts import alert_on_failure
from agroml.ops.snapshot import train_fresh
from agroml.training.backbones import BACKBONES, get_backbone
from agroml.training.config import (
    AUTO,
    AUTO_FIELDS,
    PRETRAINED,
    SCRATCH,
    STRATEGIES,
    TFLITE_MODES,
    check_tflite_mode,
    field_names,
    resolve_config,
)

if TYPE_CHECKING:
    from agroml.training.run import TrainResult


def _default(name: str) -> str:
    """`[default: 15; 150 with --weights none]` from the two presets."""

    pretrained, scratch = getattr(PRETRAINED, name), getattr(SCRATCH, name)
    if pretrained == scratch:
        return f"[default: {pretrained}]"
    if name in AUTO_FIELDS and scratch == AUTO:
        return f"[default: {pretrained}; scaled to the data with --weights none]"
    return f"[default: {pretrained}; {scratch} with --weights none]"


def _arch(value: str | None) -> str | None:
    return None if value is None else get_backbone(value).name  # a bad name: the library's message, exit 2


def _tflite(value: str | None) -> str | None:
    return None if value is None else check_tflite_mode(value.lower())


def _summary(result: TrainResult) -> None:
    """Test figures, then per-class figures, to stdout; where the run is and what to do next, to stderr."""

    if result.worker:  # a non-chief worker of --strategy multiworker: the chief wrote the run
        output.stdout.print(f"{result.worker}: trained in sync; the chief wrote the run folder", highlight=False)
        return
    test = result.metrics.get("test") or {}
    val = result.metrics.get("val") or {}
    head = Table(title=f"{result.model_type} run {result.run_id}")
    for col in ("split", "images", "accuracy", "macro F1", "top-3"):
        head.add_column(col, justify="left" if col == "split" else "right")
    for name, m in (("val", val), ("test", test)):
        if m:
            head.add_row(name, str(m["n"]), f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}", f"{m['top3_accuracy']:.3f}")
    output.stdout.print(head)
    per_class = Table(title="test, per class")
    for col in ("class", "train", "precision", "recall", "F1", "support"):
        per_class.add_column(col, justify="left" if col == "class" else "right")
    for name, m in test.get("per_class", {}).items():
        per_class.add_row(
            name,
            str(result.counts["train"].get(name, 0)),
            f"{m['precision']:.3f}",
            f"{m['recall']:.3f}",
            f"{m['f1']:.3f}",
            str(m["support"]),
        )
    output.stdout.print(per_class)
    output.stdout.print(f"saved to {result.path} in {result.seconds:.0f} s", highlight=False)
    if result.tflite:
        t = result.tflite
        output.stdout.print(
            f"model.tflite ({t['mode']}): {t['size_bytes'] / 1e6:.1f} MB, top-1 agreement "
            f"{t['top1_agreement']:.3f}, p50 {t['latency_ms_p50']:.1f} ms",
            highlight=False,
        )
    store = result.config.get("feature_store") or {}
    if store.get("enabled"):
        output.hint(f"feature store: {store['hits']} image views reused, {store['computed']} computed")
    output.hint(
        f"next: agroml evaluate {result.run_id} --model {result.model_type}   "
        f"then: agroml promote {result.run_id} --model {result.model_type}"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command("train")
    def train_cmd(
        ctx: typer.Context,
        model_type: Annotated[
            ModelType | None, typer.Option("--model", "-m", help="Model type [default: the --config / --like one's].")
        ] = None,
        arch: Annotated[
            str | None,
            typer.Option(
                "--arch",
                metavar="[" + "|".join(BACKBONES) + "]",
                callback=_arch,
                autocompletion=lambda: list(BACKBONES),
                help=f"Backbone {_default('arch')}.",
            ),
        ] = None,
        weights: Annotated[
            str | None,
            typer.Option(
                "--weights",
                help="imagenet (downloaded once), none (train from scratch: the scratch preset) or PATH "
                f"(a weights file for the backbone) [default: {PRETRAINED.weights}].",
            ),
        ] = None,
        image_size: Annotated[
            int | None, typer.Option("--image-size", help=f"Input pixels {_default('image_size')}.")
        ] = None,
        epochs: Annotated[int | None, typer.Option("--epochs", help=f"Phase 1 epochs {_default('epochs')}.")] = None,
        batch_size: Annotated[int | None, typer.Option("--batch-size", help=_default("batch_size"))] = None,
        learning_rate: Annotated[
            float | None,
            typer.Option(
                "--lr", help=f"Phase 1 rate (from scratch: warmup then cosine decay) {_default('learning_rate')}."
            ),
        ] = None,
        alpha: Annotated[float | None, typer.Option("--alpha", help=f"MobileNetV2 width {_default('alpha')}.")] = None,
        fine_tune_layers: Annotated[
            int | None,
            typer.Option(
                "--fine-tune-layers", help=f"Phase 2: unfreeze the top N base layers {_default('fine_tune_layers')}."
            ),
        ] = None,
        fine_tune_epochs: Annotated[
            int | None, typer.Option("--fine-tune-epochs", help=f"Phase 2 epochs {_default('fine_tune_epochs')}.")
        ] = None,
        fine_tune_learning_rate: Annotated[
            float | None,
            typer.Option("--fine-tune-lr", help=f"Phase 2 learning rate {_default('fine_tune_learning_rate')}."),
        ] = None,
        aug_views: Annotated[
            int | None,
            typer.Option(
                "--aug-views", help=f"Fast path: views per image (1 clean + K-1 augmented) {_default('aug_views')}."
            ),
        ] = None,
        fast: Annotated[
            bool | None,
            typer.Option(
                "--fast/--slow",
                help=f"Phase 1 on cached base features [default: {'--fast' if PRETRAINED.fast else '--slow'}].",
            ),
        ] = None,
        tensorboard: Annotated[
            bool | None,
            typer.Option(
                "--tensorboard/--no-tensorboard",
                help="Write TensorBoard logs to RUN/tensorboard/ (`tensorboard --logdir models/`) "
                f"[default: {'--tensorboard' if PRETRAINED.tensorboard else '--no-tensorboard'}].",
            ),
        ] = None,
        patience: Annotated[
            int | None, typer.Option("--patience", help=f"EarlyStopping epochs (pretrained) {_default('patience')}.")
        ] = None,
        dropout: Annotated[
            float | None, typer.Option("--dropout", help=f"Dropout before the head {_default('dropout')}.")
        ] = None,
        seed: Annotated[
            int | None,
            typer.Option("--seed", min=0, help=f"Random seed: same seed, same split {_default('seed')}."),
        ] = None,
        strict: Annotated[
            bool | None, typer.Option("--strict", help="Fail instead of leaving out small classes.")
        ] = None,
        tflite: Annotated[
            str | None,
            typer.Option(
                "--tflite",
                metavar="[" + "|".join(TFLITE_MODES) + "]",
                callback=_tflite,
                autocompletion=lambda: list(TFLITE_MODES),
                help="Also write model.tflite.",
            ),
        ] = None,
        strategy: Annotated[
            str | None,
            typer.Option(
                "--strategy",
                metavar="[" + "|".join(STRATEGIES) + "]",
                autocompletion=lambda: list(STRATEGIES),
                help="tf.distribute strategy: auto (mirrored over 2+ GPUs, else one), one, mirrored, or "
                'multiworker (the machines in TF_CONFIG; README, "Several machines") '
                f"[default: {PRETRAINED.strategy}].",
            ),
        ] = None,
        min_per_class: MinPerClassOpt = None,
        config_file: Annotated[
            Path | None,
            typer.Option(
                "--config", help="JSON or YAML file of TrainConfig fields (e.g. `epochs: 30`); flags win over it."
            ),
        ] = None,
        like: Annotated[
            str | None,
            typer.Option("--like", metavar="RUN_ID", help="Train with that run's config.json; flags win over it."),
        ] = None,
        source: SourceOpt = None,
        no_feature_store: Annotated[
            bool,
            typer.Option(
                "--no-feature-store",
                help="Compute every image's base features again instead of reusing stored ones "
                "(AGROML_FEATURE_STORE_MB=0 does the same).",
            ),
        ] = False,
        json_: JsonOpt = False,
    ) -> None:
        """Train a classifier for one model type on the store's confirmed and corrected rows.

        Splits the data 70/15/15 by --seed (identical photos kept together), trains the head on a frozen
        backbone (then fine-tunes with --fine-tune-layers), and writes `models/<type>/<run_id>/`: model.keras
        (takes raw RGB pixels), labels.json, config.json (the whole resolved config), split.json,
        metrics.json, history.csv, plots and MODEL_CARD.md. One training per model type at a time.
        Defaults come from the preset of --weights (pretrained, or none: from scratch); --config FILE or
        --like RUN_ID replaces them, and flags win over both. With Supabase as the source (AGROML_SOURCE
        auto and a project configured, or supabase) it first pulls what is new into the store;
        --source local trains offline on what the store has.

        Example: agroml train --model pest --weights none --image-size 96

        Example: agroml train --like 20261126T130501Z-mobilenetv2 --epochs 30
        """

        names = set(field_names())
        flags = {
            k: v.value if isinstance(v, Enum) else v for k, v in ctx.params.items() if k in names and v is not None
        }
        overrides: dict[str, object] = {"source": source.value if source is not None else None}
        if no_feature_store:
            overrides["feature_store_mb"] = 0
        settings = config.resolve(overrides)
        cfg = resolve_config(settings, flags, config_file=config_file, like=like)
        with (
            alert_on_failure(settings, f"agroml train --model {cfg.model_type}", notice=output.warn),
            output.progress(enabled=None if not json_ else False) as progress,
        ):
            result = train_fresh(settings, cfg, progress=progress, notice=output.notice)
        output.emit(result, json_, _summary)
