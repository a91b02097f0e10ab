"""A lean eager pass of a frozen Keras functional model: for the few images a retrain has not seen.

Why: a retrain with the feature store runs the base only over the new images, eagerly (tracing the
base into a graph costs more than they do, features.EAGER_MAX_IMAGES). Calling a Keras model eagerly
pays two costs that are not arithmetic, both measured on MobileNetV2 at 128 px (2 shared cores):

- ``Layer.__call__``'s bookkeeping around each layer's ``call`` (input conversion, call-spec parsing,
  input-spec checks, name scopes, mask propagation), paid per layer and pass whatever the batch
  (156 layers in MobileNetV2's extractor);
- ``Functional`` keeps every intermediate tensor of a pass until the pass ends, so a 64-row batch holds
  hundreds of MB of activations in fresh allocations, paid in page faults (0.3-2.9 s of system CPU
  for 64-90-row passes over 90 rows at 128 px, against 0.1-0.2 s for 32-row passes).

Measured together in the feature-store benchmark (benchmarks/README.md): a third less CPU time for
the retrain's phase 1.

Here each layer's own ``call`` runs with ``training=False`` (what ``__call__`` resolves for a frozen
base called with ``training=False``), so the same TensorFlow ops compute the same numbers, and each
tensor is dropped after its last use. Nested functional models (the base inside the extractor) are run
the same way. What it cannot run exactly as Keras would (a layer that does not compute in float32, a
model with several inputs or outputs, a model that is not functional at the top) gets None from
:func:`lean_call`, and the caller calls the model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

#: One step of a pass: (what to call, its node's arguments, ids of the tensors it reads, of those it
#: makes, and of those read for the last time here).
_Step = tuple[Callable[..., Any], Any, list[int], list[int], list[int]]


class _Unsupported(Exception):
    """The model has something :func:`lean_call` does not run exactly as Keras would."""


def lean_call(model: keras.Model) -> Callable[[Any], Any] | None:
    """A function x -> ``model(x, training=False)`` with the same ops, or None where not supported."""
    try:
        return _plan(model)
    except (_Unsupported, AttributeError):  # AttributeError: a Keras whose graph internals moved
        return None


def _is_functional(op: Any) -> bool:
    return hasattr(op, "_nodes_by_depth") and hasattr(op, "inputs") and hasattr(op, "outputs")


def _leaf(op: Any) -> Callable[..., Any]:
    """The layer's own call (inference), or the operation itself where it is not a plain float32 layer."""
    import keras

    if isinstance(op, keras.Model):  # another kind of model (Sequential, subclassed): Keras runs it
        return lambda *args, **kwargs: op(*args, **{**kwargs, "training": False})
    if not isinstance(op, keras.layers.Layer):
        return op  # a keras.ops operation in the graph: its __call__ is light
    if op.compute_dtype != "float32" or op.variable_dtype != "float32":
        raise _Unsupported(f"{op.name} computes in {op.compute_dtype}")
    call = op.call
    if "training" in inspect.signature(call).parameters:
        return lambda *args, **kwargs: call(*args, **{**kwargs, "training": False})
    return call


def _plan(model: Any) -> Callable[[Any], Any]:
    import keras

    if not _is_functional(model) or len(model.inputs) != 1 or len(model.outputs) != 1:
        raise _Unsupported(f"{getattr(model, 'name', model)} is not a one-input, one-output functional model")
    steps: list[_Step] = []
    last_use: dict[int, int] = {}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if not node.operation or node.is_input:
                continue
            op = node.operation
            run = _plan(op) if _is_functional(op) else _leaf(op)
            if _is_functional(op):
                run = (lambda inner: lambda x, *args, **kwargs: inner(x))(run)
            reads = [id(x) for x in node.input_tensors]
            for tensor in reads:
                last_use[tensor] = len(steps)
            steps.append((run, node.arguments, reads, [id(x) for x in node.outputs], []))
    keep = {id(model.outputs[0])}
    for index, (_, _, reads, _, drops) in enumerate(steps):
        drops.extend(t for t in dict.fromkeys(reads) if last_use[t] == index and t not in keep)
    source, result, dtype = id(model.inputs[0]), id(model.outputs[0]), model.inputs[0].dtype

    def forward(x: Any) -> Any:
        values: dict[int, Any] = {source: keras.ops.cast(x, dtype)}
        for run, arguments, _, makes, drops in steps:
            args, kwargs = arguments.fill_in(values)
            outputs = run(*args, **kwargs)
            for tensor, value in zip(makes, keras.tree.flatten(outputs), strict=True):
                values[tensor] = value
            for tensor in drops:
                del values[tensor]
        return values[result]

    return forward
