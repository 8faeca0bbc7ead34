"""Every private Keras / TensorFlow symbol keras-hessian touches, in one place.

Tested with TensorFlow 2.21.0, Keras 3.15.1 and ai-edge-quantizer 0.10.0 (`TESTED_VERSIONS`;
setup.cfg allows exactly these minor releases). A Keras release that moves one of these breaks this module only, and its tests say
which. Nothing else in the package may import `keras.src` or use a private attribute of a Keras
object.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import keras

# The versions CI installs (setup.cfg pins each to this minor release); ai-edge-quantizer's
# modules used by export/storage.py are not a stable API either.
TESTED_VERSIONS = {"tensorflow": "2.21.0", "keras": "3.15.1", "ai-edge-quantizer": "0.10.0"}


def flatten_layers(model: Any) -> list:
    """All layers below `model`, nested models' layers included (`Layer._flatten_layers`)."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def sublayers(layer: Any) -> list:
    """The layers `layer` holds directly (`Layer._flatten_layers`): MultiHeadAttention's query / key /
    value / output `EinsumDense`, a KerasHub block's attention and feed-forward layers."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


def default_train_step() -> Callable:
    """Keras' own TensorFlow `train_step` (`keras.src.backend.tensorflow.trainer`)."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    return TensorFlowTrainer.train_step


def unscale_loss_for_distribution(loss: Any) -> Any:
    """Undo Keras' division of the loss by the number of replicas (`keras.src.losses.loss`)."""
    from keras.src.losses import loss as loss_module

    return loss_module.unscale_loss_for_distribution(loss)


def compute_loss_for_training(model: Any, x: Any, y: Any, y_pred: Any, sample_weight: Any) -> Any:
    """The training step's own loss (`Trainer._compute_loss`, which updates the loss metrics)."""
    return model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)


def loss_tracker(model: Any) -> Any:
    """The `loss` metric `fit` reports (`Trainer._loss_tracker`)."""
    return model._loss_tracker


def compiled_loss(model: Any) -> Any:
    """The model's `CompileLoss` (`Trainer._compile_loss`), or None if it has no compiled loss."""
    return getattr(model, "_compile_loss", None)


def detached_compiled_loss(model: Any) -> Callable[[Any, Any, Any], Any] | None:
    """A copy of the model's compiled loss whose per-output metrics are its own.

    `model.compute_loss` on a multi-output model updates the per-output loss metrics that `fit`
    reports; a measurement (a Hessian product, an FGSM step) must not. The copy is built from the
    same `loss`, `loss_weights` and output names (`keras.src.trainers.compile_utils.CompileLoss`).
    Returns `loss(y_true, y_pred, sample_weight)` (without `model.losses`), or None if the model
    is not compiled with a loss.
    """
    original = compiled_loss(model)
    if original is None:
        return None
    from keras.src.trainers.compile_utils import CompileLoss

    copy = CompileLoss(
        original._user_loss,
        original._user_loss_weights,
        reduction=original.reduction,
        output_names=original.output_names,
    )
    return copy


def is_graph_network(model: Any) -> bool:
    """Whether `model` is a graph of layers Keras can clone (`Functional._is_graph_network`)."""
    return bool(getattr(model, "_is_graph_network", False))


def is_functional(model: Any) -> bool:
    """Whether `model` is a Keras 3 Functional model (a subclass included, e.g. a KerasHub backbone).

    `keras.src.models.functional.Functional` has no public alias; `keras.Model(inputs, outputs)`
    returns one, while a subclassed `keras.Model` with its own `call` is not one.
    """
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)



def is_graph_model(model: Any) -> bool:
    """A Sequential or Functional model: one whose layers Keras can rebuild one by one (`clone_model`)."""
    return isinstance(model, keras.Sequential) or is_functional(model)

def input_structure(model: Any) -> Any:
    """The model's inputs as its `call` expects them: a dict, list or single `KerasTensor`.

    `model.inputs` is always a flat list (a dict-input KerasHub model's keys sorted away);
    `Functional._inputs_struct` keeps the structure the model was built with.
    """
    structure = getattr(model, "_inputs_struct", None)
    return structure if structure is not None else model.inputs


def graph_nodes(model: Any) -> list[tuple[Any, list, list, dict]]:
    """`(operation, input_tensors, output_tensors, call_kwargs)` of every node of a Functional model's graph.

    Read from `Function._nodes_by_depth` and `Node.input_tensors` / `.outputs` /
    `.arguments.kwargs` (`keras.src.ops.function`, `keras.src.ops.node`): the graph that
    `model(x)` runs, without the nodes that other models add to the same layers.
    """
    found = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            found.append((node.operation, list(node.input_tensors), list(node.outputs), dict(node.arguments.kwargs)))
    return found


