"""Training: backbones, data splits and pipelines, the two-phase recipe, the fast path, run folders.

Importing this package is cheap (no TensorFlow); TensorFlow and Keras are imported when a model is built.
"""

from agroml.training.run import TrainResult, make_run_id, train

__all__ = ["TrainResult", "make_run_id", "train"]
