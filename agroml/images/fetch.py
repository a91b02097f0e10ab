"""Fetching images into the content-addressed cache: which URLs may be fetched, how, and how fast.

Image URLs are data typed by users and old backends, so every one passes :class:`UrlPolicy` first:
http/https only; the Supabase key goes ONLY to SUPABASE_URL's exact origin (scheme, host, port), and
only for a URL the database named: never to a redirect's target, not even when the redirect points
back at Supabase (an allow-listed host could otherwise aim the key at any Storage path); any other host
must be on AGROML_IMAGE_HOSTS; private and loopback addresses are refused unless listed; redirects are
not followed blindly but each hop is checked again. Storage paths
(``pest_images/pest_<uuid>.jpg`` or ``<bucket>/<path>``) go to the authenticated object route and
relative ``/uploads/...`` paths are resolved against AGROML_IMAGE_BASE_URL.

Why threads over one shared httpx.Client (not asyncio): the work per image is network wait plus a
Pillow decode and an SQLite index write, both synchronous; a pool of AGROML_IMAGE_CONCURRENCY
threads overlaps the waits, reuses keep-alive connections from one pool sized to match, and keeps
the library free of an event loop its callers would have to run.

Every URL ends in exactly one bucket of the :class:`FetchSummary`: fetched, cached (already in the
index: no request at all) or failed with a countable reason.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urljoin, urlsplit

from agroml.core.config import Settings
from agroml.core.errors import ImageError
from agroml.core.progress import NoticeFn, ProgressFn, no_notice, no_progress
from agroml.core.retry import (
    RetriesExhausted,
    RetryPolicy,
    TransientError,
    is_retryable_status,
    retry_after_seconds,
    transport_error,
)
from agroml.images.cache import TOO_LARGE, CachedImage, ImageCache, ImageRejected, verify_image

if TYPE_CHECKING:
    import httpx

# Failure reasons (besides images.py's too_large / not_an_image / truncated / decompression_bomb,
# http_<status> / network for answers that kept failing after retries, and unreachable for a host that
# refused the connection or whose name did not resolve).
EMPTY_URL, BAD_SCHEME = "empty_url", "bad_scheme"
HOST_NOT_ALLOWED, PRIVATE_ADDRESS = "host_not_allowed", "private_address"
NO_BASE_URL, NO_SUPABASE_URL, BAD_PATH = "no_base_url", "no_supabase_url", "bad_path"
NOT_FOUND, FORBIDDEN, TOO_MANY_REDIRECTS = "not_found", "forbidden", "too_many_redirects"
MAX_REDIRECTS = 5
#: Index rows are committed in batches of this many images, or after this many seconds.
INDEX_BATCH, INDEX_SECONDS = 256, 1.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class ImageRefused(Exception):
    """One image that will not be fetched or kept; ``reason`` is counted, ``detail`` explains."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Target:
    """A resolved image URL and whether it gets the key: Supabase's origin, named by the database (not a redirect)."""

    url: str
    supabase: bool


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


