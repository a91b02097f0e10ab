"""One flat training config: every hyperparameter with its default in one place, two presets, the check
that every value makes sense, and the files a config can come from (``--config``, ``--like``).

Why presets and not ``None`` placeholders: a field that says "None, meaning 15 here and 150 there"
needs a resolver that every reader of the config must remember to call, and `--help` had to repeat
the numbers by hand. Here the pretrained preset is the dataclass's defaults, the from-scratch preset
is :func:`dataclasses.replace` of it, and both `--help` and :meth:`TrainConfig.for_weights` read them.

Why the check covers every number (as nanoGPT's and Ultralytics' configs reject unknown keys): a NaN
or negative learning rate, a dropout of 2 or an infinite alpha used to reach Keras, which trained on
them for minutes and saved a model that predicts NaN. Bad values now stop with exit 2, naming the
flag and its valid range, before any data is read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from agroml.core.config import Settings
from agroml.core.errors import UsageError
from agroml.core.schema import MODEL_TYPES, check_model_type
from agroml.lifecycle.registry import Registry
from agroml.training.backbones import BACKBONES, DEFAULT_BACKBONE, get_backbone, weights_mode

#: `--tflite` modes: float16 weights, or full int8 quantization calibrated on training images.
TFLITE_MODES = ("float16", "int8")
#: `--strategy`: tf.distribute strategies a run can train under (training/distributed.py says what each is).
STRATEGIES = ("auto", "one", "mirrored", "multiworker")
#: MobileNetV2 widths Keras has ImageNet weights for (another width needs --weights none or PATH).
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
#: np.random.seed (through keras.utils.set_random_seed) takes 0 <= seed < 2**32.
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a run, saved as config.json. The defaults are the pretrained preset;
    :data:`SCRATCH` is the preset for ``weights="none"``. Build one with :meth:`for_weights`."""

    model_type: str = ""  # pest | disease | storage: required (check() says so)
    arch: str = DEFAULT_BACKBONE
    weights: str = "imagenet"  # imagenet | none | PATH of a weights file for the base
    alpha: float = 1.0  # MobileNetV2 width
    image_size: int = BACKBONES[DEFAULT_BACKBONE].default_size
    epochs: int = 15  # phase 1 (head), or the whole schedule from scratch
    batch_size: int = 32
    learning_rate: float = 1e-3  # phase 1; from scratch the peak of warmup + cosine decay
    fine_tune_layers: int = 0  # phase 2: unfreeze the top N base layers (pretrained only)
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float = 1e-5
    aug_views: int = 2  # fast path: views per image (1 clean + K-1 augmented)
    fast: bool = True  # phase 1 on cached features when the base is frozen
    patience: int = 4  # EarlyStopping of pretrained phases; from scratch nothing stops the schedule
    dropout: float = 0.2
    seed: int = 0
    strict: bool = False  # fail on a class under min_per_class instead of leaving it out
    min_per_class: int = Settings.min_per_class  # the CLI takes AGROML_MIN_PER_CLASS when no flag / file sets it
    tflite: str | None = None  # also write model.tflite: float16 | int8 (None: no TFLite file)
    run_eagerly: bool = False  # Keras eager mode: no graph tracing (tiny runs, debugging)
    tensorboard: bool = True  # Keras' TensorBoard logs in <run>/tensorboard/<phase>/ (scalars per epoch)
    strategy: str = "auto"  # auto | one | mirrored | multiworker (TF_CONFIG): training/distributed.py

    @property
    def scratch(self) -> bool:
        """Trained from scratch (``weights="none"``): one phase, the whole network learning."""
        return is_scratch(self.weights)

    @classmethod
    def for_weights(cls, weights: str = "imagenet", **overrides: Any) -> TrainConfig:
        """The preset for ``weights`` (:data:`SCRATCH` for "none", else :data:`PRETRAINED`) with ``overrides``.

        An unknown key is a UsageError listing the valid ones; values are checked by :meth:`check`.
        """
        check_keys(overrides, "TrainConfig")
        if "weights" in overrides:
            raise UsageError("weights given twice", fix="pass it as for_weights' first argument only")
        return replace(SCRATCH if is_scratch(weights) else PRETRAINED, weights=str(weights), **overrides)

    def check(self) -> None:
        """Raise a UsageError (exit 2) naming the flag and its valid values for anything that cannot train.

        Run before any data is read or a model built. Checks every field's type, every number's range
        (finite, within :data:`LIMITS`), and the names against the library's constants.
        """
        for f in fields(self):
            _check_type(f.name, f.type, getattr(self, f.name))
        if not self.model_type:
            raise UsageError("no model type", fix=f"pass --model {'|'.join(MODEL_TYPES)}")
        check_model_type(self.model_type)
        backbone = get_backbone(self.arch)
        weights_mode(self.weights)
        for name, limit in LIMITS.items():
            if not (self.scratch and name in AUTO_FIELDS and getattr(self, name) == AUTO):  # 0: scaled to the data
                limit.check(flag(name), getattr(self, name))
        if self.tflite is not None:
            check_tflite_mode(self.tflite)
        if self.strategy not in STRATEGIES:
            raise UsageError(
                f"unknown --strategy {self.strategy!r}: valid strategies are {', '.join(STRATEGIES)}",
                fix="use --strategy " + "|".join(STRATEGIES),
            )
        if not backbone.has_alpha and self.alpha != preset_for(self.weights).alpha:
            raise UsageError(f"--alpha applies to mobilenetv2 only, not {backbone.name}", fix="leave --alpha out")
        if backbone.has_alpha and weights_mode(self.weights) == "imagenet" and self.alpha not in IMAGENET_ALPHAS:
            raise UsageError(
                f"--alpha {self.alpha:g}: Keras has ImageNet weights for MobileNetV2 at widths "
                f"{', '.join(f'{a:g}' for a in IMAGENET_ALPHAS)} only",
                fix="pick one of those, or train this width with --weights none",
            )


