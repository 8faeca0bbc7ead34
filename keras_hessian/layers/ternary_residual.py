"""Ternary-residual layers: Dense, Conv2D / Conv1D, DepthwiseConv2D, EinsumDense and Embedding (one family)."""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import tensorflow as tf
from keras import ops

from keras_hessian._validation import check_int
from keras_hessian.layers._base import QuantizedConv, QuantizedDense
from keras_hessian.layers._shapes import QuantizedDepthwiseConv2D, QuantizedEinsumDense, QuantizedEmbedding
from keras_hessian.layers.registry import register_quantized_layer
from keras_hessian.quantizers.base import KernelCost
from keras_hessian.quantizers.base import get as get_quantizer
from keras_hessian.quantizers.ternary_residual import TernaryResidual

__all__ = [
    "TernaryResidualConv1D",
    "TernaryResidualConv2D",
    "TernaryResidualDense",
    "TernaryResidualDepthwiseConv2D",
    "TernaryResidualEinsumDense",
    "TernaryResidualEmbedding",
]


class _TernaryResidual:
    """The family's options, quantizers, the `active_residuals` knob, build and config (Dense and Conv)."""

    # grid_bits asked -> the grid the kernel gets, where the file stores this layer type wider.
    _STORED_GRID: ClassVar[dict[int, int]] = {}

    def __init__(
        self,
        *args: Any,
        block_size: int = 64,
        residuals: int = 1,
        method: str = "exact",
        active_residuals: int | None = None,
        input_quantizer: Any = None,
        grid_bits: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        quantizer = TernaryResidual(block_size, residuals, method, grid_bits)
        self.grid_bits = quantizer.grid_bits
        stored = self._STORED_GRID.get(self.grid_bits, self.grid_bits)
        if stored != self.grid_bits:
            quantizer = TernaryResidual(block_size, residuals, method, stored)
        self.kernel_quantizer = quantizer
        self.block_size = self.kernel_quantizer.block_size
        self.residuals = self.kernel_quantizer.residuals
        self.method = method
        self.input_quantizer = get_quantizer(input_quantizer)
        self._initial_active = self._checked_active(
            self.residuals if active_residuals is None else active_residuals
        )
        self._active_variable = None

    def build(self, input_shape: tuple) -> None:
        super().build(input_shape)
        self._build_active()

    def _checked_active(self, value: Any) -> int:
        return check_int("active_residuals", value, 0, self.residuals)

    def _build_active(self) -> None:
        # A non-trainable variable read inside `call`: changing it takes effect in already
        # traced functions (predict, serving) without retracing or recompiling.
        self._active_variable = self.add_weight(
            name="active_residuals",
            shape=(),
            dtype="int32",
            initializer=keras.initializers.Constant(self._initial_active),
            trainable=False,
            autocast=False,
        )

    @property
    def active_residuals(self) -> int:
        """Residual terms used on top of the base ternary term (0..residuals), settable."""
        if self._active_variable is None:
            return self._initial_active
        return int(ops.convert_to_numpy(self._active_variable))

    @active_residuals.setter
    def active_residuals(self, value: int) -> None:
        value = self._checked_active(value)
        self._initial_active = value
        if self._active_variable is not None:
            self._active_variable.assign(value)

    def _quantize_kernel(self, kernel: tf.Tensor, training: Any) -> tf.Tensor:
        active = None if self._active_variable is None else ops.convert_to_tensor(self._active_variable)
        matrix = self.kernel_quantizer(self._to_matrix(kernel), training=training, active_residuals=active)
        return self._from_matrix(matrix)

    def ternary_terms(self) -> list[tf.Tensor]:
        """All `residuals + 1` float32 ternary terms of the current kernel, base term first."""
        return [self._from_matrix(t) for t in self.kernel_quantizer.decompose(self._to_matrix(self._latent_kernel()))]

    @property
    def precision_label(self) -> str:
        grid = "" if self.kernel_quantizer.grid_bits is None else f" int{self.kernel_quantizer.grid_bits} grid"
        return f"ternary x{self.active_residuals + 1} N={self.block_size}{grid}"

    def kernel_cost(self, outputs: int | None) -> KernelCost:
        return self._lookup_cost(self.kernel_quantizer.kernel_cost(self._matrix_shape(), outputs, self.active_residuals))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "block_size": self.block_size,
            "residuals": self.residuals,
            "method": self.method,
            "active_residuals": self.active_residuals,
            "input_quantizer": None
            if self.input_quantizer is None
            else keras.saving.serialize_keras_object(self.input_quantizer),
            # Only when set: files without the option stay loadable by earlier versions.
            **({} if self.grid_bits is None else {"grid_bits": self.grid_bits}),
        }


