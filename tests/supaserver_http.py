"""The HTTP machinery under the loopback servers of tests/supaserver.py: a threaded keep-alive server
in a background thread, per-request fault injection from a seeded random.Random, a request log, and
ImageHost, a plain static host that stands for any non-Supabase origin.

Faults are decided before the route runs (drop, injected error status, extra latency) or as the
answer is sent (truncated body), so every route gets the same misbehaviour, the same way on every
run for a given seed and request order.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

JSON_TYPE = "application/json; charset=utf-8"


@dataclass
class Faults:
    """What goes wrong, per request; all off by default. Mutate or replace `server.faults` in a test."""

    seed: int = 0
    error_rate: float = 0.0  # share of requests answered with one of error_statuses
    error_statuses: tuple[int, ...] = (503,)
    drop_rate: float = 0.0  # share of requests whose connection is closed without an answer
    truncate_rate: float = 0.0  # share of answers cut short (Content-Length promises more)
    delay_s: float = 0.0  # latency added to every request, whatever its path
    slow_rate: float = 0.0  # share of requests delayed a further slow_s
    slow_s: float = 0.0
    corrupt_objects: bool = False  # storage objects / image-host files served with a destroyed header
    paths: tuple[str, ...] = ("/rest/", "/storage/")  # route prefixes the random faults apply to
    burst: int = 0  # the first `burst` requests (on those paths) get error_statuses[0], then none: no dice


@dataclass
class RequestLog:
    """One request as the server saw it: what a test asserts on (headers are lower-cased)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    client: tuple[str, int]
    time: float
    status: int = 0  # 0: the connection was dropped without an answer
    fault: str | None = None  # "error" | "drop" | "truncate" | "slow" | "corrupt" | None
    delay_s: float = 0.0  # latency the server slept before answering (delay_s plus slow_s when slow)
    body: bytes = b""


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    corrupted: bool = False


