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

Layout: this module is the Supabase routes (gateway key check, PostgREST, Storage); the query rules
(filters, typed comparisons, order, the index model) are in supaserver_query.py; the threaded server,
fault injection, request log and the plain ImageHost are in supaserver_http.py.
"""

import base64
import difflib
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

from supaserver_http import Faults, HttpApp, ImageHost, Reply, RequestLog, closed_port, corrupt, json_reply
from supaserver_query import PgError, Table, execute, parse_query

__all__ = [
    "FakeSupabase",
    "Faults",
    "ImageHost",
    "RequestLog",
    "closed_port",
    "make_jwt",
    "read_jwt",
    "start_image_host",
    "start_server",
]

_JWT_SECRET = b"loopback-supabase-jwt-secret-not-a-real-one"
_NO_KEY = {"message": "No API key found in request", "hint": "No `apikey` request header or url param was found."}
_BAD_KEY = {"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."}


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


class FakeSupabase(HttpApp):
    """PostgREST (`/rest/v1`) and Storage (`/storage/v1`) as agroml uses them. Not thread-safe to mutate
    while requests are in flight (add rows between requests, as a database would be between pages)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        max_rows: int | None = 1000,
        statement_timeout_rows: int | None = None,
        postgrest_version: int = 13,
    ) -> None:
        self.max_rows = max_rows
        # 12 answers a missing table the old way (404, 42P01 "relation ... does not exist"); 13 with PGRST205.
        self.postgrest_version = postgrest_version
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

    def add_object(
        self, bucket: str, path: str, data: bytes, content_type: str = "image/jpeg", public: bool = True
    ) -> str:
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
            return Reply(status, f"<html><body>error code: {status}</body></html>".encode(), "text/html; charset=UTF-8")
        if path.startswith("/storage/"):
            names = {
                429: ("TooManyRequests", "too_many_requests", "Too many connections"),
                544: ("DatabaseTimeout", "database_timeout", "The database timed out"),
                503: ("SlowDown", "service_unavailable", "Please reduce your request rate"),
            }
            code, error, message = names.get(status, ("InternalError", "internal", "Internal Server Error"))
            return _storage_error(str(status), code, error, message, http=status)
        if status == 429:
            return json_reply(429, {"message": "API rate limit exceeded"})
        bodies = {
            503: ("PGRST002", "Could not query the database for the schema cache. Retrying."),
            504: ("PGRST003", "Timed out acquiring connection from connection pool."),
            500: ("57014", "canceling statement due to statement timeout"),
        }
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
            return json_reply(
                401, {"code": "PGRST301", "details": None, "hint": None, "message": "No suitable key or wrong key type"}
            )
        schema = req.headers.get("accept-profile", "public")
        if schema != "public":
            return json_reply(
                406,
                {
                    "code": "PGRST106",
                    "details": None,
                    "hint": None,
                    "message": "The schema must be one of the following: public, graphql_public",
                },
            )
        if req.method not in ("GET", "HEAD"):
            return json_reply(
                405,
                {
                    "code": "PGRST101",
                    "details": None,
                    "hint": None,
                    "message": "the loopback server only reads (GET/HEAD)",
                },
            )
        name = req.path[len("/rest/v1/") :].strip("/")
        table = self.tables.get(name)
        if table is None and self.postgrest_version < 13:
            return json_reply(
                404,
                {"code": "42P01", "details": None, "hint": None, "message": f'relation "public.{name}" does not exist'},
            )
        if table is None:
            close = difflib.get_close_matches(name, list(self.tables), n=1)
            return json_reply(
                404,
                {
                    "code": "PGRST205",
                    "details": None,
                    "hint": f"Perhaps you meant the table 'public.{close[0]}'" if close else None,
                    "message": f"Could not find the table 'public.{name}' in the schema cache",
                },
            )
        prefer = req.headers.get("prefer", "")
        count = any(p.strip() in ("count=exact", "count=planned", "count=estimated") for p in prefer.split(","))
        try:
            query = parse_query(table, req.query)
            result = execute(table, query, visible=role == "service_role", max_rows=self.max_rows, count=count)
        except PgError as err:
            return json_reply(err.status, err.body())
        if self.statement_timeout_rows is not None and result.scanned > self.statement_timeout_rows:
            return json_reply(
                500,
                {
                    "code": "57014",
                    "details": None,
                    "hint": None,
                    "message": "canceling statement due to statement timeout",
                },
            )
        n, lower, total = len(result.rows), result.offset, result.total
        total_s = "*" if total is None else str(total)
        content_range = f"{lower}-{lower + n - 1}/{total_s}" if n else f"*/{total_s}"
        if total is not None and lower > total:
            return json_reply(
                416,
                {
                    "code": "PGRST103",
                    "hint": None,
                    "message": "Requested range not satisfiable",
                    "details": f"An offset of {lower} was requested, but there are only {total} rows.",
                },
                **{"Content-Range": f"*/{total}"},
            )
        status = 206 if total is not None and n < total else 200
        accept = req.headers.get("accept", "")
        if "application/vnd.pgrst.object+json" in accept:
            if n != 1:
                return json_reply(
                    406,
                    {
                        "code": "PGRST116",
                        "details": f"The result contains {n} rows",
                        "hint": None,
                        "message": "Cannot coerce the result to a single JSON object",
                    },
                )
            return json_reply(200, result.rows[0], **{"Content-Range": content_range})
        return json_reply(status, result.rows, **{"Content-Range": content_range})

    def _storage(self, req: RequestLog) -> Reply:
        parts = req.path[len("/storage/v1/") :].split("/")
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
        if parts[0] == "object" and len(parts) > 2 and req.method in ("POST", "PUT"):
            return self._upload(req, role, parts[1], "/".join(parts[2:]))
        return _storage_error("404", "not_found", "Not Found", f"Route {req.method}:{req.path} not found")

    def _upload(self, req: RequestLog, role: str, bucket: str, path: str) -> Reply:
        """POST creates an object (an existing one only with ``x-upsert: true``), PUT replaces one; the body
        is multipart form data with a ``file`` part (as storage3 sends) or the raw bytes. The object
        appears whole when the request ends, as on the real Storage (no partial objects)."""
        if bucket not in self.buckets:
            return _storage_error(*_NO_SUCH_BUCKET)
        if role != "service_role":  # storage.objects RLS with no insert policy
            return _storage_error("403", "Unauthorized", "Unauthorized", "new row violates row-level security policy")
        exists = (bucket, path) in self.objects
        if req.method == "POST" and exists and req.headers.get("x-upsert", "").lower() != "true":
            return _storage_error("409", "Duplicate", "Duplicate", "The resource already exists")
        if req.method == "PUT" and not exists:
            return _storage_error(*_NO_SUCH_KEY)
        data, content_type = _upload_body(req)
        if data is None:
            return _storage_error("400", "InvalidRequest", "Bad Request", "No file was found in the request")
        self.objects[(bucket, path)] = StoredObject(data, content_type, time.time())
        return json_reply(200, {"Id": hashlib.md5(f"{bucket}/{path}".encode()).hexdigest(), "Key": f"{bucket}/{path}"})

    def _object(self, bucket: str, path: str) -> Reply:
        obj = self.objects.get((bucket, path))
        if obj is None:
            return _storage_error(*_NO_SUCH_KEY)
        broken = self.faults.corrupt_objects
        return Reply(
            200,
            corrupt(obj.data) if broken else obj.data,
            obj.content_type,
            {
                "Cache-Control": "max-age=3600",
                "ETag": f'"{hashlib.md5(obj.data).hexdigest()}"',
                "Last-Modified": formatdate(obj.modified, usegmt=True),
            },
            corrupted=broken,
        )

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
            return _storage_error(
                "400", "InvalidRequest", "Bad Request", "body/paths must be an array of at most 1000 items"
            )
        out = []
        for p in paths:
            url = signed(str(p))
            out.append(
                {
                    "error": None if url else "Either the object does not exist or you do not have access to it",
                    "path": p,
                    "signedURL": url,
                }
            )
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


def _upload_body(req: RequestLog) -> tuple[bytes | None, str]:
    """(bytes, content type) of an upload: the ``file`` part of a multipart form, else the raw body."""
    content_type = req.headers.get("content-type", "application/octet-stream")
    if not content_type.startswith("multipart/form-data"):
        return req.body, content_type
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + req.body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            return (payload if isinstance(payload, bytes) else None), part.get_content_type()
    return None, content_type


def start_server(host: str = "127.0.0.1", **kw: Any) -> FakeSupabase:
    """A FakeSupabase listening on a free port of `host`, serving from a background thread."""
    return FakeSupabase(host, **kw)


def start_image_host(host: str = "127.0.0.1") -> ImageHost:
    """A plain static file host on a free port (a second, non-Supabase origin)."""
    return ImageHost(host)
