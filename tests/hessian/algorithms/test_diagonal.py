"""Hutchinson diagonal against the exact Hessian's diagonal (the Jacobian of the gradient)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_hessian.hessian import DiagonalResult, HessianOperator, hessian_diagonal


def _z_scores(estimate: np.ndarray, error: np.ndarray, exact: np.ndarray) -> np.ndarray:
    # Entries whose row has no off-diagonal curvature (dead units) have zero variance: the
    # estimate is then exact up to float32 rounding of the product.
    return np.abs(estimate - exact) / (error + 1e-6 * (1 + np.abs(exact)))


def test_diagonal_equals_exact_within_standard_error(case):
    model, data, hessian = case
    result = hessian_diagonal(HessianOperator(model, data), num_probes=160, tol=1e-9, seed=0)
    assert isinstance(result, DiagonalResult) and result.num_probes == 160 and result.hvp_count == 160
    assert [d.shape for d in result.diagonal] == [tuple(v.shape) for v in model.trainable_variables]
    estimate, error = result.flat()
    exact = np.diag(hessian)
    z = _z_scores(estimate, error, exact)
    # With 160 probes z is close to standard normal: beyond 4 SE is a ~1e-4 event per entry.
    assert np.mean(z > 4) < 0.005, np.sort(z)[-10:]
    assert np.mean(z > 2) < 0.08
    # The standard error is an honest one: the entries it covers at 1 SE are about 68%.
    assert 0.55 < np.mean(z < 1) < 0.85
    # And the estimate carries signal: correlated with the truth.
    assert np.corrcoef(estimate, exact)[0, 1] > 0.7


def test_diagonal_hessian_is_recovered_exactly_with_zero_error():
    """Least squares on orthogonal inputs: H = 2 X^T X / n = diag(2 c_i^2 / n), and every probe
    gives z_i (Hz)_i = H_ii exactly (z_i^2 = 1), so the estimate is exact and its error zero."""
    scales = np.array([0.5, 1.0, 2.0, 3.0], np.float32)
    x = np.diag(scales).astype(np.float32)
    y = np.ones((4, 1), np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, use_bias=False)])
    result = hessian_diagonal(HessianOperator(model, (x, y), loss="mse"), num_probes=4, seed=0)
    np.testing.assert_allclose(result.diagonal[0].ravel(), 2 * scales**2 / 4, rtol=1e-6)
    np.testing.assert_allclose(result.standard_error[0], 0, atol=1e-6)
    one = hessian_diagonal(HessianOperator(model, (x, y), loss="mse"), num_probes=1, seed=0)
    assert np.all(np.isinf(one.standard_error[0]))  # one probe: no error estimate


def test_per_block_diagonals_are_the_full_ones_pieces(mlp, hessian_batch_flat, mlp_hessian):
    full = hessian_diagonal(HessianOperator(mlp, hessian_batch_flat), num_probes=96, tol=1e-9, seed=1)
    blocks = hessian_diagonal(HessianOperator(mlp, hessian_batch_flat, blocks="layer"), num_probes=96, tol=1e-9, seed=1)
    assert list(blocks) == [layer.name for layer in mlp.layers]
    exact = np.diag(mlp_hessian)
    start, index = 0, 0
    for name, piece in blocks.items():
        estimate, error = piece.flat()
        size = estimate.size
        full_estimate = np.concatenate([full.diagonal[index + j].ravel() for j in range(len(piece.diagonal))])
        full_error = np.concatenate([full.standard_error[index + j].ravel() for j in range(len(piece.diagonal))])
        truth = exact[start : start + size]
        # Both estimate the same entries: each within its SE of the truth, and of each other.
        assert np.mean(_z_scores(estimate, error, truth) > 4) < 0.01, name
        combined = np.sqrt(error**2 + full_error**2)
        assert np.mean(_z_scores(estimate, combined, full_estimate) > 4) < 0.01, name
        # Only in-block off-diagonal terms add variance: the block estimate is less noisy.
        assert np.sqrt(np.mean(error**2)) <= 1.05 * np.sqrt(np.mean(full_error**2)), name
        start += size
        index += len(piece.diagonal)
    assert start == exact.size


def test_stops_at_tolerance_and_repr_is_short(mlp, hessian_batch_flat):
    result = hessian_diagonal(HessianOperator(mlp, hessian_batch_flat), num_probes=400, tol=10.0, seed=0)
    assert result.num_probes == 16  # the first check, after the minimum number of probes
    text = repr(result)
    assert len(text) < 200 and "\n" not in text and "array(" not in text
    assert "num_probes=16" in text and "(64, 24)" in text


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_probes": 0}, "num_probes"), ({"tol": 0.0}, "tol"), ({"seed": -1}, "seed"), ({"probes_per_step": 0}, "probes_per_step")],
)
def test_bad_arguments(mlp, hessian_batch_flat, kwargs, message):
    with pytest.raises(ValueError, match=message):
        hessian_diagonal(HessianOperator(mlp, hessian_batch_flat), **kwargs)
