"""Independent references for the curvature operators: explicit matrices built with `tape.jacobian`.

The losses are written out here (as conftest's `exact_hessian` does), so nothing is shared
with the operators under test.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def cross_entropy(y_true, logits):
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True))


def mean_squared_error(y_true, y_pred):
    return tf.reduce_mean(tf.reduce_mean(tf.square(y_pred - y_true), axis=-1))


def _flat_jacobian(jacobian, rows: int) -> np.ndarray:
    return tf.concat([tf.reshape(j, [rows, -1]) for j in jacobian], axis=1).numpy().astype(np.float64)


def explicit_ggn(model, x, y, loss_fn, variables=None) -> np.ndarray:
    """`J^T H_out J`: J = d outputs / d weights, H_out = the Hessian of the loss in the outputs."""
    variables = [v.value for v in (variables or model.trainable_variables)]
    with tf.GradientTape() as tape:
        predictions = model(tf.convert_to_tensor(x), training=False)
        outputs = tf.reshape(predictions, [-1])
    jacobian = _flat_jacobian(tape.jacobian(outputs, variables), int(outputs.shape[0]))
    point = tf.Variable(predictions)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = loss_fn(y, point)
        grad = tf.reshape(inner.gradient(loss, point), [-1])
    h_out = tf.reshape(outer.jacobian(grad, point), [grad.shape[0], -1]).numpy().astype(np.float64)
    ggn = jacobian.T @ h_out @ jacobian
    return (ggn + ggn.T) / 2


def per_example_gradients(model, x, y, per_example_loss) -> np.ndarray:
    """(examples, parameters): row i the gradient of example i's loss."""
    variables = [v.value for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        losses = per_example_loss(y, model(tf.convert_to_tensor(x), training=False))
    return _flat_jacobian(tape.jacobian(losses, variables), len(x))


def dense_matrix(op, chunk: int = 64) -> np.ndarray:
    """The operator's matrix, column by column from products with the unit vectors."""
    n = op.num_parameters
    sizes = [int(np.prod(v.shape)) for v in op.variables]
    columns = []
    for start in range(0, n, chunk):
        eye = np.zeros((chunk, n), np.float32)
        for j in range(min(chunk, n - start)):
            eye[j, start + j] = 1.0
        vectors = [
            [tf.constant(part.reshape(v.shape)) for part, v in zip(np.split(row, np.cumsum(sizes)[:-1]), op.variables)]
            for row in eye
        ]
        for product in op.hvp_many(vectors)[: min(chunk, n - start)]:
            columns.append(np.concatenate([np.asarray(t, np.float64).ravel() for t in product]))
    return np.stack(columns, axis=1)


def random_vector(variables, seed=0):
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.standard_normal(v.shape), dtype=v.dtype) for v in variables]


def relative_error(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
