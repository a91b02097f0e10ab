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

from agroml.records import STORAGE_CONDITIONS

#: crop -> (item colours, item size in px, aspect ratio)
_PRODUCE: dict[str, tuple[tuple[tuple[int, int, int], ...], float, float]] = {
    "maize": (((228, 182, 60), (235, 222, 180), (215, 150, 45)), 15.0, 1.25),
    "beans": (((140, 38, 42), (205, 180, 140), (150, 100, 60)), 16.0, 1.6),
    "sorghum": (((175, 100, 60), (220, 200, 160)), 10.0, 1.1),
    "potatoes": (((205, 170, 120), (170, 85, 70)), 58.0, 1.35),
}
_DECAY = (90, 70, 40)
_MOULD = ((120, 135, 95), (225, 225, 212), (70, 110, 100))


def _poly(cx: float, cy: float, rx: float, ry: float, angle: float, wrinkle: np.ndarray) -> list[tuple[float, float]]:
    n = len(wrinkle)
    ca, sa = math.cos(angle), math.sin(angle)
    pts = []
    for k in range(n):
        a = 2 * math.pi * k / n
        x, y = rx * math.cos(a) * wrinkle[k], ry * math.sin(a) * wrinkle[k]
        pts.append((cx + x * ca - y * sa, cy + x * sa + y * ca))
    return pts


def _mix(a: tuple[int, ...], b: tuple[int, ...], f: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(x * (1 - f) + y * f, 0, 255)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def draw_storage(label: str, rng: np.random.Generator, crop: str, size: int) -> Image.Image:
    """A close-up of stored ``crop`` in condition ``label`` (one of STORAGE_CONDITIONS)."""
    level = STORAGE_CONDITIONS.index(label)
    decay = float(np.clip((level + rng.uniform(-0.4, 0.4)) / 4, 0, 1.1))
    colors, item, aspect = _PRODUCE.get(crop, _PRODUCE["maize"])
    base = colors[int(rng.integers(0, len(colors)))]
    zoom = rng.uniform(0.8, 1.25)

    # background: a sack's weave or a floor, mostly hidden by the pile
    bg = np.array([rng.uniform(120, 185), rng.uniform(100, 160), rng.uniform(60, 110)], np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    weave = 1 + 0.12 * np.sin(xx * rng.uniform(0.6, 1.2)) * np.sin(yy * rng.uniform(0.6, 1.2))
    img = Image.fromarray(np.clip(bg * weave[..., None], 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)

    r = item * zoom / 2
    shrink = 1 - 0.3 * decay
    step = r * 1.5
    grid = [(x, y) for y in np.arange(-r, size + r, step) for x in np.arange(-r, size + r, step * aspect * 0.9)]
    order = rng.permutation(len(grid))
    n = len(grid)
    jit = rng.normal(0, r * 0.35, (n, 2))
    angles = rng.normal(0, 0.5, n) + (0 if rng.random() < 0.5 else np.pi / 2)
    sizes = rng.uniform(0.85, 1.1, n) * shrink
    discoloured = rng.random(n) < (0.02 + 0.85 * decay ** 1.5)
    holed = rng.random(n) < max(0.0, 0.75 * (decay - 0.3))
    shade = rng.uniform(0.85, 1.1, n)
    wrinkle_amp = 0.03 + 0.14 * decay
    for i in order:
        cx, cy = grid[i][0] + jit[i, 0], grid[i][1] + jit[i, 1]
        rx, ry = r * aspect * sizes[i], r * sizes[i]
        wrinkle = 1 + rng.normal(0, wrinkle_amp, 14)
        color = tuple(int(min(255, c * shade[i])) for c in base)
        if discoloured[i]:
            color = _mix(color, _DECAY, rng.uniform(0.3, 0.85))
        color = _mix(color, (128, 128, 120), 0.25 * decay)  # dull, greyish with age
        outline = _mix(color, (30, 25, 20), 0.55)
        draw.polygon(_poly(cx, cy, rx, ry, angles[i], wrinkle), fill=color, outline=outline)
        draw.polygon(_poly(cx - rx * 0.2, cy - ry * 0.25, rx * 0.45, ry * 0.35, angles[i], np.ones(8)),
                     fill=_mix(color, (255, 250, 230), 0.35 * (1 - decay)))  # gloss of a sound item
        if crop == "potatoes":
            for _ in range(int(rng.integers(1, 4))):  # eyes
                ex, ey = cx + rng.normal(0, rx / 2.5), cy + rng.normal(0, ry / 2.5)
                draw.ellipse((ex - 1.5, ey - 1, ex + 1.5, ey + 1), fill=_mix(color, (60, 40, 20), 0.6))
        if holed[i]:
            for _ in range(int(rng.integers(1, 3 if crop != "potatoes" else 6))):
                hx, hy = cx + rng.normal(0, rx / 3), cy + rng.normal(0, ry / 3)
                hr = rng.uniform(1.3, 2.6)
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
            for _ in range(int(mr * 4)):
                dx, dy = rng.normal(0, mr / 2, 2)
                dr = rng.uniform(1.5, 4)
                ldraw.ellipse((mx + dx - dr, my + dy - dr, mx + dx + dr, my + dy + dr), fill=(*mc, 170))
        img.paste(layer.filter(ImageFilter.GaussianBlur(1.2)), (0, 0), layer.filter(ImageFilter.GaussianBlur(1.2)))

    # dust and frass powder, then live weevils on the worst stores
    for _ in range(int(decay * 250)):
        x, y = rng.uniform(0, size, 2)
        draw.point((x, y), fill=(215, 200, 170))
    for _ in range(int(rng.poisson(max(0.0, 10 * (decay - 0.6))))):
        x, y, a = *rng.uniform(10, size - 10, 2), rng.uniform(0, 2 * np.pi)
        draw.polygon(_poly(x, y, 5, 2.2, a, np.ones(10)), fill=(45, 30, 20), outline=(20, 12, 8))
        draw.line([(x + 5 * math.cos(a), y + 5 * math.sin(a)), (x + 8 * math.cos(a), y + 8 * math.sin(a))],
                  fill=(40, 28, 18), width=1)
    return img
