"""Test helper: one small image in every format and pixel mode the image cache accepts.

Each case is (file name, encoded bytes, the upright RGB pixels a decoder must give). The picture is
two colour halves with a marked corner, so a decode that loses colour, channels or orientation (an
EXIF rotation ignored) is far from its reference.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

W, H = 48, 32  # not square: a rotation changes the shape


def upright(left: tuple[int, int, int], right: tuple[int, int, int]) -> Image.Image:
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[:, : W // 2], pixels[:, W // 2 :] = left, right
    pixels[: H // 4, : W // 4] = (250, 250, 250)  # the top-left corner: shows which way is up
    return Image.fromarray(pixels)


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def cases(left=(200, 40, 30), right=(30, 60, 200)) -> list[tuple[str, bytes, np.ndarray]]:
    """Every accepted format and mode: (name, bytes, reference RGB pixels at full size)."""
    im = upright(left, right)
    rgb = np.asarray(im)
    grey = np.asarray(im.convert("L").convert("RGB"))
    grey16 = np.asarray(im.convert("L"), dtype=np.uint16) * 257
    alpha = im.convert("RGBA")
    alpha.putalpha(200)  # partly transparent: the colour underneath is what a model sees
    # phone photos: the sensor's pixels, turned, plus a tag saying how to turn them back upright
    turned = im.transpose(Image.Transpose.ROTATE_90)  # orientation 6 means "rotate 90 clockwise to view"
    mirrored = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # orientation 2
    frames = [im.convert("P"), Image.new("RGB", (W, H), (0, 255, 0)).convert("P")]
    out = [
        ("jpeg_baseline.jpg", _bytes(im, "JPEG", quality=95), rgb),
        ("jpeg_progressive.jpg", _bytes(im, "JPEG", quality=95, progressive=True), rgb),
        ("jpeg_cmyk.jpg", _bytes(im.convert("CMYK"), "JPEG", quality=95), rgb),
        ("jpeg_grey.jpg", _bytes(im.convert("L"), "JPEG", quality=95), grey),
        ("jpeg_exif_rotated.jpg", _bytes(turned, "JPEG", quality=95, exif=_exif(6)), rgb),
        ("jpeg_exif_mirrored.jpg", _bytes(mirrored, "JPEG", quality=95, exif=_exif(2)), rgb),
        ("png_rgb.png", _bytes(im, "PNG"), rgb),
        ("png_16bit_grey.png", _bytes(Image.fromarray(grey16), "PNG"), grey),
        ("png_grey.png", _bytes(im.convert("L"), "PNG"), grey),
        ("png_palette.png", _bytes(im.convert("P", palette=Image.Palette.ADAPTIVE, colors=8), "PNG"), rgb),
        ("png_rgba.png", _bytes(alpha, "PNG"), rgb),
        ("png_la.png", _bytes(im.convert("LA"), "PNG"), grey),
        ("png_exif_rotated.png", _bytes(turned, "PNG", exif=_exif(6)), rgb),
        ("webp_lossy.webp", _bytes(im, "WEBP", quality=95), rgb),
        ("webp_lossless.webp", _bytes(im, "WEBP", lossless=True), rgb),
        ("webp_alpha.webp", _bytes(alpha, "WEBP", lossless=True, exact=True), rgb),
        ("webp_exif_rotated.webp", _bytes(turned, "WEBP", lossless=True, exif=_exif(6)), rgb),
        ("gif_first_frame.gif", _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:]), rgb),
        ("bmp_rgb.bmp", _bytes(im, "BMP"), rgb),
        ("bmp_grey.bmp", _bytes(im.convert("L"), "BMP"), grey),
        ("tiff_rgb.tif", _bytes(im, "TIFF"), rgb),
        ("tiff_16bit_grey.tif", _bytes(Image.fromarray(grey16), "TIFF"), grey),
        ("tiff_cmyk.tif", _bytes(im.convert("CMYK"), "TIFF"), rgb),
    ]
    return out
