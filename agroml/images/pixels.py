"""Pixels: the one place that turns image files into uint8 RGB arrays, for training and predicting alike.

Why one module: a model is only as good as the agreement between the pixels it trained on and the
pixels it is asked about. Training's tf.data pipeline and ``predict`` / ``evaluate`` call the same
decode and the same antialiased resize, so a run's test figures are reproduced by evaluating it.

Why orientation and colour are normalized HERE, when a file is decoded, and not when it is cached:
the cache is content-addressed by the bytes the farmer uploaded (the same upload pulled again, or
imported from a folder, gets the same hash, and so the same split), and images cached before this
rule existed need no migration. Re-encoding at cache time would name a file by bytes nobody uploaded,
make the hash depend on the Pillow version, and turn every rotated phone JPEG into a lossy re-encode
or a PNG five times its size. So the cache keeps the original, and every reader applies the same rules:

- **TensorFlow decodes** plain JPEG (RGB or grey) and PNG without an EXIF rotation: most photos, at
  TensorFlow's speed with no Python in the loop, pixel for pixel what earlier runs trained on.
- **Pillow decodes** everything else the cache accepts: a JPEG or PNG whose EXIF orientation is not
  "upright" (phones store the sensor's pixels and a rotation tag: training on them unrotated would
  teach sideways leaves), CMYK JPEGs, WebP (lossy, lossless, with alpha: TensorFlow's WebP support
  varies by version), GIF (first frame), BMP and TIFF. Alpha is dropped, as TensorFlow does; 16-bit
  grey is scaled to 8 bits, not clipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from agroml.core.errors import ImageError

#: Formats the pipeline decodes (the image cache accepts exactly these: see images.cache.EXTENSIONS).
DECODED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF"})
#: Pillow modes turned into RGB faithfully (floating-point TIFFs, "F", have no agreed 0-255 scale).
DECODED_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16"}
    | {"I;16L", "I;16B", "I;16N"}
)
#: Reasons an image is left out of training (counted, never silent).
CORRUPT, UNSUPPORTED = "corrupt_image", "unsupported_format"
_EXIF_ORIENTATION = 0x0112
_EMPTY = np.zeros((0, 0, 3), dtype=np.uint8)


def unsupported_reason(img: Image.Image) -> str | None:
    """Why an opened image cannot be decoded to RGB by :func:`decode_resize`, or None if it can."""
    if img.format not in DECODED_FORMATS:
        return f"unsupported image format {img.format or 'unknown'}"
    if img.mode not in DECODED_MODES:
        return f"unsupported pixel mode {img.mode} ({img.format})"
    return None


def _needs_pillow(img: Image.Image) -> bool:
    """True unless TensorFlow's own decoder gives the right upright RGB pixels for this file."""
    if img.format not in ("JPEG", "MPO", "PNG") or img.mode == "CMYK":
        return True
    return img.getexif().get(_EXIF_ORIENTATION, 1) != 1


def pillow_rgb(img: Image.Image) -> np.ndarray:
    """An opened image as (height, width, 3) uint8 RGB: first frame, EXIF orientation applied."""
    img.seek(0)
    upright = ImageOps.exif_transpose(img)
    if upright.mode.startswith("I"):  # 16-bit grey (PNG, TIFF): keep the top 8 bits, as TensorFlow does
        grey = np.asarray(upright, dtype=np.int64)
        if upright.mode != "I" or grey.max(initial=0) > 255:
            grey = grey >> 8
        grey = np.clip(grey, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(upright.convert("RGB"), dtype=np.uint8)


def _pillow_pixels_or_empty(path: Any) -> np.ndarray:
    """Pillow's RGB pixels for a file TensorFlow cannot decode faithfully; an empty array for one it can."""
    with Image.open(os.fsdecode(np.asarray(path).item())) as img:
        return pillow_rgb(img) if _needs_pillow(img) else _EMPTY


def check_image(path: Path, size: int = 64) -> str | None:
    """None if ``path`` decodes completely the way training decodes it, else the reason it is left out.

    JPEG draft mode decodes at a reduced scale: it still reads every byte (truncation is caught) at a
    fraction of the cost of a full decode.
    """
    try:
        with Image.open(path) as img:
            if unsupported_reason(img):
                return UNSUPPORTED
            if _needs_pillow(img):
                pillow_rgb(img)
                return None
            if img.format == "JPEG":
                img.draft("RGB", (size, size))
            img.load()
    except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError...) for bad bytes
        return CORRUPT
    return None


def decode_resize(path: Any, image_size: int) -> Any:
    """A file path tensor -> (size, size, 3) uint8 RGB, resized with antialiasing (the whole image kept).

    Pillow is asked first (it reads the header only) whether the file needs it (see the module
    docstring); if not, TensorFlow decodes the bytes itself.
    """
    import tensorflow as tf

    pillow = tf.numpy_function(_pillow_pixels_or_empty, [path], tf.uint8, stateful=False)
    image = tf.cond(
        tf.size(pillow) > 0,
        lambda: pillow,
        lambda: tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False),
    )
    image = tf.ensure_shape(image, [None, None, 3])
    image = tf.image.resize(image, [image_size, image_size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def load_image_array(path: str | Path, image_size: int) -> np.ndarray:
    """One file as a (size, size, 3) uint8 array, resized exactly as training resized it."""
    import tensorflow as tf

    return decode_resize(tf.constant(str(path)), image_size).numpy()


def load_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An image file as (height, width, 3) uint8 RGB at ``size``, resized exactly as training resized it.

    Why training's own loader first: the same decode and the same antialiased resize as at training
    time, so `evaluate` on a run's test split reproduces the test figures in its metrics.json. A file
    it cannot decode goes through Pillow, which either reads it or says why not.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    if size[0] == size[1]:
        try:
            return load_image_array(path, size[0])
        except Exception:  # TensorFlow raises InvalidArgumentError and kin; Pillow tells why below
            pass
    return _pil_load(path, size)


def _pil_load(path: Path, size: tuple[int, int]) -> np.ndarray:
    import tensorflow as tf

    try:
        with Image.open(path) as img:
            reason = unsupported_reason(img)
            if reason:
                raise ImageError(f"{path}: {reason}")
            pixels = pillow_rgb(img)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: does not decode ({exc})") from None
    resized = tf.image.resize(pixels, size, antialias=True)
    return np.asarray(tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8))
