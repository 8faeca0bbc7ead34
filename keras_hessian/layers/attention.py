"""Quantized MultiHeadAttention: Keras' own layer whose query / key / value / output projections are quantized.

`keras.layers.MultiHeadAttention` creates its EinsumDense projections inside its own `build`, so a
graph rebuild (`quantize_model`) sees only the attention layer. Each class here is Keras' layer
(its attention arithmetic, masks, dropout and config untouched) whose `build` replaces those
projections by the scheme's quantized EinsumDense, built with the same shapes; its config adds one
key, `quantizer_options` (the EinsumDense options, e.g. `{"residuals": 2}`), so it saves, loads and
clones like any layer. The softmax(QK^T)V products stay in the layer's compute dtype: only weights
are quantized, hence only the weight-only schemes (binary without binary activations, ternary
residual, integer, float16); DFP-16 would leave its integer arithmetic out of the attention
products and its input rounding out of the exported file.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np

from keras_hessian import _compat
from keras_hessian.layers._composite import (
    checked_part_options,
    part_option_names,
    post_training_options,
    serialized_options,
)
from keras_hessian.layers.binary import BinaryEinsumDense
from keras_hessian.layers.float16 import Float16EinsumDense
from keras_hessian.layers.integer import IntegerEinsumDense
from keras_hessian.layers.registry import register_quantized_layer
from keras_hessian.layers.ternary_residual import TernaryResidualEinsumDense
from keras_hessian.quantizers.base import KernelCost

__all__ = [
    "BinaryMultiHeadAttention",
    "Float16MultiHeadAttention",
    "IntegerMultiHeadAttention",
    "TernaryResidualMultiHeadAttention",
]


class _QuantizedAttention(keras.layers.MultiHeadAttention):
    """MultiHeadAttention whose projections are `PROJECTION` layers after `build`.

    Args:
        quantizer_options: options of the projections' class (`PROJECTION`), checked at once.
        *args, **kwargs: `keras.layers.MultiHeadAttention` arguments.
    """

    PROJECTION: ClassVar[type]

    def __init__(self, *args: Any, quantizer_options: dict | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.quantizer_options = checked_part_options(type(self).__name__, self.PROJECTION, quantizer_options, "ab,bc->ac", 1)

    # The options of this class for quantize_model: those of its projections.
    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return part_option_names(cls.PROJECTION)

    @classmethod
    def from_float_layer(cls, layer: keras.layers.Layer, **options: Any) -> _QuantizedAttention:
        """A new, unbuilt layer configured like the float MultiHeadAttention `layer`, plus `options`."""
        return cls(**layer.get_config(), quantizer_options={**post_training_options(cls.PROJECTION), **options})

    def build(self, query_shape, value_shape, key_shape=None) -> None:
        super().build(query_shape, value_shape, key_shape)
        key_shape = value_shape if key_shape is None else key_shape
        output_input = list(self.query_dense.compute_output_shape(query_shape))
        output_input[-1] = self.value_dim
        shapes = {"query": query_shape, "key": key_shape, "gate": query_shape, "value": value_shape}
        for attribute, float_layer in _compat.attention_projections(self).items():
            quantized = self.PROJECTION.from_float_layer(float_layer, **self.quantizer_options)
            quantized.build(tuple(shapes.get(float_layer.name, output_input)))
            _compat.replace_sublayer(self, attribute, quantized)

    def projections(self) -> list[keras.layers.Layer]:
        """The quantized projections, in the order of Keras' own weights (query, key, [gate,] value, output)."""
        return list(_compat.attention_projections(self).values())

    def load_float_weights(self, layer: keras.layers.Layer) -> None:
        """Set every projection's latent kernel and bias from the float MultiHeadAttention `layer`."""
        for mine, theirs in zip(self.projections(), _compat.attention_projections(layer).values()):
            mine.load_float_weights(theirs)

    def quantized_kernel(self) -> Any:
        raise TypeError(f"{type(self).__name__} has one quantized kernel per projection: see projections().")

    def float_layer(self, name: str) -> keras.layers.Layer:
        """The plain `MultiHeadAttention` (float32) whose weights are `float_weights()`."""
        config = {k: v for k, v in self.get_config().items() if k != "quantizer_options"}
        return keras.layers.MultiHeadAttention.from_config({**config, "name": name, "dtype": "float32"})

    def float_weights(self) -> list:
        """Every projection's quantized kernel (and bias), in the float layer's weight order."""
        weights = []
        for projection in self.projections():
            weights.extend(projection.float_weights())
        return weights

    def kernel_cost(self, outputs: int | None = None) -> KernelCost:
        """The projections' kernels together: storage bits; multiplications unknown (None) here."""
        costs = [projection.kernel_cost(None) for projection in self.projections()]
        weights = sum(int(np.prod(projection.kernel.shape)) for projection in self.projections())
        bits = sum(c.bits_per_weight * int(np.prod(p.kernel.shape)) for c, p in zip(costs, self.projections()))
        return KernelCost(bits / weights, sum(c.storage_bits for c in costs), None, None)

    @property
    def precision_label(self) -> str:
        return self.projections()[0].precision_label if self.built else self.PROJECTION.__name__

    def get_config(self) -> dict:
        return {**super().get_config(), "quantizer_options": serialized_options(self.quantizer_options)}


