"""Eigenvalues, trace and density against the exact Hessian of small models on digits."""

from __future__ import annotations

import numpy as np
import pytest

from keras_hessian.hessian import HessianOperator, hutchinson_trace, spectral_density, top_eigenvalues
from tests.conftest import by_magnitude, flat

CASES = [("mlp", "hessian_batch_flat"), ("cnn", "hessian_batch_image")]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def case(request):
    model_name, data_name = request.param
    model = request.getfixturevalue(model_name)
    data = request.getfixturevalue(data_name)
    hessian = request.getfixturevalue(f"{model_name}_hessian")
    return model, data, hessian


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


def test_hutchinson_trace_within_2_percent_at_defaults(case):
    model, data, hessian = case
    exact = np.trace(hessian)
    for seed in (0, 1):
        result = hutchinson_trace(HessianOperator(model, data), seed=seed)
        assert abs(result.trace - exact) <= 0.02 * abs(exact)
        assert 0 < result.standard_error < 0.02 * abs(exact)


def test_plain_hutchinson_is_unbiased(cnn, hessian_batch_image, cnn_hessian):
    """deflation=0: the mean of z^T H z over Rademacher z; 3 standard errors cover the truth."""
    result = hutchinson_trace(HessianOperator(cnn, hessian_batch_image), seed=3, deflation=0, max_iter=200)
    assert abs(result.trace - np.trace(cnn_hessian)) < 3 * result.standard_error


def test_density_integrates_to_one_and_its_mean_gives_the_trace(case):
    model, data, hessian = case
    op = HessianOperator(model, data)
    result = spectral_density(op, seed=0)
    np.testing.assert_allclose(np.trapezoid(result.density, result.grid), 1.0, atol=1e-3)
    np.testing.assert_allclose(result.weights.sum(axis=1), 1.0, rtol=1e-6)
    mean = np.trapezoid(result.grid * result.density, result.grid)
    assert abs(mean * op.num_parameters - np.trace(hessian)) <= 0.05 * abs(np.trace(hessian))
    exact = np.linalg.eigvalsh(hessian)
    assert result.grid[0] <= exact.min() and result.grid[-1] >= exact.max()


def test_plot_density_writes_png(tmp_path, cnn, hessian_batch_image):
    from keras_hessian.plots import plot_density

    result = spectral_density(HessianOperator(cnn, hessian_batch_image), n_vectors=2, lanczos_steps=10, seed=0)
    path = plot_density(result, tmp_path / "density.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("k", [0, -1, 1.5, 10_000])
def test_bad_k(mlp, hessian_batch_flat, k):
    with pytest.raises(ValueError, match="k must"):
        top_eigenvalues(HessianOperator(mlp, hessian_batch_flat), k=k)


def test_bad_estimator_arguments(mlp, hessian_batch_flat):
    op = HessianOperator(mlp, hessian_batch_flat)
    with pytest.raises(ValueError, match="method must be one of"):
        top_eigenvalues(op, method="qr")
    with pytest.raises(ValueError, match="tol must be"):
        top_eigenvalues(op, tol=0)
    with pytest.raises(ValueError, match="max_iter must"):
        hutchinson_trace(op, max_iter=0)
    with pytest.raises(ValueError, match="n_vectors must"):
        spectral_density(op, n_vectors=0)
    with pytest.raises(TypeError, match="operator must be a HessianOperator"):
        top_eigenvalues(np.eye(3))
