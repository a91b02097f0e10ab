"""Test helpers: a tiny real Keras model in a real run folder, and colour images in a real store.

Why not `agroml train`: these tests are about what happens after training (registry, evaluate,
predict, promote), and a hand-built model whose answers are known makes their assertions exact.
The model is a nearest-colour classifier: the mean RGB of the image, scored against each class's
colour, so a red square is "red" with high probability and nothing needs training.
"""

from __future__ import annotations

import io
import json
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (1, 0, 0),
    "green": (0, 1, 0),
    "blue": (0, 0, 1),
    "yellow": (1, 1, 0),
    "cyan": (0, 1, 1),
}


def color_png(name: str, size: int = 20, seed: int = 0) -> bytes:
    """A PNG of colour ``name`` with a little noise, so no two images share a hash."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.array(COLORS[name], dtype=np.float64) * 220 + 20
    pixels = np.clip(base + rng.integers(-15, 16, size=(size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def build_color_model(classes: list[str], image_size: int = 16):
    """A Keras model taking raw uint8 RGB, scoring classes by distance to their colour (no training)."""
    import keras

    centers = np.array([COLORS[c] for c in classes], dtype="float32")  # (k, 3)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(len(classes), activation="softmax", name="head")
    outputs = dense(x)
    model = keras.Model(inputs, outputs)
    # logit_i = 10 c_i.x - 5 |c_i|^2 = -5 |x - c_i|^2 + const: the nearest colour wins
    dense.set_weights([10 * centers.T, -5 * (centers**2).sum(axis=1)])
    return model


def write_run(
    models_dir: Path,
    model_type: str,
    run_id: str,
    classes: list[str],
    split: dict[str, list[str]],
    image_size: int = 16,
    labels_as_dict: bool = False,
    register: bool = True,
    metrics: dict | None = None,
) -> Path:
    """A run folder in the layout `agroml train` writes, optionally registered as succeeded."""
    from agroml.lifecycle.registry import Registry

    folder = Path(models_dir) / model_type / run_id
    folder.mkdir(parents=True)
    build_color_model(classes, image_size).save(folder / "model.keras")
    labels = {"classes": classes} if labels_as_dict else classes
    (folder / "labels.json").write_text(json.dumps(labels))
    config = {"run_id": run_id, "model_type": model_type, "arch": "tiny", "image_size": image_size}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "split.json").write_text(json.dumps(split))
    metrics = metrics or {"test": {"accuracy": 1.0, "macro_f1": 1.0}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if register:
        with Registry(models_dir) as registry:
            handle = registry.start(model_type, run_id, "tiny", {"image_size": image_size})
            handle.finish("succeeded", metrics=metrics, path=folder)
    return folder


def add_rows(
    settings, model_type: str, rows: list[tuple[str, str, str]], start: datetime | None = None, source: str = "demo"
) -> list[str]:
    """Store rows (id, label, colour of its image) with cached images; created one minute apart, in order."""
    from agroml.data.records import make_records
    from agroml.data.store import Store
    from agroml.images.cache import ImageCache

    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    records = []
    with ImageCache(settings.image_dir) as cache:
        for i, (row_id, label, color) in enumerate(rows):
            image = cache.put(color_png(color, seed=zlib.crc32(row_id.encode())), url=f"https://img.test/{row_id}.png")
            records.append(
                {
                    "id": row_id,
                    "source": source,
                    "model_type": model_type,
                    "image_url": f"https://img.test/{row_id}.png",
                    "image_hash": image.sha256,
                    "predicted_label": label,
                    "confidence": 0.9,
                    "user_confirmed": True,
                    "created_at": start + timedelta(minutes=i),
                    "farmer_id": "f1",
                }
            )
    with Store(settings.db_path) as store:
        store.upsert(make_records(records))
    return [r[0] for r in rows]


# --- driving the real `agroml train` (the end-to-end tests) ------------------------------------------
#: The cheapest real training: no downloaded weights, tiny images, one epoch.
TRAIN_ARGS = ("train", "--model", "pest", "--weights", "none", "--image-size", "32", "--epochs", "1")


def has_train_command() -> bool:
    import typer.main

    from agroml.cli.main import app

    return "train" in typer.main.get_command(app).commands


def start_training(workdir: Path, *extra: str):
    """`agroml train` in a child process of its own (so it can be killed), output to files in workdir."""
    import subprocess
    import sys

    out = open(workdir / "train.out", "wb")  # noqa: SIM115 - closed when the process is reaped by the test
    code = "from agroml.cli.main import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *TRAIN_ARGS, *extra], cwd=workdir, stdout=out, stderr=subprocess.STDOUT
    )


def wait_until_training(workdir: Path, models_dir: Path, proc, timeout: float = 300) -> str:
    """The run id once the child has registered its run and opened its .partial folder (its signal
    handler is installed by then); fails with the child's output if it ends first."""
    import time

    from agroml.lifecycle.registry import Registry

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = (workdir / "train.out").read_text(errors="replace")[-2000:]
            raise AssertionError(f"training exited early ({proc.returncode}): {output}")
        if (models_dir / "registry.db").exists():
            with Registry(models_dir) as registry:
                mine = [r for r in registry.status("pest") if r.pid == proc.pid]
            if mine and (models_dir / "pest" / f".{mine[0].run_id}.partial").is_dir():
                return mine[0].run_id
        time.sleep(0.2)
    raise AssertionError(f"training did not register within {timeout} s")
