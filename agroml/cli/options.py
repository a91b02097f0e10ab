"""Shared option definitions (Annotated aliases), so every command spells a flag the same way."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class ModelType(StrEnum):
    pest = "pest"
    disease = "disease"
    storage = "storage"


class ModelTypeOrAll(StrEnum):
    pest = "pest"
    disease = "disease"
    storage = "storage"
    all = "all"


class SourceName(StrEnum):
    local = "local"
    supabase = "supabase"


ModelOpt = Annotated[ModelType, typer.Option("--model", "-m", help="Model type.")]
ModelAllOpt = Annotated[ModelTypeOrAll, typer.Option("--model", "-m", help="Model type, or all.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of tables.")]
SourceOpt = Annotated[
    SourceName | None,
    typer.Option("--source", help="Read from the local store or live from Supabase [default: AGROML_SOURCE or local]."),
]
SinceOpt = Annotated[
    datetime | None,
    typer.Option(
        "--since", formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"], help="Only rows created on/after this date (UTC)."
    ),
]
UntilOpt = Annotated[
    datetime | None,
    typer.Option(
        "--until", formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"], help="Only rows created before this date (UTC)."
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed: same seed, same result.")]
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
