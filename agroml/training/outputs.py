"""What a run leaves besides the model: JSON files written atomically, history.csv, MODEL_CARD.md, and
the optional TFLite export with its agreement check.

Why atomic JSON through one encoder (agroml.core.files): a value JSON cannot hold (a numpy integer, a
NaN) must fail before a byte is written, and a kill mid-write must not leave a truncated file.
"""

from __future__ import annotations

import csv
import io
import platform
import tempfile
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agroml.core.errors import TrainingError
from agroml.core.files import atomic_write
from agroml.training.config import check_tflite_mode

if TYPE_CHECKING:
    import keras

#: Top-1 agreement a TFLite model must reach against the Keras model on the test split.
TFLITE_MIN_AGREEMENT = 0.99


def write_history_csv(path: Path, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """history.csv (one row per epoch, phases in order); returns the same as columns for curves.png."""
    keys = ["epoch", "phase", *sorted({k for r in rows for k in r} - {"epoch", "phase"})]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in keys})
    atomic_write(path, buf.getvalue().encode())
    return {k: [r.get(k) for r in rows] for k in keys}


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("agroml", "tensorflow", "keras", "numpy", "pillow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def model_card(
    run_id: str,
    model_type: str,
    config: dict[str, Any],
    counts: dict[str, dict[str, int]],
    metrics: dict[str, Any],
    dropped: dict[str, int],
    skipped: dict[str, int],
) -> str:
    """MODEL_CARD.md: what the model is, what it was trained on, how good it is per class, and its limits."""
    test = metrics.get("test") or {}
    lines = [
        f"# {model_type} classifier {run_id}",
        "",
        f"Backbone **{config['arch']}** ({config['weights']} weights) at {config['image_size']}x"
        f"{config['image_size']} px; input: raw RGB uint8 pixels (preprocessing is inside the model).",
        "",
        "## Intended use",
        f"Suggest the {model_type} shown in a farmer's crop photo in the AgroShield app, as a ranked list with",
        "probabilities for a person to confirm. Not a diagnosis: treatment decisions need a human check.",
        "",
        "## Data",
        f"Farmer-confirmed and farmer-corrected rows of the local store (fingerprint `{config['data_fingerprint']}`), "
        f"split {config['split']} by seed {config['seed']}, identical images kept in one split.",
        "",
        "| class | train | val | test |",
        "|---|---:|---:|---:|",
    ]
    for c in counts["train"]:
        lines.append(f"| {c} | {counts['train'][c]} | {counts['val'][c]} | {counts['test'][c]} |")
    if dropped:
        lines += [
            "",
            "Classes left out (under the per-class minimum): "
            + ", ".join(f"{c} ({n})" for c, n in dropped.items())
            + ".",
        ]
    if skipped:
        lines += ["", "Rows skipped: " + ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in skipped.items()) + "."]
    lines += ["", "## Metrics (test split, never seen in training)"]
    if test:
        lines += [
            f"accuracy {test['accuracy']:.3f}, macro F1 {test['macro_f1']:.3f}, "
            f"top-{test.get('top_k', 3)} accuracy {test['top3_accuracy']:.3f}, ECE {test.get('ece', 0):.3f} "
            f"on {test.get('n', 0)} images.",
            "",
            "| class | precision | recall | F1 | support |",
            "|---|---:|---:|---:|---:|",
        ]
        for c, m in test.get("per_class", {}).items():
            lines.append(f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    else:
        lines.append("No test images (too few per class).")
    lines += [
        "",
        "## Limits",
        "- Knows only the classes above; a photo of anything else still gets one of them.",
        "- Labels come from farmers' feedback; confirmations of wrong predictions are label noise.",
        "- Test figures come from a few images per class: expect a few points either way in the field.",
        "- Trained on the photo conditions of this data (crops, regions, phones, seasons); re-evaluate "
        "(`agroml evaluate`) on newer rows before promoting.",
        "",
    ]
    return "\n".join(lines)


def export_tflite(model: keras.Model, path: Path, mode: str, sample: np.ndarray) -> None:
    """Write ``model`` as TFLite with float16 weights or int8 quantization (``sample`` calibrates int8)."""
    import tensorflow as tf

    check_tflite_mode(mode)
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        else:

            def representative() -> Any:
                for image in sample[:100]:
                    yield [image[None].astype("float32")]

            converter.representative_dataset = representative
        try:
            data = converter.convert()
        except Exception as exc:  # the converter raises ConverterError and others
            raise TrainingError(
                f"TFLite {mode} conversion failed: {str(exc).splitlines()[0][:200]}",
                fix="train without --tflite, or try the other --tflite mode",
            ) from None
    atomic_write(path, data)


def tflite_interpreter(path: Path) -> Any:
    """LiteRT's interpreter (package ai-edge-litert) where installed, else TensorFlow's own.

    Why both: TensorFlow deprecates tf.lite.Interpreter in favour of LiteRT and warns on every use; the
    warning is about this code, not the user's model, so it is not shown. When TensorFlow drops it,
    ``pip install ai-edge-litert`` keeps the check working with no change here.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            return tf.lite.Interpreter(model_path=str(path))
    return Interpreter(model_path=str(path))


def check_tflite(path: Path, images: np.ndarray, keras_probs: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement with the Keras model on ``images``, size and per-image latency of the TFLite model."""
    interpreter = tflite_interpreter(path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    preds, times = [], []
    for image in images:
        interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
        preds.append(int(np.argmax(interpreter.get_tensor(out["index"])[0])))
    agree = float(np.mean(np.asarray(preds) == keras_probs.argmax(axis=1))) if len(preds) else None
    ms = np.asarray(times) * 1000 if times else np.zeros(1)
    return {
        "path": path.name,
        "size_bytes": path.stat().st_size,
        "top1_agreement": agree,
        "n": len(preds),
        "latency_ms_p50": float(np.percentile(ms, 50)),
        "latency_ms_p95": float(np.percentile(ms, 95)),
        "ok": agree is not None and agree >= TFLITE_MIN_AGREEMENT,
    }