def is_keras_variable(value: Any) -> bool:
    """True for a Keras 3 variable (public: `keras.Variable`)."""
    return isinstance(value, keras.Variable)


def running_fit() -> tuple[Any, Any] | None:
    """`(epoch_iterator, callback_list)` of the `model.fit` running on this thread, or None.

    Keras fixes an epoch's number of steps when `fit` starts (`EpochIterator._num_batches`, from
    the dataset's cardinality) and the progress bar's target with it; a dataset whose epoch
    length changes inside one fit (an adaptive dataset) has no static cardinality to give. The
    batch-size callbacks therefore tell the running fit the length of each epoch, through the
    two objects `TensorFlowTrainer.fit` holds as locals, found by walking up the caller frames.
    """
    import inspect
    import sys

    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    code = inspect.unwrap(TensorFlowTrainer.fit).__code__
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            iterator, callbacks = frame.f_locals.get("epoch_iterator"), frame.f_locals.get("callbacks")
            return (iterator, callbacks) if iterator is not None and callbacks is not None else None
        frame = frame.f_back
    return None


def fit_dataset(epoch_iterator: Any) -> Any:
    """The dataset a fit's epoch iterator reads (`EpochIterator.data_adapter._dataset`), or None."""
    return getattr(getattr(epoch_iterator, "data_adapter", None), "_dataset", None)


def set_epoch_steps(epoch_iterator: Any, callbacks: Any, steps: int) -> None:
    """Make the running fit take `steps` batches in the epoch about to start, and show them.

    Sets `EpochIterator._num_batches` (read when the epoch's loop starts, after
    `on_epoch_begin`), the callbacks' `params["steps"]` and the progress bar's target (a
    `ProgbarLogger` reads `params["steps"]` once, in `set_params`).
    """
    epoch_iterator._num_batches = int(steps)
    params = getattr(callbacks, "params", None)
    if isinstance(params, dict):
        params["steps"] = int(steps)
    for callback in getattr(callbacks, "callbacks", []):
        if isinstance(callback, keras.callbacks.ProgbarLogger):
            callback.target = int(steps)
            if callback.progbar is not None:
                callback.progbar.target = int(steps)