#: The pretrained preset (ImageNet or a weights file): the dataclass's defaults.
PRETRAINED = TrainConfig()
#: From scratch: a narrow MobileNetV2, more and smaller steps at a higher peak rate (README, "Training").
#: A from-scratch value meaning "scaled to the data" (schedule.plan_schedule); a user's value wins.
AUTO = 0
#: The fields AUTO may stand for, from scratch only.
AUTO_FIELDS = ("epochs", "batch_size", "learning_rate")
#: epochs, batch_size and learning_rate are AUTO: chosen from the data size (agroml/training/schedule.py).
#: MobileNetV2 width 0.5: at 0.35 the demo's test accuracy over seeds 0-3 was 0.63-0.90 (seed 0 trained
#: to 0.75 on its own augmented images, underfitting); at 0.5 0.83-0.88 on seeds 0-2, for a step about
#: 1.2x as long (92 vs 76 ms at 96 px, batch 16): benchmarks/README.md, "From scratch at the scale of the data".
SCRATCH = replace(PRETRAINED, weights="none", epochs=AUTO, batch_size=AUTO, learning_rate=AUTO, alpha=0.5)


def is_scratch(weights: str) -> bool:
    return str(weights).strip().lower() == "none"


def preset_for(weights: str) -> TrainConfig:
    return SCRATCH if is_scratch(weights) else PRETRAINED


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


#: TrainConfig field -> its command-line flag, where it is not --<field with dashes>.
FLAGS = {"model_type": "--model", "learning_rate": "--lr", "fine_tune_learning_rate": "--fine-tune-lr"}


