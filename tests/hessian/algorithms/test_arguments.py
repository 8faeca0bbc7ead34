"""The algorithms' argument checks (through keras_hessian._validation)."""

from __future__ import annotations

import numpy as np
import pytest

from keras_hessian.hessian import HessianOperator, hutchinson_trace, spectral_density, top_eigenvalues


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
