"""EmpiricalFisherOperator against the mean outer product of per-example gradients from tape.jacobian."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.hessian import (
    EmpiricalFisherOperator,
    hessian_diagonal,
    hutchinson_trace,
    spectral_density,
    top_eigenvalues,
)
from tests.conftest import flat
from tests.hessian.operators._curvature import dense_matrix, per_example_gradients, random_vector, relative_error

EXAMPLES = 120


def cross_entropy_per_example(y_true, logits):
    return keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)


def squared_error_per_example(y_true, y_pred):
    return tf.reduce_mean(tf.square(y_pred - y_true), axis=-1)


def explicit_fisher(gradients: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    weights = np.ones(len(gradients)) if weights is None else weights.astype(np.float64)
    return (gradients * weights[:, None]).T @ gradients / len(gradients)


@pytest.fixture(scope="module")
def image_data(digits_image):
    (x, y), _ = digits_image
    return x[:EXAMPLES], y[:EXAMPLES]


@pytest.fixture(scope="module")
def flat_data(digits_flat):
    (x, y), _ = digits_flat
    return x[:EXAMPLES], y[:EXAMPLES]


@pytest.fixture(scope="module")
def cnn_fisher(cnn, image_data):
    return explicit_fisher(per_example_gradients(cnn, *image_data, cross_entropy_per_example))


@pytest.mark.parametrize("method", ["forward_over_reverse", "reverse_over_reverse"])
@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_product_equals_mean_outer_product(request, model_name, method):
    model = request.getfixturevalue(model_name)
    x, y = request.getfixturevalue("flat_data" if model_name == "mlp" else "image_data")
    fisher = explicit_fisher(per_example_gradients(model, x, y, cross_entropy_per_example))
    op = EmpiricalFisherOperator(model, (x, y), method=method, batch_size=50)  # 50 + 50 + 20
    v = random_vector(op.variables, seed=1)
    assert relative_error(flat(op.hvp(v)), fisher @ flat(v)) < 1e-5
    w = random_vector(op.variables, seed=2)
    many = op.hvp_many([v, w])
    assert relative_error(flat(many[0]), fisher @ flat(v)) < 1e-5
    assert relative_error(flat(many[1]), fisher @ flat(w)) < 1e-5


def test_mse_loss(mlp, flat_data):
    x, y = flat_data
    targets = np.eye(10, dtype="float32")[y]
    fisher = explicit_fisher(per_example_gradients(mlp, x, targets, squared_error_per_example))
    op = EmpiricalFisherOperator(mlp, (x, targets), loss="mse")
    v = random_vector(op.variables, seed=3)
    assert relative_error(flat(op.hvp(v)), fisher @ flat(v)) < 1e-5


@pytest.mark.parametrize("source", ["numpy", "dataset"])
def test_sample_weights(mlp, flat_data, source):
    x, y = flat_data
    weights = np.random.default_rng(0).uniform(0, 2, len(x)).astype("float32")
    weights[:5] = 0.0  # examples with no weight take no part
    fisher = explicit_fisher(per_example_gradients(mlp, x, y, cross_entropy_per_example), weights)
    if source == "numpy":
        data = (x, y, weights)
    else:
        data = tf.data.Dataset.from_tensor_slices((x, y, weights[:, None])).batch(37)
    op = EmpiricalFisherOperator(mlp, data)
    v = random_vector(op.variables, seed=4)
    assert relative_error(flat(op.hvp(v)), fisher @ flat(v)) < 1e-5


def test_dense_matrix_blocks_and_positive_semi_definite(cnn, image_data, cnn_fisher):
    op = EmpiricalFisherOperator(cnn, image_data, blocks="layer")
    start = 0
    for name in op.blocks:
        block = op.block(name)
        size = block.num_parameters
        expected = cnn_fisher[start : start + size, start : start + size]
        np.testing.assert_allclose(dense_matrix(block), expected, rtol=1e-4, atol=1e-6 * np.abs(cnn_fisher).max())
        start += size
    assert start == cnn_fisher.shape[0]
    full = dense_matrix(EmpiricalFisherOperator(cnn, image_data))
    np.testing.assert_allclose(full, cnn_fisher, rtol=1e-4, atol=1e-6 * np.abs(cnn_fisher).max())
    eigenvalues = np.linalg.eigvalsh((full + full.T) / 2)
    assert eigenvalues[0] >= -1e-6 * eigenvalues[-1]


def test_every_estimator_runs(cnn, image_data, cnn_fisher):
    op = EmpiricalFisherOperator(cnn, image_data)
    eigenvalues = np.linalg.eigvalsh(cnn_fisher)
    top = top_eigenvalues(op, k=2, seed=0, tol=1e-6, max_iter=200)
    np.testing.assert_allclose(top.eigenvalues, eigenvalues[::-1][:2], rtol=1e-3)
    trace = hutchinson_trace(op, seed=0, tol=1e-3, max_iter=400)
    assert abs(trace.trace - np.trace(cnn_fisher)) < max(4 * trace.standard_error, 0.02 * np.trace(cnn_fisher))
    diagonal = hessian_diagonal(op, seed=0, num_probes=400, tol=0.02)
    # Hutchinson's diagonal is stochastic: its error against the exact diagonal is within its own error bars.
    error = flat(diagonal.diagonal) - np.diag(cnn_fisher)
    assert np.sqrt(np.mean(error**2)) < 3 * np.sqrt(np.mean(flat(diagonal.standard_error) ** 2))
    density = spectral_density(op, n_vectors=2, lanczos_steps=30, seed=0)
    assert density.nodes.min() >= -1e-4 * eigenvalues[-1]
    assert density.nodes.max() <= eigenvalues[-1] * (1 + 1e-3)


def test_bad_input(mlp, flat_data):
    x, y = flat_data
    before = [w.numpy() for w in mlp.weights]
    with pytest.raises(ValueError, match="one weight per example"):
        EmpiricalFisherOperator(mlp, (x, y, np.ones((len(x), 2), "float32")))
    with pytest.raises(ValueError, match="method must be one of"):
        EmpiricalFisherOperator(mlp, (x, y), method="finite_difference")
    with pytest.raises(ValueError, match="labels of shape"):
        EmpiricalFisherOperator(mlp, (x, np.zeros((len(x), 3), "float32")), loss="categorical_crossentropy")
    with pytest.raises(ValueError, match="data is empty"):
        EmpiricalFisherOperator(mlp, (x[:0], y[:0]))
    with pytest.raises(TypeError, match="data must be"):
        EmpiricalFisherOperator(mlp, x)
    op = EmpiricalFisherOperator(mlp, (x, y))
    with pytest.raises(ValueError, match="a tensor of shape"):
        op.hvp([tf.zeros((3,)) for _ in op.variables])
    for b, w in zip(before, mlp.weights):
        np.testing.assert_array_equal(b, w.numpy())
    assert repr(op).startswith("EmpiricalFisherOperator(")
