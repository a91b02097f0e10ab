"""A faithful loopback Supabase (PostgREST + Storage subset) and a plain image host, for tests and benchmarks.

The far side of the wire is the only thing agroml's tests may fake, so this server has to behave like
the real one where agroml could get it wrong (see shared/reference/supabase-protocol.md): the
max-rows cap silently truncating `limit`, Content-Range with 200/206/416, the gateway's 401 bodies
without a code, PGRST205 for a missing table, 42703 for a bad column, Storage's HTTP 400 with the
real status as a *string* in the body, RLS hiding every row from the anon key. Faults are injected
per request from a seeded random.Random so a test that asks for 10% 503s gets about 10%, the same way
on every run.

Usage (see the fixtures in tests/conftest.py):

    server = start_server()
    server.add_rows("pest_feedback", [{"id": 1, "created_at": "2024-01-01T00:00:00+00:00"}])
    url = server.add_object("images", "a/1.jpg", jpeg_bytes)
    client = supabase.create_client(server.url, server.service_key, options=...)
    server.faults = Faults(seed=1, error_rate=0.1, error_statuses=(503, 429))
    server.stop()
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from supaserver_query import PgError, Table, execute, parse_query

JSON_TYPE = "application/json; charset=utf-8"
_JWT_SECRET = b"loopback-supabase-jwt-secret-not-a-real-one"
_NO_KEY = {"message": "No API key found in request", "hint": "No `apikey` request header or url param was found."}
_BAD_KEY = {"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."}


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
    body: bytes = b""


def make_jwt(payload: dict[str, Any]) -> str:
    """An HS256 JWT signed with the fake project's secret (shaped like a real Supabase key)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64(json.dumps(payload, separators=(",", ":")).encode())
    sig = hmac.new(_JWT_SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def read_jwt(token: str) -> dict[str, Any] | None:
    """The payload of a token this server signed, or None when it is not one (bad shape or signature)."""
    try:
        head, body, sig = token.split(".")
        want = hmac.new(_JWT_SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)), want):
            return None
        return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, TypeError):
        return None


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


