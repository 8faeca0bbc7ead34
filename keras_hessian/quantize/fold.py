"""fold_batch_norm: a new model with each inference-mode BatchNormalization folded into the layer before it.

In inference mode a BatchNormalization is the per-channel affine map
`y = gamma * (x - mean) / sqrt(var + eps) + beta`; after a linear layer `x = W * u + b` it is the
same linear layer with `W' = W * s` and `b' = (b - mean) * s + beta`, `s = gamma / sqrt(var + eps)`
per output channel (Jacob et al., 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", section 3.2). Edge runtimes expect the folded
weights, and quantizing after folding quantizes what is deployed.

A BatchNormalization is folded when the layer producing its input is a float `Dense`, `Conv1D`,
`Conv2D`, `Conv3D`, `DepthwiseConv1D` or `DepthwiseConv2D` (exact types) with no activation (or
`"linear"`), that output feeds only the BatchNormalization, neither layer is shared, and the
BatchNormalization normalizes that layer's channel axis and is not called with `training=True`.
Keras has no folding pass of its own; TFLite's converter folds only what it recognizes in the
graph and leaves the Keras model, hence what is quantized, unfolded. The new model is built by
Keras' cloning (`keras.models.clone_model` with a `call_function` that passes a folded
BatchNormalization's input through), nested Sequential and Functional models included.
"""

from __future__ import annotations

import itertools
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_hessian import _compat
from keras_hessian._backend import require_tensorflow_backend
from keras_hessian._layers import walk_layers

__all__ = ["fold_batch_norm", "fold_batch_norm_with_record", "recalibrate_batch_norm"]

_LINEAR_TYPES = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


def _foldable_pair(producer: Any, norm: Any, rank: int) -> bool:
    """Whether `norm` (a BatchNormalization on a rank-`rank` tensor) folds into `producer`."""
    if type(producer) not in _LINEAR_TYPES or type(norm) is not keras.layers.BatchNormalization:
        return False
    if not (producer.built and norm.built) or producer.activation is not keras.activations.linear:
        return False
    if getattr(producer, "quantization_mode", None) is not None:  # Keras' own int8/int4 kernels
        return False
    if getattr(producer, "lora_enabled", False):  # its kernel is computed (base + A B), not a variable
        return False
    channels_first = getattr(producer, "data_format", "channels_last") == "channels_first"
    channel_axis = 1 if channels_first else rank - 1
    return int(norm.axis) % rank == channel_axis


def _sequential_folds(model: keras.Sequential) -> dict[int, tuple[Any, Any]]:
    """Adjacent foldable pairs (layers called more than once are dropped by `_find_folds`)."""
    folds = {}
    for producer, norm in itertools.pairwise(model.layers):
        try:
            rank = len(norm.input.shape)
        except (AttributeError, ValueError):
            continue
        if _foldable_pair(producer, norm, rank):
            folds[id(norm)] = (norm, producer)
    return folds


def _functional_folds(model: keras.Model) -> dict[int, tuple[Any, Any]]:
    nodes = _compat.graph_nodes(model)
    consumers: dict[int, int] = {id(t): 1 for t in model.outputs}
    producer_of: dict[int, Any] = {}
    for operation, inputs, outputs, _ in nodes:
        for tensor in inputs:
            consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1
        for tensor in outputs:
            producer_of[id(tensor)] = (operation, len(outputs))
    folds = {}
    for operation, inputs, _, kwargs in nodes:
        if type(operation) is not keras.layers.BatchNormalization or len(inputs) != 1 or kwargs.get("training") is True:
            continue
        tensor = inputs[0]
        producer, produced = producer_of.get(id(tensor), (None, 0))
        if producer is None or produced != 1 or consumers.get(id(tensor)) != 1:
            continue
        if _foldable_pair(producer, operation, len(tensor.shape)):  # called once each: checked by `_find_folds`
            folds[id(operation)] = (operation, producer)
    return folds


def _find_folds(model: Any) -> dict[int, tuple[Any, Any]]:
    """`id(batch_norm) -> (batch_norm, producer layer)` for every foldable pair, in `model` and its nested graph models.

    A pair folds only if neither layer is called anywhere else in the model tree: a layer shared
    between a nested model and its parent would carry the folded kernel into its other call.
    """
    folds = _graph_folds(model)
    calls = _calls_in_tree(model)
    return {
        key: (norm, producer) for key, (norm, producer) in folds.items() if calls[id(norm)] == calls[id(producer)] == 1
    }


