"""loss_landscape: the loss at 0, the curvature along the top eigenvector, the weights restored exactly."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.hessian import LandscapeResult, loss_landscape
from keras_hessian.hessian.algorithms.landscape import filter_normalized
from tests.conftest import by_magnitude


def snapshot(model) -> list[bytes]:
    return [np.asarray(v.numpy()).tobytes() for v in model.weights]


def mean_cross_entropy(model, x, y) -> float:
    """The loss written out here, not the operator's: an independent reference."""
    logits = model(tf.constant(x), training=False)
    return float(tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)))


@pytest.mark.parametrize("dims", [1, 2])
def test_loss_at_offset_zero_is_the_models_loss(mlp, hessian_batch_flat, dims):
    x, y = hessian_batch_flat
    before = snapshot(mlp)
    result = loss_landscape(mlp, (x, y), directions="random", steps=5, span=0.5, dims=dims, seed=0)
    assert isinstance(result, LandscapeResult) and result.losses.shape == (5,) * dims and result.dims == dims
    assert result.offsets[2] == 0.0 and np.allclose(result.offsets, np.linspace(-0.5, 0.5, 5))
    np.testing.assert_allclose(result.loss_at_origin, mean_cross_entropy(mlp, x, y), rtol=1e-6)
    assert snapshot(mlp) == before
    assert "LandscapeResult(kind='random'" in repr(result) and len(repr(result)) < 300


def test_second_difference_along_top_eigenvector_is_the_top_eigenvalue(mlp, hessian_batch_flat, mlp_hessian):
    x, y = hessian_batch_flat
    exact = by_magnitude(np.linalg.eigvalsh(mlp_hessian))
    h = 0.05  # truncation O(h^2) and float32 rounding O(u L / h^2) both well below 1% here
    result = loss_landscape(mlp, (x, y), directions="top_eigenvector", steps=3, span=h, seed=0)
    second_difference = (result.losses[0] - 2 * result.losses[1] + result.losses[2]) / h**2
    np.testing.assert_allclose(second_difference, exact[0], rtol=1e-2)
    np.testing.assert_allclose(result.eigenvalues[0], exact[0], rtol=1e-4)
    direction = np.concatenate([d.ravel() for d in result.directions[0]])
    np.testing.assert_allclose(np.linalg.norm(direction), 1.0, rtol=1e-5)
    # Two eigenvectors: the surface's curvature along each axis is its eigenvalue.
    surface = loss_landscape(mlp, (x, y), directions="top_eigenvector", dims=2, steps=3, span=h, seed=0)
    np.testing.assert_allclose(surface.eigenvalues, exact[:2], rtol=1e-4)
    along_second = (surface.losses[1, 0] - 2 * surface.losses[1, 1] + surface.losses[1, 2]) / h**2
    np.testing.assert_allclose(along_second, exact[1], rtol=2e-2)


def test_given_direction_matches_moving_the_weights_by_hand(mlp, hessian_batch_flat):
    x, y = hessian_batch_flat
    rng = np.random.default_rng(3)
    direction = [rng.standard_normal(v.shape).astype("float32") * 0.1 for v in mlp.trainable_variables]
    result = loss_landscape(mlp, (x, y), directions=[direction], steps=3, span=0.5, normalize=None)
    twin = keras.models.clone_model(mlp)
    twin.set_weights([w + np.float32(-0.5) * d for w, d in zip(mlp.get_weights(), direction)])
    np.testing.assert_allclose(result.losses[0], mean_cross_entropy(twin, x, y), rtol=1e-5)
    assert result.kind == "vectors" and result.normalize is None


def test_filter_normalization_follows_li_et_al():
    rng = np.random.default_rng(0)
    kernel, bias = rng.standard_normal((3, 3, 2, 4)), rng.standard_normal(4)
    d_kernel, d_bias = rng.standard_normal((3, 3, 2, 4)), rng.standard_normal(4)
    out = filter_normalized([tf.constant(d_kernel), tf.constant(d_bias)], [tf.constant(kernel), tf.constant(bias)])
    for f in range(4):  # filter f: the f-th output channel, the last axis of a Keras kernel
        np.testing.assert_allclose(np.linalg.norm(out[0].numpy()[..., f]), np.linalg.norm(kernel[..., f]))
        cosine = np.dot(out[0].numpy()[..., f].ravel(), d_kernel[..., f].ravel())
        assert cosine > 0  # rescaled, not turned
    assert not np.any(out[1].numpy())  # biases: zero direction (Li et al.'s ignore='biasbn')


def test_weights_bit_identical_after_an_error_midway(hessian_batch_flat):
    """A loss that fails on its 3rd run: the operator's check (1), grid point 0 (2), point 1
    raises with the weights moved; they come back bit for bit."""
    x, y = hessian_batch_flat
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(10)])
    runs = tf.Variable(0)

    def failing_loss(y_true, y_pred):
        runs.assign_add(1)
        with tf.control_dependencies([tf.debugging.assert_less(runs, 3, message="third run")]):
            return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True))

    before = snapshot(model)
    with pytest.raises(tf.errors.InvalidArgumentError, match="third run"):
        loss_landscape(model, (x, y), directions="random", loss=failing_loss, seed=0, batch_size=len(x))
    assert int(runs.numpy()) == 3
    assert snapshot(model) == before


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"steps": 4}, "steps"),
        ({"steps": 1}, "steps"),
        ({"dims": 3}, "dims"),
        ({"span": 0.0}, "span"),
        ({"directions": "sideways"}, "directions"),
        ({"directions": [[np.zeros(3)]]}, "directions"),
        ({"normalize": "layer"}, "normalize"),
    ],
)
def test_bad_arguments_are_named_and_leave_the_model(mlp, hessian_batch_flat, kwargs, name):
    before = snapshot(mlp)
    with pytest.raises(ValueError, match=name):
        loss_landscape(mlp, hessian_batch_flat, **kwargs)
    assert snapshot(mlp) == before
