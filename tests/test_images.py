"""The content-addressed image cache: verification reasons, atomic writes, the URL index."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from agroml.images.cache import BOMB, NOT_AN_IMAGE, TOO_LARGE, TRUNCATED, ImageCache, ImageRejected, verify_image


def _jpeg(size=(32, 24), color=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _png(size) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size).save(buf, "PNG")
    return buf.getvalue()


def test_put_stores_by_content_hash_and_indexes_the_url(tmp_path):
    data = _jpeg()
    with ImageCache(tmp_path / "images") as cache:
        image = cache.put(data, url="https://h/a.jpg")
        sha = hashlib.sha256(data).hexdigest()
        assert image.sha256 == sha and (image.width, image.height) == (32, 24)
        assert image.path == tmp_path / "images" / sha[:2] / f"{sha}.jpg"
        assert image.path.read_bytes() == data
        assert cache.lookup("https://h/a.jpg") == image.path
        assert cache.lookup("https://h/other.jpg") is None
        assert cache.find(sha) == image.path
        # the same bytes under a second URL are stored once
        cache.put(data, url="https://h/b.jpg")
        assert cache.lookup_many(["https://h/a.jpg", "https://h/b.jpg", "x"]) == {
            "https://h/a.jpg": image.path,
            "https://h/b.jpg": image.path,
        }
        assert len(list((tmp_path / "images").rglob("*.jpg"))) == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", NOT_AN_IMAGE),
        (_jpeg((64, 64))[:300], TRUNCATED),
        (b"\x00" * 100, NOT_AN_IMAGE),
    ],
)
def test_bytes_that_do_not_decode_are_refused_with_a_reason(tmp_path, data, reason):
    with ImageCache(tmp_path / "images") as cache, pytest.raises(ImageRejected) as info:
        cache.put(data, url="u")
    assert info.value.reason == reason
    assert cache.lookup("u") is None
    assert not [p for p in (tmp_path / "images").rglob("*") if p.suffix in (".jpg", ".tmp")]


def test_size_cap_and_decompression_bomb(tmp_path):
    with pytest.raises(ImageRejected) as info:
        verify_image(_jpeg(), max_bytes=100)
    assert info.value.reason == TOO_LARGE
    bomb = _png((9000, 9000))  # 81 Mpx of zeros: a few KB on disk
    assert len(bomb) < 200_000
    with pytest.raises(ImageRejected) as info:
        verify_image(bomb)
    assert info.value.reason == BOMB
