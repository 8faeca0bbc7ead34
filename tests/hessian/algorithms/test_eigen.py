"""Top eigenvalues against the exact Hessian of small models on digits."""

from __future__ import annotations

import numpy as np
import pytest

from keras_hessian.hessian import HessianOperator, top_eigenvalues
from tests.conftest import by_magnitude, flat


def test_top3_default_settings_within_1e3(case):
    model, data, hessian = case
    exact = by_magnitude(np.linalg.eigvalsh(hessian))[:3]
    result = top_eigenvalues(HessianOperator(model, data), k=3, seed=0)
    assert result.converged
    np.testing.assert_allclose(result.eigenvalues, exact, rtol=1e-3)
    for value, vector in zip(result.eigenvalues, result.eigenvectors):
        v = flat(vector)
        np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-5)
        # A true eigenvector: the Rayleigh quotient equals the eigenvalue.
        np.testing.assert_allclose(v @ hessian @ v, value, rtol=1e-3)


@pytest.mark.parametrize("method", ["power", "arpack"])
def test_other_solvers_agree_with_exact(case, method):
    model, data, hessian = case
    exact = by_magnitude(np.linalg.eigvalsh(hessian))[:2]
    result = top_eigenvalues(HessianOperator(model, data), k=2, seed=1, method=method, tol=1e-7, max_iter=500)
    np.testing.assert_allclose(result.eigenvalues, exact, rtol=1e-3)


def test_lanczos_needs_fewer_products_than_power_iteration(mlp, hessian_batch_flat):
    op = HessianOperator(mlp, hessian_batch_flat)
    lanczos = top_eigenvalues(op, k=1, seed=0, method="lanczos")
    power = top_eigenvalues(op, k=1, seed=0, method="power")
    assert lanczos.hvp_count < power.hvp_count


def test_per_layer_eigenvalues_are_those_of_the_diagonal_blocks(case):
    model, data, hessian = case
    op = HessianOperator(model, data, blocks="layer")
    results = top_eigenvalues(op, k=2, seed=0)
    expected_names = [layer.name for layer in model.layers if layer.trainable_weights]
    assert list(results) == expected_names
    start = 0
    for layer in model.layers:
        size = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
        if not size:
            continue
        block = hessian[start : start + size, start : start + size]
        start += size
        np.testing.assert_allclose(results[layer.name].eigenvalues, by_magnitude(np.linalg.eigvalsh(block))[:2], rtol=1e-3)


def test_explicit_variable_groups(mlp, hessian_batch_flat, mlp_hessian):
    kernel = mlp.layers[0].kernel
    op = HessianOperator(mlp, hessian_batch_flat, blocks={"first_kernel": [kernel]})
    size = int(np.prod(kernel.shape))
    expected = by_magnitude(np.linalg.eigvalsh(mlp_hessian[:size, :size]))[:1]
    np.testing.assert_allclose(top_eigenvalues(op, seed=0).eigenvalues, expected, rtol=1e-3)
