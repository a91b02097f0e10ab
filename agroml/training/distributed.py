"""Training past one device with TensorFlow's own distribution strategies (``--strategy``), and a training
loop that works under every one of them.

- ``one``: TensorFlow's default strategy (one device): the plain ``model.fit`` path, unchanged.
- ``auto`` (the default): ``mirrored`` when more than one GPU is visible, else ``one``.
- ``mirrored``: MirroredStrategy over this machine's GPUs (the CPU when there is none); ``model.fit``
  works under it, so the phases run as they do under ``one``, inside the strategy's scope.
- ``multiworker``: MultiWorkerMirroredStrategy over the machines TF_CONFIG names. Keras 3's ``model.fit``
  fails under it (keras-team/keras#20585, "Attempt to convert a value (PerReplica ...)", TF 2.21 /
  Keras 3.15), so :func:`fit_phase_distributed` runs its own step with ``strategy.run`` over
  ``strategy.experimental_distribute_dataset`` and drives the very callbacks ``fit`` would
  (loop.callbacks: the non-finite stop, EarlyStopping, ReduceLROnPlateau, the best checkpoint, the
  progress and registry reporter) by hand, with the cosine schedule inside the optimizer as before.
  Phase 1 runs through the image pipeline (``--slow``): the cached-feature head is one machine's work.

Batch and learning rate: ``--batch-size`` is per replica. A step consumes the global batch, the
per-replica batch times the replicas (one per worker on CPUs, one per GPU), and the learning rate is
scaled by the same factor (the linear scaling rule, Goyal et al. 2017, "Accurate, large minibatch SGD"):
the same number of epochs then takes 1/replicas the steps at a proportionally higher rate.
config.json records the per-replica values the user gave and, under ``distribution``, the global ones.

Data: every worker reads its own store and image cache (a shared filesystem, or ``agroml pull`` on each),
computes the split (a pure function of the data and ``--seed``) and :func:`check_same_split` all-gathers
every worker's split.json sha256 before anything trains: a worker that sees other data fails the run
on every worker, named. Each worker then trains on its shard of the training set (tf.data auto-shard by
DATA: the inputs are file paths, not files per worker).

Only the chief (TF_CONFIG's ``chief`` task, else worker 0) writes the run folder, the registry row and
the log; the others keep their checkpoints in a temporary folder that is removed. A worker that dies
breaks the next collective: the chief fails the run with a TrainingError naming it, at the latest after
AGROML_WORKER_TIMEOUT_S (the collectives' timeout and the coordination service's heartbeat timeout),
instead of waiting for ever.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agroml.core.errors import TrainingError, UsageError
from agroml.core.files import json_text
from agroml.core.progress import ProgressFn, no_progress
from agroml.training.config import TrainConfig
from agroml.training.loop import EpochFn, build_optimizer, callbacks, fit_phase, history_rows

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

#: A phase's training function: loop.fit_phase's signature.
FitFn = Callable[..., list[dict[str, Any]]]
#: How TensorFlow names a task in its errors: /job:worker/replica:0/task:1
_TASK_IN_ERROR = re.compile(r"/job:(chief|worker)/replica:\d+/task:(\d+)")


@dataclass
class Distribution:
    """The strategy this process trains under, and where it stands in the cluster."""

    name: str  # one | mirrored | multiworker (auto resolved)
    strategy: Any = None  # tf.distribute.Strategy; None for one (TensorFlow's default)
    replicas: int = 1
    #: The cluster's tasks in replica order (chief first), as (job, index, address); () off multiworker.
    tasks: tuple[tuple[str, int, str], ...] = ()
    task: tuple[str, int] = ("worker", 0)
    timeout_s: float = 600.0

    @property
    def workers(self) -> int:
        return max(1, len(self.tasks))

    @property
    def is_chief(self) -> bool:
        """Whether this process writes: TF_CONFIG's chief, else worker 0 (TensorFlow's own rule)."""
        if self.name != "multiworker":
            return True
        jobs = {job for job, _, _ in self.tasks}
        return self.task == ("chief", 0) if "chief" in jobs else self.task == ("worker", 0)

    def describe(self, job: str, index: int) -> str:
        """``worker 1 (10.0.0.2:12345)``: a task as TF_CONFIG names it."""
        address = next((a for j, i, a in self.tasks if (j, i) == (job, index)), "?")
        return f"{job} {index} ({address})"

    @property
    def role(self) -> str:
        """What this process is, for messages: ``worker 1 of 2 (10.0.0.2:12345)``."""
        return f"{self.describe(*self.task).replace(' (', f' of {self.workers} (', 1)}"

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """The strategy's scope: models, optimizers and variables made in it are distributed."""
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()

    def training_config(self, cfg: TrainConfig) -> TrainConfig:
        """``cfg`` as the phases train it: the global batch, the learning rates scaled with it, and under
        multiworker phase 1 through the image pipeline. Unchanged under ``one``."""
        if self.name == "one":
            return cfg
        r = self.replicas
        scaled = replace(
            cfg,
            batch_size=cfg.batch_size * r,
            learning_rate=cfg.learning_rate * r,
            fine_tune_learning_rate=cfg.fine_tune_learning_rate * r,
        )
        return replace(scaled, fast=False) if self.name == "multiworker" else scaled

    def fit(self) -> FitFn:
        """The function that trains a phase: Keras' fit, or the custom loop under multiworker."""
        return fit_phase if self.name != "multiworker" else functools.partial(fit_phase_distributed, self)

    def to_dict(self, cfg: TrainConfig, n_train: int | None = None) -> dict[str, Any]:
        """What config.json records under ``distribution``. With ``n_train``, also the optimizer steps
        per epoch the replicas take together (of the global batch): ``schedule`` records them per
        replica, as the schedule planned them, which is not what ran when there are several."""
        recorded: dict[str, Any] = {
            "strategy": self.name,
            "replicas": self.replicas,
            "workers": self.workers,
            "global_batch_size": cfg.batch_size * self.replicas,
            "learning_rate_scale": self.replicas if self.name != "one" else 1,
        }
        if n_train is not None:
            recorded["steps_per_epoch"] = max(1, math.ceil(n_train / (cfg.batch_size * self.replicas)))
        return recorded

    def warnings(self, cfg: TrainConfig) -> list[str]:
        if self.name == "multiworker" and cfg.fast and not cfg.scratch:
            return [
                "--strategy multiworker trains phase 1 through the image pipeline (as --slow): "
                "the cached-feature head is one machine's work"
            ]
        return []


