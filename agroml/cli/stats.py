"""Commands: ``stats`` (feedback, accuracy, readiness) and ``distribution`` (where and when the rows are)."""

from __future__ import annotations

import contextlib
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeAlias

import typer
from rich.table import Table

from agroml.cli import output
from agroml.cli.monitor_views import timeline_tables, where_wrong_tables
from agroml.cli.options import (
    JsonOpt,
    MinPerClassOpt,
    MinTotalOpt,
    ModelAllOpt,
    ModelOpt,
    ModelType,
    ModelTypeOrAll,
    SinceOpt,
    SourceOpt,
    UntilOpt,
    choices,
)
from agroml.core import config, schema
from agroml.data import analysis
from agroml.data.analysis import DistributionReport, StatsReport, check_window, readiness_verdict
from agroml.data.sources import open_source
from agroml.data.timeline import PERIODS
from agroml.lifecycle.plots import distribution_png
from agroml.ops.charts import timeline_png, write_png
from agroml.ops.monitor import feedback_over_time

if TYPE_CHECKING:  # see cli/options.py
    ByKey: TypeAlias = StrEnum
    Period: TypeAlias = StrEnum
else:
    ByKey = choices("ByKey", analysis.DISTRIBUTION_KEYS)
    Period = choices("Period", PERIODS)

