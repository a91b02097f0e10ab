"""Commands that put data into the local store: ``demo`` (synthetic) and ``import`` (a labelled folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agroml.cli import output
from agroml.cli.options import JsonOpt, ModelAllOpt, ModelOpt, ModelTypeOrAll, SeedOpt
from agroml.core import config, schema
from agroml.data.importing import ImportSummary, import_folder
from agroml.demo import rows as demo_data
from agroml.demo.rows import DemoSummary

CountOpt = Annotated[int, typer.Option("--n", "-n", min=1, help="Rows (and photos) per model type.")]
FolderArg = Annotated[
    Path, typer.Argument(help="Folder with one subfolder per class (the folder name is the label).", show_default=False)
]
FollowLinksOpt = Annotated[
    bool,
    typer.Option(
        "--follow-links", help="Also follow symbolic links that point outside DIR (by default they are skipped)."
    ),
]
#: Skipped files listed in the table; --json lists them all.
SHOWN_SKIPS = 20
#: Feedback kinds (as counted by the demo) and their column headings, in table order.
FEEDBACK_COLUMNS = {"confirmed": "confirmed", "corrected": "corrected", "rejected": "rejected", "none": "no feedback"}


def _class_table(title: str, classes: dict[str, dict[str, int]]) -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in (("model", "left"), ("class", "left"), ("images", "right"), ("", "left")):
        table.add_column(name, justify=output.justify(justify))
    for model, counts in classes.items():
        peak = max(counts.values(), default=0)
        for label, n in counts.items():
            table.add_row(model, label, str(n), output.bar(n, peak))
    return table


def _demo_tables(summary: DemoSummary) -> None:
    table = Table(title=f"demo data (seed {summary.seed})", title_justify="left")
    for name in ("model", "rows", "new", "updated", "unchanged", "images", *FEEDBACK_COLUMNS.values()):
        table.add_column(name, justify="left" if name == "model" else "right")
    for m, s in summary.models.items():
        table.add_row(
            m,
            str(s.rows),
            str(s.upsert.inserted),
            str(s.upsert.updated),
            str(s.upsert.unchanged),
            str(s.images),
            *(str(s.feedback.get(k, 0)) for k in FEEDBACK_COLUMNS),
        )
    output.stdout.print(table)
    output.stdout.print(_class_table("true class of the photos", {m: s.classes for m, s in summary.models.items()}))
    output.stdout.print(
        f"store {summary.store_path} · images {summary.image_dir} · {summary.seconds:.1f} s", highlight=False
    )


def demo(
    model: ModelAllOpt = ModelTypeOrAll("all"),
    n: CountOpt = 600,
    seed: SeedOpt = 0,
    json_: JsonOpt = False,
) -> None:
    """Create a deterministic synthetic AgroShield data set: rows in the store, drawn photos in the cache.

    Photos are procedurally drawn crop leaves (pest, disease) and stored produce (storage) whose classes
    show distinct symptoms, with random pose, lighting, clutter, blur and JPEG quality. Rows carry
    crops, Kenyan counties, two years of seasonal dates, confidences and a feedback mix (about 35%
    confirmed, 10% corrected, 5% rejected). The same --seed gives the same data; running it again
    changes nothing.

    Example: agroml demo --model pest --n 600 --seed 0
    """

    settings = config.resolve({})
    with output.progress() as progress:
        summary = demo_data.generate(
            settings, schema.expand_model_types(model.value), n=n, seed=seed, progress=progress
        )
    output.emit(summary, json_, _demo_tables)
    first = next(iter(summary.models))
    output.hint(f"next: `agroml stats` to see readiness, `agroml train --model {first}` to train")


def _import_tables(summary: ImportSummary) -> None:
    u = summary.upsert
    output.stdout.print(
        _class_table(
            f"imported {summary.rows} rows from {summary.folder} "
            f"({u.inserted} new, {u.updated} updated, {u.unchanged} unchanged)",
            {summary.model_type: summary.classes},
        )
    )
    if summary.skipped_files:
        skipped = Table(title=f"skipped {len(summary.skipped_files)} file(s)", title_justify="left")
        skipped.add_column("file", overflow="fold")
        skipped.add_column("reason")
        for path, reason in summary.skipped_files[:SHOWN_SKIPS]:
            skipped.add_row(path, reason)
        if len(summary.skipped_files) > SHOWN_SKIPS:
            skipped.add_row(f"… {len(summary.skipped_files) - SHOWN_SKIPS} more (see --json)", "")
        output.stdout.print(skipped)
    output.stdout.print(
        f"store {summary.store_path} · images {summary.image_dir} · {summary.seconds:.1f} s", highlight=False
    )


def import_(
    folder: FolderArg,
    model: ModelOpt,
    follow_links: FollowLinksOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Import a folder-per-class image collection as confirmed rows (source "import").

    The layout is the one Keras' image_dataset_from_directory reads: `DIR/<class>/<image>`, the folder
    name (normalized: "Fall Armyworm" -> fall_armyworm) being the label; storage classes must be one of
    excellent, good, fair, poor, critical. Images are verified and copied into the cache; unreadable,
    truncated or non-image files are skipped, counted by reason and listed; so are hidden folders and
    links that point outside DIR (unless --follow-links). Importing again changes nothing.

    Example: agroml import ~/datasets/maize_pests --model pest
    """

    settings = config.resolve({})
    with output.progress() as progress:
        summary = import_folder(settings, folder, model.value, progress=progress, follow_links=follow_links)
    output.emit(summary, json_, _import_tables)
    output.hint(f"next: `agroml stats --model {summary.model_type}`, `agroml train --model {summary.model_type}`")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("demo")(demo)
    app.command("import")(import_)
