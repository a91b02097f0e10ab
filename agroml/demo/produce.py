"""Procedurally drawn stored produce for the demo `storage` model: grains or tubers in a store.

The five conditions (excellent, good, fair, poor, critical) are an ordered scale, so they are drawn
as one continuous "decay" value with jitter: more discoloured items, weevil holes, mould patches,
shrivelled and wrinkled items, dust and (at the bad end) live weevils as the condition worsens.
Neighbouring conditions overlap a little, as they do when a farmer judges a real bag.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from agroml.core.schema import STORAGE_CONDITIONS

#: crop -> (item colours, item size in px, aspect ratio)
_PRODUCE: dict[str, tuple[tuple[tuple[int, int, int], ...], float, float]] = {
    "maize": (((228, 182, 60), (235, 222, 180), (215, 150, 45)), 21.0, 1.25),
    "beans": (((140, 38, 42), (205, 180, 140), (150, 100, 60)), 22.0, 1.6),
    "sorghum": (((175, 100, 60), (220, 200, 160)), 16.0, 1.1),
    "potatoes": (((205, 170, 120), (170, 85, 70)), 58.0, 1.35),
}
_DECAY = (90, 70, 40)
_MOULD = ((120, 135, 95), (225, 225, 212), (70, 110, 100))


def _outline(
    cx: np.ndarray, cy: np.ndarray, rx: np.ndarray, ry: np.ndarray, angle: np.ndarray, wrinkle: np.ndarray
) -> list[list[tuple[float, float]]]:
    """Polygons of n rotated ellipses whose radius is scaled per vertex by ``wrinkle`` (n, sides)."""
    a = np.linspace(0, 2 * np.pi, wrinkle.shape[1], endpoint=False)[None, :]
    x, y = rx[:, None] * np.cos(a) * wrinkle, ry[:, None] * np.sin(a) * wrinkle
    ca, sa = np.cos(angle)[:, None], np.sin(angle)[:, None]
    px, py = cx[:, None] + x * ca - y * sa, cy[:, None] + x * sa + y * ca
    return [list(zip(u, v, strict=True)) for u, v in zip(px.tolist(), py.tolist(), strict=True)]


def _poly(cx: float, cy: float, rx: float, ry: float, angle: float, wrinkle: np.ndarray) -> list[tuple[float, float]]:
    """One rotated, optionally wrinkled ellipse (weevil bodies)."""
    return _outline(
        np.array([cx]), np.array([cy]), np.array([rx]), np.array([ry]), np.array([angle]), wrinkle[None, :]
    )[0]


def _mix(a: tuple[int, ...], b: tuple[int, ...], f: float) -> tuple[int, int, int]:
    """Blend two colours (plain Python: called for every item)."""
    return tuple(min(255, max(0, int(x * (1 - f) + y * f))) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def draw_storage(label: str, rng: np.random.Generator, crop: str, size: int) -> Image.Image:
    """A close-up of stored ``crop`` in condition ``label`` (one of STORAGE_CONDITIONS)."""
    level = STORAGE_CONDITIONS.index(label)
    decay = float(np.clip((level + rng.uniform(-0.4, 0.4)) / 4, 0, 1.1))
    colors, item, aspect = _PRODUCE.get(crop, _PRODUCE["maize"])
    base = colors[int(rng.integers(0, len(colors)))]
    zoom = rng.uniform(0.8, 1.25)

    # background: a sack's weave or a floor, mostly hidden by the pile
    bg = np.array([rng.uniform(130, 185), 0, 0], np.float32)
    bg[1:] = bg[0] * rng.uniform(0.75, 0.88), bg[0] * rng.uniform(0.5, 0.65)  # jute / sisal browns
    yy, xx = np.mgrid[0:size, 0:size]
    weave = 1 + 0.12 * np.sin(xx * rng.uniform(0.6, 1.2)) * np.sin(yy * rng.uniform(0.6, 1.2))
    img = Image.fromarray(np.clip(bg * weave[..., None], 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)

    r = item * zoom / 2
    step = r * 1.5
    gx, gy = np.meshgrid(np.arange(-r, size + r, step * aspect * 0.9), np.arange(-r, size + r, step))
    n = gx.size
    # every item's geometry and colour at once (numpy); the loop below only draws
    cx = gx.ravel() + rng.normal(0, r * 0.35, n)
    cy = gy.ravel() + rng.normal(0, r * 0.35, n)
    angle = rng.normal(0, 0.5, n) + (0 if rng.random() < 0.5 else np.pi / 2)
    scale = rng.uniform(0.85, 1.1, n) * (1 - 0.3 * decay)  # shrivelled items are smaller
    rx, ry = r * aspect * scale, r * scale
    sides = 22 if crop == "potatoes" else 12
    shape = _outline(cx, cy, rx, ry, angle, 1 + rng.normal(0, 0.03 + 0.14 * decay, (n, sides)))
    gloss = _outline(cx - rx * 0.2, cy - ry * 0.25, rx * 0.45, ry * 0.35, angle, np.ones((n, 8)))
    color = np.array(base, float) * rng.uniform(0.85, 1.1, (n, 1))
    rot = np.where(rng.random(n) < 0.02 + 0.85 * decay**1.5, rng.uniform(0.3, 0.85, n), 0.0)[:, None]
    color = color * (1 - rot) + np.array(_DECAY) * rot
    color = color * (1 - 0.25 * decay) + np.array([128, 128, 120]) * 0.25 * decay  # dull, greyish with age
    edge = color * 0.45 + np.array([30, 25, 20]) * 0.55
    shine = color * (1 - 0.35 * (1 - decay)) + np.array([255, 250, 230]) * 0.35 * (1 - decay)
    color, edge, shine = (np.clip(c, 0, 255).astype(int).tolist() for c in (color, edge, shine))
    holed = rng.random(n) < max(0.0, 0.75 * (decay - 0.3))
    for i in rng.permutation(n).tolist():
        draw.polygon(shape[i], fill=tuple(color[i]), outline=tuple(edge[i]))
        draw.polygon(gloss[i], fill=tuple(shine[i]))  # the gloss of a sound item fades with decay
        if crop == "potatoes":
            for ex, ey in rng.normal(0, 1, (int(rng.integers(1, 4)), 2)).tolist():  # eyes
                ex, ey = cx[i] + ex * rx[i] / 2.5, cy[i] + ey * ry[i] / 2.5
                draw.ellipse((ex - 1.5, ey - 1, ex + 1.5, ey + 1), fill=_mix(tuple(color[i]), (60, 40, 20), 0.6))
        if holed[i]:  # weevil / tuber-moth exit holes
            for hx, hy, hr in rng.uniform(-1, 1, (int(rng.integers(1, 3 if crop != "potatoes" else 6)), 3)).tolist():
                hx, hy, hr = cx[i] + hx * rx[i] / 2, cy[i] + hy * ry[i] / 2, 1.95 + hr * 0.65
                draw.ellipse((hx - hr, hy - hr, hx + hr, hy + hr), fill=(30, 22, 15), outline=(150, 120, 80))

    # mould: fuzzy pale or greenish patches spreading over the pile
    patches = int(rng.poisson(max(0.0, 7 * (decay - 0.35))))
    if patches:
        layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        ldraw = ImageDraw.Draw(layer)
        for _ in range(patches):
            mx, my = rng.uniform(0, size, 2)
            mr = rng.uniform(12, 40)
            mc = _MOULD[int(rng.integers(0, len(_MOULD)))]
            for dx, dy, dr in zip(
                *rng.normal(0, mr / 2, (2, int(mr * 3))), rng.uniform(1.5, 4, int(mr * 3)), strict=True
            ):
                ldraw.ellipse((mx + dx - dr, my + dy - dr, mx + dx + dr, my + dy + dr), fill=(*mc, 170))
        fuzzy = layer.filter(ImageFilter.GaussianBlur(1.2))
        img.paste(fuzzy, (0, 0), fuzzy)

    # dust and frass powder, then live weevils on the worst stores
    dust = rng.uniform(0, size, (int(decay * 250), 2))
    draw.point([tuple(p) for p in dust.tolist()], fill=(215, 200, 170))
    for _ in range(int(rng.poisson(max(0.0, 10 * (decay - 0.6))))):
        x, y, a = *rng.uniform(10, size - 10, 2), rng.uniform(0, 2 * np.pi)
        draw.polygon(_poly(x, y, 5, 2.2, a, np.ones(10)), fill=(45, 30, 20), outline=(20, 12, 8))
        draw.line(
            [(x + 5 * math.cos(a), y + 5 * math.sin(a)), (x + 8 * math.cos(a), y + 8 * math.sin(a))],
            fill=(40, 28, 18),
            width=1,
        )
    return img
