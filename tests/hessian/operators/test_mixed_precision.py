"""A `mixed_bfloat16` model: the operator differentiates its float32 view.

What is compared, and why each tolerance:

- The reference is the exact Hessian (`tape.jacobian`, float64) of the model's float64 twin
  holding the mixed model's float32 weights exactly. Under `mixed_bfloat16` the variables ARE
  float32, so a float32 view of them and of the computation has the twin's Hessian up to float32
  arithmetic: the operator's product and top eigenvalue must match it to 1e-5 (float32's unit
  roundoff is 6e-8; sums over 64 examples and the solver's tol=1e-6 stay below that).
- That tolerance tells the view from the model's own computation: the same product taken
  through the bfloat16 forward pass is off by more than 1e-3 (asserted), a hundred times more.
- The issue's statement, "within bfloat16's rounding of the weights": the twin at the weights
  rounded to bfloat16 (what the bfloat16 forward pass multiplies by) has a top eigenvalue that
  differs from the operator's by at most what rounding can move it. Round-to-nearest changes
  each weight by at most u |w_i| with u = 2^-8 (8 significant bits), so to first order
  |lambda(w_r) - lambda(w)| <= u * sum_i |w_i d lambda / d w_i|, with the eigenvalue's
  gradient d lambda / dw = grad_w (q^T H(w) q) at the top eigenvector q (Hellmann-Feynman),
  taken here by a third nested tape in float64; the second-order remainder is O(u^2).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.hessian import GaussNewtonOperator, HessianOperator, top_eigenvalues
from keras_hessian.hessian import vectors as V
from tests.conftest import exact_hessian
from tests.hessian.operators._curvature import explicit_ggn

BFLOAT16_ROUNDOFF = 2.0**-8


def cross_entropy(y_true, logits):
    logits = tf.cast(logits, tf.float32) if logits.dtype == tf.bfloat16 else logits
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True))


def build(policy: str | None) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(12, activation="tanh", dtype=policy)(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, dtype=policy)(hidden))


@pytest.fixture(scope="module")
def setup():
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # the model's own policy too
    try:
        mixed = build(None)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    mixed.set_weights([2 * w for w in mixed.get_weights()])  # a curvature well above float32 noise
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = np.argmax(x @ rng.standard_normal((8, 3)), axis=1)
    twin = build("float64")
    weights = [w.astype(np.float64) for w in mixed.get_weights()]  # float32 -> float64 is exact
    twin.set_weights(weights)
    hessian = exact_hessian(twin, x.astype(np.float64), y, loss_fn=cross_entropy)
    return mixed, twin, weights, x, y, hessian


def top(hessian):
    values, vectors = np.linalg.eigh(hessian)
    i = int(np.argmax(np.abs(values)))
    return values[i], vectors[:, i]


def test_products_are_the_float32_twins(setup):
    mixed, _, _, x, y, hessian = setup
    assert mixed.layers[1].compute_dtype == "bfloat16" and mixed.dtype_policy.name == "mixed_bfloat16"
    op = HessianOperator(mixed, (x, y), loss=cross_entropy)
    v = np.random.default_rng(1).standard_normal(op.num_parameters)
    vector = V.unflatten(v.astype(np.float32), op.variables)
    expected = hessian @ v
    product = V.flatten(op.hvp(vector))
    assert np.linalg.norm(product - expected) <= 1e-5 * np.linalg.norm(expected)

    # The same product through the model's own bfloat16 computation: far outside that tolerance.
    variables = [w.value for w in mixed.trainable_variables]
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            logits = mixed(x)
            loss = cross_entropy(y, logits)
        grads = inner.gradient(loss, variables)
    naive = np.concatenate([t.numpy().ravel() for t in outer.gradient(grads, variables, output_gradients=vector)])
    assert logits.dtype == tf.bfloat16
    assert np.linalg.norm(naive - expected) > 1e-3 * np.linalg.norm(expected)

    # The view is the operator's alone: the model computes in bfloat16 again afterwards.
    assert mixed(x[:2]).dtype == tf.bfloat16 and mixed.layers[1].dtype_policy.name == "mixed_bfloat16"


def test_gauss_newton_is_the_float32_twins(setup):
    mixed, twin, _, x, y, _ = setup
    expected_matrix = explicit_ggn(twin, x.astype(np.float64), y, cross_entropy)
    op = GaussNewtonOperator(mixed, (x, y), loss=cross_entropy)
    v = np.random.default_rng(2).standard_normal(op.num_parameters)
    expected = expected_matrix @ v
    product = V.flatten(op.hvp(V.unflatten(v.astype(np.float32), op.variables)))
    assert np.linalg.norm(product - expected) <= 1e-5 * np.linalg.norm(expected)


def test_top_eigenvalue_within_bfloat16_rounding(setup):
    mixed, twin, weights, x, y, hessian = setup
    op = HessianOperator(mixed, (x, y), loss=cross_entropy)
    result = top_eigenvalues(op, k=1, tol=1e-6, seed=0, max_iter=op.num_parameters)
    measured = float(result.eigenvalues[0])
    exact, q = top(hessian)
    assert abs(measured - exact) <= 1e-5 * abs(exact)

    rounded = [tf.cast(tf.cast(w, tf.bfloat16), tf.float64).numpy() for w in weights]
    twin.set_weights(rounded)
    exact_rounded, _ = top(exact_hessian(twin, x.astype(np.float64), y, loss_fn=cross_entropy))
    twin.set_weights(weights)
    variables = [w.value for w in twin.trainable_variables]
    direction = V.unflatten(q, twin.trainable_variables)
    with tf.GradientTape() as third:
        with tf.GradientTape() as second:
            with tf.GradientTape() as first:
                loss = cross_entropy(y, twin(x.astype(np.float64)))
            grads = first.gradient(loss, variables)
        hq = second.gradient(grads, variables, output_gradients=direction)
        quadratic = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(hq, direction)])
    gradient = third.gradient(quadratic, variables)
    np.testing.assert_allclose(float(quadratic), exact, rtol=1e-9)  # q is the eigenvector of lambda
    bound = BFLOAT16_ROUNDOFF * sum(float(tf.reduce_sum(tf.abs(g * w))) for g, w in zip(gradient, variables))
    assert 0 < abs(exact_rounded - exact)  # rounding does move it
    assert abs(measured - exact_rounded) <= bound + 1e-5 * abs(exact)


def test_policies_restored_when_the_loss_raises(setup):
    mixed, _, _, x, y, _ = setup

    def broken(y_true, y_pred):
        raise ValueError("broken loss")

    with pytest.raises(ValueError):
        HessianOperator(mixed, (x, y), loss=broken)
    assert [layer.dtype_policy.name for layer in (mixed, *mixed.layers[1:])] == ["mixed_bfloat16"] * 3
