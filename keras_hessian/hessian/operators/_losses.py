"""Loss resolution for the operators: the compiled loss, a loss by name, or a user callable.

Every resolved loss has the signature `loss(x, y, y_pred, sample_weight)` and returns the plain
mean over the batch (unscaled for replicas). Whether it already holds `model.losses`
(regularisation) is returned beside it.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from keras_hessian import _compat
from keras_hessian._validation import ArgumentTypeError
from keras_hessian.hessian.operators._replicas import unscale_for_replicas

LossFn = Callable  # (x, y, y_pred, sample_weight) -> scalar tensor

NOT_COMPILED = "loss is None and the model is not compiled with a loss: pass loss= or compile the model."


def is_tf_keras_model(model) -> bool:
    """True for a tf_keras (Keras 2) model, e.g. one built with TFMOT."""
    return type(model).__module__.startswith("tf_keras") or any(
        c.__module__.startswith("tf_keras") for c in type(model).__mro__
    )


def _mean_of(per_example: Callable) -> Callable:
    """A loss by name (`keras.losses.get("mse")` is per example) reduced as Keras reduces it:
    the weighted sum over the batch divided by the batch size ("sum_over_batch_size")."""

    def loss(y_true, y_pred, sample_weight=None):
        values = per_example(y_true, y_pred)
        if sample_weight is not None:
            values = values * tf.cast(tf.reshape(sample_weight, tf.shape(values)), values.dtype)
        return tf.reduce_mean(values)

    return loss


def _tf_keras_compiled_loss(model) -> LossFn:
    if getattr(model, "loss", None) is None:
        raise ValueError(NOT_COMPILED)
    import tf_keras

    compiled = tf_keras.losses.get(model.loss)
    return lambda x, y, y_pred, w: compiled(y, y_pred, sample_weight=w)


def _overrides_compute_loss(model) -> bool:
    return getattr(type(model), "compute_loss", None) is not keras.Model.compute_loss


def _keras_compiled_loss(model, training: bool) -> tuple[LossFn, bool]:
    if _compat.compiled_loss(model) is None:
        raise ValueError(NOT_COMPILED)
    if _overrides_compute_loss(model):
        # The model defines its own loss: use it as written (it adds model.losses if it wants them).
        def own_loss(x, y, y_pred, w):
            return unscale_for_replicas(model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=w, training=training))

        return own_loss, True
    # Not model.compute_loss: on a multi-output model that updates the per-output loss metrics
    # `fit` reports, and measuring must not change them. The detached copy has metrics of its own.
    detached = _compat.detached_compiled_loss(model)

    def compiled_loss(x, y, y_pred, w):
        return unscale_for_replicas(detached(y, y_pred, w))

    return compiled_loss, False


def resolve_loss(model, loss: str | Callable | None, training: bool) -> tuple[LossFn, bool]:
    """The operator's loss and whether it already includes `model.losses`."""
    if loss is None:
        return (_tf_keras_compiled_loss(model), False) if is_tf_keras_model(model) else _keras_compiled_loss(model, training)
    if isinstance(loss, str):
        # keras.losses.get("mse") is the per-example function: wrap it in its mean.
        loss = _mean_of(keras.losses.get(loss))
    if not callable(loss):
        raise ArgumentTypeError(f"loss must be a loss name, a callable or None. Received {type(loss).__name__}.")

    scaled = isinstance(loss, keras.losses.Loss)

    def user_loss(x, y, y_pred, w):
        value = loss(y, y_pred) if w is None else loss(y, y_pred, sample_weight=w)
        return unscale_for_replicas(value) if scaled else value

    return user_loss, False
