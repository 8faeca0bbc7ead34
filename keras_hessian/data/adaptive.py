"""A tf.data pipeline whose batch size follows a variable, read when each epoch starts.

Keras builds its train function once per `fit`; the batch dimension of its input signature is
`None`, so a dataset that reads its batch size from a `tf.Variable` whenever an epoch's
iterator starts can change the batch size between epochs of ONE `fit` without retracing.

The variable lives in a process-wide `BatchSizeControl`: the batch-size callbacks of
`keras_hessian.callbacks` (AdaptiveBatchSize, FixedBatchSize, LinearScalingWarmup,
BatchIncreaseSchedule) write it; every adaptive dataset reads it while a callback holds it and
uses its own `batch_size` otherwise. One `fit` at a time per process drives it (Keras runs fits
one after another); the dataset also counts the epochs it started, which is how the callbacks
tell that `fit` was given an adaptive dataset.
"""

from __future__ import annotations

import math
import weakref

import numpy as np
import tensorflow as tf

from keras_hessian._validation import check_int

__all__ = ["BatchSizeControl", "adaptive_dataset", "adaptive_epoch_steps", "batch_size_control"]

# (examples, drop_remainder) of every adaptive dataset, so a callback can tell Keras the length
# of each epoch (tf.data has no cardinality that follows a variable).
_EPOCHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def adaptive_epoch_steps(dataset, batch_size: int) -> int | None:
    """The number of batches an epoch of `dataset` yields at `batch_size`, if it is an adaptive
    dataset; None for any other dataset."""
    try:
        info = _EPOCHS.get(dataset)
    except TypeError:  # not weak-referenceable: not ours
        return None
    if info is None:
        return None
    examples, drop_remainder = info
    steps = examples // batch_size if drop_remainder else math.ceil(examples / batch_size)
    return max(int(steps), 0)


class BatchSizeControl:
    """Process-wide variables through which a callback sets the batch size of adaptive datasets.

    Attributes (all `tf.Variable`, created outside any `tf.function`):
        batch_size: effective batch size wanted by the controlling callback (int64).
        initial_batch_size: the controlling callback's starting batch size (int64).
        max_batch_size: its cap (int64).
        controlled: whether a callback holds the control now (bool). When it does not, an
            adaptive dataset uses its own `batch_size`.
        epochs_started: how many epoch iterators of adaptive datasets have started (int64).
        epoch: the fit's epoch, set by the controlling callback; while controlled it seeds the
            permutation, so a fit resumed at epoch k sees the order an uninterrupted one saw.
    """

    def __init__(self):
        with tf.init_scope():
            self.batch_size = tf.Variable(0, dtype=tf.int64, trainable=False, name="kh_batch_size")
            self.initial_batch_size = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="kh_initial_batch_size"
            )
            self.max_batch_size = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="kh_max_batch_size"
            )
            self.controlled = tf.Variable(False, trainable=False, name="kh_batch_size_controlled")
            self.epochs_started = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="kh_epochs_started"
            )
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="kh_epoch")
            # The value of `epochs_started` when the controlling callback began its epoch: only the
            # epoch iterator started next follows the control. A fit that raised leaves the control
            # held (Keras skips on_train_end), but never armed for another fit's epochs. -1 (after
            # `take`, before a callback's first epoch): every epoch follows.
            self.armed_at = tf.Variable(-1, dtype=tf.int64, trainable=False, name="kh_armed_at")
        self.owner = None  # the callback holding the control (Python side, for messages)

    def take(self, owner, batch_size: int, initial_batch_size: int, max_batch_size: int) -> None:
        """Give the control to `owner` with the given sizes."""
        self.owner = owner
        self.batch_size.assign(int(batch_size))
        self.initial_batch_size.assign(int(initial_batch_size))
        self.max_batch_size.assign(int(max_batch_size))
        self.armed_at.assign(-1)
        self.controlled.assign(True)

    def arm(self) -> None:
        """Let the next epoch iterator to start (the controlling fit's) follow the control."""
        self.armed_at.assign(self.epochs_started)

    def release(self, owner) -> None:
        """Hand the control back (adaptive datasets use their own batch size again)."""
        if self.owner is owner:
            self.owner = None
            self.controlled.assign(False)
            self.armed_at.assign(-1)


_CONTROL: BatchSizeControl | None = None


def batch_size_control() -> BatchSizeControl:
    """The process-wide `BatchSizeControl` (created on first use)."""
    global _CONTROL
    if _CONTROL is None:
        _CONTROL = BatchSizeControl()
    return _CONTROL


