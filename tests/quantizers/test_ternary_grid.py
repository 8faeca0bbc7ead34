"""Ternary residuals on a shared per-channel integer grid (`grid_bits`), against a numpy reference.

Truths: an independent numpy/float64 implementation of the rule in `ternary_residual`'s
docstring (each term's alpha from a brute force over all thresholds, moved to the neighbouring
level of the channel's step whose term errs less); integer levels read off the result; the
min/max grid `to_tflite` stores the kernel on.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.export.planned_storage import minmax_exact
from keras_hessian.layers import quantizers as q

QMAX = 7  # int4, symmetric


def best_ternary(block: np.ndarray) -> tuple[float, np.ndarray]:
    """(alpha, kept mask) of the optimal ternary fit alpha * sign * kept, by brute force."""
    best_error, best = float(np.sum(block**2)), (0.0, np.zeros(block.shape, bool))
    for threshold in np.abs(block):
        kept = np.abs(block) >= threshold
        alpha = float(np.abs(block[kept]).mean())
        error = float(np.sum((block - alpha * np.sign(block) * kept) ** 2))
        if error < best_error - 1e-12:
            best_error, best = error, (alpha, kept)
    return best


def nearest(scaled: np.ndarray, level: float) -> np.ndarray:
    """The nearest of {-level, 0, level} to each entry (ties at level / 2 go to 0)."""
    return level * np.sign(scaled) * (np.abs(scaled) > level / 2)


def grid_reference(
    w: np.ndarray, block_size: int, residuals: int, qmax: int = QMAX, rounded: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(approximation, step per output channel) of the shared-grid rule, in float64; `rounded`:
    each alpha rounded to the nearest level instead (the rule before the error-based choice)."""
    matrix = w.reshape(-1, w.shape[-1]).T.astype(np.float64)  # [outputs, reduction]
    out = np.zeros_like(matrix)
    steps = np.zeros(matrix.shape[0])
    for c, row in enumerate(matrix):
        blocks = [slice(s, s + block_size) for s in range(0, row.size, block_size)]
        sums = []
        for b in blocks:  # pass 1: the free decomposition's alpha sums
            remainder, total = row[b].copy(), 0.0
            for _ in range(residuals + 1):
                alpha, kept = best_ternary(remainder)
                remainder -= alpha * np.sign(remainder) * kept
                total += alpha
            sums.append(total)
        step = max(sums) / qmax if max(sums) > 0 else 1.0
        steps[c] = step
        anchor = int(np.argmax(sums))
        for index, b in enumerate(blocks):  # pass 2: alphas on the step's grid, nearest of {-a, 0, a}
            remainder, used, levels = row[b].copy(), 0.0, np.zeros(row[b].size)
            top = int(np.argmax(np.abs(row[b])))
            for j in range(residuals + 1):
                alpha, _ = best_ternary(remainder)
                # Of the two grid levels around alpha, the one whose nearest-entry term errs less.
                low = min(max(np.floor(alpha / step), 0.0), qmax - used)
                high = min(low + 1.0, qmax - used)
                errors = [np.sum((remainder / step - nearest(remainder / step, v)) ** 2) for v in (low, high)]
                level = high if errors[1] < errors[0] else low
                if rounded:
                    level = min(max(np.round(alpha / step), 0.0), qmax - used)
                if index == anchor and j == residuals:  # the anchor takes all q steps
                    level = qmax - used
                used += level
                term = nearest(remainder / step, level)
                if index == anchor:  # ... and its largest weight carries every term, with its sign
                    term[top] = level * np.sign(row[b][top])
                levels += term
                remainder = remainder - term * step
            out[c, b] = levels * step
    return out.T.reshape(w.shape), steps


@pytest.mark.parametrize(
    "shape, block_size, residuals, bits",
    [
        ((3, 3, 8, 5), 16, 1, 4),
        ((40, 6), 16, 2, 4),
        ((130, 3), 64, 1, 4),
        ((2, 2, 3, 4), 64, 0, 4),
        ((3, 3, 16, 8), 64, 0, 4),  # r = 0 over few blocks: levels that hide the step from grid recovery
        ((1, 1, 6, 16), 64, 1, 4),  # one block of 6 weights per channel
        ((3, 3, 1, 12), 64, 1, 8),  # a depthwise-like kernel on the int8 grid
    ],
)
def test_grid_matches_the_reference_and_is_exact_on_the_min_max_grid(shape, block_size, residuals, bits):
    w = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
    approx, parts = q.ternary_residual(w, block_size=block_size, residuals=residuals, grid_bits=bits)
    approx = approx.numpy()
    qmax = 2 ** (bits - 1) - 1
    truth, steps = grid_reference(w, block_size, residuals, qmax)
    np.testing.assert_allclose(approx, truth, rtol=1e-5, atol=1e-6)
    levels = approx.reshape(-1, shape[-1]) / steps
    assert np.allclose(levels, np.round(levels), atol=1e-4)
    # Each channel's largest level is exactly q: the min/max grid (max|w_c| / q) is the step.
    np.testing.assert_array_equal(np.abs(np.round(levels)).max(axis=0), qmax)
    assert minmax_exact(np.moveaxis(approx, -1, 0), bits, "CONV_2D")
    # Each term is ternary per block, on the grid; the terms add up to the approximation.
    np.testing.assert_allclose(sum(p.numpy() for p in parts), approx, atol=1e-6)


