"""Uniform symmetric integer quantization, one scale per output channel (`quantize_integer`, `Integer`).

The int8 / int4 candidates of HAWQ. The grid is the one TFLite and LiteRT store per-channel
integer weights on (symmetric, narrow range, zero point 0), so an `Integer(bits)` kernel is
stored exactly in a `bits`-bit TFLite tensor.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from keras_hessian._validation import check_int
from keras_hessian.quantizers.base import (
    BaseQuantizer,
    KernelCost,
    as_float32,
    kernel_layout,
    register_quantizer,
    with_pseudo_gradient,
)

__all__ = ["INTEGER_BITS", "Integer", "integer_scale", "quantize_integer"]

INTEGER_BITS = (2, 8)  # the widths allowed, inclusive


def integer_scale(x: Any, bits: int) -> tf.Tensor:
    """The per-output-channel step `s_c = max_i |x[i, c]| / (2^(bits-1) - 1)` (1 for a zero channel)."""
    x = as_float32(x)
    levels = float(2 ** (bits - 1) - 1)
    axes = list(range(x.shape.rank - 1))
    largest = tf.reduce_max(tf.abs(x), axis=axes, keepdims=True) if axes else tf.abs(x)
    # Times 1/q, not divided by q: Grappler rewrites a division by a constant that way inside a
    # tf.function only, and the eager and traced steps then differed in the last bit.
    return tf.where(largest > 0.0, largest * (1.0 / levels), tf.ones_like(largest))


def quantize_integer(x: Any, bits: int = 8) -> tf.Tensor:
    """Round a kernel to `bits`-bit signed integers times a per-output-channel scale.

    Forward (symmetric, narrow range, as TFLite's per-channel weights; Jacob et al., CVPR 2018,
    and Krishnamoorthi, arXiv 1806.08342): with `q = 2^(bits-1) - 1` and the step
    `s_c = max_i |x[i, c]| / q` of output channel `c` (the last axis),
    `x_q = s_c * clip(round(x / s_c), -q, q)`. Each element moves by at most `s_c / 2`, and the
    largest magnitude of each channel is kept exactly.

    Pseudo-gradient: straight-through, `dL/dx = dL/dx_q`. The clipped STE would cancel the
    gradient outside `[-q s_c, q s_c]`, but the scale comes from the channel's own maximum, so
    every element lies inside and the rule is the identity.

    Example:
        >>> quantize_integer([[0.5, -2.0], [-0.3, 1.5]], bits=2).numpy()
        array([[ 0.5, -2. ],
               [-0.5,  2. ]], dtype=float32)

    Args:
        x: float tensor; the last axis indexes output channels (a 1-D tensor is one channel per
            element).
        bits: 2 to 8.

    Returns:
        A tensor of `x`'s dtype on the grid.
    """
    bits = check_int("bits", bits, *INTEGER_BITS)
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    x32 = as_float32(x)
    levels = float(2 ** (bits - 1) - 1)
    scale = tf.stop_gradient(integer_scale(x32, bits))

    def forward(v):
        return scale * tf.clip_by_value(tf.round(v / scale), -levels, levels)

    def backward(v, upstream):
        return upstream

    return tf.cast(with_pseudo_gradient(x32, forward, backward), dtype)


@register_quantizer("integer")
class Integer(BaseQuantizer):
    """Serializable `quantize_integer`: `bits`-bit symmetric per-channel integer weights.

    Use as the kernel quantizer of `IntegerDense` / `IntegerConv*` (int8, int4), or through
    `quantize_model(model, {"scheme": "integer", "bits": 4})`.

    Example:
        >>> Integer(4)(tf.constant([[0.7, -1.4], [0.1, 0.2]])).numpy().round(3)
        array([[ 0.7  , -1.4  ],
               [ 0.1  ,  0.2  ]], dtype=float32)

    Args:
        bits: storage bits per weight, 2 to 8.
    """

    def __init__(self, bits: int = 8):
        self.bits = check_int("bits", bits, *INTEGER_BITS)

    @property
    def precision(self) -> int:  # type: ignore[override]
        return self.bits

    def __call__(self, x: Any, training: bool | None = None) -> tf.Tensor:
        return quantize_integer(x, self.bits)

    def kernel_cost(self, kernel_shape: Any, outputs: int | None) -> KernelCost:
        """`bits` per weight plus one float32 scale per output channel; integer MACs are kept."""
        weights, channels, reduction = kernel_layout(kernel_shape)
        macs = None if outputs is None else outputs * reduction
        return KernelCost(float(self.bits), self.bits * weights + 32 * channels, macs, None if macs is None else 0)

    def get_config(self) -> dict:
        return {"bits": self.bits}
