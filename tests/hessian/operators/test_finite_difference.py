"""method="finite_difference": within its documented error of autodiff, the weights bit-identical."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.hessian import HessianOperator
from keras_hessian.hessian.operators._finite_difference import DOCUMENTED_RELATIVE_ERROR
from tests.conftest import flat


def random_vector(variables, seed=0):
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.standard_normal(v.shape), dtype=v.dtype) for v in variables]


def relative_error(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def snapshot(model) -> list[bytes]:
    return [np.asarray(v.numpy()).tobytes() for v in model.weights]


def tanh_cnn() -> keras.Model:
    keras.utils.set_random_seed(4)
    return keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(6, 3, activation="tanh"), keras.layers.AveragePooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(10),
    ])


def tanh_mlp() -> keras.Model:
    keras.utils.set_random_seed(5)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(10)])


def compiled(model):
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture
def float64_floatx():
    """Build float64 models (weights, computation and the Keras loss), restoring floatx after."""
    previous, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # the global policy, once read, no longer follows floatx
    try:
        yield
    finally:
        keras.config.set_floatx(previous)
        keras.config.set_dtype_policy(policy)


def _check_against_autodiff(model, data, bound):
    reference = HessianOperator(model, data, method="reverse_over_reverse")
    finite = HessianOperator(model, data, method="finite_difference")
    before = snapshot(model)
    for seed in range(3):
        v = random_vector(reference.variables, seed)
        error = relative_error(flat(finite.hvp(v)), flat(reference.hvp(v)))
        assert error < bound, (seed, error)
        assert snapshot(model) == before  # bit-identical after each product
    assert finite.hvp_count == 3


def test_float32_within_documented_error(mlp, hessian_batch_flat, hessian_batch_image):
    bound = DOCUMENTED_RELATIVE_ERROR[tf.float32]
    _check_against_autodiff(mlp, hessian_batch_flat, bound)  # the trained digits MLP (tanh)
    x, y = hessian_batch_image
    _check_against_autodiff(compiled(tanh_cnn()), (x, y), bound)


def test_float64_within_documented_error(float64_floatx, hessian_batch_flat, hessian_batch_image):
    bound = DOCUMENTED_RELATIVE_ERROR[tf.float64]
    x, y = hessian_batch_flat
    model = compiled(tanh_mlp())
    assert model.trainable_variables[0].dtype == "float64"
    _check_against_autodiff(model, (x.astype("float64"), y), bound)
    x, y = hessian_batch_image
    _check_against_autodiff(compiled(tanh_cnn()), (x.astype("float64"), y), bound)


def test_step_follows_the_loss_precision_not_only_the_weights(hessian_batch_flat):
    """float64 layers with the float32 Keras loss object: the loss is rounded in float32, so a
    float64-sized step would drown in rounding; the step follows the coarser precision."""
    x, y = hessian_batch_flat
    keras.utils.set_random_seed(6)
    model = compiled(keras.Sequential([
        keras.Input((64,), dtype="float64"), keras.layers.Dense(12, activation="tanh", dtype="float64"),
        keras.layers.Dense(10, dtype="float64"),
    ]))
    data = (x.astype("float64"), y)
    reference = HessianOperator(model, data, method="reverse_over_reverse")
    v = random_vector(reference.variables, 1)
    error = relative_error(flat(HessianOperator(model, data, method="finite_difference").hvp(v)), flat(reference.hvp(v)))
    assert error < DOCUMENTED_RELATIVE_ERROR[tf.float32]


def test_hvp_many_and_zero_vector(mlp, hessian_batch_flat):
    op = HessianOperator(mlp, hessian_batch_flat, method="finite_difference")
    a, b = random_vector(op.variables, 1), random_vector(op.variables, 2)
    many = op.hvp_many([a, b])
    np.testing.assert_array_equal(flat(many[0]), flat(op.hvp(a)))  # same steps, same weights: same floats
    np.testing.assert_array_equal(flat(many[1]), flat(op.hvp(b)))
    assert op.hvp_count == 4
    zero = [tf.zeros_like(t) for t in a]
    assert not np.any(flat(op.hvp(zero)))


def test_weights_bit_identical_after_an_error_midway(hessian_batch_flat):
    """A loss that fails on its 3rd run: validation (1), g(w + eps v) (2), g(w - eps v) raises
    with the weights at w - eps v; they must come back bit-identical."""
    x, y = hessian_batch_flat
    model = compiled(tanh_mlp())
    runs = tf.Variable(0)

    def failing_loss(y_true, y_pred):
        runs.assign_add(1)
        with tf.control_dependencies([tf.debugging.assert_less(runs, 3, message="third run")]):
            return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True))

    op = HessianOperator(model, (x, y), loss=failing_loss, method="finite_difference", batch_size=len(x))
    before = snapshot(model)
    with pytest.raises(tf.errors.InvalidArgumentError, match="third run"):
        op.hvp(random_vector(op.variables))
    assert int(runs.numpy()) == 3
    assert snapshot(model) == before


def test_method_is_checked(mlp, hessian_batch_flat):
    with pytest.raises(ValueError, match="method"):
        HessianOperator(mlp, hessian_batch_flat, method="finite_differences")
