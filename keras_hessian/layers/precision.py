"""bfloat16 helpers over Keras' `mixed_bfloat16` dtype policy.

bfloat16 keeps float32's 8-bit exponent with a 7-bit mantissa ("A Study of BFLOAT16 for
Deep Learning Training", Kalamkar, Banerjee et al., 2019), so it needs no loss scaling.
Under `mixed_bfloat16` Keras keeps variables in float32 and computes in bfloat16. What
these helpers add is the float32 exceptions the reference decks keep: normalization layers
(the DFP-16 deck keeps batch norm in FP32), softmax (a bfloat16 softmax over many classes
loses probability mass), and the loss (Keras losses already cast predictions to float32).
`keras_hessian.quantize_model(model, "bfloat16")` applies them to a copy of a model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

__all__ = [
    "BFLOAT16_POLICY",
    "FLOAT32_POLICY",
    "bfloat16_layer_policy",
    "keeps_float32",
    "mixed_bfloat16_scope",
]

BFLOAT16_POLICY = "mixed_bfloat16"
FLOAT32_POLICY = "float32"

_NORMALIZATION = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
)


def keeps_float32(layer: keras.layers.Layer) -> bool:
    """Whether `layer` stays in float32 in a bfloat16 model: normalization and softmax.

    A layer whose own activation is softmax (e.g. the classifier `Dense(10, "softmax")`)
    stays float32 as a whole, since Keras cannot split its matmul from its activation.

    Example:
        >>> keeps_float32(keras.layers.BatchNormalization())
        True

    Args:
        layer: a Keras layer.
    """
    if isinstance(layer, (*_NORMALIZATION, keras.layers.Softmax)):
        return True
    activation = getattr(layer, "activation", None)
    return activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax"


def bfloat16_layer_policy(layer: keras.layers.Layer) -> str:
    """The dtype policy name `layer` gets in a bfloat16 model (`float32` or `mixed_bfloat16`).

    Use it in a `keras.models.clone_model` clone function, or read it to see what
    `quantize_model(model, "bfloat16")` does to each layer.

    Example:
        >>> bfloat16_layer_policy(keras.layers.Dense(4))
        'mixed_bfloat16'

    Args:
        layer: a Keras layer.
    """
    return FLOAT32_POLICY if keeps_float32(layer) else BFLOAT16_POLICY


@contextlib.contextmanager
def mixed_bfloat16_scope() -> Iterator[None]:
    """Context manager: layers created inside default to `mixed_bfloat16`; restored after.

    Pass `dtype="float32"` to normalization and softmax layers created inside (or build the
    model in float32 and use `quantize_model(model, "bfloat16")`, which does it for you).

    Example:
        >>> with mixed_bfloat16_scope():
        ...     layer = keras.layers.Dense(4)
        >>> layer.compute_dtype
        'bfloat16'
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(BFLOAT16_POLICY)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
