"""EmpiricalFisherOperator: the mean of per-example gradient outer products of a Keras model's loss.

Kept here rather than taken from a library: TensorFlow has none, and the peers that offer one
(hessian-eigenthings' `operators/fisher.py`, curvlinops, BackPACK) are PyTorch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_hessian.hessian.operators._data import first_dim
from keras_hessian.hessian.operators._outputs import OutputCurvatureOperator
from keras_hessian.hessian.operators._products import ZERO


class EmpiricalFisherOperator(OutputCurvatureOperator):
    """The empirical Fisher matrix of a Keras model's loss over a dataset, as a matrix-free operator.

    `hvp(v)` returns `F v` with `F = (1/N) sum_i s_i g_i g_i^T`: `g_i` the gradient, with
    respect to the trainable weights, of example i's loss, `s_i` its sample weight (1 without
    weights, so the examples are weighted as the loss weights them), N the number of examples
    in ALL of `data`. It is positive semi-definite by construction (for non-negative weights);
    near a minimum of a likelihood loss it approximates the Hessian, and it is the matrix of
    Adam-like and K-FAC-like preconditioners (Kunstner, Hennig & Balles, 2019, "Limitations
    of the empirical Fisher approximation", on when it does not).

    No per-example gradient is formed: `g_i = J_i^T r_i`, with `r_i` the gradient of example
    i's loss with respect to its outputs, so `F v = J^T u` with `u_i = s_i r_i (r_i . (J v)_i)`:
    one forward pass with `J v` and one backward pass per product, instead of N backward
    passes (`tape.jacobian` over the batch) and an N x parameters array. This takes the loss
    to be the mean over the batch of per-example losses of each example's own outputs, as
    every Keras loss with the default reduction is; in `training=True` with BatchNorm the
    examples' outputs are coupled and `F` is this formula's matrix, not one of per-example
    gradients. Regularization losses (`model.losses`) belong to no example and are left out.

    Same interface and arguments as `HessianOperator`, so every estimator runs on it.

    Example:

    ```python
    op = EmpiricalFisherOperator(model, (x_train, y_train))
    trace = hutchinson_trace(op, seed=0).trace
    ```

    Args:
        model: a built Keras 3 model (Sequential, functional or subclassed) or a tf_keras model.
        data: numpy `(x, y)` / `(x, y, sample_weight)` (one weight per example), or a batched
            `tf.data.Dataset` of them.
        loss: a loss name or callable `loss(y_true, y_pred[, sample_weight])` returning the
            mean over the batch; `None` uses the model's compiled loss.
        blocks: `"model"`, `"layer"` or a list / dict of variable groups.
        training: evaluate the model in training mode (the model is left unchanged).
        method: how `J v` is taken: `"forward_over_reverse"` (forward mode) or
            `"reverse_over_reverse"` (the double-VJP trick); `None` takes `DEFAULT_HVP_METHOD`.
        batch_size: batch size for numpy data or an unbatched dataset.
        cache: keep a dataset's batches in memory after the first pass.
        strategy: a `tf.distribute.Strategy` (default: the model's own when it has several
            replicas).
    """

    def _validate_loss(self) -> None:
        # Before the loss is tried: weights of another shape may broadcast inside it.
        x, _, w = self._data.first
        if w is not None:
            sizes = [int(np.prod(t.shape)) for t in tf.nest.flatten(w)]
            if len(sizes) != 1 or sizes[0] != first_dim(x):
                raise ValueError(
                    "sample_weight must hold one weight per example for the empirical Fisher. "
                    f"Received weights of shape {[tuple(t.shape) for t in tf.nest.flatten(w)]} "
                    f"for {first_dim(x)} examples."
                )
        super()._validate_loss()

    def _output_product(self, x, y, w, y_pred, outputs: list, jv: list) -> list:
        points = [tf.stop_gradient(o) for o in outputs]
        with tf.GradientTape() as tape:
            tape.watch(points)
            loss = self._outputs_loss(x, y, None, y_pred, points)
        # The batch mean's output gradient is r_i / B: scaled back by B below.
        mean_grads = tape.gradient(loss, points, unconnected_gradients=ZERO)
        size = tf.shape(points[0])[0]
        projection = tf.add_n(
            [tf.reduce_sum(tf.reshape(g * t, [size, -1]), axis=1) for g, t in zip(mean_grads, jv)]
        )  # r_i . (J v)_i / B
        scale = projection * tf.cast(size, projection.dtype)
        if w is not None:
            scale = scale * tf.cast(tf.reshape(tf.nest.flatten(w)[0], [size]), scale.dtype)
        # u_i = s_i r_i (r_i . J_i v) / B: the batch's mean, weighted by size over batches later.
        return [g * tf.reshape(scale, [size] + [1] * (g.shape.rank - 1)) for g in mean_grads]
