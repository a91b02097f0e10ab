"""Publishing to Supabase Storage: the loopback server (tests/supaserver.py) as the far side, supabase-py as the client.

What matters to the backend that polls ``<type>/production.json``: it is written after every file of the
model it names, so a failure or a kill half-way leaves it naming the previous, complete model; a rerun
completes the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from supaserver import Faults

from agroml.core import config
from agroml.core.errors import SourceError
from agroml.lifecycle.promotion import promote
from agroml.lifecycle.publishing import publish
from agroml.lifecycle.registry import Registry
from tests.model_helpers import write_run

SPLIT = {"train": [], "val": [], "test": []}


@pytest.fixture
def env(workdir, supabase_server, monkeypatch):
    """Supabase settings for the loopback server, a private `models` bucket, and two runs: a serving, b not."""
    monkeypatch.setenv("SUPABASE_URL", supabase_server.url)
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", supabase_server.service_key)
    monkeypatch.setenv("AGROML_RETRY_BASE_SECONDS", "0.01")
    monkeypatch.setenv("AGROML_RETRY_MAX_SECONDS", "2")
    supabase_server.add_bucket("models", public=False)
    settings = config.resolve(env_file=None)
    for i, run_id in enumerate(("a", "b")):
        folder = write_run(settings.models_dir, "pest", run_id, ["red", "green", "blue"][: 2 + i], SPLIT)
        (folder / "MODEL_CARD.md").write_text(f"# model {run_id}\n")
    with Registry(settings.models_dir) as registry:
        promote(registry, "pest", "a", settings=settings)
    return settings


def _manifest(server) -> dict:
    return json.loads(server.objects[("models", "pest/production.json")].data)


def _complete(server, manifest: dict) -> bool:
    """Every file production.json names is in the bucket with its sha256 and size."""
    for entry in manifest["files"].values():
        obj = server.objects.get(("models", entry["path"]))
        if obj is None or hashlib.sha256(obj.data).hexdigest() != entry["sha256"] or len(obj.data) != entry["size"]:
            return False
    return True


def test_publish_uploads_the_files_then_production_json_last(env, supabase_server, cli):
    result = cli("publish", "--model", "pest", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["run_id"], data["prefix"], data["production_json"]) == ("a", "pest/a", "models/pest/production.json")
    production = env.models_dir / "pest" / "production"
    for name in ("model.keras", "labels.json", "MODEL_CARD.md"):
        obj = supabase_server.objects[("models", f"pest/a/{name}")]
        assert obj.data == (production / name).read_bytes()
    uploads = [r.path for r in supabase_server.requests if r.method == "POST"]
    assert uploads == [
        "/storage/v1/object/models/pest/a/model.keras",
        "/storage/v1/object/models/pest/a/labels.json",
        "/storage/v1/object/models/pest/a/MODEL_CARD.md",
        "/storage/v1/object/models/pest/production.json",
    ]
    manifest = _manifest(supabase_server)
    assert (
        manifest["run_id"] == "a" and manifest["classes"] == ["red", "green"] and _complete(supabase_server, manifest)
    )
    assert set(manifest["files"]) == {"model.keras", "labels.json", "MODEL_CARD.md"}  # no tflite was made
    assert manifest["metrics"] == {"accuracy": 1.0, "macro_f1": 1.0}


def test_a_failure_half_way_leaves_production_json_on_the_old_model_and_a_rerun_completes(
    env, supabase_server, monkeypatch
):
    with Registry(env.models_dir) as registry:
        publish(env, registry, "pest")
        promote(registry, "pest", "b", settings=env, force=True)
        supabase_server.faults = Faults(
            error_rate=1.0, error_statuses=(500,), paths=("/storage/v1/object/models/pest/b/labels",)
        )
        with pytest.raises(SourceError, match=r"Supabase Storage kept failing on models/pest/b/labels\.json"):
            publish(env, registry, "pest")
        assert ("models", "pest/b/model.keras") in supabase_server.objects  # the first file went up...
        manifest = _manifest(supabase_server)
        assert manifest["run_id"] == "a" and _complete(supabase_server, manifest)  # ...but a still serves, whole
        supabase_server.faults = Faults()
        again = publish(env, registry, "pest")
    assert again.previous_run_id == "a"
    manifest = _manifest(supabase_server)
    assert manifest["run_id"] == "b" and manifest["classes"] == ["red", "green", "blue"]
    assert _complete(supabase_server, manifest)


def test_transient_storage_errors_are_retried(env, supabase_server):
    supabase_server.faults = Faults(burst=2, error_statuses=(503,), paths=("/storage/v1/object/models/",))
    with Registry(env.models_dir) as registry:
        result = publish(env, registry, "pest")
    assert result.run_id == "a" and _complete(supabase_server, _manifest(supabase_server))
    # the first two requests (the old manifest's GET, the first upload) get 503; the upload is sent again
    assert [(r.method, r.status) for r in supabase_server.requests][:3] == [("GET", 503), ("POST", 503), ("POST", 200)]


def test_promote_publish_uploads_the_new_production(env, supabase_server, cli):
    result = cli("promote", "b", "--model", "pest", "--force", "--publish")
    assert result.exit_code == 0, result.output
    assert "published b (4 files" not in result.stdout and "published b (3 files" in result.stdout
    assert _manifest(supabase_server)["run_id"] == "b"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no_bucket", "error: Storage has no bucket 'models'"),
        ("anon", "error: Storage refused the upload of models/pest/a/model.keras (403"),
        ("no_url", "error: publishing needs Supabase: SUPABASE_URL or SUPABASE_SERVICE_KEY is not set"),
    ],
)
def test_publish_errors_say_what_to_fix(env, supabase_server, cli, monkeypatch, change, message):
    if change == "no_bucket":
        supabase_server.buckets.clear()
    elif change == "anon":
        monkeypatch.setenv("SUPABASE_SERVICE_KEY", supabase_server.anon_key)
    else:
        monkeypatch.delenv("SUPABASE_URL")
    result = cli("publish", "--model", "pest")
    assert result.exit_code == 1 and result.stderr.startswith(message), result.stderr
    assert ("models", "pest/production.json") not in supabase_server.objects


_CHILD = """
from agroml.core import config
from agroml.lifecycle.publishing import publish
from agroml.lifecycle.registry import Registry
settings = config.resolve(env_file=None)
with Registry(settings.models_dir) as registry:
    publish(settings, registry, "pest")
"""


@pytest.mark.parametrize("step", ["uploaded", "manifest"])
def test_sigkill_during_publish_leaves_production_json_on_a_complete_model(env, supabase_server, workdir, step):
    with Registry(env.models_dir) as registry:
        publish(env, registry, "pest")
        promote(registry, "pest", "b", settings=env, force=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD], cwd=workdir, env={**os.environ, "AGROML_TEST_PAUSE": f"{step}:60"}
    )
    target = "pest/b/model.keras" if step == "uploaded" else "pest/b/MODEL_CARD.md"
    deadline = time.monotonic() + 60
    try:
        while ("models", target) not in supabase_server.objects:
            assert proc.poll() is None and time.monotonic() < deadline, "the child never uploaded"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    manifest = _manifest(supabase_server)
    assert manifest["run_id"] == "a" and _complete(supabase_server, manifest)
    with Registry(env.models_dir) as registry:
        publish(env, registry, "pest")  # the rerun completes
    manifest = _manifest(supabase_server)
    assert manifest["run_id"] == "b" and _complete(supabase_server, manifest)
