"""Command: `agroml train`, one training run of one model type into models/<type>/<run_id>/."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from agroml.cli import output
from agroml.cli.options import JsonOpt, MinPerClassOpt, ModelOpt, SeedOpt
from agroml.core import config
from agroml.training.run import train

if TYPE_CHECKING:
    from agroml.training.run import TrainResult


class TfliteMode(StrEnum):
    float16 = "float16"
    int8 = "int8"


def _summary(result: TrainResult) -> None:
    """Test figures, then per-class figures, to stdout; where the run is and what to do next, to stderr."""

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
    output.hint(
        f"next: agroml evaluate {result.run_id} --model {result.model_type}   "
        f"then: agroml promote {result.run_id} --model {result.model_type}"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command("train")
    def train_cmd(
        model: ModelOpt,
        arch: Annotated[
            str, typer.Option("--arch", help="Backbone: mobilenetv2, resnet50 or efficientnetb0.")
        ] = "mobilenetv2",
        weights: Annotated[
            str,
            typer.Option(
                "--weights",
                help="imagenet (downloaded once), none (train from scratch) or PATH (a weights file for the backbone).",
            ),
        ] = "imagenet",
        image_size: Annotated[int | None, typer.Option("--image-size", help="Input pixels [default: 224].")] = None,
        epochs: Annotated[
            int | None, typer.Option("--epochs", help="Phase 1 epochs [default: 15; 150 with --weights none].")
        ] = None,
        batch_size: Annotated[
            int | None, typer.Option("--batch-size", help="[default: 32; 16 with --weights none].")
        ] = None,
        learning_rate: Annotated[
            float | None,
            typer.Option("--lr", help="[default: 1e-3; 5e-3 with --weights none, warmup then cosine decay]"),
        ] = None,
        alpha: Annotated[
            float | None, typer.Option("--alpha", help="MobileNetV2 width [default: 1.0; 0.35 with --weights none].")
        ] = None,
        fine_tune_layers: Annotated[
            int, typer.Option("--fine-tune-layers", help="Phase 2: unfreeze the top N base layers.")
        ] = 0,
        fine_tune_epochs: Annotated[int, typer.Option("--fine-tune-epochs", help="Phase 2 epochs.")] = 0,
        aug_views: Annotated[
            int, typer.Option("--aug-views", help="Fast path: views per image (1 clean + K-1 augmented).")
        ] = 2,
        fast: Annotated[bool, typer.Option("--fast/--slow", help="Phase 1 on cached base features.")] = True,
        seed: SeedOpt = 0,
        strict: Annotated[bool, typer.Option("--strict", help="Fail instead of leaving out small classes.")] = False,
        tflite: Annotated[TfliteMode | None, typer.Option("--tflite", help="Also write model.tflite.")] = None,
        min_per_class: MinPerClassOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        """Train a classifier for one model type on the store's confirmed and corrected rows.

        Splits the data 70/15/15 by --seed (identical photos kept together), trains the head on a frozen
        backbone (then fine-tunes with --fine-tune-layers), and writes `models/<type>/<run_id>/`: model.keras
        (takes raw RGB pixels), labels.json, config.json, split.json, metrics.json, history.csv, plots and
        MODEL_CARD.md. One training per model type at a time.

        Example: agroml train --model pest --weights none --image-size 96
        """

        settings = config.resolve({"min_per_class": min_per_class})
        with output.progress(enabled=None if not json_ else False) as progress:
            result = train(
                settings,
                model.value,
                arch,
                weights,
                image_size=image_size,
                epochs=epochs,
                batch_size=batch_size,
                learning_rate=learning_rate,
                alpha=alpha,
                fine_tune_layers=fine_tune_layers,
                fine_tune_epochs=fine_tune_epochs,
                aug_views=aug_views,
                fast=fast,
                seed=seed,
                strict=strict,
                min_per_class=min_per_class,
                tflite=tflite.value if tflite else None,
                progress=progress,
            )
        for message in result.warnings:
            output.warn(message)
        if json_:
            output.print_json(_as_json(result))
        else:
            _summary(result)


def _as_json(result: TrainResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "path": str(result.path),
        "metrics": result.metrics,
        "tflite": result.tflite,
        "warnings": result.warnings,
    }
