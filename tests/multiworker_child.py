"""One worker of a --strategy multiworker training, run as its own process by tests/test_distributed.py.

Usage: python multiworker_child.py ROOT STRATEGY EPOCHS [OUT.json [SEED]]

TF_CONFIG (from the test) says which worker this is. It trains through the library's ``train`` (the
same call `agroml train` makes) on the store under ROOT/data, writing under ROOT/models, and, when it
writes OUT.json: the in-memory model's probabilities on the test images and, on the chief, the run's
path, test and validation accuracy and seconds, and how far the reloaded model.keras predicts from the
in-memory model. SEED (default 0) is ``--seed``: the split and the initial weights. Each
epoch it prints ``epoch N`` to stdout, so a test knows when the run is under way.
"""

from __future__ import annotations

import faulthandler
import json
import signal
import sys
from pathlib import Path

import numpy as np

from agroml.core import config
from agroml.images.pixels import load_image_array
from agroml.training.config import TrainConfig
from agroml.training.data import load_training_data
from agroml.training.run import train


def main() -> int:
    faulthandler.register(signal.SIGUSR1)  # a test that gives up on a worker sees where it was
    root, strategy, epochs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    out = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    settings = config.resolve(
        {"data_dir": root / "data", "models_dir": root / "models", "min_total": 12, "min_per_class": 4},
        environ={"AGROML_WORKER_TIMEOUT_S": "120"},
        env_file=None,
    )
    cfg = TrainConfig.for_weights(
        "none",
        model_type="pest",
        image_size=32,
        epochs=epochs,
        batch_size=8,
        min_per_class=4,
        strategy=strategy,
        seed=seed,
    )

    def progress(task: str, done: int, total: int | None = None, info: str = "") -> None:
        if task.endswith("epochs"):
            print(f"epoch {done}", flush=True)

    result = train(settings, cfg, progress)
    if out is not None:
        paths, _ = load_training_data(settings, "pest", min_per_class=4, seed=seed).arrays("test")
        images = np.stack([load_image_array(p, 32) for p in paths])
        probs = result.model.predict(images, verbose=0)
        summary = {"worker": result.worker, "probs": probs.tolist()}
        if result.worker is None:  # the chief: the run it wrote
            import keras

            reloaded = keras.models.load_model(result.path / "model.keras").predict(images, verbose=0)
            summary.update(path=str(result.path), test_accuracy=result.metrics["test"]["accuracy"])
            summary.update(val_accuracy=result.metrics["val"]["accuracy"], seconds=result.seconds)
            summary["reload_gap"] = float(np.max(np.abs(reloaded - probs)))
        out.write_text(json.dumps(summary))
    print(json.dumps({"worker": result.worker, "run_id": result.run_id}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
