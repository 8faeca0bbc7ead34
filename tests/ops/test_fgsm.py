"""FGSM as an operation: a measurement that leaves the model's metrics alone (issue 9, bug 6)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_hessian.callbacks import fgsm as fgsm_from_callbacks
from keras_hessian.ops import fgsm


def _two_output_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="tanh", kernel_regularizer=keras.regularizers.L2(1e-2))(inputs)
    a = keras.layers.Dense(3, name="a")(hidden)
    b = keras.layers.Dense(1, name="b")(hidden)
    model = keras.Model(inputs, {"a": a, "b": b})
    model.compile(
        keras.optimizers.SGD(0.1),
        loss={"a": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "b": keras.losses.MeanSquaredError()},
        loss_weights={"a": 0.3, "b": 0.7},
        metrics={"a": ["accuracy"]},
    )
    return model


def test_fgsm_leaves_the_metrics_alone_and_follows_the_weighted_loss():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6)).astype("float32")
    y = {"a": rng.integers(0, 3, 20).astype("int32"), "b": rng.normal(size=(20, 1)).astype("float32")}
    model = _two_output_model()
    model.fit(x, y, batch_size=10, epochs=1, verbose=0)  # builds and fills the per-output loss metrics
    metric_values = [v.numpy().copy() for m in model.metrics for v in m.variables]
    assert len(metric_values) > 4  # loss, a_loss, b_loss, a_accuracy trackers
    epsilon = 0.05
    x_adv = fgsm(model, x, y, epsilon, clip=None).numpy()
    for before, after in zip(metric_values, [v.numpy() for m in model.metrics for v in m.variables]):
        np.testing.assert_array_equal(before, after)
    # Independent truth: the weighted loss written out here (plus the L2 penalty, which does not
    # depend on x).
    xt = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = model(xt, training=False)
        ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y["a"], logits=out["a"]))
        mse = tf.reduce_mean(tf.square(out["b"] - y["b"]))
        loss = 0.3 * ce + 0.7 * mse
    sign = np.sign(tape.gradient(loss, xt).numpy())
    ulp = float(np.spacing(np.float32(np.abs(x).max() + epsilon)))
    np.testing.assert_allclose(x_adv.astype(np.float64) - x, epsilon * sign, rtol=0, atol=2 * ulp)
    assert fgsm_from_callbacks is fgsm
