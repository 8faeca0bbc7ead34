"""Binarization to {-1, +1} with the BNN straight-through estimator (`binarize`, `Binarize`)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from keras_hessian._validation import check_float
from keras_hessian.quantizers.base import (
    BaseQuantizer,
    KernelCost,
    as_float32,
    kernel_layout,
    register_quantizer,
    with_pseudo_gradient,
)

__all__ = ["Binarize", "binarize"]


def binarize(
    x: Any,
    stochastic: bool = False,
    clip_value: float | None = 1.0,
    seed: int | None = None,
) -> tf.Tensor:
    """Binarize a tensor to {-1, +1} with the straight-through estimator of BNNs.

    Forward (Courbariaux, Hubara et al., "Binarized Neural Networks", 2016):

    - deterministic: `x_b = sign(x)`, with `sign(0) = +1`;
    - stochastic: `x_b = +1` with probability `p = hard_sigmoid(x) = clip((x + 1) / 2, 0, 1)`,
      `-1` with probability `1 - p`.

    Pseudo-gradient (STE with gradient cancelling, Hubara et al. 2016, eq. 4):
    `dL/dx = dL/dx_b * 1{|x| <= clip_value}`; with `clip_value=None` the gradient passes
    unchanged everywhere.

    Example:
        >>> binarize([-0.3, 0.0, 2.0]).numpy()
        array([-1.,  1.,  1.], dtype=float32)

    Args:
        x: float tensor.
        stochastic: draw the hard-sigmoid Bernoulli instead of taking the sign.
        clip_value: the gradient is zero where `|x| > clip_value`; `None` never cancels.
        seed: op seed of the stochastic draw (the global seed applies as usual).

    Returns:
        A tensor of `x`'s dtype holding -1 and +1.
    """
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    x32 = as_float32(x)

    def forward(v):
        if stochastic:
            probability = tf.clip_by_value((v + 1.0) / 2.0, 0.0, 1.0)
            draw = tf.random.uniform(tf.shape(v), dtype=tf.float32, seed=seed)
            return tf.where(draw < probability, 1.0, -1.0)
        return tf.where(v >= 0.0, 1.0, -1.0)

    def backward(v, upstream):
        if clip_value is None:
            return upstream
        return upstream * tf.cast(tf.abs(v) <= clip_value, upstream.dtype)

    return tf.cast(with_pseudo_gradient(x32, forward, backward), dtype)


@register_quantizer("binarize")
class Binarize(BaseQuantizer):
    """Serializable `binarize`: weights or activations in {-1, +1} (1 bit).

    Use as a layer's kernel or input quantizer for binarized networks. Stochastic
    binarization applies only when called with `training=True`; inference is the sign.

    Example:
        >>> Binarize(per_channel_scale=True)(tf.constant([[0.5, -2.0], [-0.5, 1.0]])).numpy()
        array([[ 0.5, -1.5],
               [-0.5,  1.5]], dtype=float32)

    Args:
        stochastic: hard-sigmoid stochastic binarization during training.
        clip_value: gradient cancelled where `|x| > clip_value` (`None`: never).
        per_channel_scale: multiply by `alpha_c = mean|x[..., c]|` per last-axis channel
            (XNOR-Net, Rastegari et al. 2016); the gradient flows through alpha too.
    """

    precision = 1

    def __init__(
        self, stochastic: bool = False, clip_value: float | None = 1.0, per_channel_scale: bool = False
    ):
        self.clip_value = check_float(
            "clip_value", clip_value, minimum=0.0, exclusive_minimum=True, allow_none=True
        )
        self.stochastic = bool(stochastic)
        self.per_channel_scale = bool(per_channel_scale)

    def __call__(self, x: Any, training: bool | None = None) -> tf.Tensor:
        signs = binarize(x, stochastic=self.stochastic and bool(training), clip_value=self.clip_value)
        if not self.per_channel_scale:
            return signs
        x = tf.convert_to_tensor(x)
        axes = list(range(x.shape.rank - 1))
        scale = tf.reduce_mean(tf.abs(x), axis=axes, keepdims=True)
        return signs * scale

    def kernel_cost(self, kernel_shape: Any, outputs: int | None) -> KernelCost:
        """1 bit per weight (+ a float32 scale per channel); every product becomes a sign flip.

        A scaled kernel keeps one multiplication per output element (by `alpha_c`).
        """
        weights, channels, reduction = kernel_layout(kernel_shape)
        scale_bits = 32 * channels if self.per_channel_scale else 0
        if outputs is None:
            return KernelCost(1.0, weights + scale_bits, None, None)
        kept = outputs if self.per_channel_scale else 0
        return KernelCost(1.0, weights + scale_bits, kept, outputs * reduction)

    def get_config(self) -> dict:
        return {
            "stochastic": self.stochastic,
            "clip_value": self.clip_value,
            "per_channel_scale": self.per_channel_scale,
        }
