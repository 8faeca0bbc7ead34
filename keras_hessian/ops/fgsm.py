"""FGSM: fast-gradient-sign examples of a compiled model (Goodfellow et al., arXiv 1412.6572).

The loss is the model's compiled loss taken through `_compat.detached_compiled_loss`, a copy
whose per-output metrics are its own: `model.compute_loss` would update the per-output loss
metrics `fit` reports on a multi-output model, and a measurement must not change those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from keras_hessian import _compat
from keras_hessian._backend import require_tensorflow_backend
from keras_hessian._validation import check_float

__all__ = ["CLIP_BATCH", "check_clip", "check_epsilon", "fgsm", "fgsm_tensor", "measuring_loss"]

CLIP_BATCH = "batch"


def check_epsilon(epsilon: Any) -> float:
    """`epsilon` as a float >= 0, or an error naming it."""
    return check_float("epsilon", epsilon, minimum=0)


def check_clip(clip: Any) -> Any:
    """`clip` as None, `"batch"` or a `(low, high)` pair of floats, or a ValueError naming it."""
    if clip is None or clip == CLIP_BATCH:
        return clip
    if isinstance(clip, (tuple, list)) and len(clip) == 2 and float(clip[0]) <= float(clip[1]):
        return (float(clip[0]), float(clip[1]))
    raise ValueError(f"clip must be None, 'batch' or a pair (low, high) with low <= high. Received clip={clip!r}.")


def measuring_loss(model: Any) -> Callable[[Any, Any, Any], tf.Tensor]:
    """`loss(y, y_pred, sample_weight)`: the compiled loss plus `model.losses`, touching no metric of `model`.

    Call it after the forward pass, so activity regularizers are in `model.losses`.
    """
    compiled = _compat.detached_compiled_loss(model)
    if compiled is None:
        raise ValueError(
            "fgsm needs a model compiled with a loss: call model.compile(loss=...) first. "
            "Received a model without a compiled loss."
        )

    def loss(y, y_pred, sample_weight):
        if not compiled.built:
            # Building creates the copy's metric variables: lift that out of a traced step, which
            # XLA requires (build reads only the structure and shapes of its arguments).
            with tf.init_scope():
                compiled.build(y, y_pred)
        total = compiled(y, y_pred, sample_weight)
        for extra in model.losses:  # Keras' compute_loss adds these, summed and in float
            extra = tf.convert_to_tensor(extra)
            total = total + tf.cast(tf.reduce_sum(extra), total.dtype)
        return total

    return loss


def fgsm_tensor(model: Any, loss: Callable, x: tf.Tensor, y: Any, sample_weight: Any, epsilon: float, clip: Any) -> tf.Tensor:
    """`x + epsilon * sign(grad_x loss)` (inference mode), clipped; traceable, no argument checks."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(y, model(x, training=False), sample_weight)
    gradient = tape.gradient(value, x)
    if gradient is None:
        gradient = tf.zeros_like(x)
    adversarial = x + tf.cast(epsilon, x.dtype) * tf.sign(tf.cast(gradient, x.dtype))
    if clip == CLIP_BATCH:
        adversarial = tf.clip_by_value(adversarial, tf.reduce_min(x), tf.reduce_max(x))
    elif clip is not None:
        adversarial = tf.clip_by_value(adversarial, clip[0], clip[1])
    return tf.stop_gradient(adversarial)


def fgsm(model: Any, x: Any, y: Any, epsilon: float, sample_weight: Any = None, clip: Any = None) -> tf.Tensor:
    """Fast-gradient-sign examples `x + epsilon * sign(grad_x loss)` of a compiled model.

    The gradient is that of the model's compiled loss (plus `model.losses`), taken in inference
    mode (`training=False`: BatchNorm moving statistics, no dropout), as ABSA does
    (Yao et al., arXiv 1810.01021; FGSM: Goodfellow et al., arXiv 1412.6572). Before clipping
    every coordinate moves by exactly `epsilon` (or 0 where the gradient is exactly 0). The
    model's metrics (the per-output losses of a multi-output model included) are not touched.

    Example:

    ```python
    x_adv = keras_hessian.ops.fgsm(model, x, y, epsilon=0.01)
    ```

    Args:
        model: a compiled Keras model with a single input tensor (any number of outputs).
        x: inputs (array or tensor, floating point).
        y: labels, structured like the model's outputs.
        epsilon: step in L-infinity, >= 0.
        sample_weight: optional weights of the loss.
        clip: `None` (no clipping), `"batch"` (clip to the min/max of `x`, as the authors' code
            does) or `(low, high)`.

    Returns:
        The adversarial inputs, a tensor shaped like `x`.
    """
    require_tensorflow_backend()
    epsilon = check_epsilon(epsilon)
    clip = check_clip(clip)
    if y is None:
        raise ValueError("fgsm needs labels to take the loss gradient. Received y=None.")
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(f"x must be floating point. Received x of dtype {x.dtype.name}.")
    y = tf.nest.map_structure(tf.convert_to_tensor, y)
    return fgsm_tensor(model, measuring_loss(model), x, y, sample_weight, epsilon, clip)
