"""Dynamic fixed point (DFP-16): integer mantissas with one shared exponent per tensor (`dfp16`, `DFP16`)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from keras_hessian._validation import check_choice, check_int
from keras_hessian.quantizers.base import (
    BaseQuantizer,
    KernelCost,
    as_float32,
    kernel_layout,
    register_quantizer,
    with_pseudo_gradient,
)

__all__ = [
    "DFP16",
    "DFP_MAX_PRECISION",
    "DFP_MIN_PRECISION",
    "DFP_ROUNDINGS",
    "dfp16",
    "dfp16_dequantize",
    "dfp16_quantize",
    "power_of_two",
]

DFP_ROUNDINGS = ("nearest", "stochastic")
DFP_MIN_PRECISION = 2
DFP_MAX_PRECISION = 16
# Bits of the shared exponent stored next to the mantissas (float32's exponent range).
SHARED_EXPONENT_BITS = 8


def power_of_two(exponent: tf.Tensor) -> tf.Tensor:
    """2**exponent as an exact float32, for integer exponents in [-126, 127].

    The biased exponent is multiplied into place rather than shifted: TFLite has no LEFT_SHIFT
    kernel, and exported models run this same code (`keras_hessian.export`).
    """
    return tf.bitcast((exponent + 127) * (1 << 23), tf.float32)


def dfp16_quantize(
    x: Any,
    precision: int = 16,
    rounding: str = "nearest",
    seed: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Dynamic fixed point: integer mantissas with ONE shared exponent per tensor.

    Forward (Das et al., "Mixed Precision Training of Convolutional Neural Networks using
    Integer Operations", ICLR 2018):

        E_fmax = E(max |f|),   E_s = E_fmax - (P - 2),   f_n ~ i_n * 2^E_s,

    where `E(v) = floor(log2 v)` and `i_n = round(f_n / 2^E_s)` is a P-bit signed integer.
    `max|f| / 2^E_s` lies in [2^(P-2), 2^(P-1)); when it exceeds `2^(P-1) - 1` (the top
    1/2^(P-2) of that range, where rounding could carry into bit P) E_s is raised by one, as
    a float's exponent is after a rounding carry, so mantissas always fit in
    `[-(2^(P-1) - 1), 2^(P-1) - 1]` and the round-to-nearest error is at most `2^(E_s - 1)`.
    E_s is kept >= -126 (2^E_s a normal float32): tensors whose maximum is below about
    2^(-126 + P - 2) use a coarser grid than the formula. Stochastic rounding rounds up
    with probability equal to the fractional part, so `E[i_n * 2^E_s] = f_n`.

    Pseudo-gradient: none (integer outputs); `dfp16` is the differentiable round trip.

    Example:
        >>> mantissa, exponent = dfp16_quantize([0.5, -0.25, 1.0])
        >>> (mantissa.numpy(), int(exponent))
        (array([ 8192, -4096, 16384], dtype=int32), -14)

    Args:
        x: float tensor.
        precision: P, bits of the signed mantissa, 2..16 (16 gives int16 mantissas).
        rounding: `"nearest"` (ties to even) or `"stochastic"`.
        seed: op seed of the stochastic rounding draw.

    Returns:
        `(mantissa, shared_exponent)`: int32 tensor of `x`'s shape, int32 scalar.
    """
    precision = check_int("precision", precision, DFP_MIN_PRECISION, DFP_MAX_PRECISION)
    check_choice("rounding", rounding, DFP_ROUNDINGS)
    x32 = as_float32(x)
    largest = tf.reduce_max(tf.abs(x32)) if x32.shape.rank else tf.abs(x32)
    # Exponent bits of a positive float32 give floor(log2) exactly (no log2 rounding issue).
    exponent_of_max = tf.bitwise.right_shift(tf.bitcast(largest, tf.int32), 23) - 127
    shared = tf.maximum(exponent_of_max - (precision - 2), -126)
    limit = float(2 ** (precision - 1) - 1)
    shared = shared + tf.cast(largest > limit * power_of_two(shared), tf.int32)
    scaled = x32 * power_of_two(-shared)
    if rounding == "nearest":
        integers = tf.round(scaled)
    else:
        floor = tf.floor(scaled)
        draw = tf.random.uniform(tf.shape(scaled), dtype=tf.float32, seed=seed)
        integers = floor + tf.cast(draw < scaled - floor, tf.float32)
    integers = tf.clip_by_value(integers, -limit, limit)
    return tf.cast(integers, tf.int32), shared


