"""Results of the read routes kept while the local store and its image cache stay as they were.

Why: /data-stats and /data-distribution read the whole store (100,000 rows: about a second of CPU),
and a dashboard or a load balancer asks the same question many times between two pulls. Each result
is kept under (route, arguments, :meth:`agroml.data.freshness.StoreWatch.token`); the token changes
with any commit to the store and any change to the image cache, so the next request after a pull, a
demo or an import computes afresh, and a new row shows up at once. When the token cannot vouch for
the state (a change just made, another source than the local store), nothing is kept.

Identical requests that arrive together wait for the first one's result instead of each reading the
store (8 clients on one cold question would otherwise do the work 8 times). A kept result keeps its
``generated_at``: the time it was computed, which is still what it describes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

from agroml.data.freshness import StoreWatch

T = TypeVar("T")
#: Results kept per process (each a report of a few kB): the least recently used go first.
MAX_ENTRIES = 64


class Memo:
    """Results per (key, store token); with ``watch`` None (not the local store) every call computes."""

    def __init__(self, watch: StoreWatch | None, max_entries: int = MAX_ENTRIES) -> None:
        self.watch = watch
        self.max_entries = max_entries
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._computing: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``'s result for ``key`` in the store's present state: kept, or computed (once) now."""
        token = self.watch.token() if self.watch is not None else None
        if token is None:
            return compute()
        full = (key, token)
        with self._lock:
            if full in self._items:
                self._items.move_to_end(full)
                return self._items[full]  # type: ignore[return-value]
            busy = self._computing.setdefault(full, threading.Lock())
        with busy:  # the first caller computes; the others wait here, then find its result
            with self._lock:
                if full in self._items:
                    return self._items[full]  # type: ignore[return-value]
            try:
                value = compute()
                with self._lock:
                    self._items[full] = value
                    while len(self._items) > self.max_entries:
                        self._items.popitem(last=False)
            finally:
                with self._lock:
                    self._computing.pop(full, None)
        return value

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()


__all__ = ["MAX_ENTRIES", "Memo"]
