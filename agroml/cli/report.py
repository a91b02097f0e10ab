"""Command: ``report`` (the monitoring page: one self-contained HTML file)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from agroml.cli import output
from agroml.cli.options import JsonOpt, ModelAllOpt, ModelTypeOrAll, SourceOpt
from agroml.core import config, schema
from agroml.data.sources import open_source
from agroml.ops.report import ReportResult, write_report

OutOpt = Annotated[
    Path,
    typer.Option("--out", "-o", dir_okay=False, help="The HTML file to write (replaced atomically; folders made)."),
]


def _summary(result: ReportResult) -> None:
    output.stdout.print(
        f"wrote {result.path} ({result.bytes / 1024:.0f} KiB, {len(result.sections)} sections, {result.seconds:.1f} s)",
        highlight=False,
        markup=False,
    )


def report(
    model: ModelAllOpt = ModelTypeOrAll("all"),
    out: OutOpt = Path("report.html"),
    source: SourceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Write the monitoring page: one HTML file with charts and tables, readable offline in any browser.

    Per model type: data growth and feedback per month, the deployed model's feedback accuracy over
    time with deployments marked, class x season, where the model is wrong (from corrections) and
    readiness; then the training runs with their metrics, the production model cards, and when it was
    generated. Charts are embedded, the page loads nothing from the network and runs no script, so a
    static web server can serve it as the dashboard.

    Example: agroml report --out /var/www/agroml/index.html   (e.g. hourly from cron)
    """

    settings = config.resolve({"source": source})
    with contextlib.closing(open_source(settings, output.notice)) as src, output.progress() as progress:
        result = write_report(src, settings, schema.expand_model_types(model.value), out, progress)
    output.emit(result, json_, _summary)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("report")(report)