def dfp16_dequantize(mantissa: Any, shared_exponent: Any, dtype: str = "float32") -> tf.Tensor:
    """Float value `i_n * 2^E_s` of a DFP tensor (exact in float32 for P <= 24).

    Example:
        >>> dfp16_dequantize(*dfp16_quantize([0.3])).numpy()
        array([0.30000305], dtype=float32)

    Args:
        mantissa: integer tensor from `dfp16_quantize`.
        shared_exponent: integer scalar E_s.
        dtype: float dtype of the result.
    """
    shared_exponent = tf.cast(shared_exponent, tf.int32)
    value = tf.cast(mantissa, tf.float32) * power_of_two(shared_exponent)
    return tf.cast(value, dtype)


def dfp16(
    x: Any,
    precision: int = 16,
    rounding: str = "nearest",
    seed: int | None = None,
) -> tf.Tensor:
    """Round a tensor to dynamic fixed point (DFP-16) and back to float.

    Forward: `dfp16_dequantize(*dfp16_quantize(x))`; see `dfp16_quantize` for the rule
    (Das et al., ICLR 2018). The round-trip error of each element is at most `2^(E_s - 1)`
    with round to nearest and below `2^E_s` with stochastic rounding.

    Pseudo-gradient: straight-through, `dL/dx = dL/dx_q` (identity).

    Example:
        >>> float(dfp16(tf.constant([0.3, 1.0]))[0])
        0.29998779296875

    Args:
        x: float tensor.
        precision: P, mantissa bits (2..16).
        rounding: `"nearest"` or `"stochastic"`.
        seed: op seed of the stochastic draw.

    Returns:
        The DFP value of `x` in `x`'s dtype.
    """
    x = tf.convert_to_tensor(x)
    x32 = as_float32(x)

    def forward(v):
        return dfp16_dequantize(*dfp16_quantize(v, precision, rounding, seed))

    return tf.cast(with_pseudo_gradient(x32, forward, lambda v, g: g), x.dtype)


@register_quantizer("dfp16")
class DFP16(BaseQuantizer):
    """Serializable `dfp16`: P-bit integer mantissas with one shared exponent per tensor.

    Use as a kernel/input quantizer, or through `DFP16Dense` / `DFP16Conv2D`. Stochastic
    rounding applies only when called with `training=True`; inference rounds to nearest.

    Example:
        >>> DFP16(precision=8)(tf.constant([0.3, 1.0]))

    Args:
        precision: P, mantissa bits, 2..16.
        rounding: `"nearest"` or `"stochastic"`.
    """

    def __init__(self, precision: int = 16, rounding: str = "nearest"):
        self.precision = check_int("precision", precision, DFP_MIN_PRECISION, DFP_MAX_PRECISION)
        self.rounding = check_choice("rounding", rounding, DFP_ROUNDINGS)

    def _rounding(self, training: bool | None) -> str:
        return self.rounding if training else "nearest"

    def __call__(self, x: Any, training: bool | None = None) -> tf.Tensor:
        return dfp16(x, self.precision, self._rounding(training))

    def quantize(self, x: Any, training: bool | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """`(mantissa, shared_exponent)` of `x`."""
        return dfp16_quantize(x, self.precision, self._rounding(training))

    def kernel_cost(self, kernel_shape: Any, outputs: int | None) -> KernelCost:
        """P bits per weight plus the 8-bit shared exponent; every multiply-accumulate stays (integer)."""
        weights, _, reduction = kernel_layout(kernel_shape)
        macs = None if outputs is None else outputs * reduction
        storage = self.precision * weights + SHARED_EXPONENT_BITS
        return KernelCost(float(self.precision), storage, macs, None if macs is None else 0)

    def get_config(self) -> dict:
        return {"precision": self.precision, "rounding": self.rounding}