class UrlPolicy:
    """Decides where an image URL points and whether agroml may fetch it (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.supabase_url = settings.supabase_url
        self.supabase_origin = _origin(settings.supabase_url) if settings.supabase_url else None
        self.allowed = settings.allowed_image_hosts
        self.base_url = settings.image_base_url
        self.bucket = settings.image_bucket

    def resolve(self, raw: str) -> Target:
        """The absolute URL for a stored image_url, or ImageRefused saying why not."""
        text = (raw or "").strip()
        if not text:
            raise ImageRefused(EMPTY_URL, "the row has no image URL")
        scheme = urlsplit(text).scheme.lower()
        if scheme in ("http", "https"):
            return self.check(text)
        if scheme and not (len(scheme) == 1 and text[1:2] == ":"):  # file:, ftp:, data:, javascript:...
            raise ImageRefused(BAD_SCHEME, f"{scheme}: URLs are never fetched")
        if text.startswith("//"):
            raise ImageRefused(BAD_SCHEME, "scheme-relative URL")
        if text.startswith("/"):
            if not self.base_url:
                raise ImageRefused(NO_BASE_URL, "relative path: set AGROML_IMAGE_BASE_URL to resolve it")
            return self.check(urljoin(self.base_url.rstrip("/") + "/", text.lstrip("/")))
        return self.storage_target(text)

    def storage_target(self, path: str) -> Target:
        """``<bucket>/<path>`` (first segment = AGROML_IMAGE_BUCKET) or a path inside that bucket."""
        if not self.supabase_url:
            raise ImageRefused(NO_SUPABASE_URL, "a Storage path needs SUPABASE_URL")
        segments = [s for s in path.replace("\\", "/").split("/") if s]
        if any(s in (".", "..") for s in segments) or not segments:
            raise ImageRefused(BAD_PATH, f"{path!r} is not a clean Storage path")
        if segments[0] == self.bucket and len(segments) > 1:
            segments = segments[1:]
        object_path = "/".join(quote(s) for s in segments)
        return Target(f"{self.supabase_url}/storage/v1/object/{quote(self.bucket)}/{object_path}", True)

    def check(self, url: str) -> Target:
        """An absolute URL if its scheme and host are allowed (used again for every redirect hop)."""
        scheme, host, port = _origin(url)
        if scheme not in ("http", "https"):
            raise ImageRefused(BAD_SCHEME, f"{scheme or 'no'} scheme in {url!r}")
        if not host:
            raise ImageRefused(HOST_NOT_ALLOWED, f"no host in {url!r}")
        if self.supabase_origin == (scheme, host, port):
            return Target(url, True)
        if self._listed(host, port):
            return Target(url, False)
        if _is_private(host):
            raise ImageRefused(PRIVATE_ADDRESS, f"{host} is a private or loopback address not in AGROML_IMAGE_HOSTS")
        raise ImageRefused(HOST_NOT_ALLOWED, f"{host} is not SUPABASE_URL's host nor in AGROML_IMAGE_HOSTS")

    def _listed(self, host: str, port: int) -> bool:
        for entry in self.allowed:
            name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
            if entry_port and (not entry_port.isdigit() or int(entry_port) != port):
                continue
            name = name.strip("[]")
            if name.startswith(("*.", ".")):
                if host.endswith("." + name.lstrip("*.")):
                    return True
            elif host == name:
                return True
        return False


def _is_private(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified


@dataclass
class FetchSummary:
    """What happened to each requested URL (keys are the URLs as the caller gave them)."""

    fetched: int = 0
    cached: int = 0
    failed: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # url -> reason
    details: dict[str, str] = field(default_factory=dict)  # url -> the longer explanation
    paths: dict[str, Path] = field(default_factory=dict)  # url -> cached file
    requests: int = 0
    retries: int = 0

    @property
    def total(self) -> int:
        return self.fetched + self.cached + self.failed

    @property
    def reasons(self) -> dict[str, int]:
        """{reason: images}, most common first."""
        return dict(Counter(self.failures.values()).most_common())

    def hashes(self) -> dict[str, str]:
        """{url: sha256} of every image now in the cache (the file name is the hash)."""
        return {url: path.name.split(".", 1)[0] for url, path in self.paths.items()}

    def add(self, other: FetchSummary) -> None:
        for name in ("fetched", "cached", "failed", "requests", "retries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.update(other.failures)
        self.details.update(other.details)
        self.paths.update(other.paths)

    def to_dict(self) -> dict[str, object]:
        return {
            "fetched": self.fetched,
            "cached": self.cached,
            "failed": self.failed,
            "reasons": self.reasons,
            "requests": self.requests,
            "retries": self.retries,
            "failures": self.details or self.failures,
        }


class Fetcher:
    """Downloads over one shared, pooled httpx.Client with the retry policy and the size cap."""

    def __init__(self, settings: Settings, policy: RetryPolicy | None = None, notice: NoticeFn = no_notice) -> None:
        import httpx

        self.urls = UrlPolicy(settings)
        self.retry = policy or RetryPolicy.from_settings(settings, notice=notice)
        self.max_bytes = int(settings.image_max_mb * 1_000_000)
        self._key_headers = (
            {"apikey": settings.supabase_key, "Authorization": f"Bearer {settings.supabase_key}"}
            if settings.supabase_key
            else {}
        )
        workers = max(1, settings.image_concurrency)
        # no default headers: the key is added per request, and only for Supabase's origin
        self.client = httpx.Client(
            timeout=httpx.Timeout(settings.http_timeout, connect=min(10.0, settings.http_timeout)),
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
            follow_redirects=False,
        )
        self.requests = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def download(self, target: Target) -> bytes:
        """The image bytes, after retries; ImageRefused with a reason otherwise."""
        try:
            return self.retry.call(lambda: self._attempt(target))
        except RetriesExhausted as exc:
            raise ImageRefused(exc.last.reason, str(exc)) from None

    def _attempt(self, target: Target) -> bytes:
        import httpx

        url, send_key = target.url, target.supabase
        for _hop in range(MAX_REDIRECTS + 1):
            with self._lock:
                self.requests += 1
            try:
                with self.client.stream("GET", url, headers=self._key_headers if send_key else None) as resp:
                    if resp.status_code in _REDIRECTS and resp.headers.get("location"):
                        try:
                            url = self.urls.check(urljoin(url, resp.headers["location"])).url
                        except ImageRefused as exc:
                            raise ImageRefused(exc.reason, f"redirect refused: {exc.detail}") from None
                        # The database named the first URL only: whoever answered chose this one, so it
                        # never gets the key, even when it points at Supabase's own origin.
                        send_key = False
                        continue
                    if not 200 <= resp.status_code < 300:
                        raise self._status_error(resp)
                    return self._read_capped(resp)
            except httpx.TransportError as exc:  # refused, unknown host, reset, dropped mid-body, timed out
                raise transport_error(exc, urlsplit(url).netloc) from None
        raise ImageRefused(TOO_MANY_REDIRECTS, f"more than {MAX_REDIRECTS} redirects")

    def _read_capped(self, resp: httpx.Response) -> bytes:
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise ImageRefused(TOO_LARGE, f"{declared} bytes declared, cap {self.max_bytes}")
        buf = bytearray()
        for chunk in resp.iter_bytes():
            buf += chunk
            if len(buf) > self.max_bytes:  # stop reading: never hold more than the cap
                raise ImageRefused(TOO_LARGE, f"more than the {self.max_bytes}-byte cap")
        return bytes(buf)

    @staticmethod
    def _status_error(resp: httpx.Response) -> Exception:
        status = resp.status_code
        if status == 400:  # Storage puts the real status, as a string, in a 400's JSON body
            body = b""
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > 65_536:
                    break
            try:
                status = int(json.loads(body).get("statusCode", 400))
            except (ValueError, AttributeError, TypeError):
                status = 400
        if is_retryable_status(status):
            return TransientError(
                f"http_{status}",
                retry_after=retry_after_seconds(resp.headers.get("retry-after")),
                host=resp.url.netloc.decode("ascii", "replace"),
            )
        if status == 404:
            return ImageRefused(NOT_FOUND, f"{resp.status_code} for {resp.url}")
        if status in (401, 403):
            return ImageRefused(FORBIDDEN, f"{status}: the key may not read this object")
        return ImageRefused(f"http_{status}", f"{resp.status_code} for {resp.url}")


@contextmanager
def _fill_lock(root: Path) -> Iterator[None]:
    """One cache filler at a time; the ``.tmp`` files killed runs left in the cache are removed.

    The lock (filelock's descriptor lock: flock on Linux and macOS, LockFileEx on Windows) is released
    by the operating system when its holder dies (even by SIGKILL), so a crash never leaves the cache
    locked, on every platform.
    """
    from filelock import lock_descriptor, unlock_descriptor

    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".fetch.lock", "a+b") as lock:
        if not lock_descriptor(lock.fileno(), blocking=False):
            raise ImageError(
                f"another agroml process is filling the image cache {root}",
                fix="wait for that `agroml pull` to finish, then run again",
            )
        ImageCache(root).sweep_stale_temps()  # only files no live writer (an import, a demo) holds
        try:
            yield
        finally:
            unlock_descriptor(lock.fileno())


def fetch_images(
    urls: list[str],
    cache: ImageCache,
    settings: Settings,
    progress: ProgressFn = no_progress,
    notice: NoticeFn = no_notice,
) -> FetchSummary:
    """Bring every URL's image into ``cache``; each ends fetched, cached or failed with a reason.

    The cache index is keyed by the resolved URL, so a warm cache answers with no request at all.
    ``notice`` hears of every retry.
    """
    summary = FetchSummary()
    unique = list(dict.fromkeys(urls))
    targets: dict[str, Target] = {}
    policy = UrlPolicy(settings)
    for raw in unique:
        try:
            targets[raw] = policy.resolve(raw)
        except ImageRefused as exc:
            _fail(summary, raw, exc.reason, exc.detail)
    known = cache.lookup_many(list({t.url for t in targets.values()}))
    todo: dict[str, list[str]] = {}  # resolved url -> the raw urls that name it
    for raw, target in targets.items():
        if target.url in known:
            summary.cached += 1
            summary.paths[raw] = known[target.url]
        else:
            todo.setdefault(target.url, []).append(raw)
    total = len(unique)
    progress("images", summary.total, total)
    if not todo:
        return summary

    fetcher = Fetcher(settings, notice=notice)
    pending: list[tuple[str, CachedImage]] = []  # files in place, not yet in the index
    flushed = time.monotonic()
    try:
        with _fill_lock(cache.root), ThreadPoolExecutor(max_workers=max(1, settings.image_concurrency)) as pool:
            futures = {pool.submit(_fetch_one, fetcher, cache, targets[raws[0]]): raws for raws in todo.values()}
            for future in as_completed(futures):
                raws = futures[future]
                try:
                    image = future.result()
                except ImageRefused as exc:
                    for raw in raws:
                        _fail(summary, raw, exc.reason, exc.detail)
                else:
                    pending.append((targets[raws[0]].url, image))
                    for raw in raws:
                        summary.fetched += 1
                        summary.paths[raw] = image.path
                if len(pending) >= INDEX_BATCH or time.monotonic() - flushed > INDEX_SECONDS:
                    _remember(cache, pending)
                    pending, flushed = [], time.monotonic()
                progress("images", summary.total, total)
    finally:
        _remember(cache, pending)  # what is on disk gets indexed, even when the batch is interrupted
        fetcher.close()
    summary.requests, summary.retries = fetcher.requests, fetcher.retry.retries
    return summary


def _fetch_one(fetcher: Fetcher, cache: ImageCache, target: Target) -> CachedImage:
    """Download, verify and write one image (in a worker thread); the index is written by the caller."""
    data = fetcher.download(target)
    try:
        return cache.put(data)
    except ImageRejected as exc:
        raise ImageRefused(exc.reason, exc.message) from None


def _remember(cache: ImageCache, done: list[tuple[str, CachedImage]]) -> None:
    """Index a batch of written images in ONE transaction.

    Why: each autocommitted index row costs an fsync of the WAL, taken under the cache's lock, so one
    commit per image serialized the whole pool behind the disk (about 6 ms an image on a shared VM
    disk). A killed run loses at most the last batch's index rows, never a file: the next run
    downloads those images again and finds their files already in place.
    """
    if not done:
        return
    con = cache.index
    con.execute("BEGIN IMMEDIATE")
    try:
        for url, image in done:
            cache.remember(url, image)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _fail(summary: FetchSummary, url: str, reason: str, detail: str) -> None:
    summary.failed += 1
    summary.failures[url] = reason
    summary.details[url] = f"{reason}: {detail}" if detail else reason


def probe_image(url: str, settings: Settings) -> tuple[str | None, str]:
    """Download one image and check it decodes, storing nothing: (failure reason or None, detail). For doctor."""
    fetcher = Fetcher(settings, RetryPolicy.from_settings(settings, max_seconds=10.0))
    try:
        target = fetcher.urls.resolve(url)
        data = fetcher.download(target)
        ext, width, height = verify_image(data, fetcher.max_bytes)
    except ImageRefused as exc:
        return exc.reason, exc.detail
    except ImageRejected as exc:
        return exc.reason, exc.message
    finally:
        fetcher.close()
    return None, f"{width}x{height} {ext}, {len(data)} bytes"
