"""Files: atomic writes, the one JSON encoding, free names and UTC time stamps.

Why atomic writes everywhere: a run folder, an evaluation report, a cached image or an export that a
kill interrupts half-way must not be left half-written where a whole one is expected. Every write goes
to a temporary sibling, is flushed to disk, and is renamed over the target in one step.

Why one JSON encoding: ``json.dumps`` raises on a numpy integer half-way through a write, leaving a
truncated file. :func:`to_jsonable` turns numpy scalars and arrays, paths,
times, tuples and sets into plain JSON values and NaN / infinities into null *before* anything is
written, so a write happens whole or not at all, and the CLI's ``--json``, the registry and run folders
all encode values the same way.

Permissions: files another account must read (run folders, plots, exports without personal data)
get the usual umask permissions; ``private=True`` (personal data) makes them owner-only (0600).
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

PRIVATE_MODE = 0o600
#: Windows can neither rename nor delete a file that is open: a writer closes its temporary file (and so
#: drops the lock) just before the rename, and a sweeper closes the file it locked before deleting it.
_CLOSE_BEFORE_RENAME = os.name == "nt"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``os.umask`` alone must set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc (macOS, Windows): set and restore at once
    os.umask(mask)
    return mask


def public_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def _lock(fd: int, blocking: bool) -> bool:
    """Lock ``fd`` exclusively; False if another process holds it (non-blocking).

    Why filelock's descriptor lock: it is flock on Linux and macOS and LockFileEx on Windows, and the
    operating system drops it when its holder dies on both, so the temp-file sweep works everywhere
    (with fcntl alone it was skipped on Windows).
    """
    from filelock import lock_descriptor

    return lock_descriptor(fd, blocking=blocking)


def open_temp(final: Path, *, private: bool = False) -> tuple[int, Path]:
    """A new, locked temporary sibling of ``final``: ``.<name>.<random>.tmp``, open for writing.

    Why the lock: a killed writer leaves its temporary file behind, and the next run must tell it from
    a live writer's. The writer holds an exclusive flock on its temporary file until the file is renamed
    into place (the kernel drops the lock when the writer dies, even by SIGKILL), so
    :func:`sweep_stale_temps` removes exactly the files whose writer is gone. A sweeper that locked the
    file first deletes it before letting go, so the writer, after taking its lock, checks that its name
    still points at its file and starts again if not. Returns (descriptor, path); closing the
    descriptor releases the lock: close it after the rename.
    """
    final = Path(final)
    for _ in range(100):
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        _lock(fd, blocking=True)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(name)):
                mode = PRIVATE_MODE if private else public_mode()
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, mode)
                else:  # pragma: no cover - Windows before Python 3.13 (only the read-only bit applies there)
                    os.chmod(name, mode)
                return fd, Path(name)
        except FileNotFoundError:
            pass
        os.close(fd)  # swept between mkstemp and the lock: take another name
    raise OSError(f"could not create a temporary file beside {final}")


def sweep_stale_temps(folder: Path, pattern: str = ".*.tmp") -> int:
    """Remove the temporary files in ``folder`` (matching ``pattern``) whose writer is no longer alive.

    A file counts as stale when its exclusive lock can be taken (see :func:`open_temp`): files of a
    live writer, in this process or another, are left alone. Returns how many were removed.
    """
    removed = 0
    for path in Path(folder).glob(pattern):
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:  # gone meanwhile, a link, or not ours to read
            continue
        try:
            stale = stat.S_ISREG(os.fstat(fd).st_mode) and _lock(fd, blocking=False)
            if stale and not _CLOSE_BEFORE_RENAME:
                path.unlink(missing_ok=True)  # under our lock: the writer re-checks its name
                removed += 1
        finally:
            os.close(fd)
        if stale and _CLOSE_BEFORE_RENAME:  # pragma: no cover - Windows: a file someone holds open stays
            try:
                path.unlink(missing_ok=True)
                removed += 1
            except PermissionError:
                pass
    return removed


def atomic_write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename: all or nothing.

    The temporary file (:func:`open_temp`) is locked while it is written, so a crashed write can be
    recognized and removed by :func:`sweep_stale_temps`; its mode is set before the rename (mkstemp
    makes it 0600, which would hide a model's labels from the account that serves it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        fd, tmp = open_temp(path, private=private)
        closed = False
        try:
            try:
                view = memoryview(data)
                while view:  # os.write may write less than asked
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
                if _CLOSE_BEFORE_RENAME:  # pragma: no cover - Windows
                    os.close(fd)
                    closed = True
                os.replace(tmp, path)
                return
            finally:
                if not closed:
                    os.close(fd)  # after the rename: the lock guards the temporary name until it is gone
        except FileNotFoundError:  # pragma: no cover - Windows: swept between the close and the rename
            if attempt == 2:
                raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def write_text(path: Path, text: str, *, private: bool = False) -> None:
    """UTF-8 text, atomically."""
    atomic_write(path, text.encode("utf-8"), private=private)


def to_jsonable(value: Any) -> Any:
    """Plain JSON values only: numpy scalars and arrays, tuples, sets, paths and times made safe.

    NaN and infinities become None (they are not JSON); keys become strings.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):  # numpy scalar or array
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """``value`` as JSON text through :func:`to_jsonable` (unicode kept as is)."""
    return json.dumps(to_jsonable(value), indent=indent, sort_keys=sort_keys, ensure_ascii=False)


def write_json(path: Path, data: Any, *, private: bool = False) -> None:
    """``data`` as indented JSON with a final newline, atomically."""
    write_text(path, json_text(data) + "\n", private=private)


def free_name(path: Path) -> Path:
    """``path``, or ``<stem>-2<suffix>``, ``<stem>-3<suffix>``... if taken (nothing is overwritten)."""
    candidate, n = Path(path), 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def utc_stamp(ts: float | None) -> str | None:
    """UTC seconds as ``2026-03-01T10:15:00Z`` (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