def test_grid_costs_little_accuracy_and_the_residual_corrects_the_rounding():
    w = np.random.default_rng(1).normal(size=(3, 3, 32, 16)).astype(np.float32)

    def error(residuals, grid_bits):
        approx, _ = q.ternary_residual(w, 64, residuals, grid_bits=grid_bits)
        return float(np.linalg.norm(approx.numpy() - w) / np.linalg.norm(w))

    assert error(1, 4) < error(0, 4)
    assert error(1, None) <= error(1, 4) < 1.1 * error(1, None)


def test_the_level_choice_errs_less_than_rounding_the_alpha():
    # One term per block (r = 0): each block's level is the better of the two around its alpha, so
    # no block errs more than with the alpha rounded, and heavy-tailed channels' small blocks, whose
    # rounded alpha is 0 steps, keep a term.
    w = np.random.default_rng(4).standard_t(2, size=(256, 6)).astype(np.float32)
    approx, _ = q.ternary_residual(w, 16, 0, grid_bits=4)
    rounded, _ = grid_reference(w, 16, 0, rounded=True)
    blocks = lambda a: (a.astype(np.float64) - w).T.reshape(6, -1, 16)
    chosen, by_rounding = (np.sum(blocks(a) ** 2, axis=2) for a in (approx.numpy(), rounded))
    assert np.all(chosen <= by_rounding * (1 + 1e-5))  # float32 kernel against the float64 reference
    assert np.sum(chosen) < 0.97 * np.sum(by_rounding)


def test_grid_gradient_is_straight_through_and_active_residuals_stay_on_the_grid():
    w = tf.constant(np.random.default_rng(2).normal(size=(20, 4)).astype(np.float32))
    g = tf.constant(np.random.default_rng(3).normal(size=(20, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(w)
        loss = tf.reduce_sum(q.ternary_residual(w, 8, 2, grid_bits=4)[0] * g)
    np.testing.assert_array_equal(tape.gradient(loss, w).numpy(), g.numpy())
    _, parts = q.ternary_residual(w, 8, 2, grid_bits=4)
    partial = q.ternary_residual(w, 8, 2, active_residuals=tf.constant(1), grid_bits=4)[0].numpy()
    np.testing.assert_allclose(partial, parts[0].numpy() + parts[1].numpy(), atol=1e-6)


def test_grid_bits_is_checked_and_serialized():
    quantizer = q.TernaryResidual(block_size=8, residuals=1, grid_bits=4)
    assert quantizer.precision == 4 and quantizer.get_config()["grid_bits"] == 4
    assert q.TernaryResidual(grid_bits=np.int64(8)).grid_bits == 8
    assert "grid_bits" not in q.TernaryResidual().get_config()  # configs from before the option
    cost = quantizer.kernel_cost((64, 10), outputs=None)
    assert cost.storage_bits == 4 * 640 + 32 * 10
    for bad in (16, 2, "4", 4.0, True):
        with pytest.raises(ValueError, match="grid_bits"):
            q.TernaryResidual(grid_bits=bad)
        with pytest.raises(ValueError, match="grid_bits"):
            q.ternary_residual(np.ones((4, 2), np.float32), grid_bits=bad)


@pytest.mark.parametrize(
    "quantizer",
    [
        q.TernaryResidual(block_size=64, residuals=1),
        q.TernaryResidual(block_size=64, residuals=1, grid_bits=4),
        q.TernaryResidual(block_size=16, residuals=2, method="twn"),
        q.TernaryResidual(block_size=12, residuals=2, method="twn", grid_bits=4),
        q.Ternarize("exact"),
        q.Ternarize("twn"),
        q.Binarize(per_channel_scale=True),
        q.Integer(bits=4),
        q.DFP16(precision=8),
    ],
)
def test_the_same_kernel_quantizes_bit_identically_eagerly_and_in_a_tf_function(quantizer):
    """The exported file is built from the eager kernel, `predict` runs the traced one: they must be
    the same weights. (Grappler rewrote `x / constant` as `x * (1 / constant)` in the trace only, and the
    last-bit difference flipped near-tied ternary fits: ~100 weights in 30 random kernels differed.)"""
    rng = np.random.default_rng(5)
    traced = tf.function(lambda v: quantizer(v))
    for _ in range(10):
        shape = (int(rng.integers(8, 300)), int(rng.integers(4, 64)))
        w = tf.constant((rng.normal(size=shape) * rng.uniform(0.01, 1.0)).astype(np.float32))
        np.testing.assert_array_equal(traced(w).numpy(), quantizer(w).numpy())
