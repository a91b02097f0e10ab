"""`agroml retrain` on the demo data, end to end: tiny models (32 px, from scratch, 1 epoch), a loopback webhook.

One sequence, because each step's meaning depends on the one before: two retrains started at once
(real processes) train once and promote; a second run finds no new data; `demo` adds rows and it
retrains with the production model's config; the gate forced to refuse gives exit 3 and leaves
production as it was; a failure gives exit 1 and an alert, and a dead webhook the same exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from supaserver_http import closed_port
from webhookserver import WebhookServer

from agroml.core import config
from agroml.demo import rows as demo
from agroml.lifecycle.registry import Registry

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TINY = "weights: none\nimage_size: 32\nalpha: 0.35\nepochs: 1\nbatch_size: 16\n"
ENV = {
    "AGROML_MIN_TOTAL": "20",
    "AGROML_MIN_PER_CLASS": "3",
    "AGROML_GATE_MIN_ROWS": "1",
    # tiny models on a few rows are noise: the gate is opened wide, except where a test closes it
    "AGROML_GATE_MIN_F1_GAIN": "-1",
    "AGROML_GATE_MAX_ACCURACY_DROP": "1",
    "AGROML_GATE_MAX_RECALL_DROP": "1",
    "AGROML_ALERT_MIN_FEEDBACK_ACCURACY": "0",
}


@pytest.fixture
def webhook():
    server = WebhookServer()
    yield server
    server.stop()


def _production_run(workdir: Path) -> str:
    return json.loads((workdir / "models" / "pest" / "production" / "config.json").read_text())["run_id"]


def _retrain_process(workdir: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agroml.cli.main", "retrain", "--model", "pest", "--config", "tiny.yaml", "--json"],
        cwd=workdir,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,  # no terminal: as cron runs it
        text=True,
    )


@pytest.mark.timeout(900)  # a few tiny trainings: well under a minute on an idle 2-core machine
def test_retrain_loop_on_the_demo(cli, workdir, monkeypatch, webhook):
    env = {**ENV, "AGROML_ALERT_WEBHOOK": webhook.hook_url}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (workdir / "tiny.yaml").write_text(TINY)
    settings = config.resolve(env_file=None)
    demo.generate(settings, ["pest"], n=60, seed=0)

    # 1. two retrains at once: one trains and promotes, the other stops at once (both exit 0)
    first, second = _retrain_process(workdir, env), _retrain_process(workdir, env)
    try:
        outs = [p.communicate(timeout=600) for p in (first, second)]
    finally:
        for p in (first, second):
            p.kill()
            p.wait()
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    results = sorted((json.loads(out)["models"][0] for out, _ in outs), key=lambda m: m["outcome"])
    busy, promoted = results
    assert (busy["outcome"], promoted["outcome"]) == ("busy", "promoted")
    assert "a pest retrain is already running (pid " in busy["reason"]
    with Registry(workdir / "models") as registry:
        assert [r.run_id for r in registry.runs("pest")] == [promoted["run_id"]]
    assert _production_run(workdir) == promoted["run_id"]
    log = Path(promoted["log"]).read_text()
    for line in (
        "data: ready to train",
        "new data: no earlier pest run;",
        "config: from --config tiny.yaml",
        f"train: run {promoted['run_id']}",
        f"run {promoted['run_id']} promoted to production (the first production model: no gate)",
        "outcome: promoted (exit 0)",
    ):
        assert line in log, log
    assert len(list((workdir / "training_logs").glob("*-pest*.log"))) == 2

    # 2. nothing new: exit 0, says so; the low-feedback alert (demo rows are from 2024: a long window)
    monkeypatch.setenv("AGROML_ALERT_MIN_FEEDBACK_ACCURACY", "0.95")
    monkeypatch.setenv("AGROML_ALERT_FEEDBACK_DAYS", "3650")
    again = cli("retrain", "--model", "pest", "--json")
    assert again.exit_code == 0, again.output
    (nothing,) = json.loads(again.stdout)["models"]
    assert nothing["outcome"] == "nothing_to_do" and nothing["reason"].startswith("no new data: 0 new trainable rows")
    assert [m for m in webhook.messages if "feedback accuracy over the last 3650 days" in m]
    monkeypatch.setenv("AGROML_ALERT_MIN_FEEDBACK_ACCURACY", "0")

    # 3. `demo` adds rows: it retrains with the production model's config and promotes the new run
    demo.generate(settings, ["pest"], n=90, seed=0)
    third = cli("retrain", "--model", "pest", "--json")
    assert third.exit_code == 0, third.output
    (retrained,) = json.loads(third.stdout)["models"]
    assert retrained["outcome"] == "promoted" and retrained["new_rows"] > 0
    assert retrained["config_from"].startswith("the production model")
    assert _production_run(workdir) == retrained["run_id"] != promoted["run_id"]
    print("\n--- log of a retrain that promoted ---\n" + Path(retrained["log"]).read_text())

    # 4. the gate forced to refuse: exit 3, production byte-identical, the webhook told
    demo.generate(settings, ["pest"], n=120, seed=0)
    monkeypatch.setenv("AGROML_GATE_MIN_F1_GAIN", "1")
    before = (workdir / "models" / "pest" / "production" / "model.keras").read_bytes()
    fourth = cli("retrain", "--model", "pest", "--json")
    assert fourth.exit_code == 3, fourth.output
    (refused,) = json.loads(fourth.stdout)["models"]
    assert refused["outcome"] == "refused" and refused["comparison"]
    assert (workdir / "models" / "pest" / "production" / "model.keras").read_bytes() == before
    assert _production_run(workdir) == retrained["run_id"]
    assert [m for m in webhook.messages if f"the gate refused run {refused['run_id']}" in m]
    print("\n--- log of a retrain the gate refused ---\n" + Path(refused["log"]).read_text())

    # 5. a failure: exit 1, the error and its fix in the log, the webhook told
    failed = cli("retrain", "--model", "pest", "--min-new", "0", "--config", "missing.yaml", "--json")
    assert failed.exit_code == 1, failed.output
    (failure,) = json.loads(failed.stdout)["models"]
    assert failure["outcome"] == "failed" and "--config missing.yaml: cannot read it" in failure["reason"]
    assert "error: --config missing.yaml: cannot read it" in Path(failure["log"]).read_text()
    assert [m for m in webhook.messages if "retrain pest failed: --config missing.yaml" in m]

    # 6. a dead webhook changes no exit code; the undelivered alert is a warning, without the token
    monkeypatch.setenv("AGROML_ALERT_WEBHOOK", f"http://127.0.0.1:{closed_port()}/services/SECRETHOOKTOKEN")
    dead = cli("retrain", "--model", "pest", "--min-new", "0", "--config", "missing.yaml")
    assert dead.exit_code == 1
    assert "warning: alert not delivered to http://127.0.0.1/…" in dead.stderr
    assert "SECRETHOOKTOKEN" not in dead.stderr + dead.stdout
