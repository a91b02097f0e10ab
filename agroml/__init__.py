"""agroml: the data-and-training loop for AgroShield's crop photo classifiers.

The library never prints, prompts or exits: it returns results and raises the typed errors of
:mod:`agroml.errors`; the command line in :mod:`agroml.cli` renders both.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("agroml")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

MODEL_TYPES: tuple[str, ...] = ("pest", "disease", "storage")
