"""Shared option definitions (Annotated aliases), so every command spells a flag the same way.

The choices come from the library's own constants (enums built from them, never retyped), so a model
type or a source added to the library reaches every command's choices and help.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeAlias

import typer

from agroml.core import schema


def choices(name: str, values: tuple[str, ...] | list[str]) -> type[StrEnum]:
    """A StrEnum whose members are ``values`` (the library's constant), for a checked Typer choice."""
    return StrEnum(name, {value: value for value in values})  # type: ignore[return-value]


if TYPE_CHECKING:  # members made at run time are invisible to a type checker: to it each is a StrEnum
    ModelType: TypeAlias = StrEnum
    ModelTypeOrAll: TypeAlias = StrEnum
    SourceName: TypeAlias = StrEnum
else:
    ModelType = choices("ModelType", schema.MODEL_TYPES)
    ModelTypeOrAll = choices("ModelTypeOrAll", [*schema.MODEL_TYPES, "all"])
    SourceName = choices("SourceName", schema.SOURCES)


def parse_time(text: str) -> datetime:
    """An ISO 8601 date or time, with a zone (``Z``, ``+03:00``) or without one (taken as UTC).

    Why not Typer's datetime formats: they refuse ``2025-03-01T10:00:00Z`` and every offset, which is
    how times are usually written (and how agroml's own JSON writes them).
    """
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 date or time: use e.g. 2025-03-01, 2025-03-01T10:00:00Z "
            "or 2025-03-01T13:00:00+03:00 (a time without a zone is UTC)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


_TIME_HELP = "ISO 8601 date or time, e.g. 2025-03-01 or 2025-03-01T10:00:00Z; a time without a zone is UTC"
ModelOpt = Annotated[ModelType, typer.Option("--model", "-m", help="Model type.")]
ModelAllOpt = Annotated[ModelTypeOrAll, typer.Option("--model", "-m", help="Model type, or all.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of tables.")]
SourceOpt = Annotated[
    SourceName | None,
    typer.Option(
        "--source",
        help="Read from the local store, live from Supabase, or auto: Supabase when SUPABASE_URL and a key are set "
        "[default: AGROML_SOURCE or auto].",
    ),
]
SinceOpt = Annotated[
    datetime | None,
    typer.Option(
        "--since", parser=parse_time, metavar="<date>", help=f"Only rows created at or after this time ({_TIME_HELP})."
    ),
]
UntilOpt = Annotated[
    datetime | None,
    typer.Option("--until", parser=parse_time, metavar="<date>", help="Only rows created before this time."),
]
SeedOpt = Annotated[
    int, typer.Option("--seed", min=0, help="Random seed (any whole number >= 0): same seed, same result.")
]
OutDirOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder.")]
MinTotalOpt = Annotated[
    int | None,
    typer.Option("--min-total", min=0, help="Trainable rows needed to be ready [default: AGROML_MIN_TOTAL or 100]."),
]
MinPerClassOpt = Annotated[
    int | None,
    typer.Option(
        "--min-per-class", min=0, help="Trainable rows needed per class [default: AGROML_MIN_PER_CLASS or 10]."
    ),
]
