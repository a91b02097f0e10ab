"""Production models kept loaded in a serving process, reloaded when production changes.

Why: loading a Keras model costs a second or more, far more than predicting one photo, so a server
loads each model type's production model once. Promotion replaces ``models/<type>/production/`` by a
rename (agroml.lifecycle.promotion), so the identity of its model.keras (inode, size, mtime) changes
with every promotion, in this process or another: each request compares it and reloads on a change.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from agroml.core.config import Settings
from agroml.core.errors import ModelNotFoundError
from agroml.lifecycle.predicting import SavedModel, load_saved_model
from agroml.lifecycle.promotion import PRODUCTION

Identity = tuple[int, int, int]


def _identity(model_file: Path) -> Identity | None:
    try:
        st = os.stat(model_file)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class ProductionModels:
    """Each model type's production model, loaded on first use and again whenever production changes."""

    def __init__(self) -> None:
        self._models: dict[str, tuple[Identity, SavedModel]] = {}
        self._lock = threading.Lock()  # two requests at once load a model once
        self.loads = 0

    def get(self, settings: Settings, model_type: str) -> SavedModel:
        folder = Path(settings.models_dir) / model_type / PRODUCTION
        with self._lock:
            key = _identity(folder / "model.keras")
            if key is None:
                raise ModelNotFoundError(
                    f"no production {model_type} model in {folder.parent}",
                    fix=f"promote a run: `agroml promote RUN_ID --model {model_type}` (or POST /promote)",
                )
            cached = self._models.get(model_type)
            if cached is not None and cached[0] == key:
                return cached[1]
            saved = load_saved_model(folder)
            self._models[model_type] = (key, saved)
            self.loads += 1
            return saved