def _as_array(value, name: str) -> np.ndarray:
    if isinstance(value, tf.Tensor):
        value = value.numpy()
    try:
        array = np.asarray(value)
    except Exception as error:
        raise TypeError(f"{name} must be array-like. Received {type(value).__name__}.") from error
    if array.dtype == object:
        raise TypeError(f"{name} must be a numeric array. Received an array of dtype object.")
    if array.ndim == 0:
        raise ValueError(f"{name} must have a batch dimension. Received a scalar.")
    return array


def adaptive_dataset(
    x,
    y=None,
    sample_weight=None,
    *,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """A batched `tf.data.Dataset` of `(x, y[, sample_weight])` whose batch size can change between epochs.

    Use it as the training data of `model.fit` whenever a batch-size callback of
    `keras_hessian.callbacks` (AdaptiveBatchSize, FixedBatchSize, LinearScalingWarmup,
    BatchIncreaseSchedule) runs: at the start of each epoch the dataset reads the batch size the
    callback has set (`batch_size_control().batch_size`) and batches a fresh permutation of the
    examples with it. Without such a callback it batches with `batch_size`. The train function is
    not retraced when the size changes (the batch dimension is `None`).

    Each epoch's permutation is drawn from `(seed, epoch)` with stateless random ops (the fit's
    epoch while a callback controls the size, else the count of epochs started), so a run is
    reproducible, a resumed run sees the same orders, and every epoch a different one; examples
    are gathered batch by batch from in-memory tensors (no shuffle buffer). Pass
    `shuffle=False` to `fit` to silence Keras' note that it does not shuffle datasets.

    Example:

    ```python
    train = keras_hessian.data.adaptive_dataset(x_train, y_train)
    model.fit(
        train,
        epochs=30,
        callbacks=[keras_hessian.callbacks.AdaptiveBatchSize((x_train[:1024], y_train[:1024]))],
    )
    ```

    Args:
        x: inputs, an array (or a tuple/dict of arrays) with the examples along axis 0.
        y: labels, same number of examples. Required: training needs labels.
        sample_weight: optional per-example weights.
        batch_size: batch size used while no callback controls it.
        shuffle: draw a new permutation every epoch (`False`: the stored order).
        seed: seed of the permutations; `None` draws one from NumPy's global generator (so
            `keras.utils.set_random_seed` makes runs reproducible).
        drop_remainder: drop the last, smaller batch of each epoch.

    Returns:
        A `tf.data.Dataset` with unknown cardinality; while a batch-size callback controls it,
        the callback tells the running `fit` each epoch's number of steps
        (`adaptive_epoch_steps`), so the progress bar shows it and Keras does not warn that the
        input ran out of data.
    """
    if y is None:
        raise ValueError(
            "adaptive_dataset needs labels: training data without labels cannot drive a "
            "supervised fit. Received y=None."
        )
    batch_size = check_int("batch_size", batch_size)
    seed = check_int("seed", seed, minimum=None, allow_none=True)

    xs = tf.nest.map_structure(lambda value: _as_array(value, "x"), x)
    ys = tf.nest.map_structure(lambda value: _as_array(value, "y"), y)
    parts = (xs, ys) if sample_weight is None else (xs, ys, _as_array(sample_weight, "sample_weight"))
    sizes = {int(a.shape[0]) for a in tf.nest.flatten(parts)}
    if len(sizes) != 1:
        raise ValueError(
            "x, y and sample_weight must have the same number of examples. "
            f"Received sizes {sorted(sizes)}."
        )
    n = sizes.pop()
    if n == 0:
        raise ValueError("x is empty: it has 0 examples.")
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    tensors = tf.nest.map_structure(tf.constant, parts)
    control = batch_size_control()
    own_batch_size = tf.constant(int(batch_size), tf.int64)

    def one_epoch(_):
        # Counting the started epochs lets the callbacks check that fit() got this dataset.
        started = control.epochs_started.assign_add(1)
        armed = tf.logical_or(tf.equal(control.armed_at, -1), tf.equal(control.armed_at, started - 1))
        follows = tf.logical_and(control.controlled, armed)
        epoch = tf.where(follows, control.epoch, started)
        size = tf.where(follows, control.batch_size, own_batch_size)
        size = tf.maximum(size, 1)
        if shuffle:
            keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
            order = tf.argsort(keys)
        else:
            order = tf.range(n)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(size, drop_remainder=drop_remainder)
        return batches.map(
            lambda idx: tf.nest.map_structure(lambda t: tf.gather(t, idx), tensors),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    dataset = tf.data.Dataset.range(1).flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)
    _EPOCHS[dataset] = (n, bool(drop_remainder))
    return dataset