def fix_multi_worker_fit(model: Any) -> None:
    """Make `model.fit` / `evaluate` / `predict` run under a MultiWorkerMirroredStrategy of several workers.

    Keras 3.15's TensorFlow trainer fails there twice (keras-team/keras#20585, open):

    * `fit` first calls `Trainer._maybe_symbolic_build`, which averages one batch over the
      replicas with ONE `strategy.reduce` of the whole `(x, y, sample_weight)` structure;
      `CollectiveAllReduceStrategy` with several workers reduces single values only ("Attempt to
      convert a value (PerReplica ...) to a Tensor"). The batch only gives the shapes and dtypes of
      a symbolic build: here it is this worker's first replica's part (no collective). The same
      averaging fails under any strategy when the first global batch splits unevenly (shares of
      10 and 9 examples cannot be summed), which this override avoids too.
    * every step's logs go through `trainer.reduce_per_replica`, which averages each value over
      the workers with `strategy.reduce("MEAN", v, axis=0)`, invalid for the scalar logs ("Invalid
      reduction dimension 0 for input with 0 dimensions"); here scalars are averaged with `axis=None`.

    Both overrides are attributes of `model` (its `fit`, `evaluate`, `predict`, and
    `_maybe_symbolic_build`); the module function is swapped only while one of those runs.
    Idempotent; a no-op for models already fixed.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as trainer_module

    if getattr(model, "_kh_multi_worker_fixed", False):
        return
    original_build = trainer_module.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = trainer_module.reduce_per_replica

    def maybe_symbolic_build(iterator=None, data_batch=None):
        strategy = model.distribute_strategy
        if iterator is not None and data_batch is None and strategy is not None and strategy.num_replicas_in_sync > 1:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v,
                    next(batches),
                )
                break
            iterator = None
        return original_build(model, iterator=iterator, data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction="auto"):
        if reduction not in ("auto", "mean") or not trainer_module._collective_all_reduce_multi_worker(strategy):
            return original_reduce(values, strategy, reduction)

        def mean(value):
            local = strategy.experimental_local_results(value)[0] if isinstance(
                value, tf.distribute.DistributedValues) else value
            return strategy.reduce("MEAN", value, axis=0 if local.shape.rank else None)

        return tf.nest.map_structure(mean, values)

    def with_fixed_reduce(method):
        def call(*args, **kwargs):
            saved = trainer_module.reduce_per_replica
            trainer_module.reduce_per_replica = reduce_per_replica
            try:
                return method(*args, **kwargs)
            finally:
                trainer_module.reduce_per_replica = saved

        call.__wrapped__ = method
        return call

    model._maybe_symbolic_build = maybe_symbolic_build
    for name in ("fit", "evaluate", "predict"):
        setattr(model, name, with_fixed_reduce(getattr(model, name)))
    model._kh_multi_worker_fixed = True


def einsum_dense_shapes(equation: str, bias_axes: str | None, input_shape: tuple, output_shape: Any) -> tuple:
    """`(kernel_shape, bias_shape, full_output_shape)` of an `EinsumDense(equation, output_shape, bias_axes)`.

    Keras' own parser (`keras.src.layers.core.einsum_dense._analyze_einsum_string`), so a quantized
    EinsumDense accepts exactly the equations, ellipses and partial output shapes Keras does.
    """
    from keras.src.layers.core.einsum_dense import _analyze_einsum_string

    kernel_shape, bias_shape, full_output_shape, _, _ = _analyze_einsum_string(
        equation, bias_axes, input_shape, output_shape
    )
    return (
        tuple(kernel_shape),
        None if bias_shape is None else tuple(bias_shape),
        tuple(full_output_shape),
    )


def untrack_sublayer(layer: Any, sublayer: Any) -> None:
    """Stop `layer` from tracking `sublayer` (its weights leave `layer.weights`; `Layer._tracker`)."""
    layer._tracker.untrack(sublayer)


# MultiHeadAttention's projection attributes, in the order its `build` creates them (its weight order).
_ATTENTION_PROJECTIONS = ("_query_dense", "_key_dense", "_gate_dense", "_value_dense", "_output_dense")


def attention_projections(layer: Any) -> dict[str, Any]:
    """attribute -> projection layer of a built `keras.layers.MultiHeadAttention`, in weight order."""
    found = {name: getattr(layer, name, None) for name in _ATTENTION_PROJECTIONS}
    return {name: sublayer for name, sublayer in found.items() if sublayer is not None}


def replace_sublayer(layer: Any, attribute: str, sublayer: Any) -> None:
    """Put `sublayer` in place of the one `layer` holds as `attribute` (a MultiHeadAttention projection,
    a KerasHub block's attention or Dense), inside `layer`'s `build`: the old one is no longer tracked."""
    untrack_sublayer(layer, getattr(layer, attribute))
    setattr(layer, attribute, sublayer)


# KerasHub's TransformerEncoder (keras_hub/src/layers/modeling/transformer_encoder.py, keras-hub 0.32):
# the attributes its `build` assigns its MultiHeadAttention and its two feed-forward Dense layers.
ENCODER_ATTENTION = "_self_attention_layer"
ENCODER_DENSES = ("_feedforward_intermediate_dense", "_feedforward_output_dense")


_ENCODER_MODULE = "keras_hub.src.layers.modeling.transformer_encoder"


def is_hub_transformer_encoder(layer: Any) -> bool:
    """Whether `layer` is exactly KerasHub's `TransformerEncoder` or our quantized twin of it.

    KerasHub's own subclasses (e.g. Moonshine's encoder block) name their sublayers differently:
    they are not. False when KerasHub is not imported.
    """
    module = sys.modules.get(_ENCODER_MODULE)
    if module is None:
        return False
    encoder = module.TransformerEncoder
    return type(layer) is encoder or (
        isinstance(layer, encoder) and type(layer).__module__ == "keras_hessian.layers.hub_encoder"
    )


def encoder_kernel_layers(layer: Any) -> list | None:
    """A built KerasHub TransformerEncoder's kernel layers: its attention projections, then its feed-forward
    Dense layers (float or quantized); None for any other layer."""
    if not is_hub_transformer_encoder(layer) or not layer.built:
        return None
    attention = getattr(layer, ENCODER_ATTENTION)
    projections = attention.projections() if callable(getattr(attention, "projections", None)) else None
    projections = list(attention_projections(attention).values()) if projections is None else projections
    return [*projections, *(getattr(layer, name) for name in ENCODER_DENSES)]


def swap_dtype_policy(layer: Any, policy: Any) -> Any:
    """Set `layer`'s dtype policy object as is and return the one it had (`Layer._dtype_policy`).

    The public setter `layer.dtype_policy = ...` cannot undo itself: on a layer holding a
    `DTypePolicyMap` it writes into the shared map, and a quantized policy re-quantizes the layer.
    Swapping the attribute is exact both ways.
    """
    previous = layer._dtype_policy
    layer._dtype_policy = policy
    return previous