ByOpt = Annotated[ByKey, typer.Option("--by", help="Count rows by this key (region = the farm location).")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Also write a PNG chart to this file.", dir_okay=False)]
PeriodOpt = Annotated[
    Period | None,
    typer.Option("--by", help="Show the series per month or week instead of one snapshot (deployments marked)."),
]
TimezoneOpt = Annotated[
    str | None,
    typer.Option(
        "--timezone", help="Farm local time zone for seasons and months [default: AGROML_TIMEZONE or Africa/Nairobi]."
    ),
]


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _when(report: StatsReport | DistributionReport) -> str:
    window = ""
    if report.since or report.until:
        window = f" · rows from {report.since or 'the start'} to before {report.until or 'now'}"
    return f"source {report.source} · generated {report.generated_at}{window}"


def _stats_tables(report: StatsReport) -> None:

    summary = Table(title="Feedback per model type", title_justify="left")
    for name in (
        "model",
        "rows",
        "confirmed",
        "corrected",
        "rejected",
        "no feedback",
        "trainable",
        "feedback rate",
        "feedback accuracy",
        "invalid",
    ):
        summary.add_column(name, justify="left" if name == "model" else "right")
    for model, s in report.models.items():
        summary.add_row(
            model,
            str(s["total"]),
            str(s["confirmed"]),
            str(s["corrected"]),
            str(s["rejected"]),
            str(s["no_feedback"]),
            str(s["trainable"]),
            _pct(s["feedback_rate"]),
            _pct(s["feedback_accuracy"]),
            str(sum(s["invalid"].values())),
        )
    output.stdout.print(summary)
    for model, s in report.models.items():
        ready = s["ready"]
        table = Table(title=f"{model}: classes", title_justify="left")
        for name, justify in (
            ("class", "left"),
            ("predicted", "right"),
            ("trainable", "right"),
            ("", "left"),
            ("feedback accuracy", "right"),
        ):
            table.add_column(name, justify=output.justify(justify))
        peak = max((c["trainable"] for c in s["classes"].values()), default=0)
        for label, c in s["classes"].items():
            short = label in ready["short_classes"]
            table.add_row(
                f"[yellow]{label}[/]" if short else label,
                str(c["predicted"]),
                str(c["trainable"]),
                output.bar(c["trainable"], peak),
                _pct(c["feedback_accuracy"]),
            )
        if s["classes"]:
            output.stdout.print(table)
        where_wrong_tables(model, s.get("where_wrong", {}))
        color = "green" if ready["ok"] else "yellow"
        output.stdout.print(f"{model}: [{color}]{readiness_verdict(ready)}[/]", highlight=False)
    output.stdout.print(f"[dim]{_when(report)}[/]", highlight=False)


def _distribution_tables(report: DistributionReport) -> None:
    by = report.by
    title = f"{report.model_type}: rows by {by}" + (
        " (rows: predicted class; trainable: training label)" if by == "class" else ""
    )
    table = Table(title=title, title_justify="left")
    for name, justify in ((by, "left"), ("rows", "right"), ("", "left"), ("trainable", "right"), ("share", "right")):
        table.add_column(name, justify=output.justify(justify))
    peak = max((c["rows"] for c in report.counts), default=0)
    for c in report.counts:
        table.add_row(
            str(c["key"]),
            str(c["rows"]),
            output.bar(c["rows"], peak),
            str(c["trainable"]),
            _pct(c["rows"] / report.total if report.total else None),
        )
    output.stdout.print(table)

    cross = Table(
        title=f"predicted class x season, rows (trainable) · local time {report.timezone}", title_justify="left"
    )
    cross.add_column("class")
    for season in report.seasons:
        cross.add_column(season, justify="right")
    trainable = report.class_season["trainable"]
    for label, row in report.class_season["rows"].items():
        cross.add_row(label, *(f"{row[s]} ({trainable.get(label, {}).get(s, 0)})" for s in report.seasons))
    output.stdout.print(cross)

    months = Table(title="rows per month", title_justify="left")
    for name, justify in (("month", "left"), ("rows", "right"), ("", "left"), ("trainable", "right")):
        months.add_column(name, justify=output.justify(justify))
    peak = max((m["rows"] for m in report.months), default=0)
    for m in report.months:
        months.add_row(m["month"], str(m["rows"]), output.bar(m["rows"], peak), str(m["trainable"]))
    output.stdout.print(months)
    where_wrong_tables(report.model_type, report.where_wrong)
    output.stdout.print(f"[dim]{report.total} rows, {report.trainable} trainable · {_when(report)}[/]", highlight=False)


def stats(
    model: ModelAllOpt = ModelTypeOrAll("all"),
    since: SinceOpt = None,
    until: UntilOpt = None,
    source: SourceOpt = None,
    min_total: MinTotalOpt = None,
    min_per_class: MinPerClassOpt = None,
    by: PeriodOpt = None,
    plot: PlotOpt = None,
    timezone: TimezoneOpt = None,
    require_ready: Annotated[
        bool,
        typer.Option("--require-ready", help="Exit 1 (after the report) when a model type is not ready to train."),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Feedback counts, the deployed model's feedback accuracy, trainable rows per class, readiness.

    Invalid rows (no image, bad confidence or time, unknown label) are counted per reason and left out
    of every other number. Feedback accuracy = confirmed / (confirmed + corrected + rejected), overall
    and per predicted class; where it is wrong comes from farmers' corrections, per crop and region.
    Ready = at least --min-total trainable rows and --min-per-class per class.

    With --by month or week: the series instead, per period in farm local time: predictions, feedback
    rate, accuracy overall and per class with a Wilson 95% interval, trainable rows added, and the
    periods in which a new production model went live; --plot writes it as a PNG chart.

    Example: agroml stats --model pest --since 2025-01-01 --min-total 200

    Example: agroml stats --by month --plot feedback.png
    Example: agroml stats --model pest --require-ready && agroml train --model pest
    """

    since, until = check_window(since, until)  # a bad window is the first thing to report
    settings = config.resolve(
        {"source": source, "min_total": min_total, "min_per_class": min_per_class, "timezone": timezone}
    )
    if plot is not None and by is None:
        by = Period("month")  # a chart is of the series: --plot alone means per month
    models = schema.expand_model_types(model.value)
    with contextlib.closing(open_source(settings, output.notice)) as src:
        if by is not None:
            series = feedback_over_time(src, settings.models_dir, models, by.value, since, until, settings.timezone)
            if plot is not None:
                series.plot = str(write_png(plot, timeline_png(series.to_dict())))
            output.emit(series, json_, timeline_tables)
            if series.plot is not None:
                output.hint(f"chart written to {series.plot}")
            return
        report = analysis.stats_report(src, models, since, until, settings.min_total, settings.min_per_class)
    output.emit(report, json_, _stats_tables)
    if require_ready:
        report.require_ready()


def distribution(
    model: ModelOpt = ModelType("pest"),
    by: ByOpt = ByKey("class"),
    since: SinceOpt = None,
    until: UntilOpt = None,
    source: SourceOpt = None,
    timezone: TimezoneOpt = None,
    plot: PlotOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Where and when the rows are: counts by class, crop, region, season or month of the year.

    Also shows the class x season table and the month-by-month series. Seasons (East Africa) come from
    the month in farm local time: Mar-May long_rains, Jun-Sep dry_season, Oct-Dec short_rains, Jan-Feb
    transition. For --by class, "rows" counts by predicted label and "trainable" by training label.

    Example: agroml distribution --model disease --by season --plot disease_seasons.png
    """

    since, until = check_window(since, until)  # a bad window is the first thing to report
    settings = config.resolve({"source": source, "timezone": timezone})
    with contextlib.closing(open_source(settings, output.notice)) as src:
        report = analysis.distribution_report(src, model.value, by.value, since, until, settings.timezone)
    if plot is not None:
        report.plot = str(distribution_png(report.to_dict(), plot))
    output.emit(report, json_, _distribution_tables)
    if report.plot is not None:
        output.hint(f"chart written to {report.plot}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("stats")(stats)
    app.command("distribution")(distribution)
