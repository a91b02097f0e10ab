"""The content-addressed image cache: ``<image_dir>/ab/<sha256>.<ext>`` plus an index URL -> hash.

Why content addressing: the same photo uploaded twice is stored once, a training split can keep
identical images together, and a file's name proves its content. Every write goes to a temporary
file in the same folder and is renamed into place, so a killed process never leaves a partial image
where a reader could find it. Bytes are accepted only if Pillow decodes them completely within a
pixel budget (decompression bombs, truncated JPEGs and HTML error pages are refused with a reason).
Fetching (hosts, retries, concurrency) lives in :mod:`agroml.images.fetch`; this module only stores.
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from agroml.core import sqlite
from agroml.core.errors import ImageError, StoreError
from agroml.core.files import atomic_write, sweep_stale_temps
from agroml.images.pixels import UNSUPPORTED, unsupported_reason

#: Pixel budget per image (about 8k x 8k); anything larger is treated as a decompression bomb.
MAX_PIXELS = 64_000_000
#: The formats accepted, each decoded by training and predict alike (images.pixels.DECODED_FORMATS).
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif", "MPO": "jpg"}

# Why these names: they are the `reason` of an ImageRejected, counted in every summary.
TOO_LARGE, NOT_AN_IMAGE, TRUNCATED, BOMB = "too_large", "not_an_image", "truncated", "decompression_bomb"


class ImageRejected(ImageError):
    """Bytes that are not an acceptable image; ``reason`` is one of the constants above."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CachedImage:
    sha256: str
    path: Path
    width: int
    height: int


def verify_image(data: bytes, max_bytes: int | None = None) -> tuple[str, int, int]:
    """(extension, width, height) of ``data`` if it fully decodes as an image, else ImageRejected."""
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageRejected(TOO_LARGE, f"{len(data)} bytes is over the {max_bytes}-byte cap")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                if fmt in EXTENSIONS and unsupported_reason(img):  # a format we read, in a mode we cannot
                    raise ImageRejected(UNSUPPORTED, str(unsupported_reason(img)))
                if img.width * img.height > MAX_PIXELS:
                    raise ImageRejected(BOMB, f"{img.width}x{img.height} pixels is over the {MAX_PIXELS} budget")
                img.load()  # decodes every byte: a truncated file fails here, not in training
                size = img.size
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(BOMB, str(exc)) from None
    except UnidentifiedImageError:
        head = data[:64].lstrip().lower()
        kind = "HTML" if head.startswith((b"<!doctype", b"<html")) else "bytes that are not an image"
        raise ImageRejected(NOT_AN_IMAGE, f"{kind} ({len(data)} bytes)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(TRUNCATED, f"image does not decode: {exc}") from None
    ext = EXTENSIONS.get(fmt)
    if ext is None:
        raise ImageRejected(NOT_AN_IMAGE, f"unsupported image format {fmt or 'unknown'}")
    return ext, size[0], size[1]


class ImageCache:
    """Files under ``root`` named by their SHA-256, and an SQLite index from source URL to hash."""

    def __init__(self, root: str | Path, max_bytes: int | None = 15_000_000) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None

    # -- index -------------------------------------------------------------------------------------
    @property
    def index(self) -> sqlite3.Connection:
        if self._con is None:
            path = self.root / "index.db"
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create {self.root}: {exc.strerror}", fix="set AGROML_IMAGE_DIR to a writable folder"
                ) from None
            con = sqlite.connect(
                path,
                setting="AGROML_IMAGE_DIR",
                damaged_fix="move it aside: the cached images stay, and their URLs are indexed again when fetched",
            )
            try:
                con.execute(
                    "CREATE TABLE IF NOT EXISTS urls (url TEXT PRIMARY KEY, sha256 TEXT NOT NULL, "
                    "ext TEXT NOT NULL, fetched_at REAL NOT NULL)"
                )
            except BaseException:
                con.close()
                raise
            self._con = con
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> ImageCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lookup(self, url: str) -> Path | None:
        """The cached file for ``url``, if it was fetched before and the file is still there."""
        with self._lock:
            row = self.index.execute("SELECT sha256, ext FROM urls WHERE url = ?", (url,)).fetchone()
        if row is None:
            return None
        path = self.path_for(row[0], row[1])
        return path if path.exists() else None

    def lookup_many(self, urls: list[str]) -> dict[str, Path]:
        """{url: file} for every url already cached (one query per 500 urls)."""
        found: dict[str, Path] = {}
        for i in range(0, len(urls), 500):
            chunk = urls[i : i + 500]
            marks = ",".join("?" for _ in chunk)
            with self._lock:
                rows = self.index.execute(f"SELECT url, sha256, ext FROM urls WHERE url IN ({marks})", chunk).fetchall()
            for url, sha, ext in rows:
                path = self.path_for(sha, ext)
                if path.exists():
                    found[url] = path
        return found

    def remember(self, url: str, image: CachedImage) -> None:
        with self._lock:
            self.index.execute(
                "INSERT INTO urls(url, sha256, ext, fetched_at) VALUES (?, ?, ?, ?) ON CONFLICT(url) DO UPDATE "
                "SET sha256 = excluded.sha256, ext = excluded.ext, fetched_at = excluded.fetched_at",
                (url, image.sha256, image.path.suffix.lstrip("."), time.time()),
            )

    # -- files -------------------------------------------------------------------------------------
    def sweep_stale_temps(self) -> int:
        """Remove the temporary files that killed writers (pull, import, demo) left in the cache.

        Only files no live process holds are removed (see :func:`agroml.core.files.sweep_stale_temps`),
        so a run may sweep while another writes. Returns how many were removed.
        """
        if not self.root.is_dir():
            return 0
        folders = [self.root, *(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink())]
        return sum(sweep_stale_temps(folder) for folder in folders)

    def path_for(self, sha256: str, ext: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.{ext}"

    def stored_hashes(self) -> set[str]:
        """The content hashes of every image file in the cache, from one listing of its folders.

        Why: asking :meth:`find` row by row costs a stat per extension per image (11.6 s of a 12.4 s
        `stats` on 100,000 rows); one scandir of the 256 folders costs a fraction of that.
        """
        exts = {f".{e}" for e in EXTENSIONS.values()}
        hashes: set[str] = set()
        if not self.root.is_dir():
            return hashes
        for folder in os.scandir(self.root):
            if len(folder.name) != 2 or not folder.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(folder.path):
                stem, dot, ext = entry.name.rpartition(".")
                if dot and f".{ext}" in exts and stem.startswith(folder.name) and entry.is_file():
                    hashes.add(stem)
        return hashes

    def find(self, sha256: str) -> Path | None:
        """The file holding content ``sha256``, whatever its extension."""
        folder = self.root / sha256[:2]
        for ext in dict.fromkeys(EXTENSIONS.values()):
            path = folder / f"{sha256}.{ext}"
            if path.exists():
                return path
        return None

    def put(self, data: bytes, url: str | None = None, verify: bool = True) -> CachedImage:
        """Store ``data`` (after verifying it decodes) and, if given, index it under ``url``."""
        if verify:
            ext, width, height = verify_image(data, self.max_bytes)
        else:
            with Image.open(io.BytesIO(data)) as img:
                ext, (width, height) = EXTENSIONS.get(img.format or "", "jpg"), img.size
        sha = hashlib.sha256(data).hexdigest()
        path = self.path_for(sha, ext)
        if not path.exists():
            atomic_write(path, data)
        image = CachedImage(sha, path, width, height)
        if url is not None:
            self.remember(url, image)
        return image