@register_quantized_layer("ternary_residual", keras.layers.Dense)
@keras.saving.register_keras_serializable(package="keras_hessian")
class TernaryResidualDense(_TernaryResidual, QuantizedDense):
    """Dense layer whose kernel is a sum of block-wise ternary terms (ternary residual).

    Each forward pass decomposes the latent float32 kernel into `residuals + 1` block-wise
    ternary terms (`keras_hessian.quantizers.ternary_residual`; Kundu, Banerjee et
    al., "Ternary Residual Networks", SysML 2018) and uses the first
    `active_residuals + 1`. Products with ternary weights are sign/add operations; each
    block and term costs one multiplication by its scale. Gradients are straight-through.

    Example:
        >>> layer = TernaryResidualDense(32, block_size=16, residuals=3, activation="relu")
        >>> y = layer(keras.ops.ones((2, 64)))
        >>> layer.active_residuals = 1   # cheaper, less accurate; no retracing needed

    Args:
        units: output size.
        block_size: N, weights per block along the reduction axes (the deck uses 64 and
            256); each block and term has its own scale, hence one multiplication.
        residuals: r, residual ternary terms on top of the base ternary term (r + 1 terms
            in all; r = 0 is block-wise ternarization).
        method: `"exact"` (optimal threshold and scale per block) or `"twn"`.
        active_residuals: how many of the r residual terms the forward pass uses (default
            all); settable later through the `active_residuals` attribute, without
            retraining or recompiling, to trade accuracy for compute.
        input_quantizer: optional quantizer of the inputs (name, dict or object), e.g.
            `DFP16(precision=8)` for the deck's 8-bit activations; default none.
        grid_bits: `None` (the deck's free alphas), 4 or 8: every alpha of an output channel
            on one integer grid, so the kernel is exactly a per-channel int4 / int8 tensor, which
            `to_tflite` stores exactly (see `keras_hessian.quantizers.ternary_residual` for
            when), and a `weight_only=True` file then computes what Keras computes.
        **kwargs: `keras.layers.Dense` arguments (activation, use_bias, initializers, ...).
    """


