"""Quantized SeparableConv2D: Keras' layer whose depthwise and pointwise kernels are quantized.

A separable convolution is a depthwise convolution followed by a 1x1 convolution, held in one
layer with two kernels. Each class here is Keras' `SeparableConv2D` (config, shapes, strides and
dilation of the depthwise step) whose `build` replaces the two kernels by two quantized parts of one
family, the family's `QuantizedDepthwiseConv2D` (per (input channel, multiplier) scales, no bias)
and its 1x1 `QuantizedConv` (per filter, with the bias), configured by one `quantizer_options`
dict. Weight-only schemes, as for MultiHeadAttention (see `_composite.py`): no DFP-16.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np

from keras_hessian.layers._composite import (
    checked_part_options,
    part_option_names,
    post_training_options,
    serialized_options,
)
from keras_hessian.layers.binary import BinaryConv2D, BinaryDepthwiseConv2D
from keras_hessian.layers.float16 import Float16Conv2D, Float16DepthwiseConv2D
from keras_hessian.layers.integer import IntegerConv2D, IntegerDepthwiseConv2D
from keras_hessian.layers.registry import register_quantized_layer
from keras_hessian.layers.ternary_residual import TernaryResidualConv2D, TernaryResidualDepthwiseConv2D
from keras_hessian.quantizers.base import KernelCost

__all__ = [
    "BinarySeparableConv2D",
    "Float16SeparableConv2D",
    "IntegerSeparableConv2D",
    "TernaryResidualSeparableConv2D",
]


class _QuantizedSeparable(keras.layers.SeparableConv2D):
    """SeparableConv2D whose kernels are the quantized parts `DEPTHWISE` and `POINTWISE` after `build`.

    Args:
        quantizer_options: options of the parts' family, checked at once.
        *args, **kwargs: `keras.layers.SeparableConv2D` arguments.
    """

    DEPTHWISE: ClassVar[type]
    POINTWISE: ClassVar[type]

    def __init__(self, *args: Any, quantizer_options: dict | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.quantizer_options = checked_part_options(type(self).__name__, self.POINTWISE, quantizer_options, 1, 1)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return part_option_names(cls.POINTWISE)

    @classmethod
    def from_float_layer(cls, layer: keras.layers.Layer, **options: Any) -> _QuantizedSeparable:
        """A new, unbuilt layer configured like the float SeparableConv2D `layer`, plus `options`."""
        return cls(**layer.get_config(), quantizer_options={**post_training_options(cls.POINTWISE), **options})

    def build(self, input_shape: tuple) -> None:
        super().build(input_shape)  # the float kernels: their shapes and initial values
        common = {"data_format": self.data_format, "dtype": self.dtype_policy, **self.quantizer_options}
        depthwise = self.DEPTHWISE(
            self.kernel_size,
            depth_multiplier=self.depth_multiplier,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            use_bias=False,
            name="depthwise",
            **common,
        )
        depthwise.build(input_shape)
        pointwise = self.POINTWISE(self.filters, 1, use_bias=self.use_bias, name="pointwise", **common)
        pointwise.build(depthwise.compute_output_shape(input_shape))
        depthwise.kernel.assign(self.depthwise_kernel)
        pointwise.kernel.assign(self.pointwise_kernel)
        if self.use_bias:
            pointwise.bias.assign(self.bias)
        for name in ("depthwise_kernel", "pointwise_kernel", "bias"):
            if getattr(self, name, None) is not None:
                delattr(self, name)  # untracks the float variable: the parts hold the weights now
        self.depthwise = depthwise
        self.pointwise = pointwise

    def call(self, inputs: Any, training: Any = None) -> Any:
        outputs = self.pointwise(self.depthwise(inputs, training=training), training=training)
        return outputs if self.activation is None else self.activation(outputs)

    def projections(self) -> list[keras.layers.Layer]:
        """The quantized parts, depthwise then pointwise."""
        return [self.depthwise, self.pointwise]

    def load_float_weights(self, layer: keras.layers.Layer) -> None:
        """Set both parts' latent kernels (and the bias) from the float SeparableConv2D `layer`."""
        self.depthwise.kernel.assign(layer.depthwise_kernel)
        self.pointwise.kernel.assign(layer.pointwise_kernel)
        if self.use_bias:
            self.pointwise.bias.assign(layer.bias)

    def float_layer(self, name: str) -> keras.layers.Layer:
        """The plain `SeparableConv2D` (float32) whose weights are `float_weights()`."""
        config = {k: v for k, v in self.get_config().items() if k != "quantizer_options"}
        return keras.layers.SeparableConv2D.from_config({**config, "name": name, "dtype": "float32"})

    def float_weights(self) -> list:
        """Depthwise kernel, pointwise kernel (both quantized) and bias, the float layer's order."""
        return [*self.depthwise.float_weights(), *self.pointwise.float_weights()]

    def kernel_cost(self, outputs: int | None = None) -> KernelCost:
        """Both kernels together: storage bits; multiplications unknown (None) here."""
        costs = [part.kernel_cost(None) for part in self.projections()]
        sizes = [int(np.prod(part.kernel.shape)) for part in self.projections()]
        bits = sum(c.bits_per_weight * n for c, n in zip(costs, sizes)) / sum(sizes)
        return KernelCost(bits, sum(c.storage_bits for c in costs), None, None)

    @property
    def precision_label(self) -> str:
        return self.pointwise.precision_label if self.built else self.POINTWISE.__name__

    def get_config(self) -> dict:
        return {**super().get_config(), "quantizer_options": serialized_options(self.quantizer_options)}


