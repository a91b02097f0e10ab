"""AgroShield-shaped rows and small images for the loopback Supabase (tests and benchmarks/bench_fetch.py).

Kept out of the test modules so the benchmark can use the same data; deterministic for a seed.
"""

from __future__ import annotations

import io
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from PIL import Image

from agroml.core import schema

PESTS = ("fall_armyworm", "aphids", "stem_borer", "whiteflies", "healthy")
PEST_COLUMNS = [
    "id",
    "farmer_id",
    "image_url",
    "image_metadata",
    "pest_detected",
    "confidence_score",
    "severity",
    "alternative_predictions",
    "crop_affected",
    "farm_location",
    "latitude",
    "longitude",
    "user_confirmed",
    "user_feedback",
    "actual_pest",
    "created_at",
]
PEST_TYPES = {
    "id": "uuid",
    "farmer_id": "uuid",
    "confidence_score": "numeric",
    "latitude": "numeric",
    "longitude": "numeric",
    "user_confirmed": "boolean",
    "created_at": "timestamptz",
    "image_metadata": "jsonb",
    "alternative_predictions": "jsonb",
}


def jpeg(seed: int, size: int = 16) -> bytes:
    """A small, valid, distinct JPEG (distinct bytes: content addressing must not merge two seeds)."""
    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    img.putpixel((seed % size, (seed // size) % size), (255 - seed % 256, seed % 7 * 30, 10))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def pest_rows(n: int, seed: int = 0, image_url: Any = None, start: datetime | None = None) -> list[dict[str, Any]]:
    """``n`` pest_predictions rows; ``image_url(i, row_id)`` gives each row's URL (default: a Storage path)."""
    rng = random.Random(seed)
    start = start or datetime(2024, 1, 1, tzinfo=UTC)
    farmers = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(max(1, n // 20))]
    rows = []
    for i in range(n):
        row_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        predicted = rng.choice(PESTS)
        fb = rng.random()
        confirmed = True if fb < 0.4 else False if fb < 0.7 else None
        actual = rng.choice(PESTS) if confirmed is False and rng.random() < 0.6 else None
        rows.append(
            {
                "id": row_id,
                "farmer_id": rng.choice(farmers),
                "image_url": image_url(i, row_id) if image_url else f"pest_images/pest_{row_id}.jpg",
                "image_metadata": {"w": 16, "h": 16},
                "pest_detected": predicted.replace("_", " ").title(),
                "confidence_score": round(rng.uniform(0.3, 0.99), 4),
                "severity": rng.choice(("low", "moderate", "high", None)),
                "alternative_predictions": [{"pest": rng.choice(PESTS), "confidence": 0.1}],
                "crop_affected": rng.choice(("maize", "beans", "tomato")),
                "farm_location": rng.choice(("Nakuru", "Kisumu", "Meru")),
                "latitude": round(rng.uniform(-1.5, 0.5), 5),
                "longitude": round(rng.uniform(34.5, 37.5), 5),
                "user_confirmed": confirmed,
                "user_feedback": None,
                "actual_pest": actual,
                "created_at": (start + timedelta(minutes=37 * i)).isoformat(),
            }
        )
    return rows


def add_pest_table(
    server: Any, rows: list[dict[str, Any]], table: str = "pest_predictions", columns: list[str] | None = None
) -> None:
    cols = columns or PEST_COLUMNS
    server.add_table(table, cols, {k: v for k, v in PEST_TYPES.items() if k in cols})
    server.add_rows(table, [{k: r.get(k) for k in cols} for r in rows])


def add_empty_tables(server: Any) -> None:
    """disease_predictions and storage_predictions with their default columns and no rows."""
    for model in ("disease", "storage"):
        spec = schema.table_spec(model)
        server.add_table(spec.table, spec.select_columns(), {"id": "uuid", "created_at": "timestamptz"})
