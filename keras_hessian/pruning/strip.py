"""From a pruned model to a plain one: `strip_pruning` (same shapes, zeros kept) and `shrink_filters`.

Pruning here keeps no state in the model (the masks live in the callback, TFMOT's wrappers are
not used), so stripping is a clean copy (`keras.models.clone_model`): a new Keras model of the
same architecture whose weights are the pruned model's, with no step transform installed; a
compiled model's copy is compiled from its compile config, with a fresh optimizer.

Zeros in a dense kernel save nothing at run time. `shrink_filters` makes filter pruning pay: it
rebuilds a Sequential model with the removed output channels (kernel and bias all zero) taken
out of their layer, and the matching inputs taken out of the next Dense / Conv layer, so the
FLOPs and the bytes fall. Between the two, only layers that map a zero channel to a zero channel
and act per channel may stand (activations with f(0) = 0, pooling, dropout, flatten); anything
else (BatchNormalization, sigmoid) would make a removed channel non-zero, and shrinking raises.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_hessian._validation import ArgumentTypeError
from keras_hessian.pruning._layers import PRUNABLE_TYPES, check_model

# Layers a removed (all-zero) channel passes through unchanged and still zero, channel by channel.
_PASS_THROUGH = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.Dropout,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Flatten,
)
_ZERO_PRESERVING = {"relu", "tanh", "linear", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "relu6", "softsign"}


def strip_pruning(model) -> keras.Model:
    """A plain copy of `model`: same architecture and weights (the zeros included), no pruning state.

    Example:

    ```python
    model.fit(x, y, callbacks=[HessianPruning(schedule)])
    plain = strip_pruning(model)
    plain.save("pruned.keras")
    ```
    """
    check_model(model)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation))


def _check_zero_preserving(layer) -> None:
    name = _activation_name(layer)
    if isinstance(layer, PRUNABLE_TYPES + (keras.layers.Activation,)) and name not in _ZERO_PRESERVING:
        raise ValueError(
            f"shrink_filters: layer {layer.name!r} has activation {name!r}, which does not map 0 to 0: "
            "its removed channels would not be zero. Use strip_pruning instead."
        )


def removed_channels(layer) -> np.ndarray:
    """Boolean per output channel: True where the kernel's channel and its bias are all zero."""
    kernel = np.asarray(layer.kernel.numpy())
    removed = ~kernel.reshape(-1, kernel.shape[-1]).any(axis=0)
    if getattr(layer, "bias", None) is not None:
        removed &= np.asarray(layer.bias.numpy()) == 0
    return removed


def shrink_filters(model) -> keras.Sequential:
    """A smaller Sequential model without the removed output channels of its Dense / Conv layers.

    A channel is removed when its kernel slice and its bias are exactly zero (what filter
    pruning and `apply_masks` leave). The last Dense / Conv layer keeps all its outputs (they are
    the model's). The result gives the same outputs as `model` (up to float rounding of the
    shorter sums); `model` is not changed.

    Raises:
        ValueError: if `model` is not Sequential, or a layer between two pruned layers would
            turn a zero channel into a non-zero one.
    """
    check_model(model)
    if not isinstance(model, keras.Sequential):
        raise ArgumentTypeError(f"shrink_filters rebuilds Sequential models only. Received {type(model).__name__}.")
    layers = list(model.layers)
    prunable = [i for i, layer in enumerate(layers) if isinstance(layer, PRUNABLE_TYPES)]
    keep_out = {}
    for i in prunable[:-1]:
        removed = removed_channels(layers[i])
        if removed.all():  # keep one channel so the next layer has an input
            removed[0] = False
        keep_out[i] = ~removed
    new_layers, weights = [], []
    incoming = None  # which channels of the running tensor survive (None: all)
    for i, layer in enumerate(layers):
        config = layer.get_config()
        values = [np.asarray(w) for w in layer.get_weights()]
        if isinstance(layer, PRUNABLE_TYPES):
            if i in keep_out:
                _check_zero_preserving(layer)
            kernel = values[0]
            if incoming is not None:
                kernel = kernel[..., incoming, :] if kernel.ndim > 2 else kernel[incoming, :]
            out = keep_out.get(i)
            if out is not None:
                kernel = kernel[..., out]
                config["units" if isinstance(layer, keras.layers.Dense) else "filters"] = int(out.sum())
            values = [kernel] + ([values[1][out] if out is not None else values[1]] if len(values) > 1 else [])
            incoming = out
        elif isinstance(layer, keras.layers.Flatten):
            if incoming is not None:
                shape = tuple(layer.input.shape[1:])
                incoming = np.broadcast_to(incoming, shape).reshape(-1)
        elif incoming is not None:
            if not isinstance(layer, _PASS_THROUGH):
                raise ValueError(  # noqa: TRY004 - a model structure it cannot shrink, not a wrong type
                    f"shrink_filters: layer {layer.name!r} ({type(layer).__name__}) stands between pruned layers and "
                    "may turn a removed channel non-zero or mix channels. Use strip_pruning instead."
                )
            _check_zero_preserving(layer)
        new_layers.append(type(layer).from_config(config))
        weights.append(values)
    shrunk = keras.Sequential([keras.Input(tuple(model.input_shape[1:]))] + new_layers, name=f"{model.name}_shrunk")
    for layer, values in zip(new_layers, weights):
        if values:
            layer.set_weights(values)
    return shrunk
