"""BatchSizeController: the base of the callbacks that set an adaptive dataset's batch size during `fit`.

It holds what AdaptiveBatchSize and the fixed-schedule baselines share: the control of an
adaptive dataset's batch size, gradient accumulation beyond a physical batch size, the
learning-rate variable and its base, the `logs` entries, and the state kept for
`BackupAndRestore`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_hessian import _compat
from keras_hessian._backend import require_tensorflow_backend
from keras_hessian._validation import check_int
from keras_hessian.callbacks import step_transform
from keras_hessian.callbacks.step_transform import StepTransform, StepTransformCallback
from keras_hessian.data.adaptive import adaptive_epoch_steps, batch_size_control

__all__ = ["LR_SCALING_RULES", "BatchSizeController", "lr_scale"]

LR_SCALING_RULES = ("linear", "sqrt", "none")

_NOT_ADAPTIVE = (
    "{name} sets the batch size through the training data: pass it as "
    "keras_hessian.data.adaptive_dataset(x, y), e.g. "
    "model.fit(keras_hessian.data.adaptive_dataset(x_train, y_train), callbacks=[{name}(...)]). "
    "Received training data that is not an adaptive dataset{detail}."
)


def lr_scale(rule: str, factor: float) -> float:
    """The learning-rate multiplier of `rule` for a batch grown by `factor`.

    `linear`: `factor` (Goyal et al., arXiv 1706.02677; the ABSA authors' choice),
    `sqrt`: `sqrt(factor)` (Krizhevsky, arXiv 1404.5997; Hoffer et al., arXiv 1705.08741),
    `none`: 1.
    """
    if rule == "linear":
        return float(factor)
    if rule == "sqrt":
        return math.sqrt(factor)
    return 1.0


class BatchSizeController(StepTransformCallback):
    """Base class of the callbacks that set the batch size of an adaptive dataset during `fit`.

    Use a subclass (`AdaptiveBatchSize`, `FixedBatchSize`, `LinearScalingWarmup`,
    `BatchIncreaseSchedule`); this class holds what they share:

    * the batch size reaches the data through `keras_hessian.data.adaptive_dataset`, which reads
      it when each epoch starts; a `fit` given other data gets a clear error before any step
      (a known number of steps is caught in `on_train_begin`; any other pipeline by a check
      inside the first step, which runs before the weights are updated);
    * batches larger than `max_physical_batch_size` are reached by gradient accumulation inside
      the step (see `step_transform`), so memory stays bounded while the effective batch grows
      (under `tf.distribute` the limit applies to each replica's share of the global batch);
    * the learning rate is the optimizer's `learning_rate` variable, written in place; its value
      when the first fit starts is kept as `base_learning_rate`, and a reused callback starts
      the next fit from that base (not from the rate the last fit ended with), unless the rate
      was changed between the fits (then the new rate is the base);
    * the XLA-compiled step (`jit_compile=True`) drops the data check, so such a fit runs without
      XLA, with a warning, and `jit_compile` is restored when it ends;
    * every epoch `logs` gets `batch_size` and `learning_rate` (the values used in that epoch);
    * with `backup_dir` (the `backup_dir` of `keras.callbacks.BackupAndRestore`) the callback's
      state is saved after every epoch and restored when a killed `fit` is restarted.

    Changes decided at the end of epoch `k` are applied when epoch `k + 1` begins. Why: the
    weights, optimizer and learning rate that `BackupAndRestore` saves at the end of epoch `k`
    are then those used IN epoch `k`, whatever the order of the callbacks, and the decision
    travels in this callback's own state (a JSON file in `backup_dir`; Keras' backup holds the
    model and optimizer only, and adding variables to the user's model would change it).

    Args:
        initial_batch_size: batch size of the first epoch.
        max_batch_size: cap of the batch size.
        max_physical_batch_size: largest batch computed at once; larger ones are accumulated.
            `None`: no accumulation.
        backup_dir: directory of the `BackupAndRestore` callback of the same fit, or `None`.

    Example:

    ```python
    class Doubling(keras_hessian.callbacks.BatchSizeController):
        def _on_epoch_start(self, epoch):  # double the batch at every epoch, up to the cap
            self.batch_size = min(self.initial_batch_size * 2**epoch, self.max_batch_size)

    model.fit(keras_hessian.data.adaptive_dataset(x, y), epochs=4, callbacks=[Doubling(32, 256)])
    ```
    """

    def __init__(
        self,
        initial_batch_size: int,
        max_batch_size: int,
        *,
        max_physical_batch_size: int | None = None,
        backup_dir: str | None = None,
    ):
        super().__init__()
        require_tensorflow_backend()
        self.initial_batch_size = check_int("initial_batch_size", initial_batch_size)
        self.max_batch_size = check_int("max_batch_size", max_batch_size)
        if self.max_batch_size < self.initial_batch_size:
            raise ValueError(
                "max_batch_size must be >= initial_batch_size. Received "
                f"max_batch_size={max_batch_size!r} with initial_batch_size={initial_batch_size!r}."
            )
        self.max_physical_batch_size = check_int("max_physical_batch_size", max_physical_batch_size, allow_none=True)
        if backup_dir is not None and not isinstance(backup_dir, (str, os.PathLike)):
            raise TypeError(f"backup_dir must be a path or None. Received backup_dir={backup_dir!r}.")
        self.backup_dir = None if backup_dir is None else os.fspath(backup_dir)
        self.batch_size = self.initial_batch_size
        self._pending: dict | None = None
        self._first_epoch_of_fit = True
        self._epoch_start_count = 0
        self.base_learning_rate: float | None = None
        self._left_learning_rate: float | None = None  # the rate in force when the last epoch ended
        self._optimizer_ref = None
        with tf.init_scope():
            self._epochs_seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="kh_epochs_seen")

    # ----------------------------------------------------------------- subclass hooks
    def _state(self) -> dict:
        """Subclass state beyond the batch size, JSON-serialisable."""
        return {}

    def _load_state(self, state: dict) -> None:
        """Restore what `_state` returned."""

    def _reset(self) -> None:
        """Start-of-a-fresh-fit reset of subclass state."""

    def _decide(self, epoch: int, logs: dict) -> None:
        """At the end of `epoch`: measure, write `logs`, maybe `_schedule(...)` a change."""

    def _on_epoch_start(self, epoch: int) -> None:
        """At the beginning of `epoch`, after a pending change was applied; may change
        `self.batch_size` (capped by the caller) and the learning rate."""

    # ----------------------------------------------------------------- shared machinery
    def get_config(self) -> dict:
        return {
            "initial_batch_size": self.initial_batch_size,
            "max_batch_size": self.max_batch_size,
            "max_physical_batch_size": self.max_physical_batch_size,
            "backup_dir": self.backup_dir,
        }

    def step_transform(self) -> StepTransform:
        control = batch_size_control()
        seen = self._epochs_seen
        message = _NOT_ADAPTIVE.format(name=type(self).__name__, detail="")

        def release() -> None:
            control.release(self)  # a no-op unless this callback holds the control

        def check_adaptive(model, data):
            # An adaptive dataset counts the epochs it starts; no count, no such dataset. Read
            # the count after the batch exists (the data dependency orders it after get_next).
            tensors = [t for t in tf.nest.flatten(data) if t is not None]
            with tf.control_dependencies(tensors):
                count = control.epochs_started.read_value()
            started = tf.debugging.assert_greater(count, seen.read_value(), message=message)
            with tf.control_dependencies([started]):
                return tf.nest.map_structure(
                    lambda t: None if t is None else tf.identity(t), data
                )

        # XLA drops tf.debugging asserts: the check would pass silently (supports_xla=False).
        return StepTransform(
            transform_batch=check_adaptive,
            micro_batch_size=self.max_physical_batch_size,
            on_restore=release,
            supports_xla=False,
        )

    @property
    def learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def _set_learning_rate(self, value: float) -> None:
        self.model.optimizer.learning_rate.assign(float(value))
        # The rate this callback leaves, also when the fit raises before the epoch ends: a later
        # fit with the same optimizer then starts again from the base instead of compounding.
        self._left_learning_rate = float(value)

    def _schedule(self, batch_size: int, lr_multiplier: float = 1.0, learning_rate: float | None = None) -> None:
        """Ask for `batch_size` (capped) and a learning-rate change from the next epoch on."""
        self._pending = {
            "batch_size": int(min(max(batch_size, 1), self.max_batch_size)),
            "lr_multiplier": float(lr_multiplier),
            "learning_rate": None if learning_rate is None else float(learning_rate),
        }

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        self.batch_size = pending["batch_size"]
        if pending["learning_rate"] is not None:
            self._set_learning_rate(pending["learning_rate"])
        elif pending["lr_multiplier"] != 1.0:
            self._set_learning_rate(self.learning_rate * pending["lr_multiplier"])

    def _state_path(self) -> str | None:
        if self.backup_dir is None:
            return None
        return os.path.join(self.backup_dir, f"keras_hessian.{type(self).__name__}.json")

    def _save(self, next_epoch: int) -> None:
        path = self._state_path()
        if path is None:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        saved = {}
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
        state = {
            "batch_size": self.batch_size,
            "pending": self._pending,
            "weights": self._fingerprint(),
            # The rate of the epoch just ended and the base: a resume in the same process finds the
            # optimizer's rate as BackupAndRestore left it, which says nothing about either.
            "learning_rate": self.learning_rate,
            "base_learning_rate": self.base_learning_rate,
            **self._state(),
        }
        # Keep the two latest epochs: a kill between Keras' backup and ours leaves one matching.
        saved = {k: v for k, v in saved.items() if int(k) == next_epoch - 1}
        saved[str(next_epoch)] = state
        # Under MultiWorkerMirroredStrategy every worker saves the same state; on a shared
        # directory each writes its own temporary file, and the atomic replace lets any one win.
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "w") as f:
            json.dump(saved, f)
        os.replace(tmp, path)

    def _restore(self, epoch: int) -> bool:
        path = self._state_path()
        if path is None or epoch == 0 or not os.path.exists(path):
            return False
        with open(path) as f:
            saved = json.load(f)
        state = saved.get(str(epoch))
        # The run is the one whose weights BackupAndRestore just restored: the state saved with
        # those weights. A file left by another run (same epoch, other weights) is not ours.
        if state is None or state.get("weights") != self._fingerprint():
            return False
        self.batch_size = int(state["batch_size"])
        self._pending = state["pending"]
        if state.get("learning_rate") is not None:
            self.base_learning_rate = state.get("base_learning_rate", self.base_learning_rate)
            self._set_learning_rate(state["learning_rate"])
        self._load_state(state)
        return True

    def _fingerprint(self) -> str:
        """SHA-256 of the model's weights: which run a saved state belongs to."""
        digest = hashlib.sha256()
        for weight in self.model.weights:
            digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
        return digest.hexdigest()

    def _check_data(self) -> None:
        steps = (self.params or {}).get("steps")
        if steps is not None:
            step_transform.restore(self.model)
            raise ValueError(
                _NOT_ADAPTIVE.format(
                    name=type(self).__name__,
                    detail=f" (its number of steps is known: {steps}, e.g. NumPy arrays)",
                )
            )
        others = [
            p for p in step_transform.participants(self.model)
            if isinstance(p, BatchSizeController) and p is not self
        ]
        if others:
            step_transform.restore(self.model)
            raise ValueError(
                "Only one batch-size callback can control a fit. Received "
                f"{type(self).__name__} together with {type(others[0]).__name__}."
            )

    def _check_learning_rate(self) -> None:
        if not isinstance(self.model.optimizer.learning_rate, keras.Variable):
            step_transform.restore(self.model)
            raise TypeError(
                f"{type(self).__name__} writes the optimizer's learning rate, which must be a "
                "number (a variable), not a LearningRateSchedule. Received learning_rate="
                f"{self.model.optimizer.learning_rate!r}."
            )

    def _start_from_base_learning_rate(self) -> None:
        optimizer = self.model.optimizer
        current = self.learning_rate
        reused = (
            self.base_learning_rate is not None
            and self._optimizer_ref is not None
            and self._optimizer_ref() is optimizer
            and current == self._left_learning_rate
        )
        if reused:  # the rate this callback left: start again from the base, do not compound
            self._set_learning_rate(self.base_learning_rate)
        else:  # first fit, another optimizer, or the user set the rate since: that is the base
            self.base_learning_rate = current
        self._optimizer_ref = weakref.ref(optimizer)

    def on_train_begin(self, logs=None):
        self._check_data()
        self._check_learning_rate()
        super().on_train_begin(logs)
        self._start_from_base_learning_rate()
        self.batch_size = self.initial_batch_size
        self._pending = None
        self._first_epoch_of_fit = True
        self._reset()
        batch_size_control().take(self, self.batch_size, self.initial_batch_size, self.max_batch_size)

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch_of_fit:
            self._first_epoch_of_fit = False
            if not self._restore(epoch) and epoch > 0:
                warnings.warn(
                    f"{type(self).__name__}: the fit starts at epoch {epoch} but no state of this run was "
                    f"restored (backup_dir={self.backup_dir!r}; with BackupAndRestore use save_freq='epoch' and "
                    "the same backup_dir): the batch size starts again from initial_batch_size "
                    f"({self.initial_batch_size}) and the learning rate from the optimizer's.",
                    stacklevel=2,
                )
        self._apply_pending()
        self._on_epoch_start(epoch)
        control = batch_size_control()
        control.batch_size.assign(self.batch_size)
        control.epoch.assign(epoch)
        self._epochs_seen.assign(control.epochs_started)
        control.arm()
        self._tell_fit_the_epoch_length()

    def _tell_fit_the_epoch_length(self) -> None:
        # Keras fixes the steps per epoch when fit starts; an adaptive dataset's change with the
        # batch size. Told the length, Keras neither runs the epoch as "1/Unknown" nor warns
        # that the input ran out of data when the batch grew.
        running = _compat.running_fit()
        if running is None:
            return
        iterator, callbacks = running
        if getattr(iterator, "steps_per_epoch", None):  # the user's steps_per_epoch wins
            return
        steps = adaptive_epoch_steps(_compat.fit_dataset(iterator), self.batch_size)
        if steps:
            _compat.set_epoch_steps(iterator, callbacks, steps)

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        logs["batch_size"] = float(self.batch_size)
        logs["learning_rate"] = self._left_learning_rate = self.learning_rate
        self._decide(epoch, logs)
        self._save(epoch + 1)

    def on_train_end(self, logs=None):
        batch_size_control().release(self)
        path = self._state_path()
        if path is not None:
            # fit completed (Keras skips on_train_end when it raises); another worker of a
            # multi-worker fit sharing the directory may have removed it already.
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        super().on_train_end(logs)
