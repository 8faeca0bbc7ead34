"""The operator's loss: measuring leaves what `fit` / `evaluate` report untouched (bug 6 of issue 9)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.hessian import HessianOperator
from tests.conftest import exact_hessian, flat


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


def test_a_model_that_defines_its_own_compute_loss_keeps_it(digits_flat):
    """A model overriding `compute_loss` (Keras' documented way to customise the loss) is
    measured with that loss, not only with the compiled one."""
    (x, y), _ = digits_flat
    x, y = x[:64], y[:64]
    keras.utils.set_random_seed(22)

    class Penalised(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(10)

        def call(self, inputs):
            return self.dense(inputs)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            compiled = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
            return compiled + 0.1 * keras.ops.mean(keras.ops.square(y_pred))

    model = Penalised()
    model(x[:1])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def reference(t, logits):
        cross_entropy = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(t, logits, from_logits=True))
        return cross_entropy + 0.1 * tf.reduce_mean(tf.square(logits))

    op = HessianOperator(model, (x, y))
    v = [tf.constant(np.random.default_rng(0).standard_normal(w.shape), dtype=w.dtype) for w in op.variables]
    expected = exact_hessian(model, x, y, loss_fn=reference) @ flat(v)
    np.testing.assert_allclose(flat(op.hvp(v)), expected, rtol=1e-4, atol=1e-6)


def test_inputs_and_labels_that_do_not_fit_are_one_line_naming_the_shapes(cnn, hessian_batch_image):
    x, y = hessian_batch_image
    weights = [w.copy() for w in cnn.get_weights()]
    with pytest.raises(ValueError, match=r"data: inputs of shape \(64,\) do not fit the model's input") as flat:
        HessianOperator(cnn, (x.reshape(len(x), -1), y))
    assert len(str(flat.value)) < 200 and "\n" not in str(flat.value)  # no array dump
    one_hot = np.eye(10, dtype="float32")[y]
    with pytest.raises(ValueError, match=r"data: labels of shape \(10,\) do not fit the loss") as labels:
        HessianOperator(cnn, (x, one_hot))
    assert "\n" not in str(labels.value)
    assert all(np.array_equal(a, b) for a, b in zip(weights, cnn.get_weights()))
