"""Which layers pruning acts on, and the argument checks the pruning functions share."""

from __future__ import annotations

from collections.abc import Iterable

import keras

from keras_hessian._layers import walk_layers
from keras_hessian._validation import ArgumentTypeError, check_float

# Layers whose `kernel` is a dense weight tensor with the output channels on its last axis.
# DepthwiseConv2D (a `depthwise_kernel`) and the quantized layers are left out: their weights
# are not a kernel in that sense.
PRUNABLE_TYPES = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def walk(model) -> list:
    """Leaf layers of `model` in order, recursing into nested models."""
    return [layer for _, layer in walk_layers(model)]


def check_model(model) -> None:
    if not isinstance(model, keras.Model):
        raise ArgumentTypeError(f"model must be a Keras 3 model. Received {type(model).__name__}.")
    if not model.built:
        raise ValueError("model must be built (call it once or give it an Input). Received a model that is not built.")


def prunable_layers(model, layers: Iterable[str] | None = None) -> list:
    """The layers to prune: every Dense / Conv layer of `model`, or the ones named in `layers`.

    Raises:
        ValueError: naming a layer that does not exist or cannot be pruned.
    """
    check_model(model)
    candidates = [layer for layer in walk(model) if isinstance(layer, PRUNABLE_TYPES) and type(layer).__module__.startswith("keras")]
    if layers is None:
        if not candidates:
            raise ValueError(f"model {model.name!r} has no Dense or Conv layer to prune.")
        return candidates
    if isinstance(layers, str):
        layers = [layers]
    by_name = {layer.name: layer for layer in candidates}
    chosen = []
    for name in layers:
        if name not in by_name:
            raise ValueError(
                f"layers: model {model.name!r} has no prunable layer named {name!r}. "
                f"Prunable layers: {sorted(by_name)}. Received layers={list(layers)!r}."
            )
        chosen.append(by_name[name])
    if not chosen:
        raise ValueError("layers must name at least one layer. Received an empty list.")
    return chosen


def check_sparsity(sparsity, name: str = "sparsity") -> float:
    """A sparsity is a fraction of weights removed, in [0, 1) (1 would remove every weight)."""
    return check_float(name, sparsity, minimum=0.0, maximum=1.0, exclusive_maximum=True)
