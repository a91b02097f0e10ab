"""A loopback chat webhook (Slack-compatible incoming webhook) for the alert tests.

It answers a POST of JSON ``{"text": ...}`` on its hook path as Slack does (200, ``ok``), keeps every
message it received, and can be told to answer another status (``server.status = 500``).
"""

from __future__ import annotations

import json

from supaserver_http import HttpApp, Reply, RequestLog

HOOK_PATH = "/services/T000/B000/SECRETHOOKTOKEN"


class WebhookServer(HttpApp):
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.messages: list[str] = []
        self.status = 200
        super().__init__(host)

    @property
    def hook_url(self) -> str:
        return self.url + HOOK_PATH

    def _faulty(self, path: str) -> bool:
        return False

    def handle(self, req: RequestLog) -> Reply:
        if req.method != "POST" or req.path != HOOK_PATH:
            return Reply(404, b"no_service", "text/plain; charset=utf-8")
        if not req.headers.get("content-type", "").startswith("application/json"):
            return Reply(400, b"invalid_payload", "text/plain; charset=utf-8")
        try:
            text = json.loads(req.body)["text"]
        except (ValueError, KeyError, TypeError):
            return Reply(400, b"invalid_payload", "text/plain; charset=utf-8")
        if self.status != 200:
            return Reply(self.status, b"server_error", "text/plain; charset=utf-8")
        self.messages.append(text)
        return Reply(200, b"ok", "text/plain; charset=utf-8")
