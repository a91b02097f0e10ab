"""Supabase as a RecordSource: PostgREST through the official client, keyset pages, our own retries.

Why keyset paging: Supabase silently caps every answer at ``max_rows`` (1000 by default) and deep
offsets get slower and can hit the statement timeout. So pages are ``id=gt.<last>&order=id.asc
&limit=<page_size>`` and the loop ends only on an EMPTY page: a short page proves nothing (a page
size above the cap gets 1000 rows back, with no error).

Why we send the request ourselves: supabase-py's ``execute()`` raises ``postgrest.APIError`` with the
body's code but without the HTTP status, and parses a cut body into a *string* instead of failing.
We still let the official client build every request (URL, select, filters, order, auth headers,
schema profile) and send exactly that request (``builder.request.send``) over the client's own httpx
session, inside :mod:`agroml.core.retry`. That gives the status (429/5xx/520-524 retried, 401/404/400
explained), a check that the body is a whole JSON array, and no hidden second retry loop (the
client's built-in one is switched off with ``postgrest_client_retry=False``).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pandas as pd

from agroml.core import retry, schema
from agroml.core.config import COLUMN_ENV, TABLE_ENV, Settings, key_role
from agroml.core.errors import ConfigError, SourceError, UnreachableError, UsageError
from agroml.core.progress import NoticeFn, ProgressFn, no_notice, no_progress
from agroml.core.schema import MODEL_TYPES
from agroml.data import records as rec
from agroml.data.confusion import COLUMNS as CONFUSION_COLUMNS
from agroml.data.confusion import WrongFolder, WrongKey
from agroml.data.store import Store

if TYPE_CHECKING:
    import httpx

#: A source reads one model type and window once, and keeps the records for later passes up to this many
#: rows: stats asks for the feedback counts, then for the confusion columns, and two reads of a live
#: table can disagree (a farmer's answer, a deleted row in between) and give numbers from no single
#: moment of the table. Bigger reads are not kept (memory stays flat) and each pass reads again.
SNAPSHOT_ROWS = 200_000
KEY_FIX = "set SUPABASE_SERVICE_KEY to the project's service_role key (Supabase: Project Settings > API)"
_MISSING_TABLE_CODES = {"PGRST205", "42P01", "PGRST106"}
_COLUMN_RE = (re.compile(r"column \"?(?:[\w]+\.)?\"?(\w+)\"? does not exist"), re.compile(r"'(\w+)' column"))


def utc_iso(value: Any) -> str:
    """A date/datetime/string as an ISO 8601 UTC timestamp for a PostgREST filter (naive = UTC)."""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.isoformat()


def _short_body(resp: httpx.Response) -> str:
    """An error answer in a few words: PostgREST's "code: message", else the start of the text."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        code = body.get("code")
        return f"{code}: {body['message']}" if code else str(body["message"])
    return " ".join(resp.text.split())[:120]


def parse_total(content_range: str | None) -> int | None:
    """The total of a ``Content-Range: 0-999/25000`` (or ``*/0``) header; None for ``/*``."""
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1]
    return int(total) if total.isdigit() else None