def json_reply(status: int, obj: Any, **headers: str) -> Reply:
    return Reply(status, json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(), JSON_TYPE, headers)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    timeout = 30  # an idle keep-alive connection's thread ends after this
    disable_nagle_algorithm = True  # headers and body go out as two writes: Nagle + delayed ACK adds 40 ms

    def do_GET(self) -> None:
        self.server.app._serve(self)  # type: ignore[attr-defined]

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def finish(self) -> None:
        super().finish()
        app = self.server.app  # type: ignore[attr-defined]
        with app._lock:
            app._conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is server.requests; stderr noise helps nobody


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # stop() must not wait for idle keep-alive connections
    request_queue_size = 256  # the default backlog of 5 turns 16 parallel connects into SYN retries
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer (its timeout, a test's kill) is normal here, not a traceback."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class HttpApp:
    """Threaded HTTP server in a background thread, with fault injection and a request log."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.faults = Faults()
        self.requests: list[RequestLog] = []
        self._lock = threading.Lock()
        self._rng: random.Random | None = None
        self._rng_faults: Faults | None = None
        self._rng_seed: int | None = None
        self._conns: set[socket.socket] = set()
        self._burst_of: Faults | None = None
        self._burst_used = 0
        self.redirects: dict[str, tuple[str, int]] = {}
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.app = self  # type: ignore[attr-defined]
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.url}",
            daemon=True,
        )
        self._thread.start()

    # ----------------------------------------------------------------------------------------- lifecycle
    def stop(self) -> None:
        """Stop accepting, and cut open keep-alive connections so no client waits on them."""
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------------- faults
    def _draws(self) -> list[float]:
        """Five draws per request (drop, error, truncate, slow, which status) from the seeded generator.

        Always five, whatever is switched on, so a request's fate depends only on the seed and its
        position in the sequence. Replacing `faults` (or its seed) starts the sequence again."""
        faults = self.faults
        with self._lock:
            if self._rng is None or self._rng_faults is not faults or self._rng_seed != faults.seed:
                self._rng, self._rng_faults, self._rng_seed = random.Random(faults.seed), faults, faults.seed
            return [self._rng.random() for _ in range(5)]

    def _faulty(self, path: str) -> bool:
        return any(path.startswith(p) for p in self.faults.paths)

    def _in_burst(self, faults: Faults) -> bool:
        """True for the first `faults.burst` faulty requests since `faults` was set (a deterministic outage)."""
        with self._lock:
            if self._burst_of is not faults:
                self._burst_of, self._burst_used = faults, 0
            if self._burst_used < faults.burst:
                self._burst_used += 1
                return True
            return False

    def add_redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer `path` (any query) with a redirect to `location`; returns the path's absolute URL."""
        path = "/" + path.lstrip("/")
        self.redirects[path] = (location, status)
        return self.url + quote(path)

    # ----------------------------------------------------------------------------------------- serving
    def _serve(self, h: _Handler) -> None:
        with self._lock:
            self._conns.add(h.connection)
        split = urlsplit(h.path)
        headers: dict[str, str] = {}
        for name, value in h.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        length = int(headers.get("content-length") or 0)
        body = h.rfile.read(length) if length else b""
        log = RequestLog(
            h.command,
            unquote(split.path),
            parse_qs(split.query, keep_blank_values=True),
            headers,
            h.client_address,
            time.time(),
            body=body,
        )
        self.requests.append(log)
        faults = self.faults
        draw_drop, draw_error, draw_trunc, draw_slow, draw_status = self._draws()
        faulty = self._faulty(log.path)
        delay = faults.delay_s
        if faulty and draw_slow < faults.slow_rate:
            delay += faults.slow_s
            log.fault = "slow"
        log.delay_s = delay
        if delay > 0:
            time.sleep(delay)
        if faulty and draw_drop < faults.drop_rate:
            log.fault, log.status = "drop", 0
            h.close_connection = True  # no status line at all: the client sees a disconnect
            return
        if faulty and faults.error_statuses and self._in_burst(faults):
            reply, log.fault = self._error_reply(log.path, faults.error_statuses[0]), "error"
        elif faulty and draw_error < faults.error_rate and faults.error_statuses:
            status = faults.error_statuses[int(draw_status * len(faults.error_statuses))]
            reply, log.fault = self._error_reply(log.path, status), "error"
        elif log.path in self.redirects:
            location, status = self.redirects[log.path]
            reply = Reply(status, b"", None, {"Location": location})
        else:
            try:
                reply = self.handle(log)
            except Exception as exc:  # a bug here must surface as a 500, not a hung client
                reply = json_reply(500, {"code": "XX000", "details": repr(exc), "hint": None, "message": str(exc)})
        if reply.corrupted:
            log.fault = "corrupt"
        truncate = faulty and draw_trunc < faults.truncate_rate and len(reply.body) > 0 and h.command != "HEAD"
        log.status = reply.status  # before sending: a test reads the log as soon as its answer arrives
        if truncate:
            log.fault = "truncate"
        self._send(h, reply, truncate)

    def _send(self, h: _Handler, reply: Reply, truncate: bool) -> None:
        h.send_response(reply.status)
        if reply.content_type:
            h.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(reply.body)))  # the full length, even when truncating
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(reply.body[: len(reply.body) // 2] if truncate else reply.body)
        h.wfile.flush()
        if truncate:
            h.close_connection = True

    def _error_reply(self, path: str, status: int) -> Reply:
        return Reply(status, f"injected {status}".encode(), "text/plain; charset=utf-8")

    def handle(self, req: RequestLog) -> Reply:  # pragma: no cover - overridden
        raise NotImplementedError


class ImageHost(HttpApp):
    """A plain static host (not Supabase): files by path, redirects (add_redirect); no keys expected or wanted."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        super().__init__(host, port)

    def add(self, path: str, data: bytes, content_type: str = "image/jpeg") -> str:
        """Serve `data` at `path` ("/x/1.jpg"); returns its absolute URL."""
        path = "/" + path.lstrip("/")
        self.files[path] = (data, content_type)
        return self.url + quote(path)

    def _faulty(self, path: str) -> bool:
        return True  # one kind of route here: faults.paths does not apply

    def handle(self, req: RequestLog) -> Reply:
        if req.method not in ("GET", "HEAD") or req.path not in self.files:
            return Reply(404, b"Not Found", "text/plain; charset=utf-8")
        data, ctype = self.files[req.path]
        corrupt = self.faults.corrupt_objects
        return Reply(200, corrupt(data) if corrupt else data, ctype, corrupted=corrupt)


def closed_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that nothing listens on (bound, then released): connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def corrupt(data: bytes) -> bytes:
    """Destroy the first bytes (the image's magic number and header) so no decoder accepts the result."""
    k = min(64, len(data))
    return bytes(b ^ 0x5A for b in data[:k]) + data[k:]
