"""Float16 layers: Float16Dense, Float16Conv2D and Float16Conv1D (half-precision kernels, one family).

The `float16` scheme of `quantize_model`: the kernel is rounded to IEEE half precision in the
forward pass (straight-through gradient to the latent float32 kernel), inputs and activations stay
float32. Exported, the kernel is a FLOAT16 tensor: half the bytes of float32, no error against the
Keras layer. Compared with `bfloat16` (8 significant bits, float32's range), float16 keeps 11
significant bits within +-65504.
"""

from __future__ import annotations

import keras

from keras_hessian.layers._base import QuantizedConv, QuantizedDense
from keras_hessian.layers.registry import register_quantized_layer
from keras_hessian.quantizers.float16 import Float16

__all__ = ["Float16Conv1D", "Float16Conv2D", "Float16Dense"]


class _Float16:
    """The family's quantizer and label (Dense and Conv); no options."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kernel_quantizer = Float16()

    @property
    def precision_label(self) -> str:
        return "float16"


@register_quantized_layer("float16", keras.layers.Dense)
@keras.saving.register_keras_serializable(package="keras_hessian")
class Float16Dense(_Float16, QuantizedDense):
    """Dense layer whose kernel is rounded to float16 in the forward pass.

    Use it for layers that need more than 8 bits but not float32's 4 bytes per weight.

    Example:
        >>> model = keras.Sequential([keras.Input((64,)), Float16Dense(32, activation="relu")])

    Args:
        units: output size.
        **kwargs: `keras.layers.Dense` arguments (activation, use_bias, initializers, ...).
    """


@register_quantized_layer("float16", keras.layers.Conv2D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class Float16Conv2D(_Float16, QuantizedConv):
    """2D convolution whose kernel is rounded to float16; see `Float16Dense`.

    Example:
        >>> y = Float16Conv2D(16, 3)(keras.ops.ones((1, 8, 8, 1)))

    Args:
        filters: output channels.
        kernel_size: int or pair.
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """

    rank = 2


@register_quantized_layer("float16", keras.layers.Conv1D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class Float16Conv1D(_Float16, QuantizedConv):
    """1D convolution whose kernel is rounded to float16; see `Float16Dense`.

    Example:
        >>> y = Float16Conv1D(8, 3)(keras.ops.ones((1, 40, 1)))

    Args:
        filters: output channels.
        kernel_size: int.
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """

    rank = 1
