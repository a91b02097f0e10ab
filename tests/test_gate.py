"""The promotion gate: challenger and production measured on the same unseen rows, on real saved Keras models.

The runs' answers are fixed by construction (tests/gate_helpers.py), so each verdict below is known:
a better run is promoted, a worse one refused with production byte-identical, a class whose recall
collapses blocks promotion though accuracy and macro F1 rise.
"""

from __future__ import annotations

import json

import pytest

from agroml.core import config
from agroml.lifecycle.promotion import promote
from agroml.lifecycle.registry import Registry
from tests.gate_helpers import COLLAPSE, FLAWED, PERFECT, add_gate_rows, tree_bytes, write_centre_run


@pytest.fixture
def settings(workdir):
    settings = config.resolve(env_file=None)
    add_gate_rows(settings)
    return settings


def _serving(settings, run_id, centres):
    """``run_id`` (a centre run) promoted as the first production model (no gate)."""
    write_centre_run(settings.models_dir, run_id, centres)
    with Registry(settings.models_dir) as registry:
        first = promote(registry, "pest", run_id, settings=settings)
    assert first.promoted and first.comparison is None and first.reason == "first production model: no gate"
    return settings.models_dir / "pest" / "production"


def test_a_better_challenger_is_promoted_and_the_old_model_archived(settings, cli):
    production = _serving(settings, "old", FLAWED)
    before = tree_bytes(production)
    write_centre_run(settings.models_dir, "new", PERFECT)
    result = cli("promote", "new", "--model", "pest", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["promoted"] and not data["refused"] and data["previous_run_id"] == "old"
    comparison = data["comparison"]
    assert comparison["rows"] == 40  # the 12 rows both trained on are left out
    assert comparison["champion"]["accuracy"] == pytest.approx(0.75)
    assert comparison["challenger"]["accuracy"] == pytest.approx(1.0)
    assert comparison["champion"]["recall"] == {"red": 0.5, "green": 1.0, "blue": 1.0}
    assert tree_bytes(settings.models_dir / "pest" / "archive" / "old") == before
    assert json.loads((production / "PROMOTED.json").read_text())["run_id"] == "new"
    with Registry(settings.models_dir) as registry:
        assert registry.production_run_id("pest") == "new"
        events = registry.events("pest")
    assert [(e.event, e.run_id, e.champion_run_id) for e in events] == [
        ("promoted", "old", None),
        ("promoted", "new", "old"),
    ]
    assert events[1].comparison == comparison and events[1].command == "promote" and not events[1].forced


def test_a_worse_challenger_is_refused_and_production_stays_byte_identical(settings, cli):
    production = _serving(settings, "good", PERFECT)
    before = tree_bytes(production)
    write_centre_run(settings.models_dir, "worse", FLAWED)
    result = cli("promote", "worse", "--model", "pest")
    assert result.exit_code == 1
    assert "not promoted: worse refused by the gate: macro F1 0.778 vs 1.000" in result.stdout
    assert "production good" in result.stdout and "challenger worse" in result.stdout  # the side-by-side
    assert "FAIL" in result.stdout
    as_json = cli("promote", "worse", "--model", "pest", "--json")
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert data["refused"] and not data["promoted"] and data["champion_run_id"] == "good"
    failed = {r["rule"] for r in data["comparison"]["rules"] if not r["passed"]}
    assert failed == {"macro_f1", "accuracy", "recall:red"}
    assert tree_bytes(production) == before
    assert not (settings.models_dir / "pest" / "archive").exists()
    with Registry(settings.models_dir) as registry:
        assert registry.production_run_id("pest") == "good"
        assert [e.event for e in registry.events("pest")] == ["promoted", "refused", "refused"]


def test_a_collapsing_class_blocks_promotion_even_when_accuracy_rises(settings):
    _serving(settings, "old", FLAWED)
    write_centre_run(settings.models_dir, "collapse", COLLAPSE)
    with Registry(settings.models_dir) as registry:
        result = promote(registry, "pest", "collapse", settings=settings)
    comparison = result.comparison
    assert result.refused and comparison is not None
    assert comparison["challenger"]["accuracy"] == pytest.approx(0.95)
    assert comparison["champion"]["accuracy"] == pytest.approx(0.75)
    assert comparison["challenger"]["macro_f1"] > comparison["champion"]["macro_f1"]
    assert comparison["challenger"]["recall"]["blue"] == pytest.approx(0.8)
    assert [r["rule"] for r in comparison["rules"] if not r["passed"]] == ["recall:blue"]
    assert "recall of blue 0.800 vs 1.000" in (result.reason or "")


def test_margins_are_settings(settings, monkeypatch):
    _serving(settings, "old", FLAWED)
    write_centre_run(settings.models_dir, "collapse", COLLAPSE)
    monkeypatch.setenv("AGROML_GATE_MAX_RECALL_DROP", "0.25")
    loose = config.resolve(env_file=None)
    with Registry(settings.models_dir) as registry:
        assert promote(registry, "pest", "collapse", settings=loose).promoted
        write_centre_run(settings.models_dir, "perfect", PERFECT)
        monkeypatch.setenv("AGROML_GATE_MIN_F1_GAIN", "1")  # nothing beats F1 + 1: the gate always refuses
        strict = config.resolve(env_file=None)
        refused = promote(registry, "pest", "perfect", settings=strict)
    assert refused.refused and "(+1 required, AGROML_GATE_MIN_F1_GAIN)" in (refused.reason or "")


def test_promoting_the_production_run_again_is_a_noop(settings, cli):
    production = _serving(settings, "only", PERFECT)
    before = tree_bytes(production)
    result = cli("promote", "only", "--model", "pest")
    assert result.exit_code == 0
    assert result.stdout.strip() == "only is already the production pest model: nothing to do"
    assert tree_bytes(production) == before and not (settings.models_dir / "pest" / "archive").exists()
    with Registry(settings.models_dir) as registry:
        assert [e.event for e in registry.events("pest")] == ["promoted", "noop"]


def test_force_skips_the_gate_and_is_recorded(settings, cli):
    _serving(settings, "good", PERFECT)
    write_centre_run(settings.models_dir, "worse", FLAWED)
    result = cli("promote", "worse", "--model", "pest", "--force")
    assert result.exit_code == 0 and "promoted worse" in result.stdout and "forced" in result.stdout
    with Registry(settings.models_dir) as registry:
        last = registry.events("pest")[-1]
        assert registry.production_run_id("pest") == "worse"
    assert (last.event, last.forced, last.comparison, last.previous_run_id) == ("promoted", True, None, "good")


def test_too_few_unseen_rows_refuse_unless_forced(settings, monkeypatch):
    _serving(settings, "good", PERFECT)
    write_centre_run(settings.models_dir, "other", PERFECT)
    monkeypatch.setenv("AGROML_GATE_MIN_ROWS", "41")  # 40 rows neither trained on
    strict = config.resolve(env_file=None)
    with Registry(settings.models_dir) as registry:
        refused = promote(registry, "pest", "other", settings=strict)
        assert refused.refused and refused.comparison is not None and refused.comparison["rows"] == 40
        assert "only 40 row(s) that neither model trained on, 41 needed (AGROML_GATE_MIN_ROWS)" in (
            refused.reason or ""
        )
        assert promote(registry, "pest", "other", settings=strict, force=True).promoted


def test_promote_tells_the_webhook_of_a_refusal_and_with_on_success_of_a_promotion(settings, cli, monkeypatch):
    from webhookserver import WebhookServer

    server = WebhookServer()
    try:
        monkeypatch.setenv("AGROML_ALERT_WEBHOOK", server.hook_url)
        _serving(settings, "good", PERFECT)
        write_centre_run(settings.models_dir, "worse", FLAWED)
        assert cli("promote", "worse", "--model", "pest").exit_code == 1
        assert len(server.messages) == 1 and "agroml promote worse --model pest" in server.messages[0]
        assert "refused by the gate" in server.messages[0]
        write_centre_run(settings.models_dir, "best", PERFECT)
        assert cli("promote", "best", "--model", "pest", "--force").exit_code == 0
        assert len(server.messages) == 1, "a promotion is news only with AGROML_ALERT_ON_SUCCESS=1"
        monkeypatch.setenv("AGROML_ALERT_ON_SUCCESS", "1")
        write_centre_run(settings.models_dir, "newest", PERFECT)
        assert cli("promote", "newest", "--model", "pest", "--force").exit_code == 0
        assert len(server.messages) == 2 and "agroml promote newest" in server.messages[1]
        server.status = 500  # a failing webhook changes nothing but a warning
        write_centre_run(settings.models_dir, "worst", FLAWED)
        assert cli("promote", "worst", "--model", "pest").exit_code == 1
    finally:
        server.stop()
