"""Pixels: the one place that turns image files into uint8 RGB arrays, for training and predicting alike.

Why one module: a model is only as good as the agreement between the pixels it trained on and the
pixels it is asked about. Training's tf.data pipeline and ``predict`` / ``evaluate`` call the same
decode and the same antialiased resize, so a run's test figures are reproduced by evaluating it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agroml.core.errors import ImageError

#: Formats TensorFlow decodes natively (tf.io.decode_image, plus decode_webp).
TF_FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp", "WEBP": "webp"}
#: Reasons an image is left out of training (counted, never silent).
CORRUPT, UNSUPPORTED = "corrupt_image", "unsupported_format"


def check_image(path: Path, size: int = 64) -> str | None:
    """None if ``path`` decodes completely in a format TensorFlow reads, else the reason it is left out.

    JPEG draft mode decodes at a reduced scale: it still reads every byte (truncation is caught) at a
    fraction of the cost of a full decode.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.format not in TF_FORMATS:
                return UNSUPPORTED
            if img.format == "JPEG":
                img.draft("RGB", (size, size))
            img.load()
    except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError...) for bad bytes
        return CORRUPT
    return None


def decode_resize(path: Any, image_size: int) -> Any:
    """A file path tensor -> (size, size, 3) uint8 RGB, resized with antialiasing (the whole image kept)."""
    import tensorflow as tf

    data = tf.io.read_file(path)
    is_webp = tf.strings.regex_full_match(tf.strings.lower(path), r".*\.webp")
    # decode_image does not read WebP (phones upload it); decode_webp gives RGBA, the alpha is dropped
    image = tf.cond(
        is_webp,
        lambda: tf.io.decode_webp(data, channels=4)[..., :3],
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
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
    time, so `evaluate` on a run's test split reproduces the test figures in its metrics.json. Files
    TensorFlow cannot decode go through Pillow, which either reads them (TIFF, say) or says why not.
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
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: does not decode ({exc})") from None
    resized = tf.image.resize(pixels, size, antialias=True)
    return np.asarray(tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8))
