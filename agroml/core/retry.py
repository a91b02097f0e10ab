"""One backoff policy for every remote call agroml makes (PostgREST pages and image downloads).

Why our own: supabase-py's built-in retry sleeps a fixed 1, 2, 4 s, retries only 503/520 and never a
429, and storage3 has none at all. Supabase answers 429 (too many connections), 5xx, Cloudflare's
520-524 and Storage's 544 (database timeout) under load; a dropped connection or a body cut short is
as transient. Those are retried with exponential backoff and *full jitter* (a uniform wait between
0 and ``base * 2**attempt``, capped), so sixteen image workers hit by the same 503 do not come back
in lockstep. A 4xx other than 429 is the caller's mistake and is never retried. The whole retry of
one call is bounded in time (``AGROML_RETRY_MAX_SECONDS``), so a dead project fails instead of hanging.

Why an unreachable host is different: a refused connection or a host name that does not resolve
answers at once and the same way every time; two minutes of backoff only hide a wrong SUPABASE_URL or
a machine that is offline. Those get :data:`UNREACHABLE_ATTEMPTS` quick attempts, then fail naming the
host. Every retry is announced through the ``notice`` callback ("retrying in 2.1 s (attempt 2, ...):
503 from host"), so a slow network is never silent.
"""

from __future__ import annotations

import errno
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from agroml.core.progress import NoticeFn, no_notice

T = TypeVar("T")

#: Statuses worth another try: 429 and every 5xx (this covers 520-524 and 544 as well).
RETRY_STATUSES_DOC = "429, 5xx (incl. 520-524, 544)"
#: Attempts in all (the first one included) for a host that refuses connections or has no address.
UNREACHABLE_ATTEMPTS = 3
#: The longest wait between two of those attempts, in seconds.
UNREACHABLE_WAIT_CAP = 1.0
#: Why a host could not be reached, by the errno of the socket error under the client's exception.
_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED: "connection refused",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.EADDRNOTAVAIL: "address not available",
}


def is_retryable_status(status: int) -> bool:
    """True for 429 and any 5xx; False for everything else, notably 400/401/403/404."""
    return status == 429 or 500 <= status <= 599


class TransientError(Exception):
    """One attempt failed in a way another attempt may fix.

    ``reason`` is short and countable ("http_503", "network", "bad_body", "unreachable"); ``retry_after``
    is the server's Retry-After in seconds when it sent one (we wait at least that, within the cap);
    ``host`` is who failed (shown in retry notices); ``unreachable`` is set, to what happened
    ("connection refused", "name not found (DNS)"), when the host could not be reached at all.
    """

    def __init__(
        self,
        reason: str,
        detail: str = "",
        retry_after: float | None = None,
        host: str = "",
        unreachable: str | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
        self.host = host
        self.unreachable = unreachable

    def summary(self) -> str:
        """What failed and where, for one line: "503 from abc.supabase.co", "abc.supabase.co: connection refused"."""
        where = self.host or "the server"
        if self.unreachable:
            return f"{where}: {self.unreachable}"
        if self.reason.startswith("http_"):
            return f"{self.reason[5:]} from {where}"
        return f"{self.detail or self.reason} from {where}"


def transport_error(exc: BaseException, host: str) -> TransientError:
    """A client's transport exception (httpx.ConnectError, ReadError...) as a TransientError.

    Connection refused, no route and DNS failures are marked ``unreachable`` (a few quick attempts,
    then a message naming the host); anything else (reset, dropped, timed out, cut short) is an ordinary
    network error, retried within the time budget.
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            what = "name not found (DNS)"
            return TransientError(
                "unreachable", f"{host}: {what}: {cause.strerror or cause}", host=host, unreachable=what
            )
        if isinstance(cause, OSError) and cause.errno in _UNREACHABLE_ERRNOS:
            what = _UNREACHABLE_ERRNOS[cause.errno]
            return TransientError("unreachable", f"{host}: {what}", host=host, unreachable=what)
        cause = cause.__cause__ or cause.__context__
    return TransientError("network", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, host=host)


class RetriesExhausted(Exception):
    """The time budget ran out, or the host stayed unreachable; ``last`` is the final transient failure."""

    def __init__(self, last: TransientError, attempts: int, elapsed: float) -> None:
        super().__init__(f"{last} (gave up after {attempts} attempts in {elapsed:.1f} s)")
        self.last = last
        self.attempts = attempts
        self.elapsed = elapsed

    @property
    def unreachable(self) -> bool:
        """True when the host could not be reached at all: more time would not have helped."""
        return self.last.unreachable is not None


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (the delta-seconds form; an HTTP date is ignored)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by ``max_seconds`` of total time per call.

    ``base`` is the largest wait before the first retry (AGROML_RETRY_BASE_SECONDS; tests use a few
    milliseconds). ``retries`` counts every retry made through this policy (thread-safe), so
    summaries can say how much the network misbehaved.
    """

    max_seconds: float = 120.0
    base: float = 0.5
    cap: float = 30.0
    seed: int | None = None
    sleep: Callable[[float], None] = time.sleep
    notice: NoticeFn = no_notice
    retries: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @classmethod
    def from_settings(
        cls, settings: object, max_seconds: float | None = None, notice: NoticeFn = no_notice
    ) -> RetryPolicy:
        """The policy the settings describe (``max_seconds`` may shorten it, e.g. for doctor)."""
        total = float(getattr(settings, "retry_max_seconds", 120.0))
        return cls(
            max_seconds=total if max_seconds is None else min(total, max_seconds),
            base=float(getattr(settings, "retry_base_seconds", 0.5)),
            notice=notice,
        )

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait before retry number ``attempt`` (0-based): uniform in [0, min(cap, base * 2**attempt)]."""
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 30)))
        with self._lock:
            wait = self._rng.uniform(0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.cap))
        return wait

    def call(self, attempt_fn: Callable[[], T]) -> T:
        """Run ``attempt_fn`` until it returns, raises something other than TransientError, or gives up.

        Gives up (RetriesExhausted, wrapping the last TransientError) when the next wait would pass the
        time budget, or after UNREACHABLE_ATTEMPTS attempts that could not reach the host: callers turn
        that into their own typed error or failure reason. Each retry is announced through ``notice``.
        """
        start = time.monotonic()
        attempt = unreachable = 0
        while True:
            try:
                return attempt_fn()
            except TransientError as exc:
                elapsed = time.monotonic() - start
                if exc.unreachable:
                    unreachable += 1
                    wait = min(self.delay(attempt), UNREACHABLE_WAIT_CAP)
                    if unreachable >= UNREACHABLE_ATTEMPTS:
                        raise RetriesExhausted(exc, attempt + 1, elapsed) from exc
                    limit = f"/{attempt + 1 + UNREACHABLE_ATTEMPTS - unreachable}"
                else:
                    wait = self.delay(attempt, exc.retry_after)
                    limit = f", giving up after {self.max_seconds:g} s"
                if elapsed + wait > self.max_seconds:
                    raise RetriesExhausted(exc, attempt + 1, elapsed) from exc
                with self._lock:
                    self.retries += 1
                self.notice(f"retrying in {wait:.1f} s (attempt {attempt + 2}{limit}): {exc.summary()}")
                self.sleep(wait)
                attempt += 1
