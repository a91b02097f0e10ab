"""Request bodies, validated by pydantic; the training body is built from TrainConfig's own fields.

Why built and not written out: a field added to :class:`agroml.training.config.TrainConfig` (a new
hyperparameter) reaches POST /train, its schema and its validation without an edit here, and a field
removed there is refused here. Every body rejects unknown fields (422 naming them).
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, create_model

from agroml.core.schema import MODEL_TYPES
from agroml.data.analysis import DISTRIBUTION_KEYS
from agroml.data.exporting import FORMATS
from agroml.training.config import TrainConfig


def choices(name: str, values: tuple[str, ...] | list[str]) -> type[StrEnum]:
    """A StrEnum of the library's constant, so OpenAPI lists the valid values and FastAPI checks them."""
    return StrEnum(name, {value: value for value in values})  # type: ignore[return-value]


if TYPE_CHECKING:  # members made at run time are invisible to a type checker: to it each is a StrEnum
    ModelType: TypeAlias = StrEnum
    ModelTypeOrAll: TypeAlias = StrEnum
    ByKey: TypeAlias = StrEnum
    ExportFormat: TypeAlias = StrEnum
else:
    ModelType = choices("ModelType", MODEL_TYPES)
    ModelTypeOrAll = choices("ModelTypeOrAll", [*MODEL_TYPES, "all"])
    ByKey = choices("ByKey", DISTRIBUTION_KEYS)
    ExportFormat = choices("ExportFormat", list(FORMATS))

_STRICT = ConfigDict(extra="forbid")
TRAIN_EXAMPLE: dict[str, Any] = {"model_type": "pest", "weights": "none", "image_size": 32, "epochs": 3}


def _train_body() -> type[BaseModel]:
    """TrainBody: model_type required, every other TrainConfig field optional (None: the preset decides)."""
    hints = typing.get_type_hints(TrainConfig)
    spec: dict[str, Any] = {}
    for f in fields(TrainConfig):
        if f.name == "model_type":
            spec[f.name] = (ModelType, Field(description="pest, disease or storage"))
            continue
        default = None if f.default is MISSING else f.default
        spec[f.name] = (
            hints[f.name] | None,
            Field(None, description=f"TrainConfig.{f.name} (pretrained preset: {default!r}); null = the preset's"),
        )
    return create_model(
        "TrainBody",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [dict(TRAIN_EXAMPLE)]}),
        **spec,
    )


TrainBody = _train_body()


class ExportBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"model_type": "pest", "format": "csv"}]})
    model_type: ModelType
    format: ExportFormat = Field(ExportFormat("parquet"), description="parquet, csv or json (JSON Lines)")


class EvaluateBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"model_type": "pest", "run": "production"}]}
    )
    model_type: ModelType
    run: str = Field("production", description="a run id, or production")
    newer: bool = Field(False, description="rows created after the run's data instead of its test split")
    batch_size: int = Field(32, ge=1, le=4096)


class PromoteBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"model_type": "pest", "run_id": "20261126T130501Z-mobilenetv2"}]},
    )
    model_type: ModelType
    run_id: str = Field(description="the run to serve (GET /training-history lists them)")
    force: bool = Field(False, description="skip the promotion gate (recorded as forced in the history)")


class RetrainBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"model_type": "pest", "min_new": 50, "publish": True}]}
    )
    model_type: ModelType
    min_new: int = Field(1, ge=0, description="retrain only when at least this many new trainable rows arrived")
    publish: bool = Field(False, description="upload a promoted model to the Storage bucket (as --publish)")
