"""Quantized KerasHub TransformerEncoder: KerasHub's layer whose attention and feed-forward kernels are quantized.

`keras_hub.layers.TransformerEncoder` (the block of KerasHub's BERT, RoBERTa, DistilBERT, ... backbones)
creates its MultiHeadAttention and its two feed-forward Dense layers inside its own `build`, so a
graph rebuild (`quantize_model`) sees one layer. Each class here is KerasHub's layer (its call, masks,
residuals, layer norms, dropout and config untouched) whose `build` puts the scheme's quantized
MultiHeadAttention (`attention.py`: quantized query / key / value / output projections) and quantized
Dense layers in place of the float ones, built with the same shapes. Its config adds one key,
`quantizer_options` (the Dense options, e.g. `{"residuals": 2}`; the attention takes those its
projections accept), so it saves, loads and clones like any layer. Weight-only schemes only, as for
MultiHeadAttention: binary (without binary activations), ternary residual, integer, float16.

This module needs `keras-hub` (the `hub` extra); `keras_hessian.layers` imports it when KerasHub is
installed, so its classes are registered before a saved quantized model is loaded.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np
from keras_hub.src.layers.modeling.transformer_encoder import TransformerEncoder

from keras_hessian import _compat
from keras_hessian.layers._composite import (
    checked_part_options,
    part_option_names,
    post_training_options,
    serialized_options,
)
from keras_hessian.layers.attention import (
    BinaryMultiHeadAttention,
    Float16MultiHeadAttention,
    IntegerMultiHeadAttention,
    TernaryResidualMultiHeadAttention,
)
from keras_hessian.layers.binary import BinaryDense
from keras_hessian.layers.float16 import Float16Dense
from keras_hessian.layers.integer import IntegerDense
from keras_hessian.layers.registry import register_quantized_layer
from keras_hessian.layers.ternary_residual import TernaryResidualDense
from keras_hessian.quantizers.base import KernelCost

__all__ = [
    "BinaryTransformerEncoder",
    "Float16TransformerEncoder",
    "IntegerTransformerEncoder",
    "TernaryResidualTransformerEncoder",
]

# The encoder's sublayers with weights, in the order KerasHub's `build` creates them: the plain float
# layer's weight order (`float_weights`). Ours, after `_replace`, lists its LayerNorms first; saving
# goes by attribute name, so that order matters nowhere else.
_ATTENTION = _compat.ENCODER_ATTENTION
_DENSES = _compat.ENCODER_DENSES
_PARTS = (_ATTENTION, "_self_attention_layer_norm", "_feedforward_layer_norm", *_DENSES)


class _QuantizedTransformerEncoder(TransformerEncoder):
    """TransformerEncoder whose attention is `ATTENTION` and feed-forward layers `DENSE` after `build`.

    Args:
        quantizer_options: options of the Dense parts' class (`DENSE`), checked at once.
        *args, **kwargs: `keras_hub.layers.TransformerEncoder` arguments.
    """

    ATTENTION: ClassVar[type]
    DENSE: ClassVar[type]

    def __init__(self, *args: Any, quantizer_options: dict | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.quantizer_options = checked_part_options(type(self).__name__, self.DENSE, quantizer_options, 4)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return part_option_names(cls.DENSE)

    @classmethod
    def from_float_layer(cls, layer: keras.layers.Layer, **options: Any) -> _QuantizedTransformerEncoder:
        """A new, unbuilt layer configured like the float TransformerEncoder `layer`, plus `options`."""
        return cls(**layer.get_config(), quantizer_options={**post_training_options(cls.DENSE), **options})

    def build(self, inputs_shape) -> None:
        super().build(inputs_shape)
        attention_options = set(self.ATTENTION.option_names())
        attention = self.ATTENTION.from_float_layer(
            getattr(self, _ATTENTION), **{k: v for k, v in self.quantizer_options.items() if k in attention_options}
        )
        attention.build(query_shape=inputs_shape, value_shape=inputs_shape)
        _compat.replace_sublayer(self, _ATTENTION, attention)
        intermediate_shape = (*tuple(inputs_shape)[:-1], self.intermediate_dim)
        for attribute, shape in zip(_DENSES, (inputs_shape, intermediate_shape)):
            dense = self.DENSE.from_float_layer(getattr(self, attribute), **self.quantizer_options)
            dense.build(tuple(shape))
            _compat.replace_sublayer(self, attribute, dense)

    def projections(self) -> list[keras.layers.Layer]:
        """The quantized kernel layers: the attention's projections, then the two feed-forward Dense layers."""
        if not self.built:
            raise ValueError(
                f"{type(self).__name__} {self.name!r} creates its parts in build(): build or call it first."
            )
        return _compat.encoder_kernel_layers(self)

    def load_float_weights(self, layer: keras.layers.Layer) -> None:
        """Set every part from the float TransformerEncoder `layer` (quantized parts: latent kernels and biases)."""
        for attribute in _PARTS:
            mine, theirs = getattr(self, attribute), getattr(layer, attribute)
            if callable(getattr(mine, "load_float_weights", None)):
                mine.load_float_weights(theirs)
            else:
                mine.set_weights(theirs.get_weights())

    def quantized_kernel(self) -> Any:
        raise TypeError(f"{type(self).__name__} has one quantized kernel per part: see projections().")

    def float_layer(self, name: str) -> keras.layers.Layer:
        """The plain KerasHub `TransformerEncoder` (float32) whose weights are `float_weights()`."""
        config = {k: v for k, v in self.get_config().items() if k != "quantizer_options"}
        return TransformerEncoder.from_config({**config, "name": name, "dtype": "float32"})

    def float_weights(self) -> list:
        """The parts' weights in the plain layer's order, quantized kernels as the inference pass applies them."""
        weights = []
        for attribute in _PARTS:
            part = getattr(self, attribute)  # quantized parts know their float weights; LayerNorms are float
            quantized = callable(getattr(part, "float_weights", None))
            weights.extend(
                part.float_weights() if quantized else (np.asarray(w, np.float32) for w in part.get_weights())
            )
        return weights

    def kernel_cost(self, outputs: int | None = None) -> KernelCost:
        """The parts' kernels together: storage bits; multiplications unknown (None) here."""
        parts = self.projections()
        costs = [part.kernel_cost(None) for part in parts]
        counts = [int(np.prod(part.kernel.shape)) for part in parts]
        bits = sum(c.bits_per_weight * n for c, n in zip(costs, counts))
        return KernelCost(bits / sum(counts), sum(c.storage_bits for c in costs), None, None)

    @property
    def precision_label(self) -> str:
        return self.projections()[-1].precision_label if self.built else self.DENSE.__name__

    def get_config(self) -> dict:
        return {**super().get_config(), "quantizer_options": serialized_options(self.quantizer_options)}


