"""The content-addressed image cache: verification reasons, atomic writes, the URL index."""

from __future__ import annotations

import hashlib
import io

import image_formats
import numpy as np
import pytest
from PIL import Image

from agroml.images.cache import BOMB, NOT_AN_IMAGE, TOO_LARGE, TRUNCATED, ImageCache, ImageRejected, verify_image
from agroml.images.pixels import UNSUPPORTED, check_image, load_image, load_image_array


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


# --- every accepted format decodes, upright, the same way for training and predict -------------------
def _gap(decoded: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute difference from the reference resized as training resizes (0-255 scale)."""
    import tensorflow as tf

    size = decoded.shape[:2]
    want = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(reference, size, antialias=True)), 0, 255), tf.uint8)
    return float(np.abs(decoded.astype(int) - np.asarray(want).astype(int)).mean())


def test_every_accepted_format_decodes_upright_rgb_for_training_and_predict(tmp_path):
    with ImageCache(tmp_path / "images") as cache:
        for name, data, reference in image_formats.cases():
            cached = cache.put(data, url=f"file:///{name}")  # accepted by the cache
            assert check_image(cached.path) is None, name  # kept by training's check
            train_pixels = load_image_array(cached.path, 32)  # training's tf.data decode
            predict_pixels = load_image(cached.path, (32, 32))  # predict's
            assert train_pixels.shape == (32, 32, 3) and train_pixels.dtype == np.uint8, name
            np.testing.assert_array_equal(train_pixels, predict_pixels, err_msg=name)
            assert _gap(train_pixels, reference) < 8, (name, _gap(train_pixels, reference))
            wide = load_image(cached.path, (16, 24))  # predict's other-shape path (Pillow) agrees too
            assert _gap(wide, reference) < 8, name


def test_exif_orientation_is_applied_and_the_cache_keeps_the_uploaded_bytes(tmp_path):
    by_name = {name: (data, ref) for name, data, ref in image_formats.cases()}
    data, reference = by_name["jpeg_exif_rotated.jpg"]
    with ImageCache(tmp_path / "images") as cache:
        cached = cache.put(data)
    assert cached.path.read_bytes() == data and cached.sha256 == hashlib.sha256(data).hexdigest()
    assert (cached.width, cached.height) == (image_formats.H, image_formats.W)  # stored as the sensor wrote it
    pixels = load_image_array(cached.path, 32)
    assert _gap(pixels, reference) < 8
    assert _gap(pixels, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))) > 40  # unrotated is far off


def test_formats_and_modes_the_pipeline_cannot_decode_are_refused_at_cache_time(tmp_path):
    float_tiff = io.BytesIO()
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(float_tiff, "TIFF")  # mode F: no 0-255 scale
    icon = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(icon, "ICO")
    with ImageCache(tmp_path / "images") as cache:
        for data, reason in ((float_tiff.getvalue(), UNSUPPORTED), (icon.getvalue(), NOT_AN_IMAGE)):
            with pytest.raises(ImageRejected) as info:
                cache.put(data)
            assert info.value.reason == reason
    assert not list((tmp_path / "images").glob("*/*.*"))


def test_sweep_removes_dead_writers_temporary_files_and_keeps_live_ones(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "images"
    with ImageCache(root) as cache:
        image = cache.put(_jpeg())
    dead = image.path.parent / f".{image.path.name}.d3ad.tmp"
    dead.write_bytes(b"half")
    live = image.path.parent / ".other.jpg.l1ve.tmp"
    live.write_bytes(b"being written")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,sys,time; f=open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(60)", str(live)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert ImageCache(root).sweep_stale_temps() == 1
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert not dead.exists() and live.exists() and image.path.exists()
    assert ImageCache(root).sweep_stale_temps() == 1  # its writer is gone now
    assert not live.exists()
