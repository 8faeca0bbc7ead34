"""Float16 layers: Dense, Conv2D / Conv1D, DepthwiseConv2D, EinsumDense, Embedding (half-precision kernels).

The `float16` scheme of `quantize_model`: the kernel is rounded to IEEE half precision in the
forward pass (straight-through gradient to the latent float32 kernel), inputs and activations stay
float32. Exported, the kernel is a FLOAT16 tensor: half the bytes of float32, no error against the
Keras layer. Compared with `bfloat16` (8 significant bits, float32's range), float16 keeps 11
significant bits within +-65504.
"""

from __future__ import annotations

import keras

from keras_hessian.layers._base import QuantizedConv, QuantizedDense
from keras_hessian.layers._shapes import QuantizedDepthwiseConv2D, QuantizedEinsumDense, QuantizedEmbedding
from keras_hessian.layers.registry import register_quantized_layer
from keras_hessian.quantizers.float16 import Float16

__all__ = [
    "Float16Conv1D",
    "Float16Conv2D",
    "Float16Dense",
    "Float16DepthwiseConv2D",
    "Float16EinsumDense",
    "Float16Embedding",
]


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


@register_quantized_layer("float16", keras.layers.DepthwiseConv2D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class Float16DepthwiseConv2D(_Float16, QuantizedDepthwiseConv2D):
    """Depthwise 2D convolution whose kernel is rounded to float16; see `Float16Dense`.

    Example:
        >>> y = Float16DepthwiseConv2D(3)(keras.ops.ones((1, 8, 8, 4)))

    Args:
        kernel_size: int or pair.
        depth_multiplier: filters per input channel.
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """


@register_quantized_layer("float16", keras.layers.EinsumDense)
@keras.saving.register_keras_serializable(package="keras_hessian")
class Float16EinsumDense(_Float16, QuantizedEinsumDense):
    """EinsumDense whose kernel is rounded to float16; see `Float16Dense`.

    Example:
        >>> y = Float16EinsumDense("ab,bc->ac", 8, bias_axes="c")(keras.ops.ones((2, 16)))

    Args:
        equation, output_shape, bias_axes: as in `keras.layers.EinsumDense`.
        **kwargs: activation, initializers, regularizers, constraints, ...
    """


@register_quantized_layer("float16", keras.layers.Embedding)
@keras.saving.register_keras_serializable(package="keras_hessian")
class Float16Embedding(_Float16, QuantizedEmbedding):
    """Embedding whose table is rounded to float16 (lookups in float32).

    Example:
        >>> y = Float16Embedding(100, 16)(keras.ops.array([[1, 5, 7]]))

    Args:
        input_dim: vocabulary size.
        output_dim: embedding size.
        **kwargs: embeddings_initializer, mask_zero, ...
    """