@register_quantized_layer("binary", keras.layers.MultiHeadAttention)
@keras.saving.register_keras_serializable(package="keras_hessian")
class BinaryMultiHeadAttention(_QuantizedAttention):
    """MultiHeadAttention with binary query / key / value / output projections (`BinaryEinsumDense`).

    Example:
        >>> layer = BinaryMultiHeadAttention(2, 8, quantizer_options={"per_channel_scale": True})
        >>> y = layer(keras.ops.ones((1, 5, 16)), keras.ops.ones((1, 5, 16)))

    Args:
        num_heads, key_dim, ...: as in `keras.layers.MultiHeadAttention`.
        quantizer_options: `BinaryEinsumDense` options (not `binary_activations`).
    """

    PROJECTION = BinaryEinsumDense


@register_quantized_layer("ternary_residual", keras.layers.MultiHeadAttention)
@keras.saving.register_keras_serializable(package="keras_hessian")
class TernaryResidualMultiHeadAttention(_QuantizedAttention):
    """MultiHeadAttention with ternary-residual projections (`TernaryResidualEinsumDense`).

    Example:
        >>> layer = TernaryResidualMultiHeadAttention(2, 8, quantizer_options={"residuals": 2})
        >>> y = layer(keras.ops.ones((1, 5, 16)), keras.ops.ones((1, 5, 16)))

    Args:
        num_heads, key_dim, ...: as in `keras.layers.MultiHeadAttention`.
        quantizer_options: `TernaryResidualEinsumDense` options (not `input_quantizer`).
    """

    PROJECTION = TernaryResidualEinsumDense


@register_quantized_layer("integer", keras.layers.MultiHeadAttention)
@keras.saving.register_keras_serializable(package="keras_hessian")
class IntegerMultiHeadAttention(_QuantizedAttention):
    """MultiHeadAttention with `bits`-bit integer projections (`IntegerEinsumDense`).

    Example:
        >>> layer = IntegerMultiHeadAttention(2, 8, quantizer_options={"bits": 4})
        >>> y = layer(keras.ops.ones((1, 5, 16)), keras.ops.ones((1, 5, 16)))

    Args:
        num_heads, key_dim, ...: as in `keras.layers.MultiHeadAttention`.
        quantizer_options: `IntegerEinsumDense` options (`bits`).
    """

    PROJECTION = IntegerEinsumDense


@register_quantized_layer("float16", keras.layers.MultiHeadAttention)
@keras.saving.register_keras_serializable(package="keras_hessian")
class Float16MultiHeadAttention(_QuantizedAttention):
    """MultiHeadAttention with float16-rounded projection kernels (`Float16EinsumDense`).

    Example:
        >>> y = Float16MultiHeadAttention(2, 8)(keras.ops.ones((1, 5, 16)), keras.ops.ones((1, 5, 16)))

    Args:
        num_heads, key_dim, ...: as in `keras.layers.MultiHeadAttention`.
        quantizer_options: none.
    """

    PROJECTION = Float16EinsumDense
