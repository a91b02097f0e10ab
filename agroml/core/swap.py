"""Replace a folder by another so that the folder's path never stops naming a whole folder.

Why not two renames (old away, new in): between them the path names nothing, and a process killed
there leaves no production model at all. POSIX cannot rename a folder onto a non-empty one, but Linux
(renameat2 with RENAME_EXCHANGE, kernel 3.15+, glibc 2.28+) and macOS (renamex_np with RENAME_SWAP)
swap two paths in one atomic step: after it, the path names the new folder and the new folder's old
path names the old one. Where neither exists (Windows, old kernels, file systems without support),
:func:`replace_folder` falls back to two renames and says so; the caller's journal repairs a kill
between them (see agroml.lifecycle.journal).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 0x2  # macOS sys/stdio.h


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


def exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` (both must exist) atomically; False where the system cannot.

    Raises OSError for a real failure (missing path, permission); False only means "not supported",
    so the caller can fall back.
    """
    libc = _libc()
    if libc is None:
        return False
    if sys.platform.startswith("linux"):
        func = getattr(libc, "renameat2", None)
        if func is None:
            return False
        func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        result = func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    elif sys.platform == "darwin":
        func = getattr(libc, "renamex_np", None)
        if func is None:
            return False
        func.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        result = func(os.fsencode(a), os.fsencode(b), _RENAME_SWAP)
    else:
        return False
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # not supported here
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def replace_folder(new: Path, target: Path, old_to: Path) -> bool:
    """Put folder ``new`` at ``target`` and the folder that was there at ``old_to`` (``target`` must exist).

    Returns True when ``target`` always named a whole folder (atomic exchange), False when the two-rename
    fallback was used (``target`` named nothing for the moment between them).
    """
    if exchange(new, target):
        os.replace(new, old_to)  # ``new`` now holds the old folder
        return True
    os.replace(target, old_to)
    os.replace(new, target)
    return False
