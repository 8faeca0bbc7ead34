"""IEEE half-precision kernels (`round_to_float16`, `Float16`): the `float16` scheme's quantizer.

A cast, not a dtype policy: under Keras' `mixed_float16` policy the activations would be float16
too (and training would need loss scaling), whereas this scheme rounds only the kernel, so the
layer computes `x @ fp16(W)` in float32 and the TFLite file stores `W` as a FLOAT16 tensor that
LiteRT dequantizes exactly to the same float32 values.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from keras_hessian.quantizers.base import BaseQuantizer, as_float32, register_quantizer, with_pseudo_gradient

__all__ = ["Float16", "round_to_float16"]


def round_to_float16(x: Any) -> tf.Tensor:
    """Round a tensor to the nearest IEEE 754 half-precision value, returned in `x`'s dtype.

    Forward: `x_q = float32(float16(x))` (round to nearest even; 11 significant bits, magnitudes
    above 65504 become inf as in any float16 cast). Pseudo-gradient: straight-through,
    `dL/dx = dL/dx_q` (the rounding's true derivative is zero almost everywhere).

    Example:
        >>> round_to_float16([1.0001, 3.14159]).numpy()
        array([1.    , 3.1406], dtype=float32)

    Args:
        x: float tensor.
    """
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    x32 = as_float32(x)

    def forward(v):
        return tf.cast(tf.cast(v, tf.float16), tf.float32)

    def backward(v, upstream):
        return upstream

    return tf.cast(with_pseudo_gradient(x32, forward, backward), dtype)


@register_quantizer("float16")
class Float16(BaseQuantizer):
    """Serializable `round_to_float16`: kernels stored as IEEE half precision (16 bits).

    Use as the kernel quantizer of `Float16Dense` / `Float16Conv*`, or through
    `quantize_model(model, "float16")`.

    Example:
        >>> Float16()(tf.constant([0.1])).numpy()
        array([0.1], dtype=float32)
    """

    precision = 16

    def __call__(self, x: Any, training: bool | None = None) -> tf.Tensor:
        return round_to_float16(x)