def _graph_folds(model: Any) -> dict[int, tuple[Any, Any]]:
    folds = _sequential_folds(model) if isinstance(model, keras.Sequential) else _functional_folds(model)
    for layer in model.layers:
        if _compat.is_graph_model(layer):
            folds.update(_graph_folds(layer))
    return folds


def _calls_in_tree(model: Any, calls: dict[int, int] | None = None) -> dict[int, int]:
    """How often each layer is called over `model` and every graph model nested in it."""
    calls = {} if calls is None else calls
    if isinstance(model, keras.Sequential):
        operations = list(model.layers)
    else:
        operations = [operation for operation, *_ in _compat.graph_nodes(model)]
    for operation in operations:
        calls[id(operation)] = calls.get(id(operation), 0) + 1
    for layer in {id(layer): layer for layer in model.layers}.values():
        if _compat.is_graph_model(layer):
            _calls_in_tree(layer, calls)
    return calls


def _folded_weights(producer: Any, norm: Any) -> tuple[np.ndarray, np.ndarray]:
    """`(W * s, (b - mean) * s + beta)` in float64, `s = gamma / sqrt(var + eps)` per output channel."""
    kernel = np.asarray(producer.kernel.numpy(), np.float64)
    channels = kernel.shape[-2] * kernel.shape[-1] if isinstance(producer, _DEPTHWISE) else kernel.shape[-1]
    bias = np.asarray(producer.bias.numpy(), np.float64) if producer.use_bias else np.zeros(channels)
    gamma = np.asarray(norm.gamma.numpy(), np.float64) if norm.scale else np.ones(channels)
    beta = np.asarray(norm.beta.numpy(), np.float64) if norm.center else np.zeros(channels)
    mean = np.asarray(norm.moving_mean.numpy(), np.float64)
    variance = np.asarray(norm.moving_variance.numpy(), np.float64)
    scale = gamma / np.sqrt(variance + norm.epsilon)
    # A depthwise kernel is (..., in, multiplier); output channel i * multiplier + m.
    factor = scale.reshape(kernel.shape[-2:]) if isinstance(producer, _DEPTHWISE) else scale
    return kernel * factor, (bias - mean) * scale + beta


def fold_batch_norm_with_record(model: keras.Model) -> tuple[keras.Model, dict[str, str]]:
    """`fold_batch_norm(model)` and `{batch_norm path: producer path}` of what it folded."""
    require_tensorflow_backend()
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model. Received model={model!r}.")
    if not model.built:
        raise ValueError(f"model {model.name!r} must be built (call it or give it an Input) first.")
    if not _compat.is_graph_model(model):
        raise TypeError(
            f"fold_batch_norm needs a Sequential or Functional model; {model.name!r} is a subclassed "
            f"{type(model).__name__}, whose graph Keras cannot rebuild. Build it functionally "
            "(keras.Model(inputs, outputs)) first."
        )
    folds = _find_folds(model)
    producers = {id(producer): norm for norm, producer in folds.values()}
    cache: dict[int, Any] = {}
    pairs: list[tuple[Any, Any]] = []

    def call_function(operation: Any, *args: Any, **kwargs: Any) -> Any:
        if id(operation) in folds:  # the original BatchNormalization stands for its fold: pass through
            return args[0]
        return operation(*args, **kwargs)

    def clone_layer(layer: Any) -> Any:
        if id(layer) in cache:
            return cache[id(layer)]
        if id(layer) in folds:
            new = layer  # never called (call_function) nor kept (Sequential)
        elif isinstance(layer, keras.Sequential):
            new = _clone_sequential(layer, clone_layer, folds)
        elif _compat.is_functional(layer):
            new = keras.models.clone_model(layer, clone_function=clone_layer, call_function=call_function)
        else:
            config = layer.get_config()
            if id(layer) in producers:
                config = {**config, "use_bias": True}
            new = layer.__class__.from_config(config)
            pairs.append((layer, new))
        cache[id(layer)] = new
        return new

    folded = clone_layer(model)
    for source, target in pairs:
        if id(source) in producers:
            kernel, bias = _folded_weights(source, producers[id(source)])
            target.kernel.assign(kernel.astype(np.float32))
            target.bias.assign(bias.astype(np.float32))
        elif getattr(source, "weights", None):  # keras.ops nodes (`x + y`) have none
            target.set_weights(source.get_weights())
    paths = {id(layer): path for path, layer in walk_layers(model)}
    return folded, {paths[id(norm)]: paths[id(producer)] for norm, producer in folds.values()}


