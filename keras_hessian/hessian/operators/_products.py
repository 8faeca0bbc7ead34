"""The compiled functions of an operator: loss, loss and gradient, one HVP, k HVPs sharing one pass.

Each is a `tf.function` with a fixed input signature (traced once per batch shape), and each
restores the model's stateful variables (BatchNorm moving statistics, dropout seeds) after the
product, so a product in training mode leaves the model unchanged. Sparse gradients (an
`Embedding`'s `IndexedSlices`) are handled by `_sparse.py`; every result leaves dense.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from keras_hessian.hessian.operators._sparse import dense, dot, pullback_targets

REVERSE_OVER_REVERSE = "reverse_over_reverse"
FORWARD_OVER_REVERSE = "forward_over_reverse"
FINITE_DIFFERENCE = "finite_difference"
# The methods with a compiled per-batch product; the finite difference instead runs two
# ordinary gradient passes around a host-side perturbation of the weights (_finite_difference.py).
AUTODIFF_HVP_METHODS = (REVERSE_OVER_REVERSE, FORWARD_OVER_REVERSE)
HVP_METHODS = (*AUTODIFF_HVP_METHODS, FINITE_DIFFERENCE)
# Picked by benchmarks/hvp_cost.py on the 2-core CPU machine (results/hvp_cost.json).
DEFAULT_HVP_METHOD = REVERSE_OVER_REVERSE

ZERO = tf.UnconnectedGradients.ZERO
TotalLoss = Callable  # (x, y, sample_weight) -> (scalar loss, y_pred)


def tf_variable(variable):
    """The `tf.Variable` behind a Keras 3 variable (tf_keras variables already are one)."""
    if isinstance(variable, keras.Variable):
        return variable.value
    return variable


def vector_specs(variables: list, leading: list) -> list[tf.TensorSpec]:
    """Specs of a parameter vector (`leading=[]`) or of k stacked ones (`leading=[k]`)."""
    return [tf.TensorSpec(leading + list(v.shape), tf.as_dtype(v.dtype)) for v in variables]


def _with_state_restored(body: Callable, stateful: list) -> Callable:
    def run(*args):
        saved = [tf.identity(v) for v in stateful]
        result = body(*args)
        with tf.control_dependencies(tf.nest.flatten(result)):
            for v, value in zip(stateful, saved):
                v.assign(value)
            return tf.nest.map_structure(lambda t: tf.identity(dense(t)), result)

    return run


def unpacker(has_weights: bool) -> Callable:
    """`batch -> (x, y, sample_weight or None)` for the packed batches the functions receive."""

    def unpack(batch):
        return batch[0], batch[1], (batch[2] if has_weights else None)

    return unpack


def hessian_bodies(total_loss: TotalLoss, tf_vars: list, has_weights: bool) -> dict[str, Callable]:
    """The Hessian's uncompiled bodies: `"loss"`, `"gradient"`, one per autodiff HVP method, `"hvp_many"`."""
    unpack = unpacker(has_weights)

    def loss_only(batch):
        loss, _ = total_loss(*unpack(batch))
        return loss

    def loss_and_gradient(batch):
        with tf.GradientTape() as tape:
            tape.watch(tf_vars)
            loss, _ = total_loss(*unpack(batch))
        return loss, tape.gradient(loss, tf_vars, unconnected_gradients=ZERO)

    def hvp_reverse(batch, vector):
        with tf.GradientTape() as outer:
            outer.watch(tf_vars)
            with tf.GradientTape() as inner:
                inner.watch(tf_vars)
                loss, _ = total_loss(*unpack(batch))
            grads = inner.gradient(loss, tf_vars, unconnected_gradients=ZERO)
            targets, cotangents = pullback_targets(grads, list(vector))
        # d(g . v)/dw = H v, with v fed as the output gradient (no explicit dot product).
        return outer.gradient(targets, tf_vars, output_gradients=cotangents, unconnected_gradients=ZERO)

    def hvp_forward(batch, vector):
        with tf.autodiff.ForwardAccumulator(primals=tf_vars, tangents=list(vector)) as accumulator:
            with tf.GradientTape() as tape:
                tape.watch(tf_vars)
                loss, _ = total_loss(*unpack(batch))
            # Dense inside the accumulator: forward mode has no tangent for IndexedSlices.
            grads = [dense(g) for g in tape.gradient(loss, tf_vars, unconnected_gradients=ZERO)]
        return [accumulator.jvp(g, unconnected_gradients=ZERO) for g in grads]

    def hvp_many(batch, stacked):
        # One forward pass and one first-order backward pass shared by all k vectors; a
        # persistent outer tape then takes one extra backward pass per vector.
        k = stacked[0].shape[0]
        with tf.GradientTape(persistent=True) as outer:
            outer.watch(tf_vars)
            with tf.GradientTape() as inner:
                inner.watch(tf_vars)
                loss, _ = total_loss(*unpack(batch))
            grads = inner.gradient(loss, tf_vars, unconnected_gradients=ZERO)
            projections = [dot(grads, [tf.stop_gradient(v[j]) for v in stacked]) for j in range(k)]
        products = [[dense(t) for t in outer.gradient(p, tf_vars, unconnected_gradients=ZERO)] for p in projections]
        del outer
        return [tf.stack([products[j][i] for j in range(k)]) for i in range(len(tf_vars))]

    return {
        "loss": loss_only,
        "gradient": loss_and_gradient,
        REVERSE_OVER_REVERSE: hvp_reverse,
        FORWARD_OVER_REVERSE: hvp_forward,
        "hvp_many": hvp_many,
    }


def compile_product(
    kind: str,
    make_bodies: Callable[[list], dict[str, Callable]],
    variables: list,
    stateful: list,
    batch_specs: list,
    method: str,
) -> Callable:
    """The `tf.function` for `kind`: `"loss"`, `"gradient"`, `"hvp"` or `"hvp_many_<k>"`.

    `make_bodies(tf_vars)` gives the uncompiled bodies (`hessian_bodies` for the Hessian; the
    other curvature matrices give their own), `variables` are the operator's (Keras or tf)
    variables, `stateful` the tf.Variables restored after each call, `batch_specs` the input
    signature of one batch.
    """
    tf_vars = [tf_variable(v) for v in variables]
    bodies = make_bodies(tf_vars)
    if kind in ("loss", "gradient"):
        return tf.function(_with_state_restored(bodies[kind], stateful), input_signature=[batch_specs])
    if kind == "hvp":
        if method not in AUTODIFF_HVP_METHODS:
            raise KeyError(method)  # pragma: no cover - the finite difference is not compiled per batch
        signature = [batch_specs, vector_specs(variables, [])]
        return tf.function(_with_state_restored(bodies[method], stateful), input_signature=signature)
    if kind.startswith("hvp_many_"):
        k = int(kind.rsplit("_", 1)[1])
        signature = [batch_specs, vector_specs(variables, [k])]
        return tf.function(_with_state_restored(bodies["hvp_many"], stateful), input_signature=signature)
    raise KeyError(kind)  # pragma: no cover - internal names only
