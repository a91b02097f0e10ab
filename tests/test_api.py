"""The HTTP API against a real uvicorn server on 127.0.0.1, driven by a real httpx client.

One server for the module (a demo store of 40 rows per type): each route's JSON is compared with the
CLI's --json for the same arguments, the training runs in a real worker process, and the security
rules (401, 503, refusing a public host without a token) are checked route by route.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx
import uvicorn
from typer.testing import CliRunner

from agroml.api.app import create_app
from agroml.core import config
from agroml.core.config import Settings

#: The module's server fixture draws demo photos once (a minute on a loaded 2-core machine, more when shared).
pytestmark = pytest.mark.timeout(900)
TOKEN = "test-token-0123456789abcdef"
#: Per request: a machine shared by many engineers can take seconds to answer even /health.
TIMEOUT_S = 120
BASE = "/api/model-training"
PROTECTED = [
    ("GET", "/data-stats"),
    ("GET", "/data-distribution"),
    ("GET", "/model-performance"),
    ("GET", "/training-status"),
    ("GET", "/training-history"),
    ("POST", "/train"),
    ("POST", "/retrain"),
    ("POST", "/export-training-data"),
    ("POST", "/export-all-data"),
    ("POST", "/evaluate"),
    ("POST", "/promote"),
    ("POST", "/predict"),
    ("GET", "/runs/x"),
    ("GET", "/runs/x/files/curves.png"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn serving ``create_app(settings)`` in a thread of the test process."""

    def __init__(self, settings: Settings, app: Any = None) -> None:
        self.port = _free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app or create_app(settings),
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                # uvicorn drops a connection idle for 5 s; on a starved machine that races the client reusing it
                timeout_keep_alive=120,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    """A demo store and a server on it; the CLI (same process, same environment) sees the same folders."""
    from agroml.demo import rows as demo

    root = tmp_path_factory.mktemp("api")
    with pytest.MonkeyPatch.context() as mp:
        for env in list(os.environ):
            if env.startswith(("AGROML_", "SUPABASE_")) and env != "AGROML_DEBUG":
                mp.delenv(env)
        mp.setenv("AGROML_DATA_DIR", str(root / "data"))
        mp.setenv("AGROML_MODELS_DIR", str(root / "models"))
        mp.setenv("AGROML_EXPORTS_DIR", str(root / "exports"))
        mp.setenv("AGROML_API_TOKEN", TOKEN)
        mp.setenv("AGROML_MIN_TOTAL", "10")  # the demo's 40 pest rows hold about 20 trainable ones
        mp.chdir(root)
        settings = config.resolve(env_file=None)
        demo.generate(settings, ["pest", "disease", "storage"], n=40, seed=0)
        server = Server(settings)
        client = httpx.Client(base_url=server.url + BASE, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
        try:
            yield SimpleNamespace(client=client, url=server.url, settings=settings, root=root)
        finally:
            client.close()
            server.stop()
            _stop_workers(Path(settings.models_dir))


def _stop_workers(models_dir: Path) -> None:
    """A worker a failed test left running is stopped (it runs in a session of its own, not ours)."""
    import json
    import signal

    for record in (models_dir / ".jobs").glob("*.current.json"):
        pid = json.loads(record.read_text()).get("pid")
        with contextlib.suppress(OSError, TypeError):
            os.kill(pid, signal.SIGTERM)


def cli_json(*args: str) -> Any:
    """`agroml ARGS --json` in this process: its stdout parsed."""
    import json

    from agroml.cli.main import app

    result = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _without(data: Any, *keys: str) -> Any:
    if isinstance(data, dict):
        return {k: _without(v, *keys) for k, v in data.items() if k not in keys}
    if isinstance(data, list):
        return [_without(v, *keys) for v in data]
    return data


# --- read routes equal the CLI ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "params", "cli"),
    [
        ("/data-stats", {}, ["stats"]),
        (
            "/data-stats",
            {"model": "pest", "since": "2020-01-01", "min_total": 10, "min_per_class": 2},
            ["stats", "--model", "pest", "--since", "2020-01-01", "--min-total", "10", "--min-per-class", "2"],
        ),
        (
            "/data-distribution",
            {"model": "disease", "by": "season"},
            ["distribution", "--model", "disease", "--by", "season"],
        ),
        (
            "/data-distribution",
            {"model": "pest", "by": "crop", "until": "2030-01-01T00:00:00Z"},
            ["distribution", "--model", "pest", "--by", "crop", "--until", "2030-01-01T00:00:00Z"],
        ),
        ("/model-performance", {"model": "pest"}, ["performance", "--model", "pest"]),
        ("/training-status", {}, ["status"]),
        ("/training-history", {"model": "storage", "limit": 5}, ["runs", "--model", "storage", "--limit", "5"]),
    ],
)
def test_read_routes_equal_the_cli_json(api, path: str, params: dict, cli: list[str]) -> None:
    response = api.client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert _without(response.json(), "generated_at") == _without(cli_json(*cli), "generated_at")