class SupabaseSource:
    """Live reads of AgroShield's prediction tables. Use as a context manager, or call :meth:`close`.

    ``warnings`` collects what the caller should tell the user (e.g. an anon key seeing no rows);
    ``requests`` and ``policy.retries`` count the traffic, for summaries and benchmarks; ``notice``
    hears of every retry ("retrying in 2.1 s (attempt 2, ...): 503 from <host>").
    """

    name = "supabase"

    def __init__(self, settings: Settings, notice: NoticeFn = no_notice) -> None:
        if not settings.supabase_url:
            raise ConfigError(
                "SUPABASE_URL is not set",
                fix="set SUPABASE_URL to https://<project-ref>.supabase.co in the environment or .env",
            )
        if not settings.supabase_key:
            raise ConfigError("no Supabase key: SUPABASE_SERVICE_KEY is not set", fix=KEY_FIX)
        import httpx
        from supabase import ClientOptions, SupabaseException, create_client

        self.settings = settings
        self.policy = retry.RetryPolicy.from_settings(settings, notice=notice)
        self.host = urlsplit(settings.supabase_url).netloc
        self.warnings: list[str] = []
        self.requests = 0
        self.role = key_role(settings.supabase_key)
        self._salt: str | None = None
        self._snapshots: dict[tuple[Any, ...], list[pd.DataFrame]] = {}
        timeout = httpx.Timeout(settings.http_timeout, connect=min(10.0, settings.http_timeout))
        # never follow a redirect: the client sends the key with every request, and a redirect may name any host
        self._http = httpx.Client(
            timeout=timeout, limits=httpx.Limits(max_keepalive_connections=4), follow_redirects=False
        )
        try:
            self.client = create_client(
                settings.supabase_url,
                settings.supabase_key,
                options=ClientOptions(httpx_client=self._http, postgrest_client_retry=False),
            )
        except SupabaseException as exc:
            self._http.close()
            raise ConfigError(
                f"SUPABASE_URL={settings.supabase_url!r} is not usable ({exc})",
                fix="set SUPABASE_URL to https://<project-ref>.supabase.co",
            ) from None

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SupabaseSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def spec(self, model_type: str) -> schema.TableSpec:
        return schema.table_spec(model_type, self.settings.schema_overrides)

    # -- one request -------------------------------------------------------------------------------
    def _send(self, builder: Any, spec: schema.TableSpec) -> tuple[list[dict[str, Any]], int | None]:
        """Send the request ``builder`` describes, with retries; (rows, total from Content-Range)."""
        import httpx

        def attempt() -> tuple[list[dict[str, Any]], int | None]:
            self.requests += 1
            try:
                resp = builder.request.send(httpx.Headers())
            except httpx.TransportError as exc:  # refused, unknown host, reset, dropped, timed out, cut short
                raise retry.transport_error(exc, self.host) from None
            if retry.is_retryable_status(resp.status_code):
                raise retry.TransientError(
                    f"http_{resp.status_code}",
                    _short_body(resp),
                    retry.retry_after_seconds(resp.headers.get("retry-after")),
                    host=self.host,
                )
            if 300 <= resp.status_code < 400:
                raise self._redirected(resp)
            if resp.status_code >= 400:
                raise self._explain(resp, spec)
            try:
                rows = json.loads(resp.content)
            except ValueError:  # a body cut at the right length still fails to parse: try again
                raise retry.TransientError(
                    "bad_body", f"{len(resp.content)} bytes that are not JSON", host=self.host
                ) from None
            if not isinstance(rows, list):
                raise retry.TransientError(
                    "bad_body", f"expected a JSON array, got {type(rows).__name__}", host=self.host
                )
            return rows, parse_total(resp.headers.get("content-range"))

        try:
            return self.policy.call(attempt)
        except retry.RetriesExhausted as exc:
            if exc.unreachable:  # more time would not help: say so, and what to check
                raise UnreachableError(
                    f"could not reach Supabase at {self.host} ({exc.last.unreachable}; "
                    f"{exc.attempts} attempts in {exc.elapsed:.1f} s)",
                    fix=f"check SUPABASE_URL ({self.settings.supabase_url}) and this machine's network",
                ) from None
            last = exc.last
            said = f"{last.detail}; " if last.reason.startswith("http_") and last.detail else ""
            raise SourceError(
                f"Supabase kept failing on table {spec.table!r}: {last.summary()} "
                f"({said}gave up after {exc.attempts} attempts in {exc.elapsed:.1f} s)",
                fix="try again later, or allow longer with AGROML_RETRY_MAX_SECONDS",
            ) from None

    def _redirected(self, resp: httpx.Response) -> Exception:
        """A redirect from the REST API is not followed: the key would go wherever it points."""
        location = resp.headers.get("location", "")
        return ConfigError(
            f"Supabase at {self.host} answered {resp.status_code}, a redirect to {location or '(nowhere)'}; "
            "agroml does not follow redirects with the key",
            fix="set SUPABASE_URL to the project's own https://<ref>.supabase.co URL",
        )

    def _explain(self, resp: httpx.Response, spec: schema.TableSpec) -> Exception:
        """A 4xx answer as an error that says what to change."""
        try:
            body = resp.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        code, message = str(body.get("code") or ""), str(body.get("message") or resp.text[:200])
        model = spec.model_type.upper()
        if resp.status_code == 401 or code in ("PGRST301", "PGRST302", "PGRST303"):
            return ConfigError(f"Supabase rejected the key ({resp.status_code}: {message})", fix=KEY_FIX)
        if code in _MISSING_TABLE_CODES or (resp.status_code == 404 and not code):
            return ConfigError(
                f"table {spec.table!r} not found in Supabase ({code or resp.status_code}: {message})",
                fix=f"set {TABLE_ENV.format(model=model)} to the table holding {spec.model_type} predictions",
            )
        if code == "42703" or code == "PGRST204":
            column = self._missing_column(message, spec)
            field_ = next((f for f, c in spec.columns.items() if c == column), None)
            env = COLUMN_ENV.format(model=model, field=(field_ or "extra").upper())
            return ConfigError(
                f"column {column!r} not found in table {spec.table!r} ({code}: {message})",
                fix=f"set {env} to the column's real name" + (", or - if the table has none" if field_ else ""),
            )
        if resp.status_code == 403 or code == "42501":
            return ConfigError(
                f"the key may not read table {spec.table!r} ({resp.status_code} {code}: {message})", fix=KEY_FIX
            )
        return SourceError(
            f"Supabase answered {resp.status_code} {code} on table {spec.table!r}: {message}",
            fix="check the table and column settings with `agroml doctor`",
        )

    @staticmethod
    def _missing_column(message: str, spec: schema.TableSpec) -> str:
        for pattern in _COLUMN_RE:
            if m := pattern.search(message):
                return m.group(1)
        named = [c for c in spec.select_columns() if re.search(rf"(?<![\w]){re.escape(c)}(?![\w])", message)]
        return named[-1] if named else "?"

    def _query(
        self, spec: schema.TableSpec, since: Any, until: Any, columns: Sequence[str] | None = None, count: bool = False
    ) -> Any:
        builder = self.client.table(spec.table).select(
            ",".join(columns or spec.select_columns()), count="exact" if count else None
        )
        created = spec.column("created_at")
        if (since is not None or until is not None) and not created:
            raise UsageError(
                f"--since/--until need a created_at column in {spec.table!r}",
                fix=f"set {COLUMN_ENV.format(model=spec.model_type.upper(), field='CREATED_AT')}",
            )
        if since is not None:
            builder = builder.gte(created, utc_iso(since))
        if until is not None:
            builder = builder.lt(created, utc_iso(until))
        return builder

    # -- pages -------------------------------------------------------------------------------------
    def fetch_rows(
        self, model_type: str, since: Any = None, until: Any = None, progress: ProgressFn = no_progress
    ) -> Iterator[list[dict[str, Any]]]:
        """Raw rows (source column names) of one model type, a page at a time, in id order.

        Stops only on an empty page. The first page asks for an exact count so progress has a total;
        the count is a hint, never the stopping rule.
        """
        spec = self.spec(model_type)
        id_col = spec.column("id")
        if not id_col:
            raise ConfigError(
                f"no id column mapped for {spec.table!r}",
                fix=f"set {COLUMN_ENV.format(model=model_type.upper(), field='ID')}",
            )
        last: Any = None
        done, total = 0, None
        task = f"rows {model_type}"
        while True:
            builder = self._query(spec, since, until, count=last is None)
            if last is not None:
                builder = builder.gt(id_col, str(last))
            rows, page_total = self._send(builder.order(id_col).limit(self.settings.page_size), spec)
            total = page_total if last is None else total
            if not rows:
                break
            new_last = rows[-1].get(id_col)
            if new_last is None or new_last == last:
                raise SourceError(
                    f"paging on {spec.table}.{id_col} made no progress (last id {new_last!r})",
                    fix=f"map {COLUMN_ENV.format(model=model_type.upper(), field='ID')} to a unique non-null column",
                )
            last = new_last
            done += len(rows)
            progress(task, done, max(total, done) if total is not None else None)
            yield rows
        if done == 0 and self.role == "anon":
            self._warn_anon(spec)
        progress(task, done, done)

    def _warn_anon(self, spec: schema.TableSpec) -> None:
        message = (
            f"no rows in {spec.table!r} with the anon key: row-level security hides other farmers' "
            "rows; set SUPABASE_SERVICE_KEY to the service_role key to read them all"
        )
        if message not in self.warnings:
            self.warnings.append(message)

    def use_salt(self, salt: str) -> None:
        """Hash farmer ids with this salt (pull passes the store it writes to)."""
        self._salt = salt

    def salt(self) -> str:
        """The farmer-key salt: AGROML_HASH_SALT, else the local store's (made once, kept there)."""
        if self._salt is None:
            if self.settings.hash_salt:
                self._salt = self.settings.hash_salt
            else:
                with Store(self.settings.db_path, create=True) as store:
                    self._salt = store.salt()
        return self._salt

    def normalize(self, rows: list[dict[str, Any]], model_type: str) -> rec.Normalized:
        return rec.normalize_rows(rows, self.spec(model_type), self.name, self.salt(), include_personal=True)

    # -- RecordSource ------------------------------------------------------------------------------
    def iter_records(
        self,
        model_type: str | None = None,
        since: Any = None,
        until: Any = None,
        progress: ProgressFn = no_progress,
        *,
        columns: Sequence[str] | None = None,
        valid_only: bool = False,
        include_personal: bool = False,
        chunk_rows: int = 100_000,
    ) -> Iterator[pd.DataFrame]:
        """Record frames, model type by model type, about ``chunk_rows`` rows each."""
        types = [schema.check_model_type(model_type)] if model_type else list(MODEL_TYPES)
        for mt in types:
            for frame in self._snapshot(mt, since, until, progress, chunk_rows):
                yield self._frame(frame, columns, valid_only, include_personal)

    def _snapshot(
        self, model_type: str, since: Any, until: Any, progress: ProgressFn, chunk_rows: int
    ) -> Iterator[pd.DataFrame]:
        """Normalized record frames of one model type and window, read once per source (see SNAPSHOT_ROWS)."""
        key = (model_type, since, until, chunk_rows)
        if key in self._snapshots:
            yield from self._snapshots[key]
            return
        kept: list[pd.DataFrame] | None = []
        rows = 0
        buffer: list[dict[str, Any]] = []
        pages: Iterator[list[dict[str, Any]] | None] = self.fetch_rows(model_type, since, until, progress)
        for page in itertools.chain(pages, [None]):  # None: the end, where the last short buffer goes out
            buffer.extend(page or [])
            if buffer and (page is None or len(buffer) >= chunk_rows):
                frame = self.normalize(buffer, model_type).records
                buffer, rows = [], rows + len(frame)
                if kept is not None and rows <= SNAPSHOT_ROWS:
                    kept.append(frame)
                else:
                    kept = None
                yield frame
        if kept is not None:
            self._snapshots[key] = kept

    @staticmethod
    def _frame(
        df: pd.DataFrame, columns: Sequence[str] | None, valid_only: bool, include_personal: bool
    ) -> pd.DataFrame:
        if valid_only:
            df = rec.valid_only(df).reset_index(drop=True)
        if columns:
            return df[list(columns)]
        # a new frame either way: a kept snapshot must not change under a caller that edits what it gets
        return df.copy() if include_personal else df.drop(columns=list(rec.PERSONAL_FIELDS))

    def feedback_counts(self, model_type: str | None = None, since: Any = None, until: Any = None) -> pd.DataFrame:
        """Rows per (model_type, predicted_label, feedback, label, actual_label, invalid_reason) as ``n``.

        PostgREST cannot group without a view or RPC, so the rows are read and counted here with
        :func:`agroml.data.records.feedback_counts`, a chunk at a time, then the chunks' counts summed.
        """
        parts = [rec.feedback_counts(chunk) for chunk in self.iter_records(model_type, since, until)]
        parts = [p for p in parts if not p.empty]
        if len(parts) <= 1:
            return parts[0] if parts else rec.feedback_counts(rec.empty_records())
        keys = list(rec.COUNT_KEYS)
        counts = pd.concat(parts, ignore_index=True).groupby(keys, dropna=False, sort=False)["n"].sum().reset_index()
        counts = counts.astype({k: object for k in keys})
        counts[keys] = counts[keys].where(counts[keys].notna(), None)
        return counts.astype({"n": "int64"})

    def wrong_counts(self, model_type: str, since: Any = None, until: Any = None) -> list[tuple[WrongKey, int]]:
        """Answered valid rows per (crop, region, predicted, feedback, label), counted here a chunk at a
        time from the five columns :mod:`agroml.data.confusion` reads (PostgREST cannot group)."""
        folder = WrongFolder()
        for chunk in self.iter_records(model_type, since, until, columns=list(CONFUSION_COLUMNS), valid_only=True):
            folder.add(chunk)
        return list(folder.counts.items())

    def model_types(self) -> list[str]:
        """Model types whose table has at least one row (one 1-row request per type)."""
        found = []
        for mt in MODEL_TYPES:
            spec = self.spec(mt)
            rows, _ = self._send(self._query(spec, None, None, columns=[spec.column("id") or "*"]).limit(1), spec)
            if rows:
                found.append(mt)
            elif self.role == "anon":
                self._warn_anon(spec)
        return found

    def missing_images(self, model_type: str, since: Any = None, until: Any = None) -> dict[str, int]:
        """Nothing is missing for a live read: every valid row has an image URL (a row without one is
        invalid, reason no_image), and what those URLs hold is known only by fetching them (`pull`)."""
        return {}

    def probe_table(self, model_type: str) -> int:
        """Select every mapped column with limit=1 (doctor): raises the explained error if one is missing."""
        spec = self.spec(model_type)
        rows, _ = self._send(self._query(spec, None, None).limit(1), spec)
        return len(rows)

    def first_image_url(self) -> str | None:
        """Some row's image_url, for doctor's download check."""
        for mt in MODEL_TYPES:
            spec = self.spec(mt)
            col = spec.column("image_url")
            if not col:
                continue
            rows, _ = self._send(self._query(spec, None, None, columns=[col]).limit(20), spec)
            url = next((str(r[col]) for r in rows if r.get(col)), None)
            if url:
                return url
        return None