def start(name: str, timeout_s: float = 600.0, environ: Mapping[str, str] | None = None) -> Distribution:
    """The strategy ``name`` (one of config.STRATEGIES) stands for on this machine.

    Call it before any other TensorFlow op: MultiWorkerMirroredStrategy must be made at program start,
    and it waits here until every worker TF_CONFIG names has started.
    """
    environ = os.environ if environ is None else environ
    if name == "one":
        return Distribution("one")
    import tensorflow as tf

    if name == "auto":
        if len(tf.config.list_physical_devices("GPU")) <= 1:
            return Distribution("one")
        name = "mirrored"
    if name == "mirrored":
        mirrored = tf.distribute.MirroredStrategy()
        return Distribution("mirrored", mirrored, mirrored.num_replicas_in_sync)
    if name != "multiworker":
        raise UsageError(f"unknown --strategy {name!r}", fix="use --strategy auto|one|mirrored|multiworker")
    tasks, task = read_tf_config(environ.get("TF_CONFIG"))
    _coordinate(tasks, timeout_s)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return Distribution("multiworker", strategy, strategy.num_replicas_in_sync, tasks, task, timeout_s)


def _coordinate(tasks: tuple[tuple[str, int, str], ...], timeout_s: float) -> None:
    """TensorFlow's coordination service as MultiWorkerMirroredStrategy sets it up, with its heartbeat
    timeout at ``timeout_s`` instead of TensorFlow's 10 s.

    Why: the heartbeat is how a worker that hangs (or whose machine went away without closing its
    sockets) is found; at 10 s a worker whose CPU is busy with other work was declared dead mid-run
    (measured on the loaded 2-core development machine). A worker killed outright is found sooner:
    its closed connections fail the next collective. No public API sets this; the strategy keeps a
    service configured before it is made.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    if context.context().coordination_service is not None:
        return
    jobs = [job for job in ("chief", "worker") if any(j == job for j, _, _ in tasks)]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{jobs[0]}/replica:0/task:0",
        heartbeat_timeout_in_ms=int(timeout_s * 1000),
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=sum(1 for j, _, _ in tasks if j == job))
            for job in jobs
        ],
    )


def writes(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process writes runs under strategy ``name``: False only for a non-chief worker of
    ``multiworker``, read from TF_CONFIG without starting TensorFlow (retrain decides its lock with it)."""
    if name != "multiworker":
        return True
    tasks, task = read_tf_config((os.environ if environ is None else environ).get("TF_CONFIG"))
    return Distribution("multiworker", tasks=tasks, task=task).is_chief