@register_quantized_layer("binary", TransformerEncoder)
@keras.saving.register_keras_serializable(package="keras_hessian")
class BinaryTransformerEncoder(_QuantizedTransformerEncoder):
    """KerasHub TransformerEncoder with binary attention projections and feed-forward kernels.

    Example:
        >>> layer = BinaryTransformerEncoder(32, 2, quantizer_options={"per_channel_scale": True})
        >>> y = layer(keras.ops.ones((1, 5, 16)))

    Args:
        intermediate_dim, num_heads, ...: as in `keras_hub.layers.TransformerEncoder`.
        quantizer_options: `BinaryDense` options (not `binary_activations`).
    """

    ATTENTION = BinaryMultiHeadAttention
    DENSE = BinaryDense


@register_quantized_layer("ternary_residual", TransformerEncoder)
@keras.saving.register_keras_serializable(package="keras_hessian")
class TernaryResidualTransformerEncoder(_QuantizedTransformerEncoder):
    """KerasHub TransformerEncoder with ternary-residual attention projections and feed-forward kernels.

    Example:
        >>> layer = TernaryResidualTransformerEncoder(32, 2, quantizer_options={"residuals": 2})
        >>> y = layer(keras.ops.ones((1, 5, 16)))

    Args:
        intermediate_dim, num_heads, ...: as in `keras_hub.layers.TransformerEncoder`.
        quantizer_options: `TernaryResidualDense` options (not `input_quantizer`).
    """

    ATTENTION = TernaryResidualMultiHeadAttention
    DENSE = TernaryResidualDense


@register_quantized_layer("integer", TransformerEncoder)
@keras.saving.register_keras_serializable(package="keras_hessian")
class IntegerTransformerEncoder(_QuantizedTransformerEncoder):
    """KerasHub TransformerEncoder with `bits`-bit integer attention projections and feed-forward kernels.

    Example:
        >>> layer = IntegerTransformerEncoder(32, 2, quantizer_options={"bits": 4})
        >>> y = layer(keras.ops.ones((1, 5, 16)))

    Args:
        intermediate_dim, num_heads, ...: as in `keras_hub.layers.TransformerEncoder`.
        quantizer_options: `IntegerDense` options (`bits`).
    """

    ATTENTION = IntegerMultiHeadAttention
    DENSE = IntegerDense


@register_quantized_layer("float16", TransformerEncoder)
@keras.saving.register_keras_serializable(package="keras_hessian")
class Float16TransformerEncoder(_QuantizedTransformerEncoder):
    """KerasHub TransformerEncoder with float16-rounded attention projections and feed-forward kernels.

    Example:
        >>> y = Float16TransformerEncoder(32, 2)(keras.ops.ones((1, 5, 16)))

    Args:
        intermediate_dim, num_heads, ...: as in `keras_hub.layers.TransformerEncoder`.
        quantizer_options: none.
    """

    ATTENTION = Float16MultiHeadAttention
    DENSE = Float16Dense
