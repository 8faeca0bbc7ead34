"""The operator's loss: measuring leaves what `fit` / `evaluate` report untouched (bug 6 of issue 9)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_hessian.hessian import HessianOperator


def two_output_model():
    keras.utils.set_random_seed(21)
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(6, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.01))(inputs)
    classes = keras.layers.Dense(10, name="classes")(hidden)
    value = keras.layers.Dense(1, name="value")(hidden)
    model = keras.Model(inputs, [classes, value])
    model.compile(
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.losses.MeanSquaredError()],
        loss_weights=[0.7, 0.2],
        metrics=[["accuracy"], ["mae"]],
    )
    return model


def test_measuring_a_two_output_model_leaves_its_metrics_unchanged(digits_flat):
    (x, y), _ = digits_flat
    x, y = x[:96], y[:96]
    targets = x.mean(axis=1, keepdims=True).astype("float32")
    model = two_output_model()
    model.evaluate(x, [y, targets], verbose=0)
    before = [v.numpy().copy() for m in model.metrics for v in m.variables]
    assert len(before) > 4  # loss tracker, two per-output losses, accuracy, mae

    op = HessianOperator(model, (x, [y, targets]), batch_size=32)
    op.hvp([tf.ones(v.shape, v.dtype) for v in op.variables])
    loss, _ = op.loss_and_gradient()

    after = [v.numpy() for m in model.metrics for v in m.variables]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    # The measured loss is still the compiled one, written out by hand: weighted sum of the two
    # losses plus the kernel's L2 penalty.
    classes, value = (np.asarray(p, dtype=np.float64) for p in model(x))
    shifted = classes - classes.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    cross_entropy = -log_softmax[np.arange(len(y)), y].mean()
    squared = np.mean((value - targets) ** 2)
    penalty = 0.01 * np.sum(np.asarray(model.layers[1].kernel, dtype=np.float64) ** 2)
    np.testing.assert_allclose(loss, 0.7 * cross_entropy + 0.2 * squared + penalty, rtol=1e-5)