class _BaseServer:
    """Threaded HTTP server in a background thread, with fault injection and a request log."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.faults = Faults()
        self.requests: list[RequestLog] = []
        self._lock = threading.Lock()
        self._rng: random.Random | None = None
        self._rng_key: tuple[int, int] | None = None
        self._conns: set[socket.socket] = set()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.app = self  # type: ignore[attr-defined]
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}:{self.url}", daemon=True)
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
        """Four draws per request (drop, error, truncate, slow) from the seeded generator, under a lock."""
        faults = self.faults
        with self._lock:
            key = (id(faults), faults.seed)
            if self._rng is None or self._rng_key != key:
                self._rng, self._rng_key = random.Random(faults.seed), key
            return [self._rng.random() for _ in range(5)]

    def _faulty(self, path: str) -> bool:
        return any(path.startswith(p) for p in self.faults.paths)

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
        log = RequestLog(h.command, unquote(split.path), parse_qs(split.query, keep_blank_values=True), headers,
                         h.client_address, time.time(), body=body)
        self.requests.append(log)
        faults = self.faults
        draw_drop, draw_error, draw_trunc, draw_slow, draw_status = self._draws()
        faulty = self._faulty(log.path)
        delay = faults.delay_s
        if faulty and draw_slow < faults.slow_rate:
            delay += faults.slow_s
            log.fault = "slow"
        if delay > 0:
            time.sleep(delay)
        if faulty and draw_drop < faults.drop_rate:
            log.fault, log.status = "drop", 0
            h.close_connection = True  # no status line at all: the client sees a disconnect
            return
        if faulty and draw_error < faults.error_rate and faults.error_statuses:
            status = faults.error_statuses[int(draw_status * len(faults.error_statuses))]
            reply, log.fault = self._error_reply(log.path, status), "error"
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
        h.send_header("Content-Length", str(len(reply.body)))
        if truncate:
            h.send_header("Connection", "close")
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


class ImageHost(_BaseServer):
    """A plain static host (not Supabase): files by path, optional redirects; no keys expected or wanted."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.redirects: dict[str, tuple[str, int]] = {}
        super().__init__(host, port)

    def add(self, path: str, data: bytes, content_type: str = "image/jpeg") -> str:
        """Serve `data` at `path` ("/x/1.jpg"); returns its absolute URL."""
        path = "/" + path.lstrip("/")
        self.files[path] = (data, content_type)
        return self.url + quote(path)

    def add_redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer `path` with a redirect to `location` (to test that redirects are re-checked)."""
        path = "/" + path.lstrip("/")
        self.redirects[path] = (location, status)
        return self.url + quote(path)

    def _faulty(self, path: str) -> bool:
        return True  # one kind of route here: faults.paths does not apply

    def handle(self, req: RequestLog) -> Reply:
        if req.path in self.redirects:
            location, status = self.redirects[req.path]
            return Reply(status, b"", None, {"Location": location})
        if req.method not in ("GET", "HEAD") or req.path not in self.files:
            return Reply(404, b"Not Found", "text/plain; charset=utf-8")
        data, ctype = self.files[req.path]
        corrupt = self.faults.corrupt_objects
        return Reply(200, _corrupt(data) if corrupt else data, ctype, corrupted=corrupt)


def _corrupt(data: bytes) -> bytes:
    """Destroy the first bytes (the image's magic number and header) so no decoder accepts the result."""
    k = min(64, len(data))
    return bytes(b ^ 0x5A for b in data[:k]) + data[k:]


def _storage_error(status: str, code: str, error: str, message: str, http: int = 400) -> Reply:
    # Storage answers HTTP 400 and puts the real status in the body, as a string.
    return json_reply(http, {"statusCode": status, "code": code, "error": error, "message": message})


_NO_SUCH_KEY = ("404", "NoSuchKey", "not_found", "Object not found")
_NO_SUCH_BUCKET = ("404", "NoSuchBucket", "Bucket not found", "Bucket not found")


@dataclass
class StoredObject:
    data: bytes
    content_type: str
    modified: float


class FakeSupabase(_BaseServer):
    """PostgREST (`/rest/v1`) and Storage (`/storage/v1`) as agroml uses them. Not thread-safe to mutate
    while requests are in flight (add rows between requests, as a database would be between pages)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_rows: int | None = 1000,
                 statement_timeout_rows: int | None = None) -> None:
        self.max_rows = max_rows
        # A query that looks at more rows than this fails like a statement timeout (500, 57014): deep
        # offsets and exact counts over big tables do that on a real project; keyset pages do not.
        self.statement_timeout_rows = statement_timeout_rows
        self.tables: dict[str, Table] = {}
        self.buckets: dict[str, bool] = {}  # name -> public
        self.objects: dict[tuple[str, str], StoredObject] = {}
        now = int(time.time())
        claims = {"iss": "supabase", "ref": "loopback", "iat": now, "exp": now + 10 * 365 * 86400}
        self.service_key = make_jwt({**claims, "role": "service_role"})
        self.anon_key = make_jwt({**claims, "role": "anon"})
        self._roles = {self.service_key: "service_role", self.anon_key: "anon"}
        super().__init__(host, port)

    # ----------------------------------------------------------------------------------------- data
    def add_table(self, name: str, columns: list[str], types: dict[str, str] | None = None) -> None:
        """Create (or replace) a table with these columns; types are inferred from rows unless given
        (bigint, numeric, boolean, timestamptz, date, uuid, text, jsonb)."""
        self.tables[name] = Table(name, columns, types)

    def add_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Append rows (missing keys are NULL); creates the table from the rows' keys when absent."""
        if table not in self.tables:
            columns: list[str] = []
            for row in rows:
                columns.extend(k for k in row if k not in columns)
            self.add_table(table, columns)
        self.tables[table].add(rows)

    def rows(self, table: str) -> list[dict[str, Any]]:
        """A copy of the table's rows, in insertion order."""
        return [dict(r) for r in self.tables[table].rows]

    def update_rows(self, table: str, match: dict[str, Any], changes: dict[str, Any]) -> int:
        """Set `changes` on every row whose values equal `match`; returns how many rows changed."""
        t = self.tables[table]
        with t.lock:
            hits = [r for r in t.rows if all(r.get(k) == v for k, v in match.items())]
            for row in hits:
                row.update(changes)
            t.changed()
        return len(hits)

    def delete_rows(self, table: str, match: dict[str, Any]) -> int:
        """Delete every row whose values equal `match`; returns how many went."""
        t = self.tables[table]
        with t.lock:
            keep = [r for r in t.rows if not all(r.get(k) == v for k, v in match.items())]
            gone = len(t.rows) - len(keep)
            t.rows[:] = keep
            t.changed()
        return gone

    def drop_table(self, name: str) -> None:
        self.tables.pop(name, None)

    def add_bucket(self, bucket: str, public: bool = True) -> None:
        self.buckets[bucket] = public

    def add_object(self, bucket: str, path: str, data: bytes, content_type: str = "image/jpeg",
                   public: bool = True) -> str:
        """Store an object (creating the bucket, public or not, when absent); returns its public URL."""
        if self.buckets.setdefault(bucket, public) != public:
            raise ValueError(f"bucket {bucket!r} already exists with public={not public}; publicity is per bucket")
        self.objects[(bucket, path.lstrip("/"))] = StoredObject(data, content_type, time.time())
        return self.public_url(bucket, path)

    def public_url(self, bucket: str, path: str) -> str:
        return f"{self.url}/storage/v1/object/public/{quote(bucket)}/{quote(path.lstrip('/'))}"

    # ----------------------------------------------------------------------------------------- routing
    def _error_reply(self, path: str, status: int) -> Reply:
        """An injected failure with the body the real stack sends for that status."""
        if 520 <= status <= 524:  # Cloudflare in front of the project answers with HTML
            return Reply(status, f"<html><body>error code: {status}</body></html>".encode(),
                         "text/html; charset=UTF-8")
        if path.startswith("/storage/"):
            names = {429: ("TooManyRequests", "too_many_requests", "Too many connections"),
                     544: ("DatabaseTimeout", "database_timeout", "The database timed out"),
                     503: ("SlowDown", "service_unavailable", "Please reduce your request rate")}
            code, error, message = names.get(status, ("InternalError", "internal", "Internal Server Error"))
            return _storage_error(str(status), code, error, message, http=status)
        if status == 429:
            return json_reply(429, {"message": "API rate limit exceeded"})
        bodies = {503: ("PGRST002", "Could not query the database for the schema cache. Retrying."),
                  504: ("PGRST003", "Timed out acquiring connection from connection pool."),
                  500: ("57014", "canceling statement due to statement timeout")}
        code, message = bodies.get(status, ("XX000", f"internal error {status}"))
        return json_reply(status, {"code": code, "details": None, "hint": None, "message": message})

    def handle(self, req: RequestLog) -> Reply:
        if req.path.startswith("/rest/v1/"):
            return self._rest(req)
        if req.path.startswith("/storage/v1/"):
            return self._storage(req)
        return json_reply(404, {"message": "no Route matched with those values"})

    def _gateway_role(self, req: RequestLog) -> tuple[str | None, Reply | None]:
        """The API gateway's key check, then the role PostgREST/Storage take from the bearer token."""
        key = req.headers.get("apikey") or (req.query.get("apikey") or [None])[0]
        if not key:
            return None, json_reply(401, _NO_KEY)
        if key not in self._roles:
            return None, json_reply(401, _BAD_KEY)
        auth = req.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else key
        return (self._roles.get(token) or ((read_jwt(token) or {}).get("role"))), None

    def _rest(self, req: RequestLog) -> Reply:
        role, denied = self._gateway_role(req)
        if denied:
            return denied
        if role is None:
            return json_reply(401, {"code": "PGRST301", "details": None, "hint": None,
                                    "message": "No suitable key or wrong key type"})
        schema = req.headers.get("accept-profile", "public")
        if schema != "public":
            return json_reply(406, {"code": "PGRST106", "details": None, "hint": None,
                                    "message": "The schema must be one of the following: public, graphql_public"})
        if req.method not in ("GET", "HEAD"):
            return json_reply(405, {"code": "PGRST101", "details": None, "hint": None,
                                    "message": "the loopback server only reads (GET/HEAD)"})
        name = req.path[len("/rest/v1/"):].strip("/")
        table = self.tables.get(name)
        if table is None:
            import difflib

            close = difflib.get_close_matches(name, list(self.tables), n=1)
            return json_reply(404, {"code": "PGRST205", "details": None,
                                    "hint": f"Perhaps you meant the table 'public.{close[0]}'" if close else None,
                                    "message": f"Could not find the table 'public.{name}' in the schema cache"})
        prefer = req.headers.get("prefer", "")
        count = any(p.strip() in ("count=exact", "count=planned", "count=estimated") for p in prefer.split(","))
        try:
            query = parse_query(table, req.query)
            result = execute(table, query, visible=role == "service_role", max_rows=self.max_rows, count=count)
        except PgError as err:
            return json_reply(err.status, err.body())
        if self.statement_timeout_rows is not None and result.scanned > self.statement_timeout_rows:
            return json_reply(500, {"code": "57014", "details": None, "hint": None,
                                    "message": "canceling statement due to statement timeout"})
        n, lower, total = len(result.rows), result.offset, result.total
        total_s = "*" if total is None else str(total)
        content_range = f"{lower}-{lower + n - 1}/{total_s}" if n else f"*/{total_s}"
        if total is not None and lower > total:
            return json_reply(416, {"code": "PGRST103", "hint": None, "message": "Requested range not satisfiable",
                                    "details": f"An offset of {lower} was requested, but there are only {total} rows."},
                              **{"Content-Range": f"*/{total}"})
        status = 206 if total is not None and n < total else 200
        accept = req.headers.get("accept", "")
        if "application/vnd.pgrst.object+json" in accept:
            if n != 1:
                return json_reply(406, {"code": "PGRST116", "details": f"The result contains {n} rows",
                                        "hint": None, "message": "Cannot coerce the result to a single JSON object"})
            return json_reply(200, result.rows[0], **{"Content-Range": content_range})
        return json_reply(status, result.rows, **{"Content-Range": content_range})

    def _storage(self, req: RequestLog) -> Reply:
        parts = req.path[len("/storage/v1/"):].split("/")
        if parts[:2] == ["object", "public"] and len(parts) > 3 and req.method in ("GET", "HEAD"):
            bucket, path = parts[2], "/".join(parts[3:])
            if not self.buckets.get(bucket):  # private buckets do not exist for the public route
                return _storage_error(*_NO_SUCH_BUCKET)
            return self._object(bucket, path)
        if parts[:2] == ["object", "sign"] and len(parts) > 3 and req.method in ("GET", "HEAD"):
            return self._signed_get(req, parts[2], "/".join(parts[3:]))
        role, denied = self._gateway_role(req)
        if denied:
            return denied
        if role is None:
            return _storage_error("403", "AccessDenied", "Unauthorized", "invalid signature")
        if parts[:2] == ["object", "sign"] and len(parts) >= 3 and req.method == "POST":
            return self._sign(req, role, parts[2], "/".join(parts[3:]))
        if parts[:2] == ["object", "authenticated"]:
            parts = ["object", *parts[2:]]
        if parts[0] == "object" and len(parts) > 2 and req.method in ("GET", "HEAD"):
            bucket, path = parts[1], "/".join(parts[2:])
            if bucket not in self.buckets:
                return _storage_error(*_NO_SUCH_BUCKET)
            if role != "service_role":  # storage.objects RLS with no policy hides every object
                return _storage_error(*_NO_SUCH_KEY)
            return self._object(bucket, path)
        return _storage_error("404", "not_found", "Not Found", f"Route {req.method}:{req.path} not found")

    def _object(self, bucket: str, path: str) -> Reply:
        obj = self.objects.get((bucket, path))
        if obj is None:
            return _storage_error(*_NO_SUCH_KEY)
        corrupt = self.faults.corrupt_objects
        return Reply(200, _corrupt(obj.data) if corrupt else obj.data, obj.content_type,
                     {"Cache-Control": "max-age=3600", "ETag": f'"{hashlib.md5(obj.data).hexdigest()}"',
                      "Last-Modified": formatdate(obj.modified, usegmt=True)}, corrupted=corrupt)

    def _sign(self, req: RequestLog, role: str, bucket: str, path: str) -> Reply:
        """POST /object/sign/<bucket>[/<path>]: one signed URL, or many ({"paths": [...]}, at most 1000)."""
        try:
            body = json.loads(req.body or b"{}")
            expires = int(body.get("expiresIn", 60))
        except (ValueError, TypeError, AttributeError):
            return _storage_error("400", "InvalidRequest", "Bad Request", "body must be JSON with expiresIn")
        if bucket not in self.buckets:
            return _storage_error(*_NO_SUCH_BUCKET)

        def signed(p: str) -> str | None:
            if (bucket, p) not in self.objects or role != "service_role":
                return None
            token = make_jwt({"url": f"{bucket}/{p}", "iat": int(time.time()), "exp": int(time.time()) + expires})
            return f"/object/sign/{quote(bucket)}/{quote(p)}?token={token}"

        if path:
            url = signed(path)
            return json_reply(200, {"signedURL": url}) if url else _storage_error(*_NO_SUCH_KEY)
        paths = body.get("paths")
        if not isinstance(paths, list) or len(paths) > 1000:
            return _storage_error("400", "InvalidRequest", "Bad Request",
                                  "body/paths must be an array of at most 1000 items")
        out = []
        for p in paths:
            url = signed(str(p))
            out.append({"error": None if url else "Either the object does not exist or you do not have access to it",
                        "path": p, "signedURL": url})
        return json_reply(200, out)

    def _signed_get(self, req: RequestLog, bucket: str, path: str) -> Reply:
        claims = read_jwt((req.query.get("token") or [""])[0])
        if claims is None:
            return _storage_error("400", "InvalidJWT", "InvalidJWT", "invalid signature")
        if claims.get("exp", 0) < time.time():
            return _storage_error("400", "InvalidJWT", "InvalidJWT", "jwt expired")
        if claims.get("url") != f"{bucket}/{path}":
            return _storage_error("400", "InvalidSignature", "InvalidSignature", "The url do not match the signature")
        return self._object(bucket, path)


def start_server(host: str = "127.0.0.1", **kw: Any) -> FakeSupabase:
    """A FakeSupabase listening on a free port of `host`, serving from a background thread."""
    return FakeSupabase(host, **kw)


def start_image_host(host: str = "127.0.0.1") -> ImageHost:
    """A plain static file host on a free port (a second, non-Supabase origin)."""
    return ImageHost(host)