def flag(name: str) -> str:
    """The command-line flag of a TrainConfig field (``learning_rate`` -> ``--lr``), for messages."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def check_keys(keys: Any, where: str) -> None:
    """A UsageError naming the unknown keys and listing the valid ones."""
    unknown = sorted(set(keys) - set(field_names()))
    if unknown:
        raise UsageError(
            f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; valid keys are {', '.join(field_names())}"
        )


def check_tflite_mode(mode: str) -> str:
    if mode not in TFLITE_MODES:
        raise UsageError(
            f"unknown --tflite mode {mode!r}: valid modes are {', '.join(TFLITE_MODES)}",
            fix="use --tflite " + "|".join(TFLITE_MODES),
        )
    return mode


@dataclass(frozen=True)
class Limit:
    """The valid range of one number: ``low`` and ``high`` (None: unbounded), each end open or closed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def text(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def check(self, flag: str, value: float) -> None:
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if not math.isfinite(value) or below or above:
            raise UsageError(f"{flag} {value!r} is out of range: it must be a finite number {self.text()}")


#: Every number of TrainConfig and its valid range (tests/test_train_config.py checks none is missing).
LIMITS: dict[str, Limit] = {
    "alpha": Limit(0, 1.4, low_open=True),  # the widest MobileNetV2 Keras publishes
    "image_size": Limit(32, 1024),  # Keras' backbones need 32 px; 1024 px already costs 20x the 224 px memory
    "epochs": Limit(1),
    "batch_size": Limit(1),
    "learning_rate": Limit(0, low_open=True),
    "fine_tune_layers": Limit(0),
    "fine_tune_epochs": Limit(0),
    "fine_tune_learning_rate": Limit(0, low_open=True),
    "aug_views": Limit(1),
    "patience": Limit(1),
    "dropout": Limit(0, 1, high_open=True),
    "seed": Limit(0, MAX_SEED),
    "min_per_class": Limit(0),
}

_KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a text"}


def _check_type(name: str, annotation: Any, value: Any) -> None:
    kind = str(annotation).split(" | ")[0]
    if value is None and "None" in str(annotation):
        return
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not ok:
        raise UsageError(f"{flag(name)} {value!r} must be {_KINDS[kind]}")


# --- where a config comes from --------------------------------------------------------------------
def read_config_file(path: str | Path) -> dict[str, Any]:
    """The TrainConfig fields in a JSON or YAML file (``--config``); an unknown key is a UsageError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    where = f"--config {path}"
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{where}: not valid JSON ({exc})") from None
    else:
        import yaml  # YAML 1.1 also reads JSON

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"{where}: must hold a mapping of TrainConfig fields, not {type(data).__name__}")
    check_keys(data, where)
    return {k: _numbers_from_text(k, v) for k, v in data.items()}


def _numbers_from_text(name: str, value: Any) -> Any:
    """A float field written as text, e.g. YAML's ``1e-3`` (YAML 1.1 reads a float only with a dot)."""
    kind = str(next(f.type for f in fields(TrainConfig) if f.name == name)).split(" | ")[0]
    if kind == "float" and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value  # check() names it
    return value


def run_config(settings: Settings, ref: str) -> dict[str, Any]:
    """The TrainConfig fields of an earlier run (``--like``): a run id, or a run folder's path.

    Read from the run's config.json; a run that left no folder (failed, interrupted) from the config the
    registry recorded when it started. Other keys of config.json (classes, counts...) are not settings.
    """
    folder = Path(ref)
    if (folder / "config.json").is_file():
        recorded = _read_json(folder / "config.json")
    else:
        run = None
        if (Path(settings.models_dir) / "registry.db").is_file():
            with Registry(settings.models_dir, create=False) as registry:
                run = registry.get(ref)
        if run is None:
            raise UsageError(f"--like {ref}: no run with that id and no run folder there", fix="list runs: agroml runs")
        saved = Path(run.path) / "config.json" if run.path else None
        recorded = _read_json(saved) if saved is not None and saved.is_file() else run.config
    names = set(field_names())
    # None where the field takes none: a run of an older agroml ("patience": null from scratch) -> the preset
    return {k: v for k, v in recorded.items() if k in names and (v is not None or k == "tflite")}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--like: {path} is unreadable ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--like: {path} holds no run config")
    return data


def resolve_config(
    settings: Settings,
    flags: Mapping[str, Any] | None = None,
    config_file: str | Path | None = None,
    like: str | None = None,
) -> TrainConfig:
    """The config of a new run: ``flags`` (only those the user set) > the ``--config`` file or the
    ``--like`` run > the preset of the resulting weights; min_per_class last from ``settings``
    (AGROML_MIN_PER_CLASS). Checked: bad values raise a UsageError before any data is read."""
    if config_file is not None and like is not None:
        raise UsageError("--config and --like both give a whole config", fix="use one of them, and flags on top")
    check_keys(flags or {}, "flags")
    base = read_config_file(config_file) if config_file is not None else run_config(settings, like) if like else {}
    values = {**base, **(flags or {})}
    values.setdefault("min_per_class", settings.min_per_class)
    typed = {**(base if config_file is not None else {}), **(flags or {})}  # --like: a run's recorded values
    for name in AUTO_FIELDS:  # AUTO is the scratch preset's "scaled to the data", not a value to type
        if typed.get(name) == AUTO and not isinstance(typed.get(name), bool):
            LIMITS[name].check(flag(name), typed[name])
    weights = values.pop("weights", PRETRAINED.weights)
    cfg = TrainConfig.for_weights(weights, **values)
    cfg.check()
    return replace(cfg, arch=get_backbone(cfg.arch).name)