def read_tf_config(text: str | None) -> tuple[tuple[tuple[str, int, str], ...], tuple[str, int]]:
    """(the cluster's tasks, chief first; this task) from TF_CONFIG, or a UsageError saying what is wrong."""
    example = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
        '"index": 0}}\' (README, "Several machines")'
    )
    if not text:
        raise UsageError("--strategy multiworker needs TF_CONFIG: the workers' addresses and this one's", fix=example)
    try:
        data = json.loads(text)
        cluster, task = data["cluster"], data["task"]
        tasks = tuple(
            (job, i, str(address)) for job in ("chief", "worker") for i, address in enumerate(cluster.get(job, []))
        )
        me = (str(task["type"]), int(task["index"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"TF_CONFIG is not a cluster and a task ({exc.__class__.__name__}: {exc})", fix=example
        ) from None
    if me not in {(j, i) for j, i, _ in tasks}:
        raise UsageError(f"TF_CONFIG's task {me[0]} {me[1]} is not in its cluster", fix=example)
    return tasks, me


# --- only the chief writes --------------------------------------------------------------------------
@contextlib.contextmanager
def worker_dir() -> Iterator[Path]:
    """A temporary folder for a non-chief worker's checkpoints, removed however training ends."""
    folder = Path(tempfile.mkdtemp(prefix="agroml-worker-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def plain_copy(dist: Distribution, model: keras.Model) -> keras.Model:
    """The trained model with ordinary variables, made outside the strategy (what the chief evaluates,
    saves and returns): distributed variables need their strategy to be read, saved or exported."""
    if dist.strategy is None:
        return model
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


# --- every worker the same split ------------------------------------------------------------------
def split_digest(split_ids: dict[str, list[str]]) -> str:
    """sha256 of split.json as the run writes it (core.files.json_text)."""
    return hashlib.sha256((json_text(split_ids) + "\n").encode()).hexdigest()


def check_same_split(dist: Distribution, split_ids: dict[str, list[str]]) -> str:
    """Every worker's split.json sha256, all-gathered: a TrainingError on every worker, naming the
    workers whose split differs from the chief's, unless all are equal. Returns this worker's digest."""
    digest = split_digest(split_ids)
    if dist.name != "multiworker" or dist.workers < 2:
        return digest
    import tensorflow as tf

    row = np.frombuffer(bytes.fromhex(digest), dtype=">i4").astype("int32")[None]  # 8 whole numbers
    with translate_errors(dist):
        values = dist.strategy.experimental_distribute_values_from_function(lambda ctx: tf.constant(row))
        gathered = np.asarray(dist.strategy.gather(values, axis=0))
    per_task = gathered[:: max(1, len(gathered) // dist.workers)]  # each task's replicas hold its digest
    differ = [
        dist.describe(job, i) for (job, i, _), r in zip(dist.tasks, per_task, strict=True) if (r != per_task[0]).any()
    ]
    if differ:
        raise TrainingError(
            f"the workers computed different splits: {', '.join(differ)} differ from "
            f"{dist.describe(*dist.tasks[0][:2])} (split.json sha256); nothing was trained",
            fix="give every worker the same store and image cache (a shared folder, or `agroml pull` on each "
            "at the same time) and the same --seed and --min-per-class",
        )
    return digest


# --- a dead worker fails the run, named -----------------------------------------------------------
@contextlib.contextmanager
def translate_errors(dist: Distribution) -> Iterator[None]:
    """TensorFlow's errors from a collective that lost a worker, as a TrainingError naming that worker."""
    import tensorflow as tf

    lost = (
        tf.errors.UnavailableError,
        tf.errors.DeadlineExceededError,
        tf.errors.AbortedError,
        tf.errors.CancelledError,
        tf.errors.InternalError,
    )
    try:
        yield
    except lost as exc:
        if dist.name != "multiworker":
            raise
        raise worker_failure(dist, exc) from None


def worker_failure(dist: Distribution, exc: BaseException) -> TrainingError:
    """A TrainingError naming the task(s) other than this one that TensorFlow's error mentions."""
    import tensorflow as tf

    named = sorted({(job, int(i)) for job, i in _TASK_IN_ERROR.findall(str(exc))} - {dist.task})
    who = ", ".join(dist.describe(job, i) for job, i in named) or "a worker"
    timed_out = isinstance(exc, tf.errors.DeadlineExceededError)
    why = f"did not answer within AGROML_WORKER_TIMEOUT_S={dist.timeout_s:g} s" if timed_out else "stopped answering"
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
    return TrainingError(
        f"{who} {why} ({exc.__class__.__name__}: {first}); the run failed on {dist.role} and nothing was saved",
        fix="see that worker's own output, then start every worker again (a worker cannot rejoin a run)",
    )


# --- the loop ---------------------------------------------------------------------------------------
def moving_statistics_sync(strategy: Any, model: keras.Model) -> Callable[[], None]:
    """A function that sets every replica's BatchNorm moving mean and variance to their mean over the replicas.

    Why: they are not gradients. Keras 3 makes them with aggregation "none", and TensorFlow updates such a
    mirrored variable in replica context on that replica's copy only, so each replica (each worker) keeps
    statistics of its own shard and the workers' models drift apart (measured 0.007 in probability after
    2 epochs on the two-worker test). Averaging once per epoch, as an all-reduce in replica context
    (``ReplicaContext.all_reduce``, one batched collective), makes every copy the same: each replica writes
    the common mean into its own copy, the only update such a variable takes there. The mean of the
    replicas' moving averages is the moving average over all the batches of the epoch (equal shards).
    Keras' ``synchronized=True`` BatchNormalization would sync every step, but the backbones come from
    keras.applications built with the default.
    """
    import tensorflow as tf

    moving = [
        v for v in model.non_trainable_variables if v.path.rsplit("/", 1)[-1] in ("moving_mean", "moving_variance")
    ]
    if not moving or strategy.num_replicas_in_sync < 2:
        return lambda: None

    def replica_fn() -> None:
        context = tf.distribute.get_replica_context()
        # tf.identity, not a bare read: a variable read is colocated with the variable and has no device
        # of its own, and MultiWorkerMirroredStrategy's all_reduce then fails with "destinations can
        # not be empty" (measured on two workers; MirroredStrategy does not mind)
        means = context.all_reduce("MEAN", [tf.identity(v.value) for v in moving])
        for variable, mean in zip(moving, means, strict=True):
            variable.value.assign(mean)  # this replica's copy (aggregation "none" in replica context)

    @tf.function(autograph=False)
    def sync() -> None:
        strategy.run(replica_fn)

    return lambda: sync()


def shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Auto-shard by DATA: every worker reads the same list of file paths and keeps its share of the
    elements (sharding by FILE would need one input file per worker)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _logs(total: np.ndarray, names: list[str], prefix: str = "") -> dict[str, float]:
    """Running sums [weighted loss, weight, weighted correct, n, (weighted top-k)] -> Keras' logs."""
    loss_sum, weight, correct, n = total[:4]
    if n == 0:
        return {}
    logs = {f"{prefix}loss": float(loss_sum / n), f"{prefix}accuracy": float(correct / max(weight, 1e-12))}
    if len(total) > 4:
        logs[f"{prefix}{names[-1]}"] = float(total[4] / max(weight, 1e-12))
    return logs


def fit_phase_distributed(
    dist: Distribution,
    model: keras.Model,
    phase: str,
    cfg: TrainConfig,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    epochs: int,
    steps: int,
    class_weight: dict[int, float],
    workdir: Path,
    progress: ProgressFn = no_progress,
    on_epoch: EpochFn | None = None,
    first_epoch: int = 0,
    later_epochs: int = 0,
    stop_early: bool = False,
) -> list[dict[str, Any]]:
    """loop.fit_phase under any strategy: the compiled model's optimizer (and its schedule) trained by
    ``strategy.run`` steps, the phase's Keras callbacks driven as fit drives them; returns history rows.

    ``cfg.batch_size`` is the global batch (the datasets are batched with it; the strategy splits each
    batch across the replicas). Losses and metrics are summed over the replicas before any callback sees
    them, so every worker takes the same early-stopping and checkpoint decisions. As in fit with
    ``class_weight``: the training loss and accuracy are class-weighted, the validation ones are not.
    """
    import keras
    import tensorflow as tf

    strategy = dist.strategy or tf.distribute.get_strategy()
    model_optimizer: Any = model.optimizer
    n_classes = int(model.output_shape[-1])
    top_k = 3 if n_classes > 3 else 0
    names = ["loss", "accuracy", *(["top3_accuracy"] if top_k else [])]
    weights = tf.constant([float(class_weight.get(i, 1.0)) for i in range(n_classes)], dtype="float32")
    global_batch = float(cfg.batch_size)

    def sums(y: Any, probs: Any, w: Any) -> Any:
        y = tf.cast(tf.reshape(y, [-1]), "int32")
        per_example = keras.losses.sparse_categorical_crossentropy(y, probs)
        correct = tf.cast(tf.equal(tf.argmax(probs, axis=-1, output_type="int32"), y), "float32")
        out = [
            tf.reduce_sum(w * per_example),
            tf.reduce_sum(w),
            tf.reduce_sum(w * correct),
            tf.cast(tf.size(y), "float32"),
        ]
        if top_k:
            out.append(tf.reduce_sum(w * tf.cast(tf.math.in_top_k(y, probs, top_k), "float32")))
        return tf.stack(out)

    def train_replica(x: Any, y: Any) -> Any:
        w = tf.gather(weights, tf.cast(y, "int32"))
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            # the mean over the GLOBAL batch: the optimizer sums the replicas' gradients
            loss = tf.reduce_sum(w * keras.losses.sparse_categorical_crossentropy(y, probs)) / global_batch
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        model_optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return sums(y, probs, w)

    def val_replica(x: Any, y: Any) -> Any:
        return sums(y, model(x, training=False), tf.ones_like(tf.reshape(y, [-1]), dtype="float32"))

    # autograph off, as Keras' own train function: these steps have no Python control flow to convert,
    # and converting every layer's call made tracing MobileNetV2 several times slower
    @tf.function(autograph=False)
    def train_step(iterator: Any) -> Any:
        return strategy.reduce("SUM", strategy.run(train_replica, args=next(iterator)), axis=None)

    @tf.function(autograph=False, reduce_retracing=True)
    def val_step(batch: Any) -> Any:
        return strategy.reduce("SUM", strategy.run(val_replica, args=batch), axis=None)

    sync_step = moving_statistics_sync(strategy, model)
    history = keras.callbacks.History()
    phase_callbacks = callbacks(
        phase, cfg, epochs, steps, workdir, progress, on_epoch, first_epoch, later_epochs, stop_early
    )
    hooks = keras.callbacks.CallbackList(
        [*phase_callbacks, history], model=model, epochs=epochs, steps=steps, verbose=0
    )
    with translate_errors(dist):
        build_optimizer(model)  # slots made now, in the model's strategy scope, not while the step is traced
        train_iter = iter(strategy.experimental_distribute_dataset(shard_by_data(train_ds)))
        val_dist = strategy.experimental_distribute_dataset(shard_by_data(val_ds))
        model.stop_training = False
        hooks.on_train_begin()
        for epoch in range(epochs):
            hooks.on_epoch_begin(epoch)
            total = np.zeros(len(names) + 2)
            for step in range(steps):
                hooks.on_train_batch_begin(step)
                total += np.asarray(train_step(train_iter), dtype="float64")
                hooks.on_train_batch_end(step, _logs(total, names))
            sync_step()  # before validation: every worker validates and saves the same model
            val_total = np.zeros(len(names) + 2)
            for batch in val_dist:
                val_total += np.asarray(val_step(batch), dtype="float64")
            hooks.on_epoch_end(epoch, {**_logs(total, names), **_logs(val_total, names, "val_")})
            if model.stop_training:
                break
        hooks.on_train_end()
    return history_rows(phase, history, first_epoch)
