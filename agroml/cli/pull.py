"""Command: ``pull`` (Supabase rows into the local store, their images into the cache)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from agroml.cli import output
from agroml.cli.options import JsonOpt, ModelAllOpt, ModelTypeOrAll, SinceOpt, UntilOpt
from agroml.core import config
from agroml.data.analysis import check_window
from agroml.data.pulling import PullResult
from agroml.data.pulling import pull as run_pull

NoImagesOpt = Annotated[bool, typer.Option("--no-images", help="Copy rows only; fetch no images.")]


def _tables(result: PullResult) -> None:
    table = Table(title="Rows pulled from Supabase", title_justify="left")
    for name in ("model", "rows", "inserted", "updated", "unchanged", "invalid"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for model, m in result.models.items():
        invalid = ", ".join(f"{n} {r}" for r, n in sorted(m.invalid.items())) or "0"
        table.add_row(model, str(m.rows), str(m.inserted), str(m.updated), str(m.unchanged), invalid)
    output.stdout.print(table)
    images = result.images
    if images is None:
        output.stdout.print("images: not fetched (--no-images)", highlight=False)
        return
    reasons = ", ".join(f"{n} {r}" for r, n in images.reasons.items())
    output.stdout.print(
        f"images: {images.fetched} fetched, {images.cached} already cached, "
        f"{images.failed} failed" + (f" ({reasons})" if reasons else ""),
        highlight=False,
    )


def pull(
    model: ModelAllOpt = ModelTypeOrAll("all"),
    since: SinceOpt = None,
    until: UntilOpt = None,
    no_images: NoImagesOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Copy rows from Supabase into the local store and their images into the image cache.

    Rows are upserted: a new row is inserted, a row already pulled is refreshed (farmers' feedback
    arrives after a row is created, and there is no updated_at, so every pull re-reads the rows;
    --since limits that to recent ones). Images go to the content-addressed cache; ones already there
    cost no request. A pull that is interrupted can simply be run again. Needs SUPABASE_URL and
    SUPABASE_SERVICE_KEY.

    Example: agroml pull --model pest --since 2025-01-01
    """

    since, until = check_window(since, until)  # a bad window is the first thing to report
    settings = config.resolve({})
    with output.progress() as progress:
        result = run_pull(
            settings, model.value, since, until, images=not no_images, progress=progress, notice=output.notice
        )
    output.emit(result, json_, _tables)
    output.hint(f"store: {settings.db_path} · images: {settings.image_dir}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("pull")(pull)
