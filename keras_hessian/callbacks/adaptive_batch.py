"""AdaptiveBatchSize (ABS): grow the batch inside one `fit` as the top Hessian eigenvalue falls.

Also the machinery the fixed-schedule baselines (`baselines.py`) share with it: the control of
an adaptive dataset's batch size, gradient accumulation beyond a physical batch size, the
learning-rate variable, the `logs` entries, and the state kept for `BackupAndRestore`.
"""

from __future__ import annotations

import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_hessian._backend import require_tensorflow_backend
from keras_hessian.callbacks import _train_step
from keras_hessian.callbacks._train_step import StepTransform, StepTransformCallback
from keras_hessian.data.adaptive import batch_size_control
from keras_hessian.hessian.algorithms.eigen import EIGEN_METHODS
from keras_hessian.hessian.operators import HVP_METHODS

__all__ = ["LR_SCALING_RULES", "AdaptiveBatchSize", "BatchSizeController"]

LR_SCALING_RULES = ("linear", "sqrt", "none")

_NOT_ADAPTIVE = (
    "{name} sets the batch size through the training data: pass it as "
    "keras_hessian.data.adaptive_dataset(x, y), e.g. "
    "model.fit(keras_hessian.data.adaptive_dataset(x_train, y_train), callbacks=[{name}(...)]). "
    "Received training data that is not an adaptive dataset{detail}."
)


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}. Received {name}={value!r}.")
    return int(value)


def _optional_positive_int(value, name: str) -> int | None:
    return None if value is None else _positive_int(value, name)


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
      the step (see `_train_step`), so memory stays bounded while the effective batch grows;
    * the learning rate is the optimizer's `learning_rate` variable, written in place;
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
        self.initial_batch_size = _positive_int(initial_batch_size, "initial_batch_size")
        self.max_batch_size = _positive_int(max_batch_size, "max_batch_size")
        if self.max_batch_size < self.initial_batch_size:
            raise ValueError(
                "max_batch_size must be >= initial_batch_size. Received "
                f"max_batch_size={max_batch_size!r} with initial_batch_size={initial_batch_size!r}."
            )
        self.max_physical_batch_size = _optional_positive_int(
            max_physical_batch_size, "max_physical_batch_size"
        )
        if backup_dir is not None and not isinstance(backup_dir, (str, os.PathLike)):
            raise TypeError(f"backup_dir must be a path or None. Received backup_dir={backup_dir!r}.")
        self.backup_dir = None if backup_dir is None else os.fspath(backup_dir)
        self.batch_size = self.initial_batch_size
        self._pending: dict | None = None
        self._first_epoch_of_fit = True
        self._epoch_start_count = 0
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

        return StepTransform(transform_batch=check_adaptive, micro_batch_size=self.max_physical_batch_size)

    @property
    def learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def _set_learning_rate(self, value: float) -> None:
        self.model.optimizer.learning_rate.assign(float(value))

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
        state = {"batch_size": self.batch_size, "pending": self._pending, **self._state()}
        # Keep the two latest epochs: a kill between Keras' backup and ours leaves one matching.
        saved = {k: v for k, v in saved.items() if int(k) == next_epoch - 1}
        saved[str(next_epoch)] = state
        tmp = path + ".tmp"
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
        if state is None:
            return False
        self.batch_size = int(state["batch_size"])
        self._pending = state["pending"]
        self._load_state(state)
        return True

    def _check_data(self) -> None:
        steps = (self.params or {}).get("steps")
        if steps is not None:
            _train_step.restore(self.model)
            raise ValueError(
                _NOT_ADAPTIVE.format(
                    name=type(self).__name__,
                    detail=f" (its number of steps is known: {steps}, e.g. NumPy arrays)",
                )
            )
        others = [
            p for p in _train_step.participants(self.model)
            if isinstance(p, BatchSizeController) and p is not self
        ]
        if others:
            _train_step.restore(self.model)
            raise ValueError(
                "Only one batch-size callback can control a fit. Received "
                f"{type(self).__name__} together with {type(others[0]).__name__}."
            )

    def _check_learning_rate(self) -> None:
        if not isinstance(self.model.optimizer.learning_rate, keras.Variable):
            _train_step.restore(self.model)
            raise TypeError(
                f"{type(self).__name__} writes the optimizer's learning rate, which must be a "
                "number (a variable), not a LearningRateSchedule. Received learning_rate="
                f"{self.model.optimizer.learning_rate!r}."
            )

    def on_train_begin(self, logs=None):
        self._check_data()
        self._check_learning_rate()
        super().on_train_begin(logs)
        self.batch_size = self.initial_batch_size
        self._pending = None
        self._first_epoch_of_fit = True
        self._reset()
        batch_size_control().take(self, self.batch_size, self.initial_batch_size, self.max_batch_size)

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch_of_fit:
            self._first_epoch_of_fit = False
            self._restore(epoch)
        self._apply_pending()
        self._on_epoch_start(epoch)
        control = batch_size_control()
        control.batch_size.assign(self.batch_size)
        control.epoch.assign(epoch)
        self._epochs_seen.assign(control.epochs_started)

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        logs["batch_size"] = float(self.batch_size)
        logs["learning_rate"] = self.learning_rate
        self._decide(epoch, logs)
        self._save(epoch + 1)

    def on_train_end(self, logs=None):
        batch_size_control().release(self)
        path = self._state_path()
        if path is not None and os.path.exists(path):
            os.remove(path)  # fit completed (Keras skips on_train_end when it raises)
        super().on_train_end(logs)


