"""Whether the local store or its image cache changed: a token that is equal only while nothing did.

Why: ``stats`` and ``distribution`` read the whole store (100,000 rows: about a second), and a server
answers the same question many times between two pulls. A reader that keeps each result with the
token it was computed under can serve it again while :meth:`StoreWatch.token` returns the same value,
and must compute again the moment it differs, so a new row shows up at once.

What the token holds, and why each part is exact:
- the store: SQLite's ``PRAGMA data_version`` on a connection kept open for the purpose. SQLite changes
  it whenever ANOTHER connection (any process) commits, WAL checkpoints included; this connection never
  writes. Plus the file's device and inode, so a store moved aside and made anew is a new store.
- the image cache (readiness counts the rows whose image is missing): the modification time and size
  of its root, of each of its two-character folders (adding, renaming or deleting an image changes its
  folder's) and of its URL index (and the index's WAL). A time can only say "changed" if it moved: when
  any of them is younger than :data:`RACY_S`, a change within the same clock tick could go unseen, so
  the token is None ("cannot tell"; the reader computes and keeps nothing), as git does with racy files.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

#: Times younger than this many seconds cannot prove that nothing changed since (coarse file clocks).
RACY_S = 2.0
#: The image index's files whose times matter: not its -shm, which readers write too.
INDEX_FILES = ("index.db", "index.db-wal")


class StoreWatch:
    """Watches one store file and one image cache folder; thread-safe; :meth:`close` when done."""

    def __init__(self, db_path: str | Path, image_dir: str | Path) -> None:
        self.db_path = Path(db_path)
        self.image_dir = Path(image_dir)
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None
        self._inode: tuple[int, int] | None = None

    def token(self) -> tuple[object, ...] | None:
        """A value equal to an earlier one only if neither the store nor the cache changed in between;
        None when that cannot be known now (no store yet, an unreadable one, a change just made)."""
        try:
            with self._lock:
                store = self._store_version()
            images = _folder_times(self.image_dir)
        except (OSError, sqlite3.Error):
            return None
        if store is None or images is None:
            return None
        return store, images

    def _store_version(self) -> tuple[int, int, int] | None:
        stat = self.db_path.stat()  # OSError (no store) -> None: nothing to keep a result for
        inode = (stat.st_dev, stat.st_ino)
        if self._con is None or inode != self._inode:
            self.close_connection()
            # mode=rw: never creates a store; the connection only ever reads one pragma
            self._con = sqlite3.connect(f"{self.db_path.resolve().as_uri()}?mode=rw", uri=True, check_same_thread=False)
            self._inode = inode
        version = int(self._con.execute("PRAGMA data_version").fetchone()[0])
        return (*inode, version)

    def close_connection(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def close(self) -> None:
        with self._lock:
            self.close_connection()


def _folder_times(root: Path) -> tuple[tuple[str, int, int], ...] | None:
    """(name, mtime ns, size) of the cache root, its two-character folders and its index files; None when
    one is too young to vouch for (see the module's note). A missing cache is a state of its own: ()."""
    if not root.is_dir():
        return ()
    entries = [("", os.stat(root))]
    with os.scandir(root) as listing:
        for entry in listing:
            if (len(entry.name) == 2 and entry.is_dir(follow_symlinks=False)) or entry.name in INDEX_FILES:
                entries.append((entry.name, entry.stat(follow_symlinks=False)))
    newest = max(stat.st_mtime_ns for _, stat in entries)
    if newest > (time.time() - RACY_S) * 1e9:
        return None
    return tuple(sorted((name, stat.st_mtime_ns, stat.st_size) for name, stat in entries))


__all__ = ["RACY_S", "StoreWatch"]
