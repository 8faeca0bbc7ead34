"""OBD saliency against the exact increase in loss from removing each single weight."""

from __future__ import annotations

import keras
import numpy as np

from keras_hessian.hessian import HessianOperator, hessian_diagonal
from keras_hessian.pruning import saliency


def _least_squares(x: np.ndarray, y: np.ndarray) -> keras.Sequential:
    """A linear model at the minimum of its mean squared error (so the gradient is zero)."""
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(1, use_bias=False, name="linear")])
    w, *_ = np.linalg.lstsq(x.astype(np.float64), y.astype(np.float64), rcond=None)
    model.layers[0].kernel.assign(w.astype("float32"))
    return model


def _removal_cost(x, y, w) -> np.ndarray:
    """L(w - w_i e_i) - L(w) for each i, evaluated directly in float64."""
    x = np.asarray(x, np.float64)
    y, w = np.asarray(y, np.float64).ravel(), np.asarray(w, np.float64).ravel()

    def loss(v):
        return np.mean((x @ v - y) ** 2)

    out = []
    for i in range(len(w)):
        removed = w.copy()
        removed[i] = 0
        out.append(loss(removed) - loss(w))
    return np.array(out)


def test_obd_equals_exact_removal_cost_on_orthogonal_quadratic():
    """Orthogonal inputs: the Hessian is diagonal, the Hutchinson diagonal exact, OBD exact."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(40, 5)))
    x = (q * np.array([1.0, 2.0, 3.0, 0.5, 4.0])).astype("float32")
    y = rng.normal(size=(40, 1)).astype("float32")
    model = _least_squares(x, y)
    scores = saliency(model, "obd", (x, y), loss="mse", num_probes=4, seed=0)["linear"].ravel()
    exact = _removal_cost(x, y, model.layers[0].kernel.numpy())
    np.testing.assert_allclose(scores, exact, rtol=1e-4)


def test_obd_equals_exact_removal_cost_on_correlated_quadratic_within_error():
    """Correlated inputs: at the minimum, removing one weight costs exactly 1/2 H_ii w_i^2 (the
    off-diagonal terms need two weights moved); H_ii is estimated, so compare within its SE."""
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(60, 6)) @ rng.normal(size=(6, 6))).astype("float32")
    y = (x @ rng.normal(size=(6, 1)) + rng.normal(size=(60, 1))).astype("float32")
    model = _least_squares(x, y)
    w = model.layers[0].kernel.numpy().ravel().astype(np.float64)
    scores = saliency(model, "obd", (x, y), loss="mse", num_probes=400, seed=3)["linear"].ravel()
    diagonal = hessian_diagonal(HessianOperator(model, (x, y), "mse"), num_probes=400, tol=1e-12, seed=3)
    error = 0.5 * w**2 * diagonal.standard_error[0].ravel()
    exact = _removal_cost(x, y, w)
    assert np.all(np.abs(scores - exact) <= 4 * error + 1e-6 * np.abs(exact)), (scores, exact, error)
    # The closed form OBD is built on, from the exact Hessian 2 X^T X / n.
    h = 2 * x.astype(np.float64).T @ x.astype(np.float64) / len(x)
    np.testing.assert_allclose(exact, 0.5 * np.diag(h) * w**2, rtol=1e-3)


def test_magnitude_and_random(mlp_model):
    scores = saliency(mlp_model, "magnitude")
    for layer in mlp_model.layers:
        np.testing.assert_array_equal(scores[layer.name], np.abs(layer.kernel.numpy()))
    a, b = saliency(mlp_model, "random", seed=4), saliency(mlp_model, "random", seed=4)
    assert all(np.array_equal(a[n], b[n]) and a[n].shape == scores[n].shape for n in a)
    assert 0.45 < np.mean(a["hidden1"]) < 0.55
