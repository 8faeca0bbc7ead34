"""Binarized layers: Dense, Conv2D / Conv1D, DepthwiseConv2D, EinsumDense and Embedding (one family)."""

from __future__ import annotations

from typing import Any, ClassVar

import keras

from keras_hessian.layers._base import QuantizedConv, QuantizedDense
from keras_hessian.layers._shapes import QuantizedDepthwiseConv2D, QuantizedEinsumDense, QuantizedEmbedding
from keras_hessian.layers.registry import register_quantized_layer
from keras_hessian.quantizers.binary import Binarize

__all__ = [
    "BinaryConv1D",
    "BinaryConv2D",
    "BinaryDense",
    "BinaryDepthwiseConv2D",
    "BinaryEinsumDense",
    "BinaryEmbedding",
]


class _Binary:
    """The binary family's options, quantizers and config (shared by Dense and Conv)."""

    # From float weights every output would be rescaled by about 1 / mean|W| without the
    # XNOR-Net per-channel scale (the deck's BNNs train from scratch, where it is optional).
    POST_TRAINING_OPTIONS: ClassVar[dict[str, Any]] = {"per_channel_scale": True}

    def __init__(
        self,
        *args: Any,
        binary_activations: bool = False,
        per_channel_scale: bool = False,
        stochastic: bool = False,
        clip_value: float | None = 1.0,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.binary_activations = bool(binary_activations)
        self.per_channel_scale = bool(per_channel_scale)
        self.stochastic = bool(stochastic)
        self.kernel_quantizer = Binarize(stochastic, clip_value, per_channel_scale)
        self.clip_value = self.kernel_quantizer.clip_value
        self.input_quantizer = Binarize(clip_value=clip_value) if binary_activations else None

    @property
    def precision_label(self) -> str:
        return "binary w+a" if self.binary_activations else "binary w"

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "binary_activations": self.binary_activations,
            "per_channel_scale": self.per_channel_scale,
            "stochastic": self.stochastic,
            "clip_value": self.clip_value,
        }


@register_quantized_layer("binary", keras.layers.Dense)
@keras.saving.register_keras_serializable(package="keras_hessian")
class BinaryDense(_Binary, QuantizedDense):
    """Dense layer with binary {-1, +1} weights (and optionally binary inputs).

    Latent float32 weights are binarized in every forward pass; the straight-through
    gradient (cancelled where |W| > clip_value) trains the latent weights (Courbariaux,
    Hubara et al., "Binarized Neural Networks", 2016). Use it for BNNs, or through
    `keras_hessian.quantize_model(model, "binary")`.

    Example:
        >>> model = keras.Sequential([
        ...     keras.Input((64,)),
        ...     keras.layers.Dense(128, activation="relu"),
        ...     BinaryDense(128, per_channel_scale=True, activation="relu"),
        ...     keras.layers.Dense(10, activation="softmax"),
        ... ])
        >>> model.compile("adam", "sparse_categorical_crossentropy")

    Args:
        units: output size.
        binary_activations: binarize the inputs too (deterministic sign, gradient cancelled
            where |x| > clip_value), so products become XNOR/popcount (Hubara et al. 2016).
        per_channel_scale: scale each output channel's binary kernel by
            `alpha_c = mean|W[..., c]|` (XNOR-Net, Rastegari et al. 2016); the natural choice
            when starting from float weights (post-training).
        stochastic: stochastic (hard-sigmoid) binarization of the kernel while training;
            inference always uses the sign.
        clip_value: the straight-through gradient is cancelled where |W| > clip_value.
        **kwargs: `keras.layers.Dense` arguments (activation, use_bias, initializers, ...).
    """


