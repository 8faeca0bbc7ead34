"""Block-wise ternary residuals `W ~ sum_j alpha_j,b * T_j,b` (`ternary_residual`, `TernaryResidual`).

`grid_bits` (4 or 8) is ours, not the deck's: the deck's alphas are free floats, so a kernel's levels
`{0, +-a0, +-a1, +-a0 +- a1}` differ from block to block and no per-channel integer tensor holds
them; LiteRT (no codebook weights) then rounds them to an int8 grid. On a shared grid the same
terms are an exact int4 / int8 tensor with one scale per output channel.
"""

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

__all__ = ["GRID_BITS", "TernaryResidual", "ternary_residual"]

# Integer widths a shared grid can target: LiteRT's int4 and int8 weight tensors.
GRID_BITS = (4, 8)


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


def _check_grid_bits(grid_bits: Any) -> int | None:
    if isinstance(grid_bits, np.integer):
        grid_bits = int(grid_bits)
    if isinstance(grid_bits, bool | float):
        # The same error as for any other value outside the choices (check_choice's).
        raise ValueError(f"grid_bits must be one of {[None, *GRID_BITS]}. Received grid_bits={grid_bits!r}.")  # noqa: TRY004
    return check_choice("grid_bits", grid_bits, (None, *GRID_BITS))


def _channel_steps(
    rows: tf.Tensor, counts: tf.Tensor, outputs: int, terms: int, method: str, qmax: int
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per row (`[rows, 1]` each): its output channel's step (the channel's largest free
    `sum_j alpha_j,b` over qmax), the free first term's alpha (the grid's first fit is the same
    fit), and whether the row is its channel's anchor block (the one with that largest sum)."""
    remainder, total, first = rows, tf.zeros_like(counts), None
    for _ in range(terms):
        alpha, threshold = fit_rows(remainder, counts, method)
        first = alpha if first is None else first
        remainder = remainder - apply_rows(remainder, alpha, threshold)
        total = total + alpha
    per_channel = tf.reshape(total, (outputs, -1))
    # Times 1/qmax, not divided by qmax: Grappler makes that rewrite in a tf.function only (see fit_rows).
    step = tf.reduce_max(per_channel, axis=1, keepdims=True) * (1.0 / qmax)
    step = tf.where(step > 0, step, tf.ones_like(step))  # an all-zero channel: any step
    anchor = tf.one_hot(tf.argmax(per_channel, axis=1), tf.shape(per_channel)[1]) > 0.5
    return (
        tf.reshape(tf.broadcast_to(step, tf.shape(per_channel)), (-1, 1)),
        first,
        tf.reshape(anchor, (-1, 1)),
    )


