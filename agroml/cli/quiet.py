"""TensorFlow's start-up lines kept off the user's terminal; real errors still shown.

Why: importing TensorFlow and looking for a GPU writes lines such as "oneDNN custom operations are
on", "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
"Could not find cuda drivers" and "failed call to cuInit" straight to file descriptor 2, from C++,
before TF_CPP_MIN_LOG_LEVEL applies: a user of `agroml predict` sees four lines of alarm about
hardware they never asked for. The commands that load TensorFlow (train, evaluate, predict, doctor)
load it once, up front, through :func:`load_tensorflow_quietly`; every other line written to the
descriptor meanwhile (a real error, a traceback) is passed on.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

#: Lines that TensorFlow / XLA / absl write while loading and probing for CUDA: noise on a CPU machine.
NOISE = re.compile(
    r"oneDNN custom operations are on|absl::InitializeLog\(\)|cuInit|cuda drivers|cudart_stub|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation_placer|TF-TRT Warning|"
    r"This TensorFlow binary is optimized|To enable the following instructions|"
    r"rebuild TensorFlow with the appropriate compiler flags|cuda_(platform|dnn|fft|blas|executor)\.cc"
)


@contextlib.contextmanager
def stderr_filtered(noise: re.Pattern[str] = NOISE) -> Iterator[None]:
    """Collect what is written to file descriptor 2 (C++ included); afterwards pass on all but ``noise``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines = sink.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not noise.search(line))
            if kept:
                os.write(2, kept.encode("utf-8"))


def load_tensorflow_quietly() -> None:
    """Import TensorFlow and let it probe for a GPU, its start-up noise filtered off stderr."""
    with stderr_filtered():
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
        except Exception:  # missing or broken: the command's own import reports it, unfiltered
            pass