def _clone_sequential(model: keras.Sequential, clone_layer: Any, folds: dict[int, Any]) -> keras.Sequential:
    """The Sequential `model` with its layers cloned, its folded BatchNormalizations left out."""
    # `clone_model` clones every layer of a Sequential (it takes no call_function), so the
    # list is rebuilt here the way Keras' `_clone_sequential_model` does, minus the folds.
    layers = [clone_layer(layer) for layer in model.layers if id(layer) not in folds]
    try:
        spec = model.inputs[0]
        layers = [keras.Input(batch_shape=spec.shape, dtype=spec.dtype, name=spec.name), *layers]
    except (AttributeError, ValueError, IndexError, TypeError):
        pass  # a nested Sequential with no Input of its own: built when its parent calls it
    new = keras.Sequential(layers, name=model.name, trainable=model.trainable)
    if model.compiled:  # as `clone_model` does
        new.compile_from_config(model.get_compile_config())
    return new


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """Return a NEW model with each inference-mode BatchNormalization folded into the linear layer before it.

    Use it before quantizing (`quantize_model(..., fold_batch_norm=True)`) or exporting
    (`to_tflite(..., fold_batch_norm=True)`), so the folded weights are what is quantized and
    deployed. In inference mode (`training=False`, moving statistics) the new model computes
    what the original computes, up to float32 rounding; it has no BatchNormalization where one
    was folded, and the layer before it gains a bias. A BatchNormalization is folded when its
    input comes from a float `Dense`, `Conv1D/2D/3D` or `DepthwiseConv1D/2D` with no
    activation, used by nothing else, and it normalizes that layer's channel axis (MobileNetV2's
    Conv -> BN -> ReLU6 folds; Conv(relu) -> BN does not). Every other layer is cloned with its
    weights; nested Sequential and Functional models are folded too. The original model is
    never modified. The model must be Sequential or Functional (a Functional subclass, such as
    a KerasHub backbone, comes back as a plain Functional model).

    Example:
        >>> folded = fold_batch_norm(model)
        >>> np.testing.assert_allclose(folded(x), model(x, training=False), atol=1e-5)

    Args:
        model: a built Sequential or Functional Keras model.

    Returns:
        The new model (compiled like the original if it was, as `keras.models.clone_model` does).

    Raises:
        TypeError: `model` is not a Keras model, or is a subclassed model.
        ValueError: `model` is not built.
    """
    return fold_batch_norm_with_record(model)[0]


def recalibrate_batch_norm(model: keras.Model, x: Any, batch_size: int = 512) -> keras.Model:
    """Set every BatchNormalization's moving statistics to those of `x`, in place, and return `model`.

    Before folding or quantizing a model trained briefly (MobileNetV2's momentum of 0.999 leaves
    the moving statistics near their initial values after a few epochs, so the inference-mode
    model is near chance), or after a quantized fine-tune: one forward pass in training mode with
    momentum 0 over the first `batch_size` examples of `x`. Only the moving mean and variance
    change; trainable weights and each layer's momentum and `trainable` flag are as before, also on
    error (a frozen BatchNorm is recalibrated too). `x`: an array, or a dict / list of arrays for a
    model of several inputs.
    """
    require_tensorflow_backend()
    norms = [layer for _, layer in walk_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return model
    first = tf.nest.flatten(x)[0] if isinstance(x, (dict, list, tuple)) and len(x) else x
    if not hasattr(first, "__len__") or len(first) == 0:
        raise ValueError(f"x must be a non-empty batch of the model's inputs. Received {type(x).__name__}.")
    momentum = [layer.momentum for layer in norms]
    trainable = [layer.trainable for layer in norms]
    try:
        for layer in norms:
            layer.momentum = 0.0
            layer.trainable = True  # Keras updates the statistics of trainable BatchNorms only (a frozen base)
        model(tf.nest.map_structure(lambda a: a[:batch_size], x), training=True)
    finally:
        for layer, value, was_trainable in zip(norms, momentum, trainable):
            layer.momentum = value
            layer.trainable = was_trainable
    return model
