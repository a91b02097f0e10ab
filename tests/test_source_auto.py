"""AGROML_SOURCE=auto against the loopback Supabase: Supabase when configured, else the store; training pulls
first and reads the local snapshot; `--source local` stays offline; `stats --require-ready` exits 1."""

from __future__ import annotations

import json

import pytest
from supa_rows import add_empty_tables, add_pest_table, jpeg, pest_rows

from agroml.core import config
from agroml.core.errors import NotEnoughDataError
from agroml.data.store import Store
from agroml.ops.snapshot import refresh, train_fresh
from agroml.training.config import resolve_config


@pytest.fixture
def supa(workdir, supabase_server, monkeypatch):
    """40 pest rows with their images in Storage; the URL and service key in the environment."""
    monkeypatch.setenv("SUPABASE_URL", supabase_server.url)
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", supabase_server.service_key)
    monkeypatch.setenv("AGROML_RETRY_BASE_SECONDS", "0.001")
    add_empty_tables(supabase_server)

    def image(i: int, row_id: str) -> str:
        return supabase_server.add_object("predictions", f"pest_images/pest_{row_id}.jpg", jpeg(i))

    add_pest_table(supabase_server, pest_rows(40, seed=3, image_url=image))
    return supabase_server


def _store_rows(workdir) -> int:
    with Store(workdir / "data" / "agroml.db", create=False) as store:
        return store.count("pest")


def test_auto_is_supabase_when_configured_else_local(workdir, supa, monkeypatch):
    assert config.resolve(env_file=None).effective_source == "supabase"
    assert config.resolve({"source": "local"}, env_file=None).effective_source == "local"
    monkeypatch.delenv("SUPABASE_SERVICE_KEY")  # a URL without a key is not a configured project
    assert config.resolve(env_file=None).effective_source == "local"
    assert config.resolve(env_file=None).source == "auto"


def test_training_pulls_first_and_source_local_stays_offline(workdir, supa, monkeypatch):
    """The pull happens before the data check: training then fails on too few rows, but the store has them."""
    monkeypatch.setenv("AGROML_MIN_TOTAL", "1000")
    settings = config.resolve(env_file=None)
    cfg = resolve_config(settings, {"model_type": "pest", "weights": "none", "image_size": 32, "epochs": 1})
    with pytest.raises(NotEnoughDataError):
        train_fresh(settings, cfg)
    assert _store_rows(workdir) == 40
    assert len(list((workdir / "data" / "images").glob("??/*.jpg"))) == 40

    # offline: new rows in Supabase are not pulled
    def image(i: int, row_id: str) -> str:
        return supa.add_object("predictions", f"pest_images/pest_{row_id}.jpg", jpeg(1000 + i))

    supa.add_rows("pest_predictions", pest_rows(5, seed=99, image_url=image))
    requests = len(supa.requests)
    offline = config.resolve({"source": "local"}, env_file=None)
    assert refresh(offline, "pest") is None
    with pytest.raises(NotEnoughDataError):
        train_fresh(offline, cfg)
    assert len(supa.requests) == requests and _store_rows(workdir) == 40
    # auto again: the second pull fetches only what is new (the 40 images are cached: no request for them)
    pulled = refresh(settings, "pest")
    assert pulled is not None and pulled.models["pest"].inserted == 5 and _store_rows(workdir) == 45
    assert pulled.images is not None and (pulled.images.fetched, pulled.images.cached) == (5, 40)


def test_stats_require_ready_exits_1_when_not_ready(cli, workdir, supa, monkeypatch):
    not_ready = cli("stats", "--model", "pest", "--require-ready", "--json")
    assert not_ready.exit_code == 1
    assert json.loads(not_ready.stdout)["models"]["pest"]["ready"]["ok"] is False  # the report still comes
    assert "error: pest: not ready: " in not_ready.stderr and "more trainable rows needed" in not_ready.stderr
    monkeypatch.setenv("AGROML_MIN_TOTAL", "1")
    monkeypatch.setenv("AGROML_MIN_PER_CLASS", "0")
    ready = cli("stats", "--model", "pest", "--require-ready", "--source", "supabase")
    assert ready.exit_code == 0, ready.output
