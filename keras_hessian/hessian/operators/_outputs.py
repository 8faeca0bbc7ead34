"""The shared base of the curvature matrices of the form `J^T M J`, M a matrix in output space.

For the Gauss-Newton matrix M is the Hessian of the loss with respect to the model's outputs;
for the empirical Fisher it is the sum of the per-example rank-one terms `r_i r_i^T` of the
output gradients. Both products need `J v` (the Jacobian of the outputs with respect to the
weights, applied to v) and a vector-Jacobian product `J^T u`; this module holds those two and
lets the subclass say only what `u = M (J v)` is. Everything else (data, blocks, batches,
tf.distribute, training mode) is the `HessianOperator`'s, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from keras_hessian.hessian.operators._products import (
    AUTODIFF_HVP_METHODS,
    FORWARD_OVER_REVERSE,
    REVERSE_OVER_REVERSE,
    ZERO,
    hessian_bodies,
    unpacker,
)
from keras_hessian.hessian.operators._sparse import dense, pullback_targets
from keras_hessian.hessian.operators.hessian import HessianOperator


def as_float32(t: tf.Tensor) -> tf.Tensor:
    # Mixed precision: the output-space curvature is taken in float32, as the loss is.
    return tf.cast(t, tf.float32) if t.dtype in (tf.float16, tf.bfloat16) else t


class OutputCurvatureOperator(HessianOperator):
    """`v -> J^T M J v`; a subclass defines `_output_product` (M applied to `J v`) and may add
    a term of its own with `_extra_product` (the Gauss-Newton's regularization Hessian).

    `method` says how `J v` is taken: `"forward_over_reverse"` by `tf.autodiff.ForwardAccumulator`
    during the forward pass; `"reverse_over_reverse"` by the double-VJP trick (`J^T u` is linear
    in u, so `J v` is the gradient of `(J^T u) . v` with respect to u), which lets one forward
    pass serve all the vectors of `hvp_many`.
    """

    # A finite difference of gradients would give the Hessian, not this matrix.
    _methods = AUTODIFF_HVP_METHODS

    def _output_product(self, x, y, w, y_pred, outputs: list, jv: list) -> list:
        """`M (J v)` per flattened output; `outputs` are the (float32) flattened predictions."""
        raise NotImplementedError  # pragma: no cover - subclasses define it

    def _extra_product(self, x, vector: list, tf_vars: list) -> list | None:
        """A term added to the product (None: none)."""
        return None

    def _product_bodies(self, tf_vars: list) -> dict[str, Callable]:
        unpack = unpacker(self._data.has_weights)

        def forward(x):
            y_pred = self._call_model(x)
            return y_pred, [as_float32(t) for t in tf.nest.flatten(y_pred)]

        def finish(batch, tape, y_pred, outputs, jv, vector):
            x, y, w = unpack(batch)
            u = self._output_product(x, y, w, y_pred, outputs, jv)
            product = [dense(p) for p in tape.gradient(outputs, tf_vars, output_gradients=u, unconnected_gradients=ZERO)]
            extra = self._extra_product(x, vector, tf_vars)
            return product if extra is None else [p + e for p, e in zip(product, extra)]

        def product_forward(batch, vector):
            with tf.GradientTape() as tape:
                tape.watch(tf_vars)
                with tf.autodiff.ForwardAccumulator(primals=tf_vars, tangents=list(vector)) as accumulator:
                    y_pred, outputs = forward(unpack(batch)[0])
            jv = [accumulator.jvp(o, unconnected_gradients=ZERO) for o in outputs]
            return finish(batch, tape, y_pred, outputs, jv, vector)

        def products_reverse(batch, vectors: list) -> list:
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(tf_vars)
                y_pred, outputs = forward(unpack(batch)[0])
            results = []
            for vector in vectors:
                probe = [tf.zeros_like(o) for o in outputs]
                with tf.GradientTape() as outer:
                    outer.watch(probe)
                    pulled = tape.gradient(outputs, tf_vars, output_gradients=probe, unconnected_gradients=ZERO)
                    targets, cotangents = pullback_targets(pulled, list(vector))  # sparse rows stay sparse
                jv = outer.gradient(targets, probe, output_gradients=cotangents, unconnected_gradients=ZERO)
                results.append(finish(batch, tape, y_pred, outputs, jv, vector))
            del tape
            return results

        def hvp_many(batch, stacked):
            k = stacked[0].shape[0]
            vectors = [[t[j] for t in stacked] for j in range(k)]
            if self.method == FORWARD_OVER_REVERSE:
                products = [product_forward(batch, v) for v in vectors]
            else:
                products = products_reverse(batch, vectors)
            return [tf.stack([products[j][i] for j in range(k)]) for i in range(len(tf_vars))]

        shared = hessian_bodies(self._total_loss, tf_vars, self._data.has_weights)
        return {
            "loss": shared["loss"],
            "gradient": shared["gradient"],
            FORWARD_OVER_REVERSE: product_forward,
            REVERSE_OVER_REVERSE: lambda batch, vector: products_reverse(batch, [vector])[0],
            "hvp_many": hvp_many,
        }

    def _outputs_loss(self, x, y, w, y_pred, outputs: list):
        """The loss (without `model.losses`) as a function of the flattened outputs."""
        return self._loss_fn(x, y, tf.nest.pack_sequence_as(y_pred, outputs), w)
