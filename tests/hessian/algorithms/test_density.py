"""Spectral density (SLQ) against the exact Hessian's spectrum."""

from __future__ import annotations

import numpy as np

from keras_hessian.hessian import HessianOperator, spectral_density


def _wasserstein(result, exact):
    """W1 distance between the quadrature's measure and the exact eigenvalues (integral of |F_a - F_b|)."""
    nodes, masses = np.ravel(result.nodes), np.ravel(result.weights) / np.sum(result.weights)
    points = np.concatenate([nodes, exact])
    order = np.argsort(points)
    gap = np.cumsum(np.concatenate([masses, -np.full(exact.size, 1.0 / exact.size)])[order])[:-1]
    return float(np.sum(np.abs(gap) * np.diff(points[order])))


def test_defaults_spend_pyhessians_budget_and_are_closer_to_the_exact_spectrum(case):
    # PyHessian's default density is one Lanczos run of 100 steps; ours spends as many products.
    model, data, hessian = case
    op = HessianOperator(model, data)
    exact = np.linalg.eigvalsh(hessian)
    ours, peer = [], []
    for seed in range(4):
        before = op.hvp_count
        ours.append(_wasserstein(spectral_density(op, seed=seed), exact))
        assert op.hvp_count - before <= 100
        peer.append(_wasserstein(spectral_density(op, n_vectors=1, lanczos_steps=100, deflation=0, seed=seed), exact))
    assert np.median(ours) < np.median(peer)
    assert max(ours) <= max(peer)


def test_density_integrates_to_one_and_its_mean_gives_the_trace(case):
    model, data, hessian = case
    op = HessianOperator(model, data)
    result = spectral_density(op, n_vectors=16, lanczos_steps=60, deflation=10, seed=0)
    np.testing.assert_allclose(np.trapezoid(result.density, result.grid), 1.0, atol=1e-3)
    np.testing.assert_allclose(result.weights.sum(axis=1), 1.0, rtol=1e-6)
    mean = np.trapezoid(result.grid * result.density, result.grid)
    assert abs(mean * op.num_parameters - np.trace(hessian)) <= 0.05 * abs(np.trace(hessian))
    exact = np.linalg.eigvalsh(hessian)
    assert result.grid[0] <= exact.min() and result.grid[-1] >= exact.max()


def test_plot_density_writes_png(tmp_path, cnn, hessian_batch_image):
    from keras_hessian.plots import plot_density

    calls = []
    result = spectral_density(
        HessianOperator(cnn, hessian_batch_image), n_vectors=2, lanczos_steps=10, seed=0,
        progress=lambda step, steps: calls.append((step, steps)),
    )
    assert calls == [(step, 10) for step in range(11)]  # after the deflation, then after each step
    path = plot_density(result, tmp_path / "density.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