# --- security --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}"])
def test_protected_routes_refuse_a_missing_or_wrong_token(api, method: str, path: str, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = httpx.request(
        method, api.url + BASE + path, headers=headers, json={"model_type": "pest"}, timeout=TIMEOUT_S
    )
    assert response.status_code == 401, response.text
    assert set(response.json()) == {"error", "fix"} and "Authorization: Bearer" in response.json()["fix"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_without_a_token_configured_protected_routes_are_closed_not_open(api) -> None:
    from dataclasses import replace

    server = Server(replace(api.settings, api_token=None))
    try:
        for method, path in PROTECTED:
            response = httpx.request(
                method, server.url + BASE + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=TIMEOUT_S
            )
            assert response.status_code == 503, (path, response.text)
            assert "AGROML_API_TOKEN" in response.json()["fix"]
        assert httpx.get(server.url + BASE + "/health", timeout=TIMEOUT_S).status_code == 200
    finally:
        server.stop()


def test_the_router_in_a_host_app_answers_under_its_prefix_once(api) -> None:
    """As the AgroShield backend includes it: its own app, its own handlers, one include_router line."""
    from fastapi import FastAPI

    import agroml.api

    host = FastAPI()
    host.include_router(agroml.api.make_router(api.settings))
    server = Server(api.settings, host)
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(server.url + BASE + "/training-status", headers=auth, timeout=TIMEOUT_S).json() == {
            "running": []
        }
        assert (
            httpx.get(server.url + BASE + BASE + "/training-status", headers=auth, timeout=TIMEOUT_S).status_code == 404
        )
        refused = httpx.get(
            server.url + BASE + "/data-stats", params={"since": "soon"}, headers=auth, timeout=TIMEOUT_S
        )
        assert refused.status_code == 400 and set(refused.json()) == {"error", "fix"}  # not the host's format
    finally:
        server.stop()


def test_serve_refuses_a_public_host_without_a_token(api) -> None:
    from agroml.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"], env={"AGROML_API_TOKEN": ""})
    assert result.exit_code == 2
    assert "refusing to serve on 0.0.0.0 without a token" in result.stderr
    assert "AGROML_API_TOKEN" in result.stderr


# --- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"model_type": "pest", "epochz": 3},  # unknown field
        {"model_type": "pest", "epochs": "three"},  # wrong type
        {"model_type": "pest", "epochs": 2.5},  # not a whole number
        {"model_type": "cassava"},  # unknown model type
        {"epochs": 3},  # no model type
        [],  # not an object
    ],
)
def test_train_refuses_a_bad_body_with_422(api, body: Any) -> None:
    response = api.client.post("/train", json=body)
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"error", "fix"} and "body" in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "says"),
    [
        ("POST", "/train", {"json": {"model_type": "pest", "epochs": 0}}, 400, "--epochs 0"),
        ("POST", "/train", {"json": {"model_type": "pest", "arch": "vgg99"}}, 400, "vgg99"),
        ("GET", "/data-stats", {"params": {"since": "yesterday"}}, 400, "since='yesterday'"),
        ("GET", "/data-stats", {"params": {"since": "2026-01-01", "until": "2025-01-01"}}, 400, "not before"),
        ("GET", "/data-stats", {"params": {"model": "cassava"}}, 422, "model"),
        ("GET", "/runs/20990101T000000Z-nothing", {}, 404, "no run"),
        ("GET", "/runs/20990101T000000Z-nothing/files/curves.png", {}, 404, "no finished run"),
        ("GET", "/runs/x/files/config.json", {}, 400, "not a run file"),
        ("GET", "/runs/x/files/..%2F..%2Fregistry.db", {}, 404, "Not Found"),
        ("GET", "/runs/..%2F..%2Fmodels/files/curves.png", {}, 404, "Not Found"),
        ("GET", "/runs/x/files/%2E%2E", {}, 400, "not a run file"),
        ("POST", "/promote", {"json": {"model_type": "pest", "run_id": "nope"}}, 404, "nope"),
        ("POST", "/evaluate", {"json": {"model_type": "storage", "run": "production"}}, 404, ""),
    ],
)
def test_bad_requests_get_the_cli_message_and_a_proper_status(api, method, path, kwargs, status, says) -> None:
    response = api.client.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "fix"} and says in body["error"]
    assert "Traceback" not in response.text


