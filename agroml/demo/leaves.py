"""Procedurally drawn demo photos: crop leaves with pest / disease symptoms, and stored produce.

Why draw instead of shipping photos: the demo must work offline, be deterministic (same seed, same
bytes) and be small. Why so much nuisance (pose, scale, lighting, colour cast, clutter, blur, JPEG
quality, symptom count and size): a classifier trained on it must learn the symptom's shape and
texture, not a trivial cue such as the mean colour. Symptoms are drawn large enough to survive a
resize to 96x96, so a small CNN trained from scratch can still learn them.

Everything random comes from the ``numpy.random.Generator`` passed in; nothing reads global state.
A leaf is drawn in a canonical frame (lying along x, ``t`` in [0, 1] from base to tip, ``s`` in
[-1, 1] across the blade, veins at constant ``s``) and then placed with one affine transform.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from agroml.demo.produce import draw_storage

SIZE = 256
#: Canonical leaf canvas (width, height) and the leaf's extent in it.
_CW, _CH, _X0, _LEN, _CY = 320, 180, 12, 296, 90

PEST_CLASSES: tuple[str, ...] = ("fall_armyworm", "aphids", "stem_borer", "leaf_miner", "healthy")
DISEASE_CLASSES: tuple[str, ...] = ("common_rust", "gray_leaf_spot", "northern_leaf_blight", "maize_streak", "healthy")

Color = tuple[int, int, int]


def _jitter(rng: np.random.Generator, color: Color, amount: float = 18) -> Color:
    """``color`` with Gaussian noise per channel (plain Python: called thousands of times per image)."""
    noise = rng.normal(0, amount / 2, 3).tolist()
    return _rgb(min(255, max(0, int(c + d))) for c, d in zip(color, noise, strict=True))


def _rgb(values: Iterable[Any]) -> Color:
    """Three channel values as an (r, g, b) tuple of ints."""
    r, g, b = (int(v) for v in values)
    return r, g, b


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Blotchy noise in about [-1, 1]: random values on a coarse grid, bicubically enlarged."""
    small = rng.normal(0, 1, (max(2, h // cell), max(2, w // cell))).astype(np.float32)
    return np.asarray(Image.fromarray(small, "F").resize((w, h), Image.Resampling.BICUBIC))


class Leaf:
    """One leaf in the canonical frame: RGB and alpha arrays plus the (t, s) -> pixel mapping."""

    def __init__(self, rng: np.random.Generator, yellowing: float = 0.0, textured: bool = True) -> None:
        self.hwmax = float(rng.uniform(34, 72))
        self.a, self.b = float(rng.uniform(0.25, 0.6)), float(rng.uniform(0.45, 1.0))
        tpeak = self.a / (self.a + self.b)
        self.fpeak = tpeak**self.a * (1 - tpeak) ** self.b
        self.bend = float(rng.uniform(-14, 14))
        self.nveins = int(rng.integers(7, 13))
        if textured:
            self._texture(rng, yellowing)
        else:
            self._silhouette(rng, yellowing)

    def _silhouette(self, rng: np.random.Generator, yellowing: float) -> None:
        """A flat-coloured leaf with a midrib: enough for an out-of-focus neighbour, at a tenth of the cost."""
        ts = np.linspace(0.0, 1.0, 40).tolist()
        outline = [self.point(t, 1.0) for t in ts] + [self.point(t, -1.0) for t in reversed(ts)]
        alpha = Image.new("L", (_CW, _CH), 0)
        ImageDraw.Draw(alpha).polygon(outline, fill=255)
        green = (int(rng.uniform(45, 95) + 120 * yellowing), int(rng.uniform(105, 165)), int(rng.uniform(25, 65)))
        rgb = Image.new("RGB", (_CW, _CH), green)
        ImageDraw.Draw(rgb).line([self.point(t, 0.0) for t in ts], fill=tuple(min(255, c + 35) for c in green), width=2)
        self.rgb, self.alpha = np.asarray(rgb), np.asarray(alpha)

    def _texture(self, rng: np.random.Generator, yellowing: float) -> None:
        """Parallel veins converging at the tip, a pale midrib, darker edges, mottling and a yellowing tip."""
        f32 = np.float32
        t = (np.arange(_CW, dtype=f32) - _X0) / f32(_LEN)
        hw = self.half_width(t).astype(f32)
        yc = self.center(t).astype(f32)
        ys = np.arange(_CH, dtype=f32)[:, None]
        s = (ys - yc) / np.maximum(hw, f32(1e-3))
        s[:, hw <= 0] = 9.0
        inside = np.clip((1 - np.abs(s)) * hw, 0, 1)  # about one pixel of anti-aliased edge
        self.alpha = (inside * 255).astype(np.uint8)

        base = np.array([rng.uniform(45, 95), rng.uniform(105, 165), rng.uniform(25, 65)], f32)
        tipyellow = (np.clip((t - 0.75) / 0.25, 0, 1) * f32(rng.uniform(0, 0.5)) + f32(yellowing))[None, :, None]
        shade = (
            1
            + f32(0.07) * np.cos(f32(np.pi * self.nveins) * s)
            - f32(0.18) * s * s
            + f32(0.06) * smooth_noise(rng, _CH, _CW, 24)
            + rng.standard_normal((_CH, _CW), dtype=f32) * f32(0.025)
        )
        midrib = np.exp(-np.square(s * (hw / f32(2.2)))) * f32(rng.uniform(25, 55))
        col = base * (1 - tipyellow) + np.array([200, 190, 70], f32) * tipyellow
        rgb = col * shade[..., None] + midrib[..., None]
        self.rgb = np.clip(rgb, 0, 255).astype(np.uint8)

    def half_width(self, t: np.ndarray | float) -> np.ndarray:
        tt = np.clip(t, 0, 1)
        return np.where(
            (np.asarray(t) > 0) & (np.asarray(t) < 1), self.hwmax * tt**self.a * (1 - tt) ** self.b / self.fpeak, 0.0
        )

    def center(self, t: np.ndarray | float) -> np.ndarray:
        return _CY + self.bend * (4 * (np.asarray(t) - 0.5) ** 2 - 0.5)

    def point(self, t: float, s: float) -> tuple[float, float]:
        """Canvas pixel of leaf coordinate (t along, s across); plain floats, it is called very often."""
        t, s = float(t), float(s)
        hw = self.hwmax * t**self.a * (1 - t) ** self.b / self.fpeak if 0.0 < t < 1.0 else 0.0
        return _X0 + t * _LEN, _CY + self.bend * (4 * (t - 0.5) ** 2 - 0.5) + s * hw

    def vein_s(self, rng: np.random.Generator) -> float:
        """The s of a random vein (inside the blade, not the edge)."""
        k = int(rng.integers(-(self.nveins - 1) // 2, (self.nveins - 1) // 2 + 1))
        return 2 * k / self.nveins

    def images(self) -> tuple[Image.Image, Image.Image]:
        return Image.fromarray(self.rgb, "RGB"), Image.fromarray(self.alpha, "L")


def _blob(
    cx: float, cy: float, r: float, rng: np.random.Generator, jag: float = 0.4, n: int = 12, stretch: float = 1.0
) -> list[tuple[float, float]]:
    """An irregular closed polygon around (cx, cy): ragged holes, pellets, mould patches."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * (1 - jag / 2 + jag * rng.random(n))
    return [(cx + stretch * q * math.cos(a), cy + q * math.sin(a)) for a, q in zip(ang, rad, strict=True)]


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 10) -> list[tuple[float, float]]:
    ca, sa = math.cos(angle), math.sin(angle)
    pts = []
    for k in range(n):
        a = 2 * math.pi * k / n
        x, y = rx * math.cos(a), ry * math.sin(a)
        pts.append((cx + x * ca - y * sa, cy + x * sa + y * ca))
    return pts


# --- pest symptoms ---------------------------------------------------------------------------------
def _fall_armyworm(
    leaf: Leaf, rgb: ImageDraw.ImageDraw, alpha: ImageDraw.ImageDraw, rng: np.random.Generator, k: float
) -> None:
    """Large ragged chewed holes with brown rims, bitten edges, papery windows and dark frass."""
    holes = []
    for _ in range(max(2, round(k * rng.integers(2, 5)))):
        t, s = rng.uniform(0.12, 0.85), rng.uniform(-0.5, 0.5)
        x, y = leaf.point(t, s)
        r = rng.uniform(14, 26) * min(1.0, 0.5 + float(leaf.half_width(t)) / 50)
        holes.append((x, y, r))
        rgb.polygon(_blob(x, y, r * 1.25, rng, 0.5, 14), fill=_jitter(rng, (120, 100, 55)))
        alpha.polygon(_blob(x, y, r, rng, 0.6, 14), fill=0)
    for _ in range(int(rng.integers(1, 4))):  # bites from the edge
        t, side = rng.uniform(0.15, 0.85), rng.choice([-1.0, 1.0])
        x, y = leaf.point(t, side)
        alpha.polygon(_blob(x, y, rng.uniform(7, 16), rng, 0.7, 14), fill=0)
    for _ in range(int(rng.integers(0, 3))):  # windowpane scraping by young larvae
        x, y = leaf.point(rng.uniform(0.15, 0.85), rng.uniform(-0.5, 0.5))
        rgb.polygon(_blob(x, y, rng.uniform(4, 9), rng, 0.5, 10, 2.0), fill=_jitter(rng, (200, 205, 150)))
    for x, y, r in holes[: int(rng.integers(2, len(holes) + 1))]:
        for _ in range(int(rng.integers(12, 26))):  # frass pellets around the feeding site
            px, py = x + rng.normal(0, r * 1.1), y + rng.normal(0, r * 0.9)
            rgb.polygon(_blob(px, py, rng.uniform(2.8, 4.8), rng, 0.5, 6), fill=_jitter(rng, (90, 60, 30), 16))


def _aphids(
    leaf: Leaf, rgb: ImageDraw.ImageDraw, alpha: ImageDraw.ImageDraw, rng: np.random.Generator, k: float
) -> None:
    """Colonies of small oval insects strung along veins, pale green or black, with a dark outline."""
    dark = rng.random() < 0.5
    body = (35, 35, 38) if dark else (225, 235, 130)
    edge = (15, 15, 15) if dark else (45, 60, 25)  # a dark rim keeps pale aphids visible on a green leaf
    for _ in range(max(3, round(k * rng.integers(4, 7)))):
        t0, s0 = rng.uniform(0.1, 0.8), leaf.vein_s(rng)
        span = rng.uniform(0.08, 0.2)
        for _ in range(int(rng.integers(22, 40))):  # insects large enough to stay speckles at 96x96
            t = t0 + rng.uniform(0, span)
            x, y = leaf.point(t, s0 + rng.normal(0, 0.1))
            rx, ry = rng.uniform(5.0, 6.8), rng.uniform(3.4, 4.4)
            pts = _ellipse(x, y, rx, ry, rng.normal(0, 0.35), 8)
            rgb.polygon(pts, fill=_jitter(rng, body, 14), outline=edge)
            if rng.random() < 0.5:  # the pale highlight of a glossy body
                rgb.point((x - 0.8, y - 0.6), fill=(200, 200, 200) if dark else (225, 240, 190))


def _stem_borer(
    leaf: Leaf, rgb: ImageDraw.ImageDraw, alpha: ImageDraw.ImageDraw, rng: np.random.Generator, k: float
) -> None:
    """Rows of round shot holes across the blade (bored through the whorl) and pale sawdust frass.

    Each hole has a wide pale rim of dried tissue: at 96x96 a row reads as a chain of pale rings, unlike
    the few large brown-rimmed ragged holes and dark frass of armyworm feeding.
    """
    for _ in range(max(2, round(k * rng.integers(2, 5)))):
        t = rng.uniform(0.15, 0.8)
        count = int(rng.integers(5, 8))
        tilt = rng.normal(0, 0.02)
        for s in np.linspace(-0.75, 0.75, count) + rng.normal(0, 0.03, count):
            x, y = leaf.point(t + tilt * s, float(s))
            r = rng.uniform(5.5, 7.5)
            rim = r + rng.uniform(2.5, 3.5)
            rgb.ellipse((x - rim, y - rim, x + rim, y + rim), fill=_jitter(rng, (215, 205, 150), 12))
            alpha.ellipse((x - r, y - r, x + r, y + r), fill=0)
    for _ in range(int(rng.integers(1, 4))):  # sawdust-like frass
        x0, y0 = leaf.point(rng.uniform(0.05, 0.6), rng.uniform(-0.5, 0.5))
        for _ in range(int(rng.integers(20, 45))):
            x, y = x0 + rng.normal(0, 7), y0 + rng.normal(0, 5)
            r = rng.uniform(1.2, 2.4)
            rgb.ellipse((x - r, y - r, x + r, y + r), fill=_jitter(rng, (200, 170, 115), 20))


def _leaf_miner(
    leaf: Leaf, rgb: ImageDraw.ImageDraw, alpha: ImageDraw.ImageDraw, rng: np.random.Generator, k: float
) -> None:
    """Pale winding serpentine mines, widening as the larva grows, with a dark frass line inside."""
    for _ in range(max(1, round(k * rng.integers(2, 4)))):
        t, s = rng.uniform(0.15, 0.75), rng.uniform(-0.5, 0.5)
        x, y = leaf.point(t, s)
        heading, turn = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.35) * rng.choice([-1, 1])
        steps = int(rng.integers(50, 130))
        pts = [(x, y)]
        period, wander = rng.uniform(4, 7, steps).tolist(), rng.normal(0, 0.12, steps).tolist()
        for i in range(steps):
            heading += turn * math.sin(i / period[i]) + wander[i]
            x, y = x + 2.2 * math.cos(heading), y + 2.2 * math.sin(heading)
            # stay on the blade: turn back towards the midline when near an edge
            tt = (x - _X0) / _LEN
            mid, edge = leaf.point(tt, 0.0)[1], leaf.point(tt, 0.8)[1]
            if not 0.06 < tt < 0.94 or abs(y - mid) > abs(edge - mid):
                heading += math.pi * 0.6
                x, y = pts[-1]
            pts.append((x, y))
        pale = _jitter(rng, (222, 228, 190), 12)
        for i in range(len(pts) - 1):
            width = 2.5 + 5.0 * i / len(pts)
            rgb.line([pts[i], pts[i + 1]], fill=pale, width=max(1, round(width)))
            ex, ey = pts[i]
            rr = width / 2
            rgb.ellipse((ex - rr, ey - rr, ex + rr, ey + rr), fill=pale)
        rgb.line(pts[::3], fill=(95, 95, 60), width=1)


# --- disease symptoms ------------------------------------------------------------------------------
def _common_rust(
    leaf: Leaf, rgb: ImageDraw.ImageDraw, alpha: ImageDraw.ImageDraw, rng: np.random.Generator, k: float
) -> None:
    """Many small raised cinnamon-orange pustules scattered over the blade, each with a dark rim."""
    color = (rng.uniform(160, 200), rng.uniform(75, 110), rng.uniform(20, 45))
    for _ in range(round(k * rng.integers(45, 120))):
        x, y = leaf.point(rng.uniform(0.05, 0.95), rng.uniform(-0.9, 0.9))
        rx, ry = rng.uniform(2.0, 3.6), rng.uniform(1.4, 2.4)
        rgb.polygon(_ellipse(x, y, rx + 0.8, ry + 0.8, 0, 8), fill=(95, 50, 20))
        rgb.polygon(_ellipse(x, y, rx, ry, 0, 8), fill=_jitter(rng, _rgb(color), 16))
        rgb.point((x - 0.5, y - 0.5), fill=(235, 160, 90))


def _gray_leaf_spot(
    leaf: Leaf, rgb: ImageDraw.ImageDraw, alpha: ImageDraw.ImageDraw, rng: np.random.Generator, k: float
) -> None:
    """Grey-tan rectangular lesions whose sides follow the veins (they cannot cross them)."""
    for _ in range(max(2, round(k * rng.integers(6, 20)))):
        t0 = rng.uniform(0.05, 0.85)
        t1 = t0 + rng.uniform(0.05, 0.14)
        s0 = leaf.vein_s(rng)
        s1 = s0 + 2 / leaf.nveins * rng.choice([1, 1, 2])
        poly = [leaf.point(t0, s0), leaf.point(t1, s0), leaf.point(t1, s1), leaf.point(t0, s1)]
        rgb.polygon(poly, fill=_jitter(rng, (150, 145, 125), 16), outline=_jitter(rng, (105, 95, 70), 10))


def _northern_leaf_blight(
    leaf: Leaf, rgb: ImageDraw.ImageDraw, alpha: ImageDraw.ImageDraw, rng: np.random.Generator, k: float
) -> None:
    """A few long cigar-shaped tan necrotic lesions with a darker wavy margin and sooty spore patches."""
    for _ in range(max(1, round(k * rng.integers(1, 4)))):
        tc, sc = rng.uniform(0.25, 0.75), rng.uniform(-0.35, 0.35)
        half_len, half_w = rng.uniform(0.1, 0.22), rng.uniform(0.18, 0.38)
        outer, inner = [], []
        for a in np.linspace(0, 2 * np.pi, 28, endpoint=False):
            ca, sa = math.cos(a), math.sin(a)
            pinch = abs(sa) ** 0.8 * np.sign(sa)  # pointed ends: a cigar, not an ellipse
            wob = 1 + rng.normal(0, 0.06)
            outer.append(leaf.point(tc + half_len * ca * wob, sc + half_w * pinch * wob * 1.15))
            inner.append(leaf.point(tc + half_len * ca * 0.9, sc + half_w * pinch * 0.85))
        rgb.polygon(outer, fill=_jitter(rng, (110, 90, 55), 10))
        rgb.polygon(inner, fill=_jitter(rng, (180, 165, 120), 14))
        for _ in range(int(rng.integers(0, 6))):
            x, y = leaf.point(tc + rng.uniform(-0.6, 0.6) * half_len, sc + rng.uniform(-0.5, 0.5) * half_w)
            rgb.polygon(_blob(x, y, rng.uniform(1.5, 3.0), rng, 0.5, 6), fill=(90, 85, 70))


def _maize_streak(
    leaf: Leaf, rgb: ImageDraw.ImageDraw, alpha: ImageDraw.ImageDraw, rng: np.random.Generator, k: float
) -> None:
    """Narrow broken chlorotic (pale yellow) streaks running along the veins over much of the blade."""
    color = (rng.uniform(205, 235), rng.uniform(205, 230), rng.uniform(80, 130))
    for _ in range(round(k * rng.integers(30, 70))):
        s = leaf.vein_s(rng) + rng.choice([-1, 1]) * 1 / leaf.nveins * rng.uniform(0.6, 1.0)
        t0 = rng.uniform(0.02, 0.9)
        t1 = min(0.98, t0 + rng.uniform(0.03, 0.16))
        pts = [leaf.point(float(t), s) for t in np.linspace(t0, t1, 5)]
        rgb.line(pts, fill=_jitter(rng, _rgb(color), 12), width=int(rng.integers(1, 3)))


def _blemishes(leaf: Leaf, rgb: ImageDraw.ImageDraw, alpha: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    """Harmless specks of dust or soil any leaf may carry, on every class alike."""
    for _ in range(int(rng.poisson(0.8))):
        x, y = leaf.point(rng.uniform(0.1, 0.9), rng.uniform(-0.7, 0.7))
        r = rng.uniform(0.8, 1.8)
        rgb.ellipse((x - r, y - r, x + r, y + r), fill=_jitter(rng, (140, 120, 90), 20))


SYMPTOMS = {
    "fall_armyworm": _fall_armyworm,
    "aphids": _aphids,
    "stem_borer": _stem_borer,
    "leaf_miner": _leaf_miner,
    "common_rust": _common_rust,
    "gray_leaf_spot": _gray_leaf_spot,
    "northern_leaf_blight": _northern_leaf_blight,
    "maize_streak": _maize_streak,
}


# --- scene ----------------------------------------------------------------------------------------
def _background(rng: np.random.Generator) -> Image.Image:
    """Soil, mulch or shade, with stones, straw and out-of-focus leaves: the clutter of a field photo."""
    kind = rng.integers(0, 3)
    base = [(120, 85, 55), (95, 80, 60), (60, 60, 50)][kind]
    jittered = np.array(_jitter(rng, base, 24), np.float32)
    f32 = np.float32
    tex = (
        1
        + f32(0.22) * smooth_noise(rng, SIZE, SIZE, 32)
        + f32(0.12) * smooth_noise(rng, SIZE, SIZE, 6)
        + rng.standard_normal((SIZE, SIZE), dtype=f32) * f32(0.06)
    )
    arr = jittered * tex[..., None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 8))):  # stones and clods
        x, y = rng.uniform(0, SIZE, 2)
        draw.polygon(_blob(x, y, rng.uniform(3, 14), rng, 0.5, 9), fill=_jitter(rng, (130, 120, 105), 25))
    for _ in range(int(rng.integers(0, 8))):  # straw
        x, y, a, n = *rng.uniform(0, SIZE, 2), rng.uniform(0, np.pi), rng.uniform(15, 60)
        draw.line(
            [(x, y), (x + n * math.cos(a), y + n * math.sin(a))],
            fill=_jitter(rng, (190, 165, 110), 25),
            width=int(rng.integers(1, 4)),
        )
    for _ in range(int(rng.integers(0, 3))):  # neighbouring leaves, healthy and out of focus
        other = Leaf(rng, yellowing=rng.uniform(0, 0.3), textured=False)
        _place(img, other, rng, scale=rng.uniform(0.6, 1.0), blur=rng.uniform(1.0, 3.0), darken=rng.uniform(0.6, 0.9))
    return img


def _place(
    canvas: Image.Image,
    leaf: Leaf,
    rng: np.random.Generator,
    scale: float,
    blur: float = 0.0,
    darken: float = 1.0,
    layers: tuple[Image.Image, Image.Image] | None = None,
) -> None:
    """Paste a canonical leaf onto ``canvas`` rotated, scaled and shifted (one inverse affine map)."""
    rgb, alpha = layers or leaf.images()
    if darken != 1.0:
        rgb = Image.eval(rgb, lambda v: int(v * darken))
    angle = rng.uniform(0, 2 * np.pi)
    cx, cy = SIZE / 2 + rng.normal(0, 16, 2)
    ca, sa = math.cos(angle) / scale, math.sin(angle) / scale
    # output (x, y) -> canonical: centre + R(-angle) / scale * (out - out_centre)
    data = (ca, sa, _CW / 2 - ca * cx - sa * cy, -sa, ca, _CH / 2 + sa * cx - ca * cy)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(alpha)
    moved = rgba.transform((SIZE, SIZE), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
    if blur > 0:  # out of focus: shrink and enlarge again, far cheaper than a wide Gaussian
        small = max(16, round(SIZE / (1 + blur)))
        moved = moved.resize((small, small), Image.Resampling.BILINEAR).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    canvas.paste(moved, (0, 0), moved)


_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE - 0.5


def _photograph(img: Image.Image, rng: np.random.Generator) -> bytes:
    """Camera and light: exposure, colour cast, a shadow gradient, sensor noise, focus blur, JPEG quality."""
    f32 = np.float32
    arr = np.asarray(img, f32)
    gain = (rng.uniform(0.72, 1.25) * rng.uniform(0.88, 1.12, 3)).astype(f32)
    a = rng.uniform(0, 2 * np.pi)
    shadow = 1 + f32(rng.uniform(0, 0.35)) * (_XX * f32(math.cos(a)) + _YY * f32(math.sin(a)))
    noise = rng.standard_normal((SIZE, SIZE, 1), dtype=f32) * f32(rng.uniform(1, 6))
    arr = arr * gain * shadow[..., None] + noise
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    gamma = rng.uniform(0.85, 1.18)
    out = out.point([round(255 * (v / 255) ** gamma) for v in range(256)] * 3)
    if rng.random() < 0.6:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.1)))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=int(rng.integers(55, 95)))
    return buf.getvalue()


def draw_leaf(label: str, rng: np.random.Generator, intensity: float = 1.0) -> Image.Image:
    """A field photo of one leaf showing ``label``'s symptoms (none for "healthy"), before the camera."""
    canvas = _background(rng)
    leaf = Leaf(rng, yellowing=rng.uniform(0, 0.15))
    rgb, alpha = leaf.images()
    drgb, dalpha = ImageDraw.Draw(rgb), ImageDraw.Draw(alpha)
    _blemishes(leaf, drgb, dalpha, rng)
    symptom = SYMPTOMS.get(label)
    if symptom is not None:
        symptom(leaf, drgb, dalpha, rng, intensity)
    _place(canvas, leaf, rng, scale=rng.uniform(0.95, 1.35), layers=(rgb, alpha))  # a farmer's close-up
    return canvas


def draw_photo(
    model_type: str, label: str, rng: np.random.Generator, intensity: float = 1.0, crop: str | None = None
) -> bytes:
    """JPEG bytes of a 256x256 demo photo of class ``label`` (intensity ~0.6-1.4 scales symptom count)."""
    if model_type == "storage":
        img = draw_storage(label, rng, crop or "maize", SIZE)
    else:
        img = draw_leaf(label, rng, intensity)
    return _photograph(img, rng)
