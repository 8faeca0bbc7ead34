"""GaussNewtonOperator against J^T H_out J built with tape.jacobian, and against the exact Hessian."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.hessian import (
    GaussNewtonOperator,
    hessian_diagonal,
    hutchinson_trace,
    spectral_density,
    top_eigenvalues,
)
from tests.conftest import exact_hessian, flat
from tests.hessian.operators._curvature import (
    cross_entropy,
    dense_matrix,
    explicit_ggn,
    mean_squared_error,
    random_vector,
    relative_error,
)

EXAMPLES = 120


def one_hot(y):
    return np.eye(10, dtype="float32")[y]


@pytest.fixture(scope="module")
def references(mlp, cnn, digits_flat, digits_image):
    """`{(model, loss): (model, data, loss argument, explicit G)}`."""
    out = {}
    for name, model, ((x, y), _) in (("mlp", mlp, digits_flat), ("cnn", cnn, digits_image)):
        x, y = x[:EXAMPLES], y[:EXAMPLES]
        out[name, "cross_entropy"] = (model, (x, y), None, explicit_ggn(model, x, y, cross_entropy))
        out[name, "mse"] = (model, (x, one_hot(y)), "mse", explicit_ggn(model, x, one_hot(y), mean_squared_error))
    return out


@pytest.mark.parametrize("method", ["forward_over_reverse", "reverse_over_reverse"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_product_equals_explicit_ggn(references, model_name, loss, method):
    model, data, loss_arg, ggn = references[model_name, loss]
    op = GaussNewtonOperator(model, data, loss=loss_arg, method=method, batch_size=50)  # 50 + 50 + 20
    v = random_vector(op.variables, seed=3)
    assert relative_error(flat(op.hvp(v)), ggn @ flat(v)) < 1e-5
    many = op.hvp_many([v, random_vector(op.variables, seed=4)])
    assert relative_error(flat(many[0]), ggn @ flat(v)) < 1e-5
    assert relative_error(flat(many[1]), ggn @ flat(random_vector(op.variables, seed=4))) < 1e-5
    assert op.hvp_count == 3


def test_equals_the_hessian_for_a_linear_model_with_mse(digits_flat):
    keras.utils.set_random_seed(5)
    (x, y), _ = digits_flat
    x, targets = x[:90, :20], one_hot(y[:90])
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(10)])
    op = GaussNewtonOperator(model, (x, targets), loss="mse")
    hessian = exact_hessian(model, x, targets, loss_fn=mean_squared_error)
    np.testing.assert_allclose(dense_matrix(op), hessian, rtol=1e-5, atol=1e-6 * np.abs(hessian).max())


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_positive_semi_definite(references, loss):
    model, data, loss_arg, ggn = references["cnn", loss]
    matrix = dense_matrix(GaussNewtonOperator(model, data, loss=loss_arg))
    np.testing.assert_allclose(matrix, ggn, rtol=1e-4, atol=1e-6 * np.abs(ggn).max())
    eigenvalues = np.linalg.eigvalsh((matrix + matrix.T) / 2)
    assert eigenvalues[0] >= -1e-6 * eigenvalues[-1]
    # The Hessian of the same loss is indefinite here: the GGN is not the Hessian.
    hessian = exact_hessian(model, *data, loss_fn=cross_entropy if loss == "cross_entropy" else mean_squared_error)
    assert np.linalg.eigvalsh(hessian)[0] < -1e-6 * eigenvalues[-1]


def test_blocks_are_the_diagonal_blocks(references):
    model, data, _, ggn = references["mlp", "cross_entropy"]
    op = GaussNewtonOperator(model, data, blocks="layer")
    assert op.blocks == [layer.name for layer in model.layers]
    start = 0
    for name in op.blocks:
        block = op.block(name)
        size = block.num_parameters
        v = random_vector(block.variables, seed=7)
        expected = ggn[start : start + size, start : start + size] @ flat(v)
        assert relative_error(flat(block.hvp(v)), expected) < 1e-5
        assert isinstance(block, GaussNewtonOperator)
        start += size
    assert start == ggn.shape[0]


def test_regularization_hessian_is_added(digits_flat):
    keras.utils.set_random_seed(6)
    (x, y), _ = digits_flat
    x, y = x[:80, :16], y[:80]
    l2 = 0.01
    model = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(6, activation="tanh", kernel_regularizer=keras.regularizers.L2(l2)),
         keras.layers.Dense(10)]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    op = GaussNewtonOperator(model, (x, y))
    # L2 adds l2 * |K|^2: its Hessian is 2 * l2 on the regularized kernel's entries.
    penalty = np.zeros(op.num_parameters)
    penalty[: 16 * 6] = 2 * l2
    expected = explicit_ggn(model, x, y, cross_entropy) + np.diag(penalty)
    v = random_vector(op.variables, seed=8)
    assert relative_error(flat(op.hvp(v)), expected @ flat(v)) < 1e-5


def test_sample_weights_and_uneven_batches(references):
    model, (x, y), _, _ = references["mlp", "cross_entropy"]
    weights = np.random.default_rng(0).uniform(0, 2, len(x)).astype("float32")

    def weighted(y_true, logits):
        per_example = keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
        return tf.reduce_mean(per_example * weights)

    expected = explicit_ggn(model, x, y, weighted)
    dataset = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(37)
    op = GaussNewtonOperator(model, dataset)
    v = random_vector(op.variables, seed=9)
    assert relative_error(flat(op.hvp(v)), expected @ flat(v)) < 1e-5


def test_every_estimator_runs(references):
    model, data, _, ggn = references["cnn", "cross_entropy"]
    op = GaussNewtonOperator(model, data)
    eigenvalues = np.linalg.eigvalsh(ggn)
    top = top_eigenvalues(op, k=2, seed=0, tol=1e-6, max_iter=200)
    np.testing.assert_allclose(top.eigenvalues, eigenvalues[::-1][:2], rtol=1e-3)
    trace = hutchinson_trace(op, seed=0, tol=1e-3, max_iter=400)
    assert abs(trace.trace - np.trace(ggn)) < max(4 * trace.standard_error, 0.02 * np.trace(ggn))
    diagonal = hessian_diagonal(op, seed=0, num_probes=400, tol=0.02)
    # Hutchinson's diagonal is stochastic: its error against the exact diagonal is within its own error bars.
    error = flat(diagonal.diagonal) - np.diag(ggn)
    assert np.sqrt(np.mean(error**2)) < 3 * np.sqrt(np.mean(flat(diagonal.standard_error) ** 2))
    density = spectral_density(op, n_vectors=2, lanczos_steps=30, seed=0)
    assert density.nodes.min() >= -1e-4 * eigenvalues[-1]
    assert density.nodes.max() <= eigenvalues[-1] * (1 + 1e-3)
    assert abs(np.sum(density.density) * (density.grid[1] - density.grid[0]) - 1) < 0.05


def test_training_mode_and_distribution(digits_flat):
    """training=True leaves BatchNorm's statistics as they were; under MirroredStrategy the
    operator is the one-device operator."""
    keras.utils.set_random_seed(10)
    (x, y), _ = digits_flat
    x, y = x[:64], y[:64]
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dense(10)]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy() for w in model.weights]
    op = GaussNewtonOperator(model, (x, y), training=True)
    op.hvp(random_vector(op.variables))
    for b, w in zip(before, model.weights):
        np.testing.assert_array_equal(b, w.numpy())

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = keras.Sequential([keras.Input((64,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(10)])
        mirrored.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain = keras.Sequential([keras.Input((64,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(10)])
    plain.set_weights(mirrored.get_weights())
    distributed = GaussNewtonOperator(mirrored, (x, y), batch_size=30)
    assert distributed.strategy is strategy
    v = random_vector(distributed.variables, seed=11)
    np.testing.assert_allclose(
        flat(distributed.hvp(v)), explicit_ggn(plain, x, y, cross_entropy) @ flat(v), rtol=1e-4, atol=1e-6
    )


def test_bad_input(references):
    model, (x, y), _, _ = references["mlp", "cross_entropy"]
    before = [w.numpy() for w in model.weights]
    with pytest.raises(ValueError, match="method must be one of"):
        GaussNewtonOperator(model, (x, y), method="finite_differences")
    with pytest.raises(ValueError, match="method must be one of"):
        GaussNewtonOperator(model, (x, y), method="finite_difference")
    with pytest.raises(ValueError, match="labels of shape"):
        GaussNewtonOperator(model, (x, np.zeros((len(x), 3), "float32")), loss="categorical_crossentropy")
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        GaussNewtonOperator(model, (bad, y))
    with pytest.raises(TypeError, match="model must be a Keras model"):
        GaussNewtonOperator("model.keras", (x, y))
    with pytest.raises(ValueError, match="model must be built"):
        GaussNewtonOperator(keras.Sequential([keras.layers.Dense(3)]), (x, y))
    op = GaussNewtonOperator(model, (x, y))
    with pytest.raises(ValueError, match="one tensor per variable"):
        op.hvp([tf.zeros((64, 24))])
    with pytest.raises(ValueError, match="name must be one of"):
        op.block("nope")
    for b, w in zip(before, model.weights):
        np.testing.assert_array_equal(b, w.numpy())
    assert repr(op).startswith("GaussNewtonOperator(")
