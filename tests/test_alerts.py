"""Alerts to a chat webhook: a real loopback webhook server (tests/webhookserver.py), the real httpx client.

What matters: the message arrives as Slack's JSON; a webhook that fails (an error status, nothing
listening) never raises nor changes an exit code, and its failure is reported without the URL's token.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from supaserver_http import closed_port
from webhookserver import WebhookServer

from agroml.core import config
from agroml.data.sources import open_source
from agroml.demo import rows as demo
from agroml.ops import alerts


@pytest.fixture
def webhook():
    server = WebhookServer()
    yield server
    server.stop()


def _settings(**env: str) -> config.Settings:
    return config.resolve(environ=env, env_file=None)


def test_an_alert_arrives_as_slack_json_text(webhook):
    settings = _settings(AGROML_ALERT_WEBHOOK=webhook.hook_url)
    alert = alerts.send(settings, alerts.FAILED, "retrain pest failed: boom")
    assert alert is not None and alert.sent and alert.warning is None
    (message,) = webhook.messages
    assert message.startswith("agroml on ") and message.endswith(": retrain pest failed: boom")
    (req,) = webhook.requests
    assert req.method == "POST" and req.headers["content-type"] == "application/json"


def test_no_webhook_no_request_and_success_only_when_asked(webhook):
    assert alerts.send(_settings(), alerts.FAILED, "x") is None
    quiet = _settings(AGROML_ALERT_WEBHOOK=webhook.hook_url)
    assert alerts.send(quiet, alerts.PROMOTED, "pest: promoted") is None
    loud = _settings(AGROML_ALERT_WEBHOOK=webhook.hook_url, AGROML_ALERT_ON_SUCCESS="1")
    assert alerts.send(loud, alerts.PROMOTED, "pest: promoted").sent
    assert [m.split(": ", 1)[1] for m in webhook.messages] == ["pest: promoted"]


@pytest.mark.parametrize("broken", ["error status", "nothing listening", "wrong path"])
def test_a_failing_webhook_is_a_warning_that_never_shows_the_token(webhook, broken):
    url = webhook.hook_url
    if broken == "error status":
        webhook.status = 500
    elif broken == "nothing listening":
        url = f"http://127.0.0.1:{closed_port()}/services/T000/B000/SECRETHOOKTOKEN"
    else:
        url = webhook.url + "/services/T000/B000/OTHERSECRETHOOKTOKEN"
    alert = alerts.send(_settings(AGROML_ALERT_WEBHOOK=url), alerts.REFUSED, "gate refused")
    assert alert is not None and not alert.sent
    assert alert.warning.startswith("alert not delivered to http://127.0.0.1/…: ")
    assert "SECRETHOOKTOKEN" not in alert.warning and "/services" not in alert.warning
    if broken == "error status":
        assert alert.warning.endswith("HTTP 500")
    assert webhook.messages == []


def test_low_feedback_accuracy_over_the_window_is_reported(webhook, workdir):
    """The demo's pest feedback: about 0.7 confirmed of answered in 2024 (a fixed window, `now` given)."""
    demo_data = _settings()
    demo.generate(demo_data, ["pest"], n=40, seed=0)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    env = {"AGROML_ALERT_WEBHOOK": webhook.hook_url, "AGROML_ALERT_FEEDBACK_DAYS": "400"}
    with open_source(demo_data) as source:
        assert (
            alerts.check_feedback(_settings(**env, AGROML_ALERT_MIN_FEEDBACK_ACCURACY="0.3"), source, "pest", now)
            is None
        )
        alert = alerts.check_feedback(_settings(**env, AGROML_ALERT_MIN_FEEDBACK_ACCURACY="0.95"), source, "pest", now)
        # the window holds no rows at all (a year later): no figure, no alert
        later = datetime(2026, 6, 1, tzinfo=UTC)
        env["AGROML_ALERT_FEEDBACK_DAYS"] = "30"
        assert (
            alerts.check_feedback(_settings(**env, AGROML_ALERT_MIN_FEEDBACK_ACCURACY="0.95"), source, "pest", later)
            is None
        )
    assert alert is not None and alert.sent
    (message,) = webhook.messages
    assert "pest: the deployed model's feedback accuracy over the last 400 days is " in message
    assert "below AGROML_ALERT_MIN_FEEDBACK_ACCURACY 95%" in message


def test_a_failed_train_alerts_and_a_dead_webhook_keeps_its_exit_code(cli, workdir, webhook, monkeypatch):
    """`agroml train` on an empty store fails (exit 1): the webhook hears it; nothing listening, the exit
    code is the same and stderr says the alert was not delivered."""
    monkeypatch.setenv("AGROML_ALERT_WEBHOOK", webhook.hook_url)
    result = cli("train", "--model", "pest", "--weights", "none")
    assert result.exit_code == 1
    (message,) = webhook.messages
    assert "agroml train --model pest failed: " in message
    monkeypatch.setenv("AGROML_ALERT_WEBHOOK", f"http://127.0.0.1:{closed_port()}/hook/SECRETHOOKTOKEN")
    dead = cli("train", "--model", "pest", "--weights", "none")
    assert dead.exit_code == 1
    assert "warning: alert not delivered to http://127.0.0.1/…" in dead.stderr
    assert "SECRETHOOKTOKEN" not in dead.stderr + dead.stdout
    assert len(webhook.messages) == 1
