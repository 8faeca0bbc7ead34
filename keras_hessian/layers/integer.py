"""Integer layers: Dense, Conv2D / Conv1D, DepthwiseConv2D, EinsumDense, Embedding (int8 / int4, one family).

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
from keras_hessian.layers._shapes import QuantizedDepthwiseConv2D, QuantizedEinsumDense, QuantizedEmbedding
from keras_hessian.layers.registry import register_quantized_layer
from keras_hessian.quantizers.integer import Integer

__all__ = [
    "IntegerConv1D",
    "IntegerConv2D",
    "IntegerDense",
    "IntegerDepthwiseConv2D",
    "IntegerEinsumDense",
    "IntegerEmbedding",
]


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


@register_quantized_layer("integer", keras.layers.DepthwiseConv2D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class IntegerDepthwiseConv2D(_Integer, QuantizedDepthwiseConv2D):
    """Depthwise 2D convolution with `bits`-bit integer weights, one step per output channel.

    The step of output channel `(c, m)` is `max|W[:, :, c, m]| / (2^(bits-1) - 1)`, TFLite's
    per-channel depthwise grid.

    Example:
        >>> y = IntegerDepthwiseConv2D(3, bits=8)(keras.ops.ones((1, 8, 8, 4)))

    Args:
        kernel_size: int or pair.
        depth_multiplier: filters per input channel.
        bits: weight width, 2 to 8.
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """


@register_quantized_layer("integer", keras.layers.EinsumDense)
@keras.saving.register_keras_serializable(package="keras_hessian")
class IntegerEinsumDense(_Integer, QuantizedEinsumDense):
    """EinsumDense with `bits`-bit integer weights, one step per output feature.

    Example:
        >>> y = IntegerEinsumDense("ab,bc->ac", 8, bias_axes="c", bits=4)(keras.ops.ones((2, 16)))

    Args:
        equation, output_shape, bias_axes: as in `keras.layers.EinsumDense`.
        bits: weight width, 2 to 8.
        **kwargs: activation, initializers, regularizers, constraints, ...
    """


@register_quantized_layer("integer", keras.layers.Embedding)
@keras.saving.register_keras_serializable(package="keras_hessian")
class IntegerEmbedding(_Integer, QuantizedEmbedding):
    """Embedding with a `bits`-bit integer table, one step `max|row| / (2^(bits-1) - 1)` per token.

    Example:
        >>> y = IntegerEmbedding(100, 16, bits=4)(keras.ops.array([[1, 5, 7]]))

    Args:
        input_dim: vocabulary size.
        output_dim: embedding size.
        bits: table width, 2 to 8.
        **kwargs: embeddings_initializer, mask_zero, ...
    """
