"""Alerts: a short chat message when the unattended loop needs a person.

Why a webhook and not e-mail: a Slack incoming webhook is one HTTPS POST of ``{"text": ...}`` with
nothing to configure but a URL, and Discord (its ``/slack`` webhook URL) and Microsoft Teams accept
the same body. Events: a train or retrain failed, the gate refused a model, the deployed model's
feedback accuracy fell below ``AGROML_ALERT_MIN_FEEDBACK_ACCURACY`` over the last
``AGROML_ALERT_FEEDBACK_DAYS`` days, and (with ``AGROML_ALERT_ON_SUCCESS=1``) a model was promoted.

A failing webhook never changes what the command reports or its exit code: the send is one short
attempt whose failure comes back as a warning (the retrain log records it). The URL is a secret
(whoever has it can post to the channel): messages name only its scheme and host.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from agroml.core.config import Settings
from agroml.core.errors import AgromlError, NoDataError
from agroml.core.progress import NoticeFn, no_notice
from agroml.data.analysis import stats_report
from agroml.data.sources import RecordSource

FAILED, REFUSED, LOW_FEEDBACK, PROMOTED = "failed", "refused", "low_feedback", "promoted"
EVENTS: tuple[str, ...] = (FAILED, REFUSED, LOW_FEEDBACK, PROMOTED)
#: Seconds one send may take: a cron job must not hang on a chat service.
SEND_TIMEOUT_S = 10.0


@dataclass
class Alert:
    """One alert: what it said, and whether the webhook took it (``warning`` says why not)."""

    event: str
    text: str
    sent: bool
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def webhook_label(url: str) -> str:
    """The webhook as messages may name it: scheme and host, never the path or query that hold its token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…"


def wanted(settings: Settings, event: str) -> bool:
    """Whether ``event`` is sent at all: a webhook is set, and success messages only when asked for."""
    if not settings.alert_webhook:
        return False
    return event != PROMOTED or bool(settings.alert_on_success)


def send(settings: Settings, event: str, text: str) -> Alert | None:
    """POST ``text`` to the webhook; None when no alert is wanted for ``event``. Never raises for the webhook.

    No redirects are followed: the message goes only to the host the settings named.
    """
    import httpx

    if event not in EVENTS:
        raise ValueError(f"unknown alert event {event!r}")
    if not wanted(settings, event):
        return None
    url = settings.alert_webhook
    assert url is not None
    label = webhook_label(url)
    message = f"agroml on {socket.gethostname()}: {text}"
    try:
        with httpx.Client(timeout=min(settings.http_timeout, SEND_TIMEOUT_S), follow_redirects=False) as client:
            response = client.post(url, json={"text": message})
    except httpx.HTTPError as exc:
        reason = str(exc).replace(url, label) or type(exc).__name__
        return Alert(event, message, False, f"alert not delivered to {label}: {reason}")
    if response.status_code >= 300:
        return Alert(event, message, False, f"alert not delivered to {label}: HTTP {response.status_code}")
    return Alert(event, message, True)


def promotion_alert(settings: Settings, what: str, refused: bool, promoted: bool, reason: str | None) -> Alert | None:
    """The alert for a promotion's outcome: a refusal always (when a webhook is set), a promotion only with
    AGROML_ALERT_ON_SUCCESS=1; a no-op is not news."""
    if refused:
        return send(settings, REFUSED, f"{what}: {reason}")
    if promoted:
        return send(settings, PROMOTED, f"{what}: {reason or 'promoted'}")
    return None


def feedback_accuracy_text(
    settings: Settings, source: RecordSource, model_type: str, now: datetime | None = None
) -> str | None:
    """The low-feedback alert's text for ``model_type``, or None when its accuracy is fine or unknown.

    Feedback accuracy = confirmed / answered (a correction and a rejection both say "wrong"), over the
    rows created in the last ``alert_feedback_days`` days (agroml.data.analysis).
    """
    threshold = settings.alert_min_feedback_accuracy
    if threshold <= 0:
        return None
    days = settings.alert_feedback_days
    now = now or datetime.now(UTC)
    try:
        report = stats_report(source, [model_type], since=now - timedelta(days=days), until=now)
    except NoDataError:
        return None
    block = report.models[model_type]
    accuracy = block["feedback_accuracy"]
    if accuracy is None or accuracy >= threshold:
        return None
    answered = block["confirmed"] + block["corrected"] + block["rejected"]
    return (
        f"{model_type}: the deployed model's feedback accuracy over the last {days} days is {accuracy:.1%} "
        f"({block['confirmed']} of {answered} answers confirmed), below AGROML_ALERT_MIN_FEEDBACK_ACCURACY "
        f"{threshold:.0%}"
    )


def check_feedback(
    settings: Settings, source: RecordSource, model_type: str, now: datetime | None = None
) -> Alert | None:
    """Send the low-feedback alert for ``model_type`` when its accuracy is below the threshold."""
    if not wanted(settings, LOW_FEEDBACK):
        return None
    text = feedback_accuracy_text(settings, source, model_type, now)
    return None if text is None else send(settings, LOW_FEEDBACK, text)


def failure_text(what: str, error: BaseException) -> str:
    """``<what> failed: <message> (<fix>)``, the same line the CLI shows."""
    detail = str(error) if isinstance(error, AgromlError) else f"{type(error).__name__}: {error}"
    return f"{what} failed: {detail}"


@contextmanager
def alert_on_failure(settings: Settings, what: str, notice: NoticeFn = no_notice) -> Iterator[None]:
    """Send a failure alert if the body raises (then re-raise it unchanged); an undelivered alert is a notice.

    Ctrl-C is not a failure to report: a person was there.
    """
    try:
        yield
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        alert = send(settings, FAILED, failure_text(what, exc))
        if alert is not None and alert.warning:
            notice(alert.warning)
        raise