@register_quantized_layer("ternary_residual", keras.layers.Conv2D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class TernaryResidualConv2D(_TernaryResidual, QuantizedConv):
    """2D convolution whose kernel is a sum of block-wise ternary terms (ternary residual).

    Blocks run along the flattened `(kh, kw, in_channels)` axes of each filter; see
    `TernaryResidualDense`. Same arguments as `keras.layers.Conv2D` (no groups) plus the
    ternary-residual options.

    Example:
        >>> layer = TernaryResidualConv2D(16, 3, block_size=64, residuals=2)
        >>> y = layer(keras.ops.ones((1, 8, 8, 4)))
        >>> layer.active_residuals = 0

    Args:
        filters: output channels.
        kernel_size: int or pair.
        block_size: N, weights per block along the reduction axes.
        residuals: r, residual ternary terms on top of the base term.
        method: `"exact"` or `"twn"`.
        active_residuals: residual terms used by the forward pass (settable attribute).
        input_quantizer: optional input quantizer.
        grid_bits: `None`, 4 or 8, the shared per-channel grid (see `TernaryResidualDense`).
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """

    rank = 2


@register_quantized_layer("ternary_residual", keras.layers.Conv1D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class TernaryResidualConv1D(_TernaryResidual, QuantizedConv):
    """1D convolution whose kernel is a sum of block-wise ternary terms; see Conv2D.

    Example:
        >>> y = TernaryResidualConv1D(8, 5, block_size=5, residuals=1)(keras.ops.ones((1, 40, 1)))

    Args:
        filters: output channels.
        kernel_size: int.
        block_size: N, weights per block along the reduction axes.
        residuals: r, residual ternary terms on top of the base term.
        method: `"exact"` or `"twn"`.
        active_residuals: residual terms used by the forward pass (settable attribute).
        input_quantizer: optional input quantizer.
        grid_bits: `None`, 4 or 8, the shared per-channel grid (see `TernaryResidualDense`).
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """

    rank = 1


@register_quantized_layer("ternary_residual", keras.layers.DepthwiseConv2D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class TernaryResidualDepthwiseConv2D(_TernaryResidual, QuantizedDepthwiseConv2D):
    """Depthwise 2D convolution whose kernel is a sum of block-wise ternary terms; see `TernaryResidualDense`.

    Blocks run along each output channel's kernel window (`kh * kw` weights, e.g. 9 for 3x3: with the
    default `block_size=64` one block, hence one scale, per output channel and term).

    Example:
        >>> layer = TernaryResidualDepthwiseConv2D(3, residuals=1, padding="same")
        >>> y = layer(keras.ops.ones((1, 8, 8, 4)))

    Args:
        kernel_size: int or pair.
        depth_multiplier: filters per input channel.
        block_size, residuals, method, active_residuals, input_quantizer: as in
            `TernaryResidualDense`.
        grid_bits: as in `TernaryResidualDense`, except that 4 gives an int8 grid: LiteRT stores
            depthwise filters in int8 only (ai-edge-quantizer 0.10), where an int4 grid's levels
            would be rounded.
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """

    _STORED_GRID: ClassVar[dict[int, int]] = {4: 8}


@register_quantized_layer("ternary_residual", keras.layers.EinsumDense)
@keras.saving.register_keras_serializable(package="keras_hessian")
class TernaryResidualEinsumDense(_TernaryResidual, QuantizedEinsumDense):
    """EinsumDense whose kernel is a sum of block-wise ternary terms; see `TernaryResidualDense`.

    Blocks run along the contracted axes of each output feature.

    Example:
        >>> layer = TernaryResidualEinsumDense("abc,cd->abd", (None, 8), bias_axes="d", block_size=16)
        >>> y = layer(keras.ops.ones((1, 5, 32)))

    Args:
        equation, output_shape, bias_axes: as in `keras.layers.EinsumDense`.
        block_size, residuals, method, active_residuals, input_quantizer, grid_bits: as in
            `TernaryResidualDense`.
        **kwargs: activation, initializers, regularizers, constraints, ...
    """


@register_quantized_layer("ternary_residual", keras.layers.Embedding)
@keras.saving.register_keras_serializable(package="keras_hessian")
class TernaryResidualEmbedding(_TernaryResidual, QuantizedEmbedding):
    """Embedding whose table is a sum of block-wise ternary terms, blocks along each row (token).

    Example:
        >>> y = TernaryResidualEmbedding(100, 16, block_size=16)(keras.ops.array([[1, 5, 7]]))

    Args:
        input_dim: vocabulary size.
        output_dim: embedding size.
        block_size, residuals, method, active_residuals, grid_bits: as in `TernaryResidualDense`
            (a TFLite file keeps embedding tables float32, grid or not: lookups get no integer storage).
        **kwargs: embeddings_initializer, mask_zero, ...
    """
