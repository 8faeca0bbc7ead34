"""Warm start of the eigen-solvers (`initial=`): counted products, against the exact Hessian."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_hessian.hessian import HessianOperator, top_eigenvalues
from keras_hessian.hessian import vectors as V
from tests.conftest import by_magnitude, flat


def _exact_top(hessian: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    values, vectors = np.linalg.eigh(hessian)
    order = np.argsort(-np.abs(values), kind="stable")[:k]
    return values[order], vectors[:, order]


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_from_the_exact_top_eigenvector_the_solver_stops_within_two_products(case, method):
    model, data, hessian = case
    op = HessianOperator(model, data)
    values, vectors = _exact_top(hessian, 1)
    start = V.unflatten(vectors[:, 0], op.variables)
    result = top_eigenvalues(op, k=1, tol=1e-3, max_iter=100, method=method, initial=[start])
    assert result.hvp_count <= 2
    np.testing.assert_allclose(result.eigenvalues[0], values[0], rtol=1e-3)


def test_from_the_exact_top_eigenvectors_lanczos_finds_all_k(case):
    model, data, hessian = case
    op = HessianOperator(model, data)
    values, vectors = _exact_top(hessian, 3)
    starts = [V.unflatten(vectors[:, i], op.variables) for i in range(3)]
    warm = top_eigenvalues(op, k=3, seed=0, initial=starts)
    cold = top_eigenvalues(op, k=3, seed=0)
    np.testing.assert_allclose(warm.eigenvalues, values, rtol=1e-3)
    assert warm.hvp_count < cold.hvp_count


def test_arpack_takes_the_start_as_v0(mlp, hessian_batch_flat, mlp_hessian, monkeypatch):
    # ARPACK first fills its ncv-vector (>= 20) Krylov basis whatever v0 is, so the start shows
    # in the v0 it is handed, not in the product count.
    import scipy.sparse.linalg as spla

    seen = {}
    eigsh = spla.eigsh

    def spy(*args, **kwargs):
        seen["v0"] = np.array(kwargs["v0"])
        return eigsh(*args, **kwargs)

    monkeypatch.setattr(spla, "eigsh", spy)
    op = HessianOperator(mlp, hessian_batch_flat)
    values, vectors = _exact_top(mlp_hessian, 1)
    warm = top_eigenvalues(op, k=1, method="arpack", tol=1e-6, initial=[V.unflatten(vectors[:, 0], op.variables)])
    np.testing.assert_allclose(warm.eigenvalues, values, rtol=1e-4)
    np.testing.assert_allclose(abs(seen["v0"] @ vectors[:, 0]), 1.0, rtol=1e-6)


@pytest.fixture(scope="module")
def two_epochs(mlp, digits_flat, hessian_batch_flat):
    """A copy of the trained MLP before and after one more epoch of training (the fixture untouched)."""
    (x, y), _ = digits_flat
    keras.utils.set_random_seed(3)
    model = keras.models.clone_model(mlp)
    model.set_weights(mlp.get_weights())
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = top_eigenvalues(HessianOperator(model, hessian_batch_flat), k=1, seed=0, tol=1e-4, max_iter=200)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    return model, before


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_the_previous_epochs_vector_needs_fewer_products_than_random_starts(two_epochs, hessian_batch_flat, method):
    model, before = two_epochs
    op = HessianOperator(model, hessian_batch_flat)
    exact = by_magnitude(np.linalg.eigvalsh(_hessian(model, hessian_batch_flat)))[0]
    warm = top_eigenvalues(op, k=1, tol=1e-4, max_iter=300, method=method, initial=before)
    cold = [top_eigenvalues(op, k=1, tol=1e-4, max_iter=300, method=method, seed=s).hvp_count for s in range(5)]
    np.testing.assert_allclose(warm.eigenvalues[0], exact, rtol=1e-3)
    assert warm.hvp_count < min(cold)


def _hessian(model, data):
    from tests.conftest import exact_hessian

    return exact_hessian(model, *data)


def test_initial_is_checked(mlp, cnn, hessian_batch_flat):
    op = HessianOperator(mlp, hessian_batch_flat)
    with pytest.raises(ValueError, match=r"initial\[0\] must be a list of tensors shaped like"):
        top_eigenvalues(op, initial=[[np.zeros((3, 3))]])
    with pytest.raises(TypeError, match="initial must be an EigenResult"):
        top_eigenvalues(op, initial="vectors")
    with pytest.raises(ValueError, match="zero vector"):
        top_eigenvalues(op, initial=[[np.zeros(tuple(v.shape)) for v in op.variables]])


def test_blocks_take_a_dict_of_starts(mlp, hessian_batch_flat):
    op = HessianOperator(mlp, hessian_batch_flat, blocks="layer")
    cold = top_eigenvalues(op, k=1, seed=0, tol=1e-4, max_iter=200)
    warm = top_eigenvalues(op, k=1, tol=1e-4, max_iter=200, initial=cold)
    for name, result in warm.items():
        np.testing.assert_allclose(result.eigenvalues, cold[name].eigenvalues, rtol=1e-3)
        assert result.hvp_count <= 2 or result.hvp_count < cold[name].hvp_count
    assert flat(warm[next(iter(warm))].eigenvectors[0]).size > 0
