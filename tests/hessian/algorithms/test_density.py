"""Spectral density (SLQ) against the exact Hessian's spectrum."""

from __future__ import annotations

import numpy as np

from keras_hessian.hessian import HessianOperator, spectral_density


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

    calls = []
    result = spectral_density(
        HessianOperator(cnn, hessian_batch_image), n_vectors=2, lanczos_steps=10, seed=0,
        progress=lambda step, steps: calls.append((step, steps)),
    )
    assert calls == [(step, 10) for step in range(11)]  # after the deflation, then after each step
    path = plot_density(result, tmp_path / "density.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
