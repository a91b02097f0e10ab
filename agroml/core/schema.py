"""The AgroShield schema as agroml sees it: the model types, and where each one's rows live.

Settings (AGROML_<MODEL>_TABLE, AGROML_<MODEL>_COL_<FIELD>) override these names, and the record
normalization in agroml.data.records reads rows through them, so both depend on this one module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from agroml.core.errors import ConfigError, UsageError

MODEL_TYPES: tuple[str, ...] = ("pest", "disease", "storage")
#: Where records are read from: the local store, or live from Supabase (AGROML_SOURCE, --source);
#: auto (the default) is Supabase when SUPABASE_URL and a key are configured, else the local store.
AUTO_SOURCE = "auto"
SOURCES: tuple[str, ...] = (AUTO_SOURCE, "local", "supabase")
#: The closed vocabulary of the storage model (the other types' labels are open).
STORAGE_CONDITIONS: tuple[str, ...] = ("excellent", "good", "fair", "poor", "critical")


# --- table specs ----------------------------------------------------------------------------------
#: Record fields a spec maps to a source column (None = the table has no such column).
SPEC_FIELDS: tuple[str, ...] = (
    "id",
    "farmer_id",
    "image_url",
    "predicted",
    "confidence",
    "user_confirmed",
    "actual",
    "feedback_text",
    "crop",
    "location",
    "latitude",
    "longitude",
    "severity",
    "growth_stage",
    "created_at",
)
_CORE = {
    "id": "id",
    "farmer_id": "farmer_id",
    "image_url": "image_url",
    "confidence": "confidence_score",
    "user_confirmed": "user_confirmed",
    "feedback_text": "user_feedback",
    "location": "farm_location",
    "latitude": "latitude",
    "longitude": "longitude",
    "created_at": "created_at",
}


@dataclass(frozen=True)
class TableSpec:
    """Where one model type's rows live and what its columns are called."""

    model_type: str
    table: str
    columns: Mapping[str, str | None]
    #: Nested or type-specific columns kept verbatim in the record's JSON ``extra`` field.
    extra: tuple[str, ...] = ()
    #: A closed label vocabulary, or None for an open one.
    vocabulary: tuple[str, ...] | None = None

    def column(self, field_: str) -> str | None:
        return self.columns.get(field_)

    def select_columns(self) -> list[str]:
        """The source columns to ask for: only what is mapped, each once, in a stable order."""
        cols = [c for f in SPEC_FIELDS if (c := self.columns.get(f))] + list(self.extra)
        return list(dict.fromkeys(cols))


DEFAULT_SPECS: dict[str, TableSpec] = {
    "pest": TableSpec(
        "pest",
        "pest_predictions",
        {
            **_CORE,
            "predicted": "pest_detected",
            "actual": "actual_pest",
            "crop": "crop_affected",
            "severity": "severity",
            "growth_stage": None,
        },
        extra=("image_metadata", "alternative_predictions"),
    ),
    "disease": TableSpec(
        "disease",
        "disease_predictions",
        {
            **_CORE,
            "predicted": "disease_detected",
            "actual": "actual_disease",
            "crop": "crop_affected",
            "severity": "severity",
            "growth_stage": "growth_stage",
        },
        extra=(
            "image_metadata",
            "alternative_predictions",
            "weather_conditions",
            "estimated_yield_loss",
            "contagion_risk",
            "treatment_applied",
            "treatment_effectiveness",
        ),
    ),
    "storage": TableSpec(
        "storage",
        "storage_predictions",
        {
            **_CORE,
            "predicted": "storage_condition",
            "actual": None,
            "crop": "crop_stored",
            "severity": None,
            "growth_stage": None,
        },
        extra=("storage_type", "temperature", "humidity", "actual_outcome"),
        vocabulary=STORAGE_CONDITIONS,
    ),
}


def check_model_type(model_type: str, allow_all: bool = False) -> str:
    """Raise a UsageError listing the valid model types when ``model_type`` is not one."""
    valid = (*MODEL_TYPES, "all") if allow_all else MODEL_TYPES
    if model_type not in valid:
        raise UsageError(f"unknown model type {model_type!r}: valid types are {', '.join(valid)}")
    return model_type


def expand_model_types(model_type: str) -> list[str]:
    """``"all"`` -> every model type; anything else -> [it], checked."""
    check_model_type(model_type, allow_all=True)
    return list(MODEL_TYPES) if model_type == "all" else [model_type]


def table_spec(model_type: str, overrides: Mapping[str, Mapping[str, str]] | None = None) -> TableSpec:
    """The spec for ``model_type`` with the settings' overrides applied.

    A column override of ``-`` (or ``none``) declares the column absent; ``COL_EXTRA`` is a
    comma-separated list. Unknown field names are an error, so a typo never silently maps nothing.
    """
    spec = DEFAULT_SPECS[check_model_type(model_type)]
    mine = dict((overrides or {}).get(model_type, {}))
    if not mine:
        return spec
    table = mine.pop("table", spec.table)
    extra = spec.extra
    if "extra" in mine:
        extra = tuple(c.strip() for c in mine.pop("extra").split(",") if c.strip() and c.strip() != "-")
    unknown = set(mine) - set(SPEC_FIELDS)
    if unknown:
        env = ", ".join(f"AGROML_{model_type.upper()}_COL_{u.upper()}" for u in sorted(unknown))
        raise ConfigError(f"unknown column setting(s) {env}: valid fields are {', '.join(SPEC_FIELDS)}, extra")
    columns = dict(spec.columns)
    for key, value in mine.items():
        columns[key] = None if value.lower() in ("-", "none") else value
    return replace(spec, table=table, columns=columns, extra=extra)
