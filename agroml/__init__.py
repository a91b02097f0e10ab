"""agroml: the data-and-training loop for AgroShield's crop photo classifiers.

The library never prints, prompts or exits: it returns results and raises the typed errors of
:mod:`agroml.core.errors`; the command line in :mod:`agroml.cli` renders both. The names below are
the calls a notebook user makes::

    import agroml
    settings = agroml.resolve_settings({})
    agroml.generate_demo(settings, ["pest"], n=600)
    result = agroml.train(settings, agroml.TrainConfig.for_weights("none", model_type="pest"))

Why they load lazily: ``import agroml`` (and so ``agroml --help``) must not pay for pandas and
TensorFlow before a call needs them.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("agroml")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

#: public name -> (module, attribute)
_PUBLIC: dict[str, tuple[str, str]] = {
    "MODEL_TYPES": ("agroml.core.schema", "MODEL_TYPES"),
    "AgromlError": ("agroml.core.errors", "AgromlError"),
    "Settings": ("agroml.core.config", "Settings"),
    "resolve_settings": ("agroml.core.config", "resolve"),
    "generate_demo": ("agroml.demo.rows", "generate"),
    "import_folder": ("agroml.data.importing", "import_folder"),
    "pull": ("agroml.data.pulling", "pull"),
    "open_source": ("agroml.data.sources", "open_source"),
    "stats_report": ("agroml.data.analysis", "stats_report"),
    "distribution_report": ("agroml.data.analysis", "distribution_report"),
    "export_records": ("agroml.data.exporting", "export_records"),
    "TrainConfig": ("agroml.training.config", "TrainConfig"),
    "train": ("agroml.training.run", "train"),
    "evaluate": ("agroml.lifecycle.evaluation", "evaluate"),
    "predict": ("agroml.lifecycle.predicting", "predict"),
    "Registry": ("agroml.lifecycle.registry", "Registry"),
    "diagnose": ("agroml.ops.doctor", "diagnose"),
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """Load a public name on first use (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'agroml' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
