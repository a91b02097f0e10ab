"""Training: backbones, data splits and pipelines, the two-phase recipe, the fast path, run folders.

Importing this package is cheap (no TensorFlow); TensorFlow and Keras are imported when a model is built.
"""

from agroml.training.config import TrainConfig, resolve_config
from agroml.training.run import TrainResult, make_run_id, train

__all__ = ["TrainConfig", "TrainResult", "make_run_id", "resolve_config", "train"]