class AdaptiveBatchSize(BatchSizeController):
    """Grows the batch size inside one `model.fit` when the top Hessian eigenvalue has fallen.

    ABS of Yao, Gholami, Keutzer and Mahoney, "Large batch size training of neural networks
    with adversarial training and second-order information" (arXiv 1810.01021): a flatter loss
    landscape (smaller top eigenvalue of the Hessian) tolerates a larger batch. Every
    `check_every` epochs the callback measures the top eigenvalue `lambda` of the loss Hessian
    on the fixed subset `hessian_data`, in inference mode, with `max_iter` / `tol` (authors:
    power iteration, 10 iterations, tolerance 1e-2, one batch of 128 examples). With
    `lambda_ref` the eigenvalue at the last increase (the first measurement at the start):

    * if `lambda <= lambda_ref / drop_ratio` (authors: 2), the batch is multiplied by `factor`
      (authors: 2), capped at `max_batch_size` (authors: 16,384), the learning rate is scaled
      by `lr_scaling` for the actual growth, and `lambda_ref = lambda`;
    * if `patience` epochs (authors: 10) pass without an increase, the batch grows anyway
      (same rule, `lambda_ref` becomes the current eigenvalue);
    * at the cap, eigenvalue computations stop (authors).

    Use it with `keras_hessian.data.adaptive_dataset` as the training data (it reads the batch
    size at each epoch start; the train function is not retraced) and, for ABSA, together with
    `AdversarialAugmentation`. Compose a step learning-rate decay with a
    `keras.callbacks.LearningRateScheduler` that multiplies the current rate (the authors keep a
    step decay on top); do not use a `LearningRateSchedule` object (the rate is written here).

    Deviations from the authors' code, and why: the subset defaults to the caller's
    `hessian_data` (PyHessian's users report that 128 examples give unstable eigenvalues); the
    change decided at the end of an epoch is applied at the start of the next (so the state
    `BackupAndRestore` saves is consistent); the first reference is the first measurement.

    `logs` gets, every epoch: `batch_size` and `learning_rate` (used in that epoch) and
    `hessian/top_eigenvalue` (the latest measurement: NaN before the first one, constant once
    measuring stops at the cap). `hessian_seconds` accumulates the time spent on Hessian work;
    `history` holds one dict per epoch (measured eigenvalue or None, and what triggered an
    increase: `"eigenvalue"` or `"patience"`).

    Example:

    ```python
    train = keras_hessian.data.adaptive_dataset(x_train, y_train)
    abs_callback = keras_hessian.callbacks.AdaptiveBatchSize(
        (x_train[:1024], y_train[:1024]), initial_batch_size=128, max_batch_size=4096,
        max_physical_batch_size=1024,
    )
    model.fit(train, epochs=30, callbacks=[abs_callback])
    ```

    Args:
        hessian_data: the fixed subset, `(x, y)` / `(x, y, sample_weight)` arrays or a batched
            `tf.data.Dataset` yielding labels.
        initial_batch_size: batch size of the first epoch (authors: 128).
        max_batch_size: cap (authors: 16,384); must be >= `initial_batch_size`.
        factor: batch multiplier at an increase, > 1 (authors: 2).
        drop_ratio: an increase needs `lambda <= lambda_ref / drop_ratio`, > 1 (authors: 2).
        lr_scaling: `"linear"`, `"sqrt"` or `"none"`.
        patience: epochs without increase after which the batch grows anyway; `None`: never.
        check_every: measure every this many epochs.
        max_physical_batch_size: largest batch computed at once (gradient accumulation above).
        max_iter: eigen-solver iterations (HVPs), passed to `top_eigenvalues`.
        tol: eigen-solver relative tolerance.
        method: `"power"` (authors), `"lanczos"` or `"arpack"`.
        hessian_batch_size: batch size of the Hessian operator over `hessian_data`.
        hvp_method: the operator's Hessian-vector product, `None` (the engine's default),
            `"forward_over_reverse"` or `"reverse_over_reverse"`.
        seed: seed of the solver's start vector (epoch-dependent, reproducible).
        backup_dir: `backup_dir` of the fit's `keras.callbacks.BackupAndRestore`, or `None`.
    """

    def __init__(
        self,
        hessian_data,
        initial_batch_size: int = 128,
        max_batch_size: int = 16384,
        *,
        factor: int = 2,
        drop_ratio: float = 2.0,
        lr_scaling: str = "linear",
        patience: int | None = 10,
        check_every: int = 1,
        max_physical_batch_size: int | None = None,
        max_iter: int = 10,
        tol: float = 1e-2,
        method: str = "power",
        hessian_batch_size: int | None = None,
        hvp_method: str | None = None,
        seed: int = 0,
        backup_dir: str | None = None,
    ):
        _check_hessian_data(hessian_data)
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 2:
            raise ValueError(f"factor must be an integer >= 2. Received factor={factor!r}.")
        if isinstance(drop_ratio, bool) or not isinstance(drop_ratio, (int, float, np.number)):
            raise TypeError(f"drop_ratio must be a number > 1. Received drop_ratio={drop_ratio!r}.")
        if not float(drop_ratio) > 1.0:
            raise ValueError(f"drop_ratio must be > 1. Received drop_ratio={drop_ratio!r}.")
        if lr_scaling not in LR_SCALING_RULES:
            raise ValueError(f"lr_scaling must be one of {LR_SCALING_RULES}. Received lr_scaling={lr_scaling!r}.")
        super().__init__(
            initial_batch_size,
            max_batch_size,
            max_physical_batch_size=max_physical_batch_size,
            backup_dir=backup_dir,
        )
        self.hessian_data = hessian_data
        self.factor = int(factor)
        self.drop_ratio = float(drop_ratio)
        self.lr_scaling = lr_scaling
        self.patience = _optional_positive_int(patience, "patience")
        self.check_every = _positive_int(check_every, "check_every")
        self.max_iter = _positive_int(max_iter, "max_iter")
        if not float(tol) > 0:
            raise ValueError(f"tol must be > 0. Received tol={tol!r}.")
        self.tol = float(tol)
        if method not in EIGEN_METHODS:
            raise ValueError(f"method must be one of {EIGEN_METHODS}. Received method={method!r}.")
        self.method = method
        self.hessian_batch_size = _optional_positive_int(hessian_batch_size, "hessian_batch_size")
        if hvp_method is not None and hvp_method not in HVP_METHODS:
            raise ValueError(f"hvp_method must be None or one of {HVP_METHODS}. Received hvp_method={hvp_method!r}.")
        self.hvp_method = hvp_method
        self.seed = int(seed)
        self._operator = None
        self._reset()
        self.hessian_seconds = 0.0
        self.history: list[dict] = []

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            factor=self.factor,
            drop_ratio=self.drop_ratio,
            lr_scaling=self.lr_scaling,
            patience=self.patience,
            check_every=self.check_every,
            max_iter=self.max_iter,
            tol=self.tol,
            method=self.method,
            hessian_batch_size=self.hessian_batch_size,
            hvp_method=self.hvp_method,
            seed=self.seed,
        )
        return config

    def _reset(self) -> None:
        self.reference: float | None = None
        self.eigenvalue: float = float("nan")
        self.epochs_since_increase = 0
        self.increases = 0

    def _state(self) -> dict:
        return {
            "reference": self.reference,
            "eigenvalue": self.eigenvalue,
            "epochs_since_increase": self.epochs_since_increase,
            "increases": self.increases,
        }

    def _load_state(self, state: dict) -> None:
        self.reference = state["reference"]
        self.eigenvalue = float(state["eigenvalue"])
        self.epochs_since_increase = int(state["epochs_since_increase"])
        self.increases = int(state["increases"])

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._operator = None
        self.hessian_seconds = 0.0
        self.history = []
        # Build the operator (it validates hessian_data, the loss and the label shapes) before
        # any step, so bad hessian_data fails here with the weights untouched, not after an epoch.
        start = time.perf_counter()
        try:
            self._build_operator()
        except Exception:
            _train_step.restore(self.model)
            batch_size_control().release(self)
            raise
        self.hessian_seconds += time.perf_counter() - start

    def _build_operator(self) -> None:
        from keras_hessian.hessian import HessianOperator

        self._operator = HessianOperator(
            self.model, self.hessian_data, training=False, method=self.hvp_method,
            batch_size=self.hessian_batch_size,
        )

    def measure(self) -> float:
        """Measure the top eigenvalue on `hessian_data` now (the model's current weights)."""
        from keras_hessian.hessian import top_eigenvalues

        start = time.perf_counter()
        if self._operator is None:  # measure() called outside a fit
            self._build_operator()
        result = top_eigenvalues(
            self._operator, k=1, max_iter=self.max_iter, tol=self.tol,
            seed=self.seed + len(self.history), method=self.method,
        )
        self.hessian_seconds += time.perf_counter() - start
        return float(result.eigenvalues[0])

    def _decide(self, epoch: int, logs: dict) -> None:
        at_cap = self.batch_size >= self.max_batch_size
        measured = False
        seconds = self.hessian_seconds
        if not at_cap and (epoch + 1) % self.check_every == 0:
            self.eigenvalue = self.measure()
            measured = True
        seconds = self.hessian_seconds - seconds
        logs["hessian/top_eigenvalue"] = self.eigenvalue
        self.epochs_since_increase += 1
        increase, trigger = False, None
        if measured:
            if self.reference is None:
                self.reference = self.eigenvalue
            elif self.eigenvalue <= self.reference / self.drop_ratio:
                increase, trigger = True, "eigenvalue"
        if not increase and not at_cap and self.patience is not None and self.epochs_since_increase >= self.patience:
            increase, trigger = True, "patience"
        if increase and not at_cap:
            new_batch = min(self.batch_size * self.factor, self.max_batch_size)
            self._schedule(new_batch, lr_scale(self.lr_scaling, new_batch / self.batch_size))
            if not math.isnan(self.eigenvalue):
                self.reference = self.eigenvalue
            self.epochs_since_increase = 0
            self.increases += 1
        self.history.append(
            {
                "epoch": epoch,
                "batch_size": self.batch_size,
                "learning_rate": logs["learning_rate"],
                "eigenvalue": self.eigenvalue if measured else None,
                "hessian_seconds": seconds,
                "increase": bool(increase and not at_cap),
                "trigger": trigger if increase and not at_cap else None,
            }
        )


def _check_hessian_data(data) -> None:
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError(
                "hessian_data must yield (x, y) or (x, y, sample_weight): the Hessian of the loss "
                f"needs labels. Received a dataset with element_spec={spec!r}."
            )
        return
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3) or data[1] is None:
        raise ValueError(
            "hessian_data must be (x, y) or (x, y, sample_weight) with labels, or a batched "
            f"tf.data.Dataset of such tuples. Received {type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
            + (" with y=None" if isinstance(data, (tuple, list)) and len(data) > 1 and data[1] is None else "")
            + "."
        )
    # x and y may be dicts / tuples of arrays (multi-input models): compare the examples of
    # every array, not the length of the containers.
    sizes = {
        int(np.shape(leaf)[0])
        for part in data
        if part is not None
        for leaf in (tf.nest.flatten(part) if isinstance(part, (dict, tuple)) else [part])
        if np.ndim(leaf) > 0
    }
    if len(sizes) != 1:
        raise ValueError(
            "hessian_data: x, y (and sample_weight) must have the same number of examples. "
            f"Received sizes {sorted(sizes)}."
        )