# --- exports -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("route", "scope"), [("/export-training-data", "training"), ("/export-all-data", "all")])
@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export_downloads_a_file_with_the_cli_row_count(api, route: str, scope: str, fmt: str) -> None:
    import pandas as pd

    response = api.client.post(route, json={"model_type": "pest", "format": fmt})
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    assert f"pest_{scope}_" in disposition and "attachment" in disposition
    data = io.BytesIO(response.content)
    frame = {"csv": pd.read_csv, "json": lambda d: pd.read_json(d, lines=True), "parquet": pd.read_parquet}[fmt](data)
    cli = cli_json("export", "--model", "pest", "--scope", scope, "--format", fmt, "--out", str(api.root / "cli"))
    assert len(frame) == cli["files"][0]["rows"] == int(response.headers["x-agroml-rows"]) > 0
    assert not Path(api.settings.exports_dir).exists(), "the server keeps no copy of a download"


# --- training in a worker process, then the model's life ---------------------------------------------------
@pytest.mark.slow
@pytest.mark.e2e
def test_train_in_a_worker_then_status_history_files_promote_predict_evaluate(api) -> None:
    body = {"model_type": "pest", "weights": "none", "image_size": 32, "epochs": 2, "min_per_class": 2}
    response = api.client.post("/train", json=body)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    assert response.headers["location"] == f"{BASE}/runs/{run_id}"
    assert response.json()["state"] == "starting"  # answered before the worker has even read its data
    worker = api.client.get(f"/runs/{run_id}").json()["pid"]
    assert worker != os.getpid() and os.getsid(worker) != os.getsid(0)  # not this (the server's) process, own session

    busy = api.client.post("/train", json=body)
    assert busy.status_code == 409 and run_id in busy.json()["error"]

    epochs: set[int] = set()
    state = "starting"
    deadline = time.monotonic() + 900  # seconds on idle cores; minutes on a machine shared by many
    while state in ("starting", "running") and time.monotonic() < deadline:
        for r in api.client.get("/training-status").json()["running"]:
            if r["run_id"] == run_id and r["epoch"] is not None:
                epochs.add(r["epoch"])
        state = api.client.get(response.headers["location"].removeprefix(BASE)).json()["state"]
        time.sleep(0.05)
    assert state == "succeeded", api.client.get(f"/runs/{run_id}").json()
    assert epochs, "GET /training-status never showed an epoch of the running training"
    assert max(epochs) >= 1

    history = api.client.get("/training-history", params={"model": "pest"}).json()
    assert history[0]["run_id"] == run_id and history[0]["state"] == "succeeded"
    assert history == cli_json("runs", "--model", "pest")
    assert api.client.get(f"/runs/{run_id}").json() == history[0]

    png = api.client.get(f"/runs/{run_id}/files/curves.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    card = api.client.get(f"/runs/{run_id}/files/MODEL_CARD.md")
    assert card.status_code == 200 and run_id in card.text
    assert api.client.get(f"/runs/{run_id}/files/model.tflite").status_code == 404

    promoted = api.client.post("/promote", json={"model_type": "pest", "run_id": run_id})
    assert promoted.status_code == 200 and promoted.json()["run_id"] == run_id
    perf = api.client.get("/model-performance", params={"model": "pest"}).json()
    assert perf["models"]["pest"]["production"]["run_id"] == run_id
    assert _without(perf, "generated_at") == _without(cli_json("performance", "--model", "pest"), "generated_at")

    photo = next(p for p in Path(api.settings.image_dir).rglob("*.*") if p.suffix in (".png", ".jpg", ".jpeg"))
    local = api.root / f"leaf{photo.suffix}"
    local.write_bytes(photo.read_bytes())
    with open(local, "rb") as f:
        predicted = api.client.post("/predict", params={"model": "pest", "top": 2}, files={"image": (local.name, f)})
    assert predicted.status_code == 200, predicted.text
    cli = cli_json("predict", local.name, "--model", "pest", "--run", "production", "--top", "2")
    assert predicted.json() == cli
    for size in (15 * 1024 * 1024 + 1, 15 * 1024 * 1024 + 200_000):  # read and counted; refused by its length
        too_big = api.client.post("/predict", files={"image": ("big.png", b"x" * size)})
        assert too_big.status_code == 413 and "AGROML_IMAGE_MAX_MB" in too_big.json()["fix"]
    junk = api.client.post("/predict", files={"image": ("junk.png", b"not an image")})
    assert junk.status_code == 200 and junk.json()["failed"] == 1
    assert junk.json()["predictions"][0]["error"].startswith("junk.png: ") and "agroml-predict-" not in junk.text

    evaluated = api.client.post("/evaluate", json={"model_type": "pest", "run": "production"})
    assert evaluated.status_code == 200, evaluated.text
    cli = cli_json("evaluate", "production", "--model", "pest")
    assert evaluated.json()["metrics"] == cli["metrics"] and evaluated.json()["run_id"] == cli["run_id"]


def test_retrain_runs_in_a_worker_and_its_job_says_why_nothing_was_trained(api) -> None:
    """POST /retrain is `agroml retrain` in a worker process: 202 and a job to poll; on 40 demo rows the
    disease classes hold fewer than AGROML_MIN_PER_CLASS (10) rows, so it ends with nothing to do (exit 0)."""
    response = api.client.post("/retrain", json={"model_type": "disease", "min_new": 1})
    assert response.status_code == 202, response.text
    job_id = response.json()["run_id"]
    assert job_id.startswith("retrain-") and response.headers["location"] == f"{BASE}/runs/{job_id}"
    deadline = time.monotonic() + 300
    job = response.json()
    while job["state"] == "starting" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = api.client.get(f"/runs/{job_id}").json()
    assert job["state"] == "succeeded", job
    (disease,) = job["result"]["models"]
    assert disease["outcome"] == "nothing_to_do" and "not ready" in disease["reason"], disease
    assert job["result"]["exit_code"] == 0 and disease["run_id"] is None
    assert api.client.post("/retrain", json={"model_type": "disease", "min_new": -1}).status_code == 422


# --- last: the doctor checks import TensorFlow, which the tests above have already loaded ---------------
def test_health_needs_no_token_and_runs_the_offline_doctor_checks(api) -> None:
    deadline = time.monotonic() + 120
    while True:  # the first checks run in the background (they import TensorFlow): "checking" until then
        response = httpx.get(api.url + BASE + "/health", timeout=TIMEOUT_S)
        assert response.status_code == 200
        body = response.json()
        if body["status"] != "checking" or time.monotonic() > deadline:
            break
        assert body["checks"] == []
        time.sleep(0.2)
    status = [r["run_id"] for r in api.client.get("/training-status").json()["running"]]
    assert body["version"] and body["training"]["running"] == bool(status)
    assert [r["run_id"] for r in body["training"]["runs"]] == status
    from agroml.ops.doctor import run_checks  # what `agroml doctor --offline` runs (its exit code is the verdict)

    doctor = [(c.name, c.status) for c in run_checks(api.settings, offline=True)]
    assert [(c["name"], c["status"]) for c in body["checks"]] == doctor
    assert TOKEN not in response.text