def _steps_error(scaled: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    """Per row, the squared error of the term `level * nearest of {-1, 0, 1}` against `scaled`."""
    return tf.reduce_sum(tf.square(scaled - apply_rows(scaled, level, level / 2)), axis=1, keepdims=True)


def ternary_residual(
    x: Any,
    block_size: int = 64,
    residuals: int = 1,
    method: str = "exact",
    active_residuals: Any = None,
    grid_bits: int | None = None,
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
    accuracy/compute knob (on a shared grid the step still comes from all r + 1 free terms).

    Shared grid (`grid_bits=b`, 4 or 8; ours, not the deck's): every alpha of one output channel
    is an integer multiple of one step `s_c`, and each block's alphas sum to at most
    `q = 2^(b-1) - 1` steps, so the kernel is exactly `s_c` times b-bit integers. `s_c` is the
    channel's largest free `sum_j alpha_j,b` over `q`; the terms are then fitted greedily as
    before, each free alpha moved to the one of its two neighbouring grid levels (at most the
    steps the block has left, possibly 0) whose term leaves the smaller error, its ternary
    entries the nearest of `{-alpha, 0, +alpha}` (threshold alpha / 2), so a later term also
    corrects an earlier term's rounding. The block with that largest sum
    (the anchor) takes all q steps (its last term's level is what the earlier ones left) and its
    largest weight carries every term with its own sign, so each channel's largest level is
    exactly `q * s_c`: the kernel is what a per-channel min/max grid (`max|w_c| / q`) stores, and
    `to_tflite` stores it so, warning for any filter it cannot store exactly (with
    `active_residuals < r` the anchor's last term is left out).

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
        grid_bits: `None` (free alphas, the deck's scheme), 4 or 8: the shared per-channel grid.

    Returns:
        `(approximation, parts)`: the sum of the first `k + 1` terms in `x`'s dtype (with the
        STE gradient), and the list of all `r + 1` terms (float32, no gradient).
    """
    block_size = check_int("block_size", block_size, 1)
    residuals = check_int("residuals", residuals, 0)
    check_choice("method", method, TERNARY_METHODS)
    grid_bits = _check_grid_bits(grid_bits)
    x = tf.convert_to_tensor(x)
    x32 = as_float32(x)
    if x32.shape.rank is None or x32.shape.rank == 0:
        raise ValueError(f"ternary_residual needs a tensor of rank >= 1. Received shape {x32.shape}.")
    shape = x32.shape
    rows, counts, layout = _to_blocks(tf.stop_gradient(x32), block_size)
    remainder = rows
    parts, integers = [], []
    if grid_bits is not None:
        qmax = 2 ** (grid_bits - 1) - 1
        step, first_alpha, anchor = _channel_steps(rows, counts, layout[0][0], residuals + 1, method, qmax)
        used = tf.zeros_like(step)
        # The anchor block's largest weight carries every term with its own sign.
        top = tf.one_hot(tf.argmax(tf.abs(rows), axis=1), rows.shape[1]) > 0.5
        pinned = tf.logical_and(top, anchor)
    for j in range(residuals + 1):
        if grid_bits is not None and j == 0:
            alpha = first_alpha
        else:
            alpha, threshold = fit_rows(remainder, counts, method)
        if grid_bits is None:
            term = apply_rows(remainder, alpha, threshold)
        else:
            scaled = remainder / step  # the remainder in steps
            # The free alpha's two neighbours on the grid, within the steps the block has left: the
            # one whose term leaves the smaller error (rounding alone zeroes small blocks' terms).
            low = tf.clip_by_value(tf.floor(alpha / step), 0.0, qmax - used)
            high = tf.minimum(low + 1.0, qmax - used)
            level = tf.where(_steps_error(scaled, high) < _steps_error(scaled, low), high, low)
            if j == residuals:  # the anchor block's terms take all q steps: the channel's largest level is q
                level = tf.where(anchor, qmax - used, level)
            used = used + level
            # The term in steps (small integers, exact in float32): the nearest of -level, 0, +level.
            integer = apply_rows(scaled, level, level / 2)
            integer = tf.where(pinned, level * tf.sign(rows), integer)
            integers.append(integer)
            term = integer * step
        parts.append(_from_blocks(term, layout, shape))
        remainder = remainder - term
    if active_residuals is None:
        active = tf.constant(residuals, tf.int32)
    else:
        active = tf.cast(tf.convert_to_tensor(active_residuals), tf.int32)
    selector = tf.cast(tf.range(residuals + 1) <= active, tf.float32)
    if grid_bits is None:
        total = tf.tensordot(selector, tf.stack(parts), axes=1)
    else:
        # One rounding per weight (integer steps times the step), so equal levels are equal floats.
        total = _from_blocks(tf.tensordot(selector, tf.stack(integers), axes=1) * step, layout, shape)
    approximation = with_pseudo_gradient(x32, lambda v: total, lambda v, g: g)
    return tf.cast(approximation, x.dtype), parts


@register_quantizer("ternary_residual")
class TernaryResidual(BaseQuantizer):
    """Serializable `ternary_residual`: r + 1 block-wise ternary terms, 2 bits each.

    Use as the kernel quantizer of ternary-residual layers. `precision` is
    `2 * (residuals + 1)` bits per weight, plus one float32 alpha per block and term; on a
    shared grid (`grid_bits`) `grid_bits` bits and one float32 step per output channel.

    Example:
        >>> quantizer = TernaryResidual(block_size=16, residuals=2)
        >>> approximation = quantizer(tf.random.normal((64, 8)), active_residuals=1)

    Args:
        block_size: N, elements per block along the reduction axes.
        residuals: r, residual terms on top of the base ternary term.
        method: `"exact"` or `"twn"` fit of each block.
        grid_bits: `None`, 4 or 8: the alphas on a shared per-channel integer grid
            (`ternary_residual`).
    """

    def __init__(self, block_size: int = 64, residuals: int = 1, method: str = "exact", grid_bits: int | None = None):
        self.block_size = check_int("block_size", block_size, 1)
        self.residuals = check_int("residuals", residuals, 0)
        self.method = check_choice("method", method, TERNARY_METHODS)
        self.grid_bits = _check_grid_bits(grid_bits)

    @property
    def precision(self) -> int:  # type: ignore[override]
        return 2 * (self.residuals + 1) if self.grid_bits is None else self.grid_bits

    def __call__(
        self, x: Any, training: bool | None = None, active_residuals: Any = None
    ) -> tf.Tensor:
        approximation, _ = ternary_residual(
            x, self.block_size, self.residuals, self.method, active_residuals, self.grid_bits
        )
        return approximation

    def decompose(self, x: Any) -> list[tf.Tensor]:
        """The r + 1 ternary terms of `x` (float32)."""
        return ternary_residual(x, self.block_size, self.residuals, self.method, grid_bits=self.grid_bits)[1]

    def kernel_cost(self, kernel_shape: Any, outputs: int | None, active_residuals: int | None = None) -> KernelCost:
        """2 bits per weight and term plus a float32 scale per block and term (free alphas).

        Products with ternary weights are sign/add; each block and term keeps one
        multiplication, its scale times its partial sum (Kundu, Banerjee et al. 2018). On a
        shared grid: `grid_bits` per weight (the integer the file holds), one float32 step per
        output channel (the alphas are integer multiples of it).
        """
        terms = (self.residuals if active_residuals is None else int(active_residuals)) + 1
        weights, channels, reduction = kernel_layout(kernel_shape)
        blocks = math.ceil(reduction / self.block_size)
        if self.grid_bits is None:
            bits = 2 * terms
            storage = bits * weights + 32 * channels * blocks * terms
        else:  # one b-bit integer per weight (what the file holds), one step per channel
            bits = self.grid_bits
            storage = bits * weights + 32 * channels
        if outputs is None:
            return KernelCost(float(bits), storage, None, None)
        return KernelCost(float(bits), storage, outputs * blocks * terms, outputs * reduction)

    def get_config(self) -> dict:
        config = {"block_size": self.block_size, "residuals": self.residuals, "method": self.method}
        if self.grid_bits is not None:  # configs saved before the option load as before
            config["grid_bits"] = self.grid_bits
        return config
