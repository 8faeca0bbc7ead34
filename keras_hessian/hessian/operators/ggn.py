"""GaussNewtonOperator: the generalized Gauss-Newton matrix `J^T H_out J` of a Keras model's loss.

Kept here rather than taken from a library: TensorFlow has no GGN product, and the peers that
offer one (hessian-eigenthings' `operators/ggn.py`, curvlinops, BackPACK) are PyTorch.
"""

from __future__ import annotations

import tensorflow as tf

from keras_hessian.hessian.operators._outputs import OutputCurvatureOperator, as_float32
from keras_hessian.hessian.operators._products import ZERO
from keras_hessian.hessian.operators._sparse import dense, pullback_targets


class GaussNewtonOperator(OutputCurvatureOperator):
    """The generalized Gauss-Newton matrix of a Keras model's mean loss, as a matrix-free operator.

    `hvp(v)` returns `G v` with `G = J^T H_out J` (Schraudolph, 2002; Martens, 2014, "New
    insights and perspectives on the natural gradient method"): `J` the Jacobian of the model's
    outputs with respect to its trainable weights, `H_out` the Hessian of the loss with respect
    to those outputs, both over ALL of `data` with the batches weighted by size exactly as
    `HessianOperator` weights them. It is the Hessian without the term that holds the outputs'
    own curvature (`sum_i dL/df_i * d^2 f_i / dw^2`), so it equals the Hessian for a model linear
    in its weights, and it is positive semi-definite whenever the loss is convex in the outputs
    (cross-entropy on logits, MSE): a Lanczos or trace estimate on it never meets negative
    eigenvalues. Regularization losses in `model.losses` depend on the weights directly, not
    through the outputs: their exact Hessian is added (`2 * l2` times the identity on the
    regularized kernels for an L2 penalty), so `G` and `H` differ only by the outputs' curvature.

    Each product costs one forward pass with `J v` and two backward passes (`H_out` acts on
    the outputs only, which is cheap). Same interface and arguments as `HessianOperator`
    (`blocks`, `training`, `batch_size`, `cache`, `strategy`), so every estimator runs on it.

    Example:

    ```python
    op = GaussNewtonOperator(model, (x_test, y_test))
    result = top_eigenvalues(op, k=3)
    print(result.eigenvalues)  # >= 0 for cross-entropy or MSE
    ```

    Args:
        model: a built Keras 3 model (Sequential, functional or subclassed) or a tf_keras model.
        data: numpy `(x, y)` / `(x, y, sample_weight)`, or a batched `tf.data.Dataset` of them.
        loss: a loss name or callable `loss(y_true, y_pred[, sample_weight])` returning a
            scalar; `None` uses the model's compiled loss.
        blocks: `"model"`, `"layer"` or a list / dict of variable groups (the blocks of `G`
            are the diagonal blocks of the full matrix).
        training: evaluate the model in training mode (the model is left unchanged).
        method: how `J v` is taken: `"forward_over_reverse"` (forward mode) or
            `"reverse_over_reverse"` (the double-VJP trick; `hvp_many` then shares one forward
            pass between its vectors); `None` takes `DEFAULT_HVP_METHOD`.
        batch_size: batch size for numpy data or an unbatched dataset.
        cache: keep a dataset's batches in memory after the first pass.
        strategy: a `tf.distribute.Strategy` (default: the model's own when it has several
            replicas).
    """

    def _output_product(self, x, y, w, y_pred, outputs: list, jv: list) -> list:
        # H_out (J v) by reverse-over-reverse on the loss as a function of the outputs only.
        points = [tf.stop_gradient(o) for o in outputs]
        with tf.GradientTape() as outer:
            outer.watch(points)
            with tf.GradientTape() as inner:
                inner.watch(points)
                loss = self._outputs_loss(x, y, w, y_pred, points)
            grads = inner.gradient(loss, points, unconnected_gradients=ZERO)
        return outer.gradient(grads, points, output_gradients=jv, unconnected_gradients=ZERO)

    def _extra_product(self, x, vector: list, tf_vars: list) -> list | None:
        # model.losses are read after a model call (activity regularizers are made by it); a
        # model whose own compute_loss is the loss has it treated as a function of its outputs.
        if self._loss_includes_model_losses or not self.model.losses:
            return None
        with tf.GradientTape() as outer:
            outer.watch(tf_vars)
            with tf.GradientTape() as inner:
                inner.watch(tf_vars)
                self._call_model(x)
                losses = self.model.losses
                penalty = as_float32(tf.add_n([tf.cast(e, losses[0].dtype) for e in losses]))
            grads = inner.gradient(penalty, tf_vars, unconnected_gradients=ZERO)
            targets, cotangents = pullback_targets(grads, list(vector))
        return [dense(t) for t in outer.gradient(targets, tf_vars, output_gradients=cotangents, unconnected_gradients=ZERO)]
