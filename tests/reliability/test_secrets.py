"""Secrets never leak: every command and every API route runs with known fake secrets, then everything
they wrote or said is searched for them.

The secrets: the Supabase service-role key (a JWT the loopback Supabase accepts), the API token, the
hash salt and an alert webhook whose URL path is itself a secret (as Slack's are). Searched: stdout and
stderr of every command (text and --json), every file under the working directory (store, image cache,
run folders, registry, exports, report page, training_logs/), every API answer, the webhook messages.
The key must also never reach a host other than SUPABASE_URL's: the second image host's request log
must show no apikey and no authorization header.

A module-scoped session runs the loop once, because a leak can hide in any step; the tests below each
check one place. Two sessions: "light" (every command and route but the five that train or load a
model: the default run) and "full" (the whole loop with two trainings, a retrain and the API's worker:
minutes, so marked e2e: `pytest -m e2e tests/reliability/test_secrets.py`).
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from supa_rows import add_empty_tables, add_pest_table, jpeg, pest_rows
from typer.testing import CliRunner

#: Two trainings, a retrain and the API on a real store: minutes on 2 idle cores, far more on a starved one.
pytestmark = [pytest.mark.timeout(3000), pytest.mark.slow]

TOKEN = "agroml-api-token-5f1c9e0b7a2d4e6f8a1b3c5d7e9f0a2b"
SALT = "salt-3e7a9c1b5d2f4a6e8c0b2d4f6a8c0e1f"
WEBHOOK_SECRET = "SECRETHOOKTOKEN"  # the path segment tests/webhookserver.py serves the hook on
TRAIN_FLAGS = ("--weights", "none", "--image-size", "32", "--epochs", "1", "--min-per-class", "2")


def _needles(key: str) -> dict[str, bytes]:
    """What must never appear: each secret whole, and the parts of the JWT that are unique to this key."""
    _header, payload, signature = key.split(".")
    return {
        "supabase key": key.encode(),
        "supabase key payload": payload.encode(),
        "supabase key signature": signature.encode(),
        "api token": TOKEN.encode(),
        "api token tail": TOKEN[8:].encode(),
        "hash salt": SALT.encode(),
        "webhook secret path": WEBHOOK_SECRET.encode(),
    }


def find_leaks(needles: dict[str, bytes], where: str, data: bytes | str) -> list[str]:
    data = data.encode("utf-8", "replace") if isinstance(data, str) else data
    return [f"{name} in {where}" for name, needle in needles.items() if needle in data]


class Session:
    """Everything one run of the loop said and wrote, to be searched."""

    def __init__(self, root: Path, needles: dict[str, bytes]) -> None:
        self.root = root
        self.needles = needles
        self.outputs: list[tuple[str, str, int]] = []  # (what, text, exit code)
        self.api_answers: list[tuple[str, bytes]] = []

    def cli(self, *args: str) -> SimpleNamespace:
        from agroml.cli.main import app

        result = CliRunner().invoke(app, list(args), catch_exceptions=True)
        what = "agroml " + " ".join(args)
        self.outputs.append((what + " (stdout)", result.stdout, result.exit_code))
        self.outputs.append((what + " (stderr)", result.stderr, result.exit_code))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            self.outputs.append((what + " (exception)", repr(result.exception), result.exit_code))
        return SimpleNamespace(code=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def _serve_api(settings, session: Session, full: bool) -> None:
    """Every route of the API, with the token, then a protected one with a wrong token."""
    import httpx
    import uvicorn

    from agroml.api.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}/api/model-training"
    png = jpeg(99, size=32)
    calls = [
        ("GET", "/health", {}),
        ("GET", "/data-stats", {}),
        ("GET", "/data-distribution", {"params": {"model_type": "pest"}}),
        ("GET", "/model-performance", {}),
        ("GET", "/training-status", {}),
        ("GET", "/training-history", {}),
        ("POST", "/export-training-data", {"json": {"model_type": "pest", "format": "csv"}}),
        ("POST", "/export-all-data", {"json": {"model_type": "pest", "format": "json"}}),
        ("POST", "/evaluate", {"json": {"model_type": "pest"}}),
        ("POST", "/predict", {"data": {"model_type": "pest"}, "files": {"image": ("a.jpg", png, "image/jpeg")}}),
        ("POST", "/promote", {"json": {"model_type": "pest", "run_id": "nope"}}),
        ("POST", "/train", {"json": {"model_type": "pest", "weights": "none", "image_size": 32, "epochs": 1}}),
        ("POST", "/retrain", {"json": {"model_type": "pest"}}),
        ("GET", "/runs/nope", {}),
        ("GET", "/runs/nope/files/curves.png", {}),
    ]
    if not full:  # the routes that train, load a model or start a worker
        calls = [c for c in calls if c[1] not in ("/evaluate", "/predict", "/promote", "/train", "/retrain")]
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300) as client:
            for method, path, kw in calls:
                answer = client.request(method, path, **kw)
                session.api_answers.append((f"{method} {path} -> {answer.status_code}", answer.content))
            runs = client.get("/training-history").json()
            for run in (runs if isinstance(runs, list) else runs.get("runs", []))[:2]:
                run_id = run.get("run_id") or run.get("id")
                for path in (f"/runs/{run_id}", f"/runs/{run_id}/files/metrics.json"):
                    answer = client.get(path)
                    session.api_answers.append((f"GET {path} -> {answer.status_code}", answer.content))
        wrong = httpx.get(base + "/data-stats", headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"}, timeout=60)
        session.api_answers.append(("GET /data-stats, wrong token", wrong.content + str(wrong.headers).encode()))
    finally:
        server.should_exit = True
        thread.join(30)
        _stop_workers(Path(settings.models_dir))


def _stop_workers(models_dir: Path) -> None:
    import contextlib
    import signal

    for record in (models_dir / ".jobs").glob("*.current.json"):
        with contextlib.suppress(OSError, TypeError, ValueError):
            os.kill(json.loads(record.read_text()).get("pid"), signal.SIGTERM)


#: Commands that train or load a model (TensorFlow): only the "full" session runs them.
MODEL_COMMANDS = frozenset({"train", "evaluate", "predict", "promote", "retrain"})


@pytest.fixture(
    scope="module",
    params=[
        # every command but the five that train or load a model: seconds, in the default run
        "light",
        # the whole loop: two trainings, a retrain, the API's worker; minutes, so `pytest -m e2e`
        pytest.param("full", marks=pytest.mark.e2e),
    ],
)
def session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    full = request.param == "full"
    from supaserver import start_image_host, start_server
    from webhookserver import WebhookServer

    from agroml.core import config

    root = tmp_path_factory.mktemp("secrets")
    supa, host, hook = start_server(), start_image_host(), WebhookServer()
    supa.add_bucket("models", public=False)  # where `publish` uploads the production model
    needles = _needles(supa.service_key)

    def url(i: int, row_id: str) -> str:  # half on Supabase Storage, half on a second host
        if i % 2:
            return host.add(f"/uploads/pest/{row_id}.jpg", jpeg(i, size=32))
        return supa.add_object("predictions", f"pest_images/pest_{row_id}.jpg", jpeg(i, size=32))

    add_pest_table(supa, pest_rows(80, seed=5, image_url=url))
    add_empty_tables(supa)
    (root / "collection" / "aphids").mkdir(parents=True)
    (root / "collection" / "aphids" / "a.jpg").write_bytes(jpeg(200, size=32))
    (root / "train.json").write_text(json.dumps({"weights": "none", "image_size": 32, "epochs": 1, "min_per_class": 2}))
    env = {
        "SUPABASE_URL": supa.url,
        "SUPABASE_SERVICE_KEY": supa.service_key,
        "AGROML_API_TOKEN": TOKEN,
        "AGROML_HASH_SALT": SALT,
        "AGROML_ALERT_WEBHOOK": hook.hook_url,
        "AGROML_ALERT_ON_SUCCESS": "1",
        "AGROML_IMAGE_HOSTS": urlsplit(host.url).netloc,
        "AGROML_MIN_TOTAL": "10",
        "AGROML_MIN_PER_CLASS": "2",
        "AGROML_RETRY_BASE_SECONDS": "0.001",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("AGROML_", "SUPABASE_")) and name != "AGROML_DEBUG":
                mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        mp.chdir(root)
        s = Session(root, needles)
        try:
            s.cli("doctor", "--json")
            s.cli("doctor")
            pulled = s.cli("pull", "--model", "all")
            assert pulled.code == 0, pulled.stderr
            for args in (("stats",), ("distribution", "--model", "pest"), ("performance",), ("report",)):
                s.cli(*args)
                s.cli(*args, "--json")
            for fmt in ("csv", "json", "parquet"):
                s.cli("export", "--model", "pest", "--scope", "all", "--format", fmt, "--include-personal", "--json")
            s.cli("export", "--model", "all", "--format", "csv")
            if full:
                trained = s.cli("train", "--model", "pest", *TRAIN_FLAGS, "--json")
                assert trained.code == 0, trained.stderr
                run_id = json.loads(trained.stdout)["run_id"]
                s.cli("evaluate", run_id, "--model", "pest")
                s.cli("evaluate", run_id, "--model", "pest", "--json")
                s.cli("promote", run_id, "--model", "pest", "--force", "--json")
                s.cli("predict", str(root / "collection" / "aphids" / "a.jpg"), "--model", "pest", "--json")
            for args in (("runs",), ("status",), ("history",)):
                s.cli(*args)
                s.cli(*args, "--json")
            s.cli("publish", "--model", "pest", "--json")
            if full:
                s.cli("retrain", "--model", "pest", "--config", str(root / "train.json"), "--min-new", "0", "--json")
            s.cli("rollback", "--model", "pest", "--json")
            s.cli("rollback", "--model", "pest")
            s.cli("import", str(root / "collection"), "--model", "pest", "--json")
            s.cli("demo", "--model", "storage", "--n", "10", "--json")
            s.cli("pull", "--model", "pest", "--source", "nowhere")  # a usage error renders too
            s.cli("serve", "--help")
            _serve_api(config.resolve(env_file=None), s, full)
            yield SimpleNamespace(session=s, supa=supa, host=host, hook=hook, needles=needles, full=full)
        finally:
            supa.stop()
            host.stop()
            hook.stop()


def test_every_command_ran(session):
    """The commands really ran (a test that searched empty output would prove nothing)."""
    from agroml.cli.main import COMMANDS

    ran = {what.split()[1] for what, _, _ in session.session.outputs}
    wanted = set(COMMANDS) if session.full else set(COMMANDS) - MODEL_COMMANDS
    assert ran >= wanted, wanted - ran
    codes = {what: code for what, _, code in session.session.outputs}
    assert codes["agroml pull --model all (stdout)"] == 0
    assert len(session.session.api_answers) >= (15 if session.full else 10)
    if session.full:
        assert codes["agroml train --model pest " + " ".join(TRAIN_FLAGS) + " --json (stdout)"] == 0
        published = [(text, code) for what, text, code in session.session.outputs if what.startswith("agroml publish")]
        assert any(code == 0 for _, code in published), published
        assert session.hook.messages, "no alert was sent: the webhook path was never exercised"


def test_no_output_of_any_command_holds_a_secret(session):
    leaks = [leak for what, text, _ in session.session.outputs for leak in find_leaks(session.needles, what, text)]
    assert not leaks, leaks


def test_no_file_written_holds_a_secret(session):
    files = [p for p in session.session.root.rglob("*") if p.is_file() and not p.is_symlink()]
    names = {p.relative_to(session.session.root).parts[0] for p in files}
    # store and cache, registry, exports; run folders and training_logs/ come with the full loop
    assert {"data", "models", "exports"} | ({"training_logs"} if session.full else set()) <= names, names
    assert any(p.suffix == ".html" for p in files), "no report page was written"
    leaks = [leak for p in files for leak in find_leaks(session.needles, str(p), p.read_bytes())]
    assert not leaks, leaks


def test_no_api_answer_or_alert_holds_a_secret(session):
    leaks = [leak for what, body in session.session.api_answers for leak in find_leaks(session.needles, what, body)]
    leaks += [leak for text in session.hook.messages for leak in find_leaks(session.needles, "an alert", text)]
    assert not leaks, leaks


def test_the_key_goes_only_to_supabase(session):
    """The second image host served images (so it was asked) and never saw the key or any credential."""
    served = [r for r in session.host.requests if r.status == 200]
    assert served, "the image host was never asked: the test would prove nothing"
    for request in session.host.requests:
        assert "apikey" not in request.headers and "authorization" not in request.headers, request.headers
        assert not find_leaks(session.needles, "image host request", json.dumps(request.headers) + request.path)
    assert any(r.headers.get("apikey") for r in session.supa.requests)  # the key did go where it belongs


# --- doctor and the .env file ---------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "status"), [(0o644, "warn"), (0o640, "warn"), (0o600, "ok")])
def test_doctor_warns_when_env_is_readable_by_others(workdir, mode, status):
    from agroml.ops.doctor import diagnose

    env = workdir / ".env"
    env.write_text(f"SUPABASE_SERVICE_KEY=x.{SALT}.y\nAGROML_API_TOKEN={TOKEN}\n")
    env.chmod(mode)
    report = diagnose(offline=True, env_file=env)
    line = next(c for c in report.checks if c.name == ".env file")
    assert line.status == status, line
    assert (f"chmod 600 {env}" in line.fix) == (status == "warn")
    assert stat.S_IMODE(env.stat().st_mode) == mode  # doctor reports, it never changes the file
    assert not find_leaks({"salt": SALT.encode(), "token": TOKEN.encode()}, "doctor", json.dumps(report.to_dict()))