@register_quantized_layer("binary", keras.layers.Conv2D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class BinaryConv2D(_Binary, QuantizedConv):
    """2D convolution with binary {-1, +1} weights (and optionally binary inputs).

    See `BinaryDense` for the training rule. Same arguments as `keras.layers.Conv2D`
    (no groups) plus the binarization options.

    Example:
        >>> layer = BinaryConv2D(16, 3, per_channel_scale=True, activation="relu")
        >>> y = layer(keras.ops.ones((1, 8, 8, 1)))

    Args:
        filters: output channels.
        kernel_size: int or pair.
        binary_activations: binarize the inputs too (deterministic sign, gradient cancelled
            where |x| > clip_value), so products become XNOR/popcount (Hubara et al. 2016).
        per_channel_scale: scale each output channel's binary kernel by
            `alpha_c = mean|W[..., c]|` (XNOR-Net, Rastegari et al. 2016); the natural choice
            when starting from float weights (post-training).
        stochastic: stochastic (hard-sigmoid) binarization of the kernel while training;
            inference always uses the sign.
        clip_value: the straight-through gradient is cancelled where |W| > clip_value.
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """

    rank = 2


@register_quantized_layer("binary", keras.layers.Conv1D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class BinaryConv1D(_Binary, QuantizedConv):
    """1D convolution with binary {-1, +1} weights; see `BinaryConv2D`.

    Example:
        >>> y = BinaryConv1D(8, 3)(keras.ops.ones((1, 40, 1)))

    Args:
        filters: output channels.
        kernel_size: int.
        binary_activations: binarize the inputs too (deterministic sign, gradient cancelled
            where |x| > clip_value), so products become XNOR/popcount (Hubara et al. 2016).
        per_channel_scale: scale each output channel's binary kernel by
            `alpha_c = mean|W[..., c]|` (XNOR-Net, Rastegari et al. 2016); the natural choice
            when starting from float weights (post-training).
        stochastic: stochastic (hard-sigmoid) binarization of the kernel while training;
            inference always uses the sign.
        clip_value: the straight-through gradient is cancelled where |W| > clip_value.
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """

    rank = 1



@register_quantized_layer("binary", keras.layers.DepthwiseConv2D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class BinaryDepthwiseConv2D(_Binary, QuantizedDepthwiseConv2D):
    """Depthwise 2D convolution with binary {-1, +1} weights; see `BinaryDense` for the training rule.

    The per-channel scale (`per_channel_scale=True`) is one `alpha = mean|W|` per output channel,
    i.e. per (input channel, multiplier) filter, over its kernel window.

    Example:
        >>> y = BinaryDepthwiseConv2D(3, per_channel_scale=True)(keras.ops.ones((1, 8, 8, 4)))

    Args:
        kernel_size: int or pair.
        depth_multiplier: filters per input channel.
        binary_activations, per_channel_scale, stochastic, clip_value: as in `BinaryDense`.
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """


@register_quantized_layer("binary", keras.layers.EinsumDense)
@keras.saving.register_keras_serializable(package="keras_hessian")
class BinaryEinsumDense(_Binary, QuantizedEinsumDense):
    """EinsumDense with binary {-1, +1} weights; see `BinaryDense` for the training rule.

    The per-channel scale is one `alpha = mean|W|` per output feature (the kernel axes the
    equation maps to the output), over the contracted axes.

    Example:
        >>> layer = BinaryEinsumDense("abc,cde->abde", (None, 2, 4), bias_axes="de", per_channel_scale=True)
        >>> y = layer(keras.ops.ones((1, 5, 8)))

    Args:
        equation, output_shape, bias_axes: as in `keras.layers.EinsumDense`.
        binary_activations, per_channel_scale, stochastic, clip_value: as in `BinaryDense`.
        **kwargs: activation, initializers, regularizers, constraints, ...
    """


@register_quantized_layer("binary", keras.layers.Embedding)
@keras.saving.register_keras_serializable(package="keras_hessian")
class BinaryEmbedding(_Binary, QuantizedEmbedding):
    """Embedding whose table is binary {-1, +1}, with one `alpha = mean|row|` per token if scaled.

    Token ids are not quantized (`binary_activations=True` is refused).

    Example:
        >>> y = BinaryEmbedding(100, 16, per_channel_scale=True)(keras.ops.array([[1, 5, 7]]))

    Args:
        input_dim: vocabulary size.
        output_dim: embedding size.
        per_channel_scale, stochastic, clip_value: as in `BinaryDense` (the scale is per row).
        **kwargs: embeddings_initializer, mask_zero, ...
    """
