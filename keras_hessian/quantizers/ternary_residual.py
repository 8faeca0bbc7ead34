"""Block-wise ternary residuals `W ~ sum_j alpha_j,b * T_j,b` (`ternary_residual`, `TernaryResidual`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
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
from keras_hessian.quantizers.ternary import TERNARY_METHODS, apply_rows, fit_rows

__all__ = ["TernaryResidual", "ternary_residual"]


def _to_blocks(x: tf.Tensor, block_size: int) -> tuple[tf.Tensor, tf.Tensor, Any]:
    """Reshape to `[outputs * blocks, block_size]` rows along the reduction axes.

    The last axis indexes outputs (Dense units, Conv filters); blocks run along the other
    axes flattened (the dot-product direction), so one block's scale multiplies one partial
    sum: that is what makes a block cost one multiplication. Rows are zero-padded when
    `block_size` does not divide the reduction length.
    """
    if x.shape.rank == 1:
        matrix = x[None, :]
    else:
        outputs = x.shape[-1]
        matrix = tf.transpose(tf.reshape(x, (-1, outputs)))
    reduction = matrix.shape[1]
    blocks = -(-reduction // block_size)
    padding = blocks * block_size - reduction
    rows = tf.reshape(tf.pad(matrix, [[0, 0], [0, padding]]), (-1, block_size))
    real = np.full((matrix.shape[0], blocks), block_size, dtype="float32")
    real[:, -1] = block_size - padding
    counts = tf.constant(real.reshape(-1, 1))
    return rows, counts, (matrix.shape, padding)


def _from_blocks(rows: tf.Tensor, layout: Any, shape: tf.TensorShape) -> tf.Tensor:
    matrix_shape, _ = layout
    matrix = tf.reshape(rows, (matrix_shape[0], -1))[:, : matrix_shape[1]]
    if shape.rank == 1:
        return tf.reshape(matrix, shape)
    return tf.reshape(tf.transpose(matrix), shape)


def ternary_residual(
    x: Any,
    block_size: int = 64,
    residuals: int = 1,
    method: str = "exact",
    active_residuals: Any = None,
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Block-wise ternary residual decomposition `W ~ sum_{j=0..r} alpha_j,b * T_j,b`.

    Forward (Kundu, Banerjee et al., "Ternary Residual Networks", SysML 2018): split the
    weights into disjoint blocks of `block_size` elements along the reduction axes (all axes
    but the last, which indexes outputs; zero-padded when `block_size` does not divide),
    ternarize each block (`ternarize`, one alpha and threshold per block), then ternarize
    what is left, `W - sum of earlier terms`, again block-wise, `residuals` more times.

    Convention: `residuals = r` counts the terms ADDED to the base ternary term, so there are
    `r + 1` ternary terms and `r = 0` is plain block-wise ternarization. Each term is the
    optimal ternary fit of the remainder (or the TWN fit), so the reconstruction error never
    increases with r. `active_residuals = k <= r` sums only the first `k + 1` terms, which is
    exactly the decomposition with `residuals = k` (terms are computed greedily): the deck's
    accuracy/compute knob.

    Pseudo-gradient: straight-through, `dL/dW = dL/dW_q` (identity), whatever `k`.

    Example:
        >>> w = tf.random.normal((64, 10))
        >>> approx, parts = ternary_residual(w, block_size=16, residuals=2)
        >>> len(parts)
        3

    Args:
        x: float tensor, last axis = outputs.
        block_size: N, elements per block (>= 1).
        residuals: r, residual terms on top of the base ternary term (>= 0).
        method: `"exact"` or `"twn"` fit of each block.
        active_residuals: k, how many residual terms the returned sum includes (an int or a
            scalar integer tensor, read at run time); `None` means all r.

    Returns:
        `(approximation, parts)`: the sum of the first `k + 1` terms in `x`'s dtype (with the
        STE gradient), and the list of all `r + 1` terms (float32, no gradient).
    """
    block_size = check_int("block_size", block_size, 1)
    residuals = check_int("residuals", residuals, 0)
    check_choice("method", method, TERNARY_METHODS)
    x = tf.convert_to_tensor(x)
    x32 = as_float32(x)
    if x32.shape.rank is None or x32.shape.rank == 0:
        raise ValueError(f"ternary_residual needs a tensor of rank >= 1. Received shape {x32.shape}.")
    shape = x32.shape
    rows, counts, layout = _to_blocks(tf.stop_gradient(x32), block_size)
    remainder = rows
    parts = []
    for _ in range(residuals + 1):
        alpha, threshold = fit_rows(remainder, counts, method)
        term = apply_rows(remainder, alpha, threshold)
        parts.append(_from_blocks(term, layout, shape))
        remainder = remainder - term
    stacked = tf.stack(parts)
    if active_residuals is None:
        active = tf.constant(residuals, tf.int32)
    else:
        active = tf.cast(tf.convert_to_tensor(active_residuals), tf.int32)
    selector = tf.cast(tf.range(residuals + 1) <= active, tf.float32)
    total = tf.tensordot(selector, stacked, axes=1)
    approximation = with_pseudo_gradient(x32, lambda v: total, lambda v, g: g)
    return tf.cast(approximation, x.dtype), parts


@register_quantizer("ternary_residual")
class TernaryResidual(BaseQuantizer):
    """Serializable `ternary_residual`: r + 1 block-wise ternary terms, 2 bits each.

    Use as the kernel quantizer of ternary-residual layers. `precision` is
    `2 * (residuals + 1)` bits per weight, plus one float32 alpha per block and term.

    Example:
        >>> quantizer = TernaryResidual(block_size=16, residuals=2)
        >>> approximation = quantizer(tf.random.normal((64, 8)), active_residuals=1)

    Args:
        block_size: N, elements per block along the reduction axes.
        residuals: r, residual terms on top of the base ternary term.
        method: `"exact"` or `"twn"` fit of each block.
    """

    def __init__(self, block_size: int = 64, residuals: int = 1, method: str = "exact"):
        self.block_size = check_int("block_size", block_size, 1)
        self.residuals = check_int("residuals", residuals, 0)
        self.method = check_choice("method", method, TERNARY_METHODS)

    @property
    def precision(self) -> int:  # type: ignore[override]
        return 2 * (self.residuals + 1)

    def __call__(
        self, x: Any, training: bool | None = None, active_residuals: Any = None
    ) -> tf.Tensor:
        approximation, _ = ternary_residual(
            x, self.block_size, self.residuals, self.method, active_residuals
        )
        return approximation

    def decompose(self, x: Any) -> list[tf.Tensor]:
        """The r + 1 ternary terms of `x` (float32)."""
        return ternary_residual(x, self.block_size, self.residuals, self.method)[1]

    def kernel_cost(self, kernel_shape: Any, outputs: int | None, active_residuals: int | None = None) -> KernelCost:
        """2 bits per weight and term plus a float32 scale per block and term.

        Products with ternary weights are sign/add; each block and term keeps one
        multiplication, its scale times its partial sum (Kundu, Banerjee et al. 2018).
        """
        terms = (self.residuals if active_residuals is None else int(active_residuals)) + 1
        weights, channels, reduction = kernel_layout(kernel_shape)
        blocks = math.ceil(reduction / self.block_size)
        storage = 2 * weights * terms + 32 * channels * blocks * terms
        if outputs is None:
            return KernelCost(2.0 * terms, storage, None, None)
        return KernelCost(2.0 * terms, storage, outputs * blocks * terms, outputs * reduction)

    def get_config(self) -> dict:
        return {"block_size": self.block_size, "residuals": self.residuals, "method": self.method}
