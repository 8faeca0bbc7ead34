"""AdversarialAugmentation: FGSM examples mixed into every training batch (the "A" of ABSA)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_hessian._backend import require_tensorflow_backend
from keras_hessian.callbacks._train_step import StepTransform, StepTransformCallback
from keras_hessian.data.adaptive import batch_size_control

__all__ = ["AdversarialAugmentation", "fgsm"]

_CLIP_BATCH = "batch"


def _check_epsilon(epsilon) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.floating, np.integer)):
        raise TypeError(f"epsilon must be a number. Received epsilon={epsilon!r}.")
    if not np.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0. Received epsilon={epsilon!r}.")
    return float(epsilon)


def _check_clip(clip):
    if clip is None or clip == _CLIP_BATCH:
        return clip
    if isinstance(clip, (tuple, list)) and len(clip) == 2 and float(clip[0]) <= float(clip[1]):
        return (float(clip[0]), float(clip[1]))
    raise ValueError(f"clip must be None, 'batch' or a pair (low, high) with low <= high. Received clip={clip!r}.")


def _input_gradient(model, x, y, sample_weight):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y_pred = model(x, training=False)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)
    return tape.gradient(loss, x)


def _fgsm_tensor(model, x, y, sample_weight, epsilon: float, clip):
    gradient = _input_gradient(model, x, y, sample_weight)
    if gradient is None:
        gradient = tf.zeros_like(x)
    adversarial = x + tf.cast(epsilon, x.dtype) * tf.sign(tf.cast(gradient, x.dtype))
    if clip == _CLIP_BATCH:
        adversarial = tf.clip_by_value(adversarial, tf.reduce_min(x), tf.reduce_max(x))
    elif clip is not None:
        adversarial = tf.clip_by_value(adversarial, clip[0], clip[1])
    return tf.stop_gradient(adversarial)


def fgsm(model, x, y, epsilon: float, sample_weight=None, clip=None) -> tf.Tensor:
    """Fast-gradient-sign examples `x + epsilon * sign(grad_x loss)` of a compiled model.

    The gradient is that of the model's compiled loss, taken in inference mode
    (`training=False`: BatchNorm moving statistics, no dropout), as ABSA does
    (Yao et al., arXiv 1810.01021; FGSM: Goodfellow et al., arXiv 1412.6572). Before clipping
    every coordinate moves by exactly `epsilon` (or 0 where the gradient is exactly 0).

    Example:

    ```python
    x_adv = keras_hessian.callbacks.fgsm(model, x, y, epsilon=0.01)
    ```

    Args:
        model: a compiled Keras model with a single input tensor.
        x: inputs (array or tensor, floating point).
        y: labels.
        epsilon: step in L-infinity, >= 0.
        sample_weight: optional weights of the loss.
        clip: `None` (no clipping), `"batch"` (clip to the min/max of `x`, as the authors' code
            does) or `(low, high)`.

    Returns:
        The adversarial inputs, a tensor shaped like `x`.
    """
    require_tensorflow_backend()
    epsilon = _check_epsilon(epsilon)
    clip = _check_clip(clip)
    if y is None:
        raise ValueError("fgsm needs labels to take the loss gradient. Received y=None.")
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(f"x must be floating point. Received x of dtype {x.dtype.name}.")
    return _fgsm_tensor(model, x, tf.convert_to_tensor(y), sample_weight, epsilon, clip)


class AdversarialAugmentation(StepTransformCallback):
    """Replaces part of every training batch with FGSM examples made from the current model.

    ABSA (Yao, Gholami, Keutzer, Mahoney, arXiv 1810.01021) trains large batches on a mix of
    clean and adversarial examples so that they avoid sharp minima. In each training step the
    first `ratio` fraction of each batch (of each micro-batch under gradient accumulation)
    is REPLACED, not appended, by `x + epsilon * sign(grad_x loss)` computed in inference mode
    with the weights of that step, clipped as `clip` says. Use it alone, or together with
    `AdaptiveBatchSize` (that pair is ABSA): then the ratio follows the batch size,
    `ratio * initial_batch / current_batch` (it halves at every doubling, as in the authors'
    code; for other growth factors this keeps the NUMBER of adversarial examples per batch
    constant), the augmentation can wait for the first increase (`start="after_increase"`),
    and it stops when the batch reaches its cap (`stop_at_max_batch`) or at `stop_epoch`.

    The step is changed through `keras_hessian.callbacks._train_step` (composed with the other
    callbacks' transforms) and the model's own step is back once `fit` ends.

    Example:

    ```python
    model.fit(
        keras_hessian.data.adaptive_dataset(x, y),
        epochs=20,
        callbacks=[
            keras_hessian.callbacks.AdaptiveBatchSize((x[:1024], y[:1024])),
            keras_hessian.callbacks.AdversarialAugmentation(epsilon=0.005, ratio=0.2),
        ],
    )
    ```

    Args:
        epsilon: FGSM step in L-infinity, >= 0 (authors: 0.005 on pixels in [0, 1]; scale it
            with your inputs).
        ratio: fraction of each (micro-)batch replaced, in [0, 1] (authors: 0.2); the count is
            `floor(ratio * batch)`.
        start: `"always"` or `"after_increase"` (only once a batch-size callback has grown the
            batch above its initial size).
        stop_epoch: no augmentation from this (0-based) epoch on: an int, `"half"` (half the
            epochs of the fit, the authors' choice) or `None` (never stop).
        stop_at_max_batch: stop once the controlled batch size reaches its cap (authors).
        clip: `"batch"` (clip to the batch's min/max, authors), `None`, or `(low, high)`.
    """

    def __init__(
        self,
        epsilon: float = 0.005,
        ratio: float = 0.2,
        *,
        start: str = "always",
        stop_epoch: int | str | None = "half",
        stop_at_max_batch: bool = True,
        clip: str | tuple | None = _CLIP_BATCH,
    ):
        super().__init__()
        require_tensorflow_backend()
        self.epsilon = _check_epsilon(epsilon)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating, np.integer)):
            raise TypeError(f"ratio must be a number in [0, 1]. Received ratio={ratio!r}.")
        if not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"ratio must lie in [0, 1]. Received ratio={ratio!r}.")
        self.ratio = float(ratio)
        if start not in ("always", "after_increase"):
            raise ValueError(f"start must be 'always' or 'after_increase'. Received start={start!r}.")
        self.start = start
        if not (stop_epoch is None or stop_epoch == "half" or (
            isinstance(stop_epoch, (int, np.integer)) and not isinstance(stop_epoch, bool) and stop_epoch >= 0
        )):
            raise ValueError(
                f"stop_epoch must be a non-negative integer, 'half' or None. Received stop_epoch={stop_epoch!r}."
            )
        self.stop_epoch = stop_epoch
        self.stop_at_max_batch = bool(stop_at_max_batch)
        self.clip = _check_clip(clip)
        with tf.init_scope():
            self._enabled = tf.Variable(True, trainable=False, name="kh_adversarial_enabled")

    def get_config(self) -> dict:
        return {
            "epsilon": self.epsilon,
            "ratio": self.ratio,
            "start": self.start,
            "stop_epoch": self.stop_epoch,
            "stop_at_max_batch": self.stop_at_max_batch,
            "clip": self.clip,
        }

    def _last_epoch(self) -> int | None:
        if self.stop_epoch == "half":
            epochs = (self.params or {}).get("epochs")
            return None if epochs is None else int(epochs) // 2
        return self.stop_epoch

    def current_ratio(self) -> tf.Tensor:
        """The ratio in force now (0 when switched off), read from the batch-size control."""
        control = batch_size_control()
        initial = tf.cast(control.initial_batch_size, tf.float32)
        current = tf.cast(control.batch_size, tf.float32)
        controlled = control.controlled
        ratio = tf.where(
            controlled & (current > 0), self.ratio * initial / tf.maximum(current, 1.0), self.ratio
        )
        on = tf.identity(self._enabled)
        if self.start == "after_increase":
            on = on & controlled & (current > initial)
        if self.stop_at_max_batch:
            on = on & ~(controlled & (current >= tf.cast(control.max_batch_size, tf.float32)))
        return tf.where(on, ratio, 0.0)

    def step_transform(self) -> StepTransform:
        epsilon, clip = self.epsilon, self.clip

        def transform(model, data):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            if not isinstance(x, tf.Tensor) or not x.dtype.is_floating:
                raise TypeError(
                    "AdversarialAugmentation needs a single floating-point input tensor x. "
                    f"Received x={x!r}."
                )
            n = tf.shape(x)[0]
            count = tf.cast(tf.floor(self.current_ratio() * tf.cast(n, tf.float32)), tf.int32)
            count = tf.minimum(count, n)

            def mixed():
                head = (x[:count], y[:count], None if sample_weight is None else sample_weight[:count])
                adversarial = _fgsm_tensor(model, *head, epsilon, clip)
                return tf.concat([adversarial, x[count:]], axis=0)

            x_new = tf.cond(count > 0, mixed, lambda: tf.identity(x))
            return keras.utils.pack_x_y_sample_weight(x_new, y, sample_weight)

        return StepTransform(transform_batch=transform)

    def on_epoch_begin(self, epoch, logs=None):
        last = self._last_epoch()
        self._enabled.assign(last is None or epoch < last)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["adversarial/ratio"] = float(self.current_ratio().numpy())