@register_quantized_layer("binary", keras.layers.SeparableConv2D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class BinarySeparableConv2D(_QuantizedSeparable):
    """SeparableConv2D with binary depthwise and pointwise kernels.

    Example:
        >>> layer = BinarySeparableConv2D(8, 3, quantizer_options={"per_channel_scale": True})
        >>> y = layer(keras.ops.ones((1, 6, 6, 4)))

    Args:
        filters, kernel_size, ...: as in `keras.layers.SeparableConv2D`.
        quantizer_options: `BinaryConv2D` options (not `binary_activations`).
    """

    DEPTHWISE = BinaryDepthwiseConv2D
    POINTWISE = BinaryConv2D


@register_quantized_layer("ternary_residual", keras.layers.SeparableConv2D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class TernaryResidualSeparableConv2D(_QuantizedSeparable):
    """SeparableConv2D with ternary-residual depthwise and pointwise kernels.

    Example:
        >>> layer = TernaryResidualSeparableConv2D(8, 3, quantizer_options={"residuals": 1})
        >>> y = layer(keras.ops.ones((1, 6, 6, 4)))

    Args:
        filters, kernel_size, ...: as in `keras.layers.SeparableConv2D`.
        quantizer_options: `TernaryResidualConv2D` options (not `input_quantizer`).
    """

    DEPTHWISE = TernaryResidualDepthwiseConv2D
    POINTWISE = TernaryResidualConv2D


@register_quantized_layer("integer", keras.layers.SeparableConv2D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class IntegerSeparableConv2D(_QuantizedSeparable):
    """SeparableConv2D with `bits`-bit integer depthwise and pointwise kernels.

    Example:
        >>> y = IntegerSeparableConv2D(8, 3, quantizer_options={"bits": 4})(keras.ops.ones((1, 6, 6, 4)))

    Args:
        filters, kernel_size, ...: as in `keras.layers.SeparableConv2D`.
        quantizer_options: `IntegerConv2D` options (`bits`).
    """

    DEPTHWISE = IntegerDepthwiseConv2D
    POINTWISE = IntegerConv2D


@register_quantized_layer("float16", keras.layers.SeparableConv2D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class Float16SeparableConv2D(_QuantizedSeparable):
    """SeparableConv2D with float16-rounded depthwise and pointwise kernels.

    Example:
        >>> y = Float16SeparableConv2D(8, 3)(keras.ops.ones((1, 6, 6, 4)))

    Args:
        filters, kernel_size, ...: as in `keras.layers.SeparableConv2D`.
        quantizer_options: none.
    """

    DEPTHWISE = Float16DepthwiseConv2D
    POINTWISE = Float16Conv2D
