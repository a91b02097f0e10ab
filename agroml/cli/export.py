"""Command: ``export`` (records to CSV, JSON Lines or Parquet files for training elsewhere)."""

from __future__ import annotations

import contextlib
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, TypeAlias

import typer

from agroml.cli import output
from agroml.cli.options import (
    JsonOpt,
    ModelAllOpt,
    ModelTypeOrAll,
    OutDirOpt,
    SinceOpt,
    SourceOpt,
    UntilOpt,
    choices,
)
from agroml.core import config
from agroml.data.analysis import check_window
from agroml.data.exporting import FORMATS, SCOPES, ExportResult, export_records
from agroml.data.sources import open_source

if TYPE_CHECKING:  # see cli/options.py
    Scope: TypeAlias = StrEnum
    Format: TypeAlias = StrEnum
else:
    Scope = choices("Scope", SCOPES)
    Format = choices("Format", list(FORMATS))

ScopeOpt = Annotated[
    Scope,
    typer.Option(
        "--scope",
        help="training: valid rows with a training label (confirmed or corrected); all: every row, "
        "invalid ones with their invalid_reason.",
    ),
]
FormatOpt = Annotated[
    Format,
    typer.Option("--format", "-f", help="parquet keeps types; csv and json (JSON Lines) write ISO-8601 UTC times."),
]
PersonalOpt = Annotated[
    bool,
    typer.Option(
        "--include-personal",
        help="Also export the raw farmer_id (personal data, so the file is owner-only, 0600; default: only the "
        "salted farmer_key).",
    ),
]
RawCsvOpt = Annotated[
    bool,
    typer.Option(
        "--raw-csv",
        help="Write CSV text cells exactly as stored. By default a cell starting with = + - @ tab or CR gets a "
        "leading ' so a spreadsheet does not run it as a formula.",
    ),
]


def _excluded_hint(model: str, excluded: dict[str, int]) -> str:
    parts = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(excluded.items()))
    return f"{model}: left out {sum(excluded.values())} rows ({parts}); --scope all exports every row"


def export(
    model: ModelAllOpt = ModelTypeOrAll("all"),
    scope: ScopeOpt = Scope("training"),
    fmt: FormatOpt = Format("parquet"),
    out: OutDirOpt = None,
    include_personal: PersonalOpt = False,
    raw_csv: RawCsvOpt = False,
    since: SinceOpt = None,
    until: UntilOpt = None,
    source: SourceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Write records to one file per model type: `<model>_<scope>_<UTC timestamp>.<ext>`.

    Files are written in chunks (flat memory) under a temporary name and renamed when complete, so a
    partial file never appears. Farmers appear only as the salted farmer_key unless --include-personal.
    CSV text cells that a spreadsheet would run as a formula get a leading ' (--raw-csv: as stored).
    Prints each file's path and row count; --out defaults to AGROML_EXPORTS_DIR or exports/.

    Example: agroml export --model pest --scope training --format parquet --out exports/
    """

    since, until = check_window(since, until)  # a bad window is the first thing to report
    settings = config.resolve({"source": source, "exports_dir": out})
    with contextlib.closing(open_source(settings, output.notice)) as src, output.progress() as progress:
        result = export_records(
            src,
            model.value,
            scope.value,
            fmt.value,
            settings.exports_dir,
            include_personal=include_personal,
            raw_csv=raw_csv,
            since=since,
            until=until,
            progress=progress,
        )
    output.emit(result, json_, _files)
    for file in result.files:
        if file.excluded:
            output.hint(_excluded_hint(file.model_type, file.excluded))


def _files(result: ExportResult) -> None:
    width = max(len(str(f.path)) for f in result.files) if result.files else 0
    for file in result.files:
        output.stdout.print(f"{file.path!s:<{width}}  {file.rows} rows", highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("export")(export)
