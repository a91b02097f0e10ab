"""The record schema and AgroShield's label rules (the old system got these wrong)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from agroml.core import schema
from agroml.core.errors import ConfigError, UsageError
from agroml.data import records as rec


def _row(**kw):
    base = dict(
        id="r1",
        farmer_id="farmer-1",
        image_url="https://x.supabase.co/a.jpg",
        pest_detected="Aphids",
        confidence_score=0.8,
        user_confirmed=None,
        actual_pest=None,
        created_at="2025-03-02T10:00:00Z",
    )
    base.update(kw)
    return base


def _one(**kw) -> pd.Series:
    return rec.normalize_rows([_row(**kw)], schema.table_spec("pest"), "supabase", "salt").records.iloc[0]


@pytest.mark.parametrize(
    ("confirmed", "actual", "feedback", "label"),
    [
        (True, None, "confirmed", "aphids"),
        (True, "Aphids", "confirmed", "aphids"),  # a correction equal to the prediction confirms it
        (True, "Fall armyworm", "corrected", "fall_armyworm"),  # confirmed but a differing truth: the truth wins
        (False, "Fall Armyworm", "corrected", "fall_armyworm"),  # the most valuable row: kept, with the truth
        (False, None, "rejected", None),  # wrong, truth unknown: not trainable
        (None, None, "none", None),  # no feedback is not a label
        (None, "fall armyworm", "none", None),
    ],
)
def test_feedback_and_training_label(confirmed, actual, feedback, label):
    row = _one(user_confirmed=confirmed, actual_pest=actual)
    assert row["feedback"] == feedback
    assert row["label"] == label
    assert row["predicted_label"] == "aphids"


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        (dict(id=None), "no_id"),
        (dict(image_url="  "), "no_image"),
        (dict(pest_detected="???"), "unknown_label"),
        (dict(actual_pest="!!", user_confirmed=False), "unknown_label"),
        (dict(confidence_score=1.2), "bad_confidence"),
        (dict(confidence_score=None), "bad_confidence"),
        (dict(created_at="yesterday"), "bad_created_at"),
    ],
)
def test_invalid_rows_are_kept_with_their_reason(kw, reason):
    normalized = rec.normalize_rows([_row(), _row(**{"id": "r2", **kw})], schema.table_spec("pest"), "supabase", "salt")
    assert normalized.invalid == {reason: 1}
    assert len(normalized.records) == 2
    assert normalized.records["invalid_reason"].isna().sum() == 1


def test_storage_labels_are_a_closed_scale_and_outcome_is_not_a_correction():
    spec = schema.table_spec("storage")
    rows = [
        dict(
            id="s1",
            farmer_id="f",
            image_url="u",
            storage_condition="Good",
            confidence_score=0.9,
            user_confirmed=False,
            actual_outcome="it rotted",
            created_at="2025-01-01T00:00:00Z",
        ),
        dict(
            id="s2",
            farmer_id="f",
            image_url="u",
            storage_condition="mouldy",
            confidence_score=0.9,
            user_confirmed=True,
            created_at="2025-01-01T00:00:00Z",
        ),
    ]
    out = rec.normalize_rows(rows, spec, "supabase", "salt").records
    assert out.loc[0, "feedback"] == "rejected" and out.loc[0, "label"] is None
    assert json.loads(out.loc[0, "extra"]) == {"actual_outcome": "it rotted"}
    assert out.loc[1, "invalid_reason"] == "unknown_label"


def test_times_are_utc_and_farmer_ids_are_salted_hashes():
    row = _one(created_at="2025-03-02T10:00:00+03:00", farmer_id="farmer-1")
    assert row["created_at"] == pd.Timestamp("2025-03-02T07:00:00Z")
    assert row["farmer_key"] == rec.farmer_key("farmer-1", "salt")
    assert "farmer-1" not in row["farmer_key"]
    assert rec.farmer_key("farmer-1", "other") != row["farmer_key"]
    hidden = rec.normalize_rows([_row()], schema.table_spec("pest"), "supabase", "salt", include_personal=False)
    assert "farmer_id" not in hidden.records.columns


def test_table_spec_overrides_rename_and_drop_columns():
    spec = schema.table_spec("pest", {"pest": {"table": "pests_v2", "predicted": "label_guess", "severity": "-"}})
    assert spec.table == "pests_v2"
    assert spec.column("predicted") == "label_guess"
    assert spec.column("severity") is None
    assert "severity" not in spec.select_columns() and "label_guess" in spec.select_columns()
    with pytest.raises(ConfigError, match="AGROML_PEST_COL_PREDICTD"):
        schema.table_spec("pest", {"pest": {"predictd": "x"}})


def test_unknown_model_type_lists_valid_ones():
    with pytest.raises(UsageError, match="valid types are pest, disease, storage"):
        schema.check_model_type("weeds")
    assert schema.expand_model_types("all") == ["pest", "disease", "storage"]


def test_arrow_conversion_keeps_types():
    out = rec.normalize_rows(
        [_row(user_confirmed=True)], schema.table_spec("pest"), "s", "salt", include_personal=False
    ).records
    table = rec.to_arrow(out)
    assert table.schema == rec.arrow_schema()
    assert str(table.schema.field("created_at").type) == "timestamp[us, tz=UTC]"
    assert table.column("user_confirmed").to_pylist() == [True]


def test_label_normalization():
    assert rec.normalize_label("  Fall-Armyworm ") == "fall_armyworm"
    assert rec.normalize_label("Maize  streak virus") == "maize_streak_virus"
    assert rec.normalize_label("") is None and rec.normalize_label(None) is None and rec.normalize_label("--") is None


def test_times_of_mixed_precision_all_parse():
    out = rec.make_records(
        [
            dict(
                id="a",
                source="s",
                model_type="pest",
                image_url="u",
                predicted_label="x",
                confidence=0.5,
                created_at="2025-01-01T00:00:00Z",
            ),
            dict(
                id="b",
                source="s",
                model_type="pest",
                image_url="u",
                predicted_label="x",
                confidence=0.5,
                created_at="2025-01-01T00:00:00.5+03:00",
            ),
        ]
    )
    assert out["created_at"].tolist() == [pd.Timestamp("2025-01-01T00:00:00Z"), pd.Timestamp("2024-12-31T21:00:00.5Z")]
