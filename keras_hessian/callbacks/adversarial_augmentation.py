"""AdversarialAugmentation: FGSM examples mixed into every training batch (the "A" of ABSA)."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_hessian._backend import require_tensorflow_backend
from keras_hessian._validation import check_choice, check_float, is_integer
from keras_hessian.callbacks.step_transform import StepTransform, StepTransformCallback
from keras_hessian.data.adaptive import batch_size_control
from keras_hessian.ops.fgsm import CLIP_BATCH, check_clip, check_epsilon, fgsm_tensor, measuring_loss

__all__ = ["AdversarialAugmentation"]


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

    The step is changed through `keras_hessian.callbacks.step_transform` (composed with the
    other callbacks' transforms) and the model's own step is back once `fit` ends. The FGSM
    loss is the compiled loss through a copy with its own metrics (`keras_hessian.ops.fgsm`), so
    the metrics `fit` reports are those of the (mixed) batch only; the step also runs under XLA.

    Under `tf.distribute` (MirroredStrategy, MultiWorkerMirroredStrategy) each replica replaces
    the first `ratio` of its own share of the global batch (of each of its micro-batches), as
    data-parallel adversarial training does, with no communication: per global batch that is
    as many FGSM examples as on one device (up to the rounding down on each replica), and the very
    examples one device would pick if its micro-batches were the replicas' shares (one device with
    `max_physical_batch_size` at most the per-replica batch, e.g. `tests/callbacks/test_distributed.py`);
    the ratio follows the GLOBAL batch size, and `clip="batch"` clips to the replica's part.

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
        clip: str | tuple | None = CLIP_BATCH,
    ):
        super().__init__()
        require_tensorflow_backend()
        self.epsilon = check_epsilon(epsilon)
        self.ratio = check_float("ratio", ratio, minimum=0.0, maximum=1.0)
        self.start = check_choice("start", start, ("always", "after_increase"))
        if not (stop_epoch is None or stop_epoch == "half" or (is_integer(stop_epoch) and stop_epoch >= 0)):
            raise ValueError(
                f"stop_epoch must be a non-negative integer, 'half' or None. Received stop_epoch={stop_epoch!r}."
            )
        self.stop_epoch = stop_epoch
        self.stop_at_max_batch = bool(stop_at_max_batch)
        self.clip = check_clip(clip)
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
        # Built here, outside the traced step: both create variables, which an XLA-compiled
        # step cannot (the batch-size control on first use, the loss copy's metrics).
        batch_size_control()
        loss = measuring_loss(self.model)

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
                head = tf.nest.map_structure(lambda t: None if t is None else t[:count], (x, y, sample_weight))
                adversarial = fgsm_tensor(model, loss, head[0], head[1], head[2], epsilon, clip)
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
