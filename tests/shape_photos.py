"""Helpers for the training tests: synthetic shape photos (one shape per class) in a real store + cache.

Why shapes of random colour on noisy backgrounds: a class is only learnable from its shape, so a model
that reaches good accuracy on them has learned something; colour alone is at chance.
"""

from __future__ import annotations

import io
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "ring")


def shape_png(shape: str, seed: int, size: int = 40, color: tuple[int, int, int] | None = None) -> bytes:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    # a fixed colour tints the background too: the easy task the fast-path test needs
    background = np.asarray(color) * 0.6 if color else rng.integers(60, 200, 3)
    img = Image.fromarray(np.clip(background + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    color = color or tuple(int(v) for v in rng.integers(0, 255, 3))
    r = size * rng.uniform(0.22, 0.35)
    cx, cy = rng.uniform(r, size - r, 2)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    elif shape == "cross":
        draw.rectangle([cx - r, cy - r / 3, cx + r, cy + r / 3], fill=color)
        draw.rectangle([cx - r / 3, cy - r, cx + r / 3, cy + r], fill=color)
    else:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=color, width=max(2, int(r / 3)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def add_shapes(
    settings,
    counts: dict[str, int],
    model_type: str = "pest",
    start: int = 0,
    size: int = 40,
    shapes: dict[str, str] | None = None,
    colors: dict[str, tuple[int, int, int]] | None = None,
) -> list[str]:
    """Store ``counts[label]`` confirmed rows per label, each with its own cached shape photo; returns ids.

    A label's shape is ``shapes[label]``, or the label itself when it names a shape; ``colors[label]``
    fixes its colour (an easy task: any base's pooled features separate colours).
    """
    from agroml.data.records import make_records
    from agroml.data.store import Store
    from agroml.images.cache import ImageCache

    records, ids, i = [], [], start
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with ImageCache(settings.image_dir) as cache:
        for label, n in counts.items():
            shape = (shapes or {}).get(label, label)
            for _ in range(n):
                row_id = f"{model_type}-{i:05d}"
                url = f"https://img.test/{row_id}.png"
                png = shape_png(shape, zlib.crc32(row_id.encode()), size, (colors or {}).get(label))
                image = cache.put(png, url=url)
                records.append(
                    {
                        "id": row_id,
                        "source": "demo",
                        "model_type": model_type,
                        "image_url": url,
                        "image_hash": image.sha256,
                        "predicted_label": label,
                        "confidence": 0.9,
                        "user_confirmed": True,
                        "created_at": t0 + timedelta(minutes=i),
                        "farmer_id": "f1",
                    }
                )
                ids.append(row_id)
                i += 1
    with Store(settings.db_path) as store:
        store.upsert(make_records(records))
    return ids


#: Classes told apart by colour alone (every photo a circle): what a tiny network learns from scratch in
#: a few epochs, where the shapes at 32 px stay at chance for 20 (benchmarks/README.md, "--strategy").
COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def add_colours(settings, per_class: int, size: int = 32) -> list[str]:
    """Store ``per_class`` confirmed rows of each of :data:`COLOURS` (the same rows on every call)."""
    counts = dict.fromkeys(COLOURS, per_class)
    return add_shapes(settings, counts, size=size, shapes=dict.fromkeys(COLOURS, "circle"), colors=COLOURS)


def corrupt(settings, row_ids: list[str]) -> None:
    """Truncate the cached files of ``row_ids`` (the rows stay in the store)."""
    from agroml.images.cache import ImageCache

    with ImageCache(settings.image_dir) as cache:
        for row_id in row_ids:
            path: Path = cache.lookup(f"https://img.test/{row_id}.png")
            path.write_bytes(path.read_bytes()[:60])
