"""Integer layers: IntegerDense, IntegerConv2D and IntegerConv1D (int8 / int4 weights, one family).

Weights on the symmetric per-output-channel integer grid of `keras_hessian.quantizers.Integer`
(the grid TFLite stores per-channel integer weights on), trained with the straight-through
gradient; activations stay in the layer's compute dtype. These are HAWQ's `int8` and `int4`
candidates: `quantize_model(model, {"scheme": "integer", "bits": 4})`.

Keras' own `model.quantize("int8")` quantizes Dense / EinsumDense / Embedding only, one
precision for the whole model; these layers cover convolutions and take a width per layer.
"""

from __future__ import annotations

from typing import Any

import keras

from keras_hessian.layers._base import QuantizedConv, QuantizedDense
from keras_hessian.layers.registry import register_quantized_layer
from keras_hessian.quantizers.integer import Integer

__all__ = ["IntegerConv1D", "IntegerConv2D", "IntegerDense"]


class _Integer:
    """The integer family's one option (`bits`), its quantizer and config (Dense and Conv)."""

    def __init__(self, *args: Any, bits: int = 8, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.kernel_quantizer = Integer(bits)
        self.bits = self.kernel_quantizer.bits

    @property
    def precision_label(self) -> str:
        return f"int{self.bits}"

    def get_config(self) -> dict:
        return {**super().get_config(), "bits": self.bits}


@register_quantized_layer("integer", keras.layers.Dense)
@keras.saving.register_keras_serializable(package="keras_hessian")
class IntegerDense(_Integer, QuantizedDense):
    """Dense layer with `bits`-bit symmetric per-channel integer weights (int8 by default).

    Use it for int8 / int4 weights that export to TFLite at their width, or let HAWQ choose the
    width per layer (`keras_hessian.hawq.assign_precision`).

    Example:
        >>> model = keras.Sequential([keras.Input((64,)), IntegerDense(32, bits=4, activation="relu"),
        ...                           keras.layers.Dense(10)])
        >>> model.compile("adam", "sparse_categorical_crossentropy")

    Args:
        units: output size.
        bits: weight width, 2 to 8.
        **kwargs: `keras.layers.Dense` arguments (activation, use_bias, initializers, ...).
    """


@register_quantized_layer("integer", keras.layers.Conv2D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class IntegerConv2D(_Integer, QuantizedConv):
    """2D convolution with `bits`-bit symmetric per-channel integer weights; see `IntegerDense`.

    Example:
        >>> y = IntegerConv2D(16, 3, bits=4)(keras.ops.ones((1, 8, 8, 1)))

    Args:
        filters: output channels.
        kernel_size: int or pair.
        bits: weight width, 2 to 8.
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """

    rank = 2


@register_quantized_layer("integer", keras.layers.Conv1D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class IntegerConv1D(_Integer, QuantizedConv):
    """1D convolution with `bits`-bit symmetric per-channel integer weights; see `IntegerDense`.

    Example:
        >>> y = IntegerConv1D(8, 3, bits=8)(keras.ops.ones((1, 40, 1)))

    Args:
        filters: output channels.
        kernel_size: int.
        bits: weight width, 2 to 8.
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """

    rank = 1
