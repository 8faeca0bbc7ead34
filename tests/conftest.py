"""Shared fixtures: embedded data, small trained models, and their exact Hessians.

Everything expensive is session-scoped: one pytest process, TensorFlow imported once.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

# Two logical CPU devices for the tf.distribute tests (MirroredStrategy over "/cpu:0", "/cpu:1").
# This must happen before TensorFlow initializes its devices, hence here, first.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras
import numpy as np
import pytest

from keras_hessian.data import load_digits


def exact_hessian(model, x, y, training: bool = False, loss_fn=None, model_losses: bool = True) -> np.ndarray:
    """The full Hessian of the mean cross-entropy (plus model.losses), as the Jacobian of the
    gradient. The loss is written out here, not taken from the model's compile config, so the
    reference does not share code with the operator under test."""
    variables = [v.value for v in model.trainable_variables]
    saved = [v.numpy() for v in model.non_trainable_variables]
    x = tf.nest.map_structure(tf.convert_to_tensor, x)
    if loss_fn is None:
        def loss_fn(y_true, logits):
            return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True))
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = loss_fn(y, model(x, training=training))
            if model_losses and model.losses:
                loss = loss + tf.add_n(model.losses)
        grads = inner.gradient(loss, variables)
        flat = tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)
    jacobian = outer.jacobian(flat, variables)
    for v, value in zip(model.non_trainable_variables, saved):
        v.assign(value)
    n = int(flat.shape[0])
    hessian = tf.concat([tf.reshape(j, [n, -1]) for j in jacobian], axis=1).numpy().astype(np.float64)
    return (hessian + hessian.T) / 2


def by_magnitude(values: np.ndarray) -> np.ndarray:
    return values[np.argsort(-np.abs(values), kind="stable")]


def flat(vector) -> np.ndarray:
    return np.concatenate([np.asarray(t, dtype=np.float64).ravel() for t in vector])


@pytest.fixture(scope="session")
def digits_flat():
    return load_digits(image=False)


@pytest.fixture(scope="session")
def digits_image():
    return load_digits(image=True)


def _train(model, x, y, epochs=8):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="session")
def mlp(digits_flat):
    """A trained MLP on digits: 64 -> 24 (tanh) -> 10, 1,810 parameters."""
    keras.utils.set_random_seed(1)
    (x, y), _ = digits_flat
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(24, activation="tanh"), keras.layers.Dense(10)], name="mlp"
    )
    return _train(model, x, y)


@pytest.fixture(scope="session")
def cnn(digits_image):
    """A trained CNN on 8x8 digits, 754 parameters."""
    keras.utils.set_random_seed(2)
    (x, y), _ = digits_image
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ],
        name="cnn",
    )
    return _train(model, x, y)


@pytest.fixture(scope="session")
def hessian_batch_flat(digits_flat):
    (x, y), _ = digits_flat
    return x[:300], y[:300]


@pytest.fixture(scope="session")
def hessian_batch_image(digits_image):
    (x, y), _ = digits_image
    return x[:300], y[:300]


@pytest.fixture(scope="session")
def mlp_hessian(mlp, hessian_batch_flat):
    return exact_hessian(mlp, *hessian_batch_flat)


@pytest.fixture(scope="session")
def cnn_hessian(cnn, hessian_batch_image):
    return exact_hessian(cnn, *hessian_batch_image)
