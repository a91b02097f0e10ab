"""Runs whose answers the gate tests control: real saved Keras models that score by nearest colour centre.

Why centres and not trained models: the gate's tests need a champion and a challenger that are right
and wrong on exactly known rows (a class whose recall collapses while accuracy rises). Each class is
scored by its distance to a centre in RGB (0..1), as tests/model_helpers.py does, with the centres
chosen so each image colour lands on a known class. The rows:

- ``red``: 10 red images, 10 yellow;   ``green``: 10 green;   ``blue``: 8 blue, 2 cyan  (40 rows)

PERFECT gets all 40 right. FLAWED calls yellow green (red recall 0.5; accuracy 0.75, macro F1 0.78).
COLLAPSE gets red and green all right but calls cyan green: accuracy 0.95, macro F1 0.93, both up on
FLAWED, while blue's recall falls from 1.0 to 0.8.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tests.model_helpers import add_rows, write_run

CLASSES = ["red", "green", "blue"]
PERFECT = {"red": (1, 0.3, 0), "green": (0, 1, 0), "blue": (0, 0.3, 1)}
FLAWED = {"red": (1, 0, 0.5), "green": (0, 1, 0), "blue": (0, 0.5, 1)}
COLLAPSE = {"red": (1, 0.3, 0), "green": (0, 1, 0.2), "blue": (0, 0, 1)}
#: (id, label, image colour) of the rows neither run trains on.
HELD_OUT = (
    [(f"r{i}", "red", "red") for i in range(10)]
    + [(f"y{i}", "red", "yellow") for i in range(10)]
    + [(f"g{i}", "green", "green") for i in range(10)]
    + [(f"b{i}", "blue", "blue") for i in range(8)]
    + [(f"c{i}", "blue", "cyan") for i in range(2)]
)
#: Rows both runs trained on: cyan images labelled blue, which COLLAPSE gets wrong. Were they compared,
#: blue's recall would look far worse; the gate must leave them out.
TRAINED = [(f"t{i}", "blue", "cyan") for i in range(12)]
SPLIT = {"train": [r[0] for r in TRAINED[:8]], "val": [r[0] for r in TRAINED[8:]], "test": [r[0] for r in HELD_OUT]}


def centre_model(centres: dict[str, tuple[float, float, float]], image_size: int = 16):
    """A Keras model taking raw uint8 RGB whose class is the nearest centre to the image's mean colour."""
    import keras

    c = np.array([centres[name] for name in CLASSES], dtype="float32")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(len(CLASSES), activation="softmax", name="head")
    outputs = dense(x)
    model = keras.Model(inputs, outputs)
    dense.set_weights([20 * c.T, -10 * (c**2).sum(axis=1)])  # -10 |x - c|^2 + const: the nearest wins
    return model


def write_centre_run(models_dir: Path, run_id: str, centres: dict, split: dict | None = None) -> Path:
    """A registered, succeeded pest run folder whose model.keras is :func:`centre_model` (``centres``)."""
    folder = write_run(models_dir, "pest", run_id, CLASSES, split or SPLIT)
    centre_model(centres).save(folder / "model.keras")
    return folder


def add_gate_rows(settings) -> None:
    """The held-out and the trained rows, in the store with their images cached."""
    add_rows(settings, "pest", HELD_OUT + TRAINED)


def tree_bytes(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256): equal dicts mean byte-identical folders."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
