"""A fit that raised leaves no batch size for other fits; a backup file of another run is not restored."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.callbacks import BatchIncreaseSchedule
from keras_hessian.data import adaptive_dataset

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class Recorder(keras.layers.Layer):
    """Identity that records the batch size of every training forward pass."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sizes: list[int] = []

    def call(self, x, training=None):
        if training:
            tf.py_function(lambda s: self.sizes.append(int(s)), [tf.shape(x)[0]], [])
        return x


class RaiseAtEpochEnd(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("stopped by the test")


def _model(seed=0, recorder=None):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,))] + ([recorder] if recorder is not None else []) + [keras.layers.Dense(10)]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=LOSS)
    return model


def test_another_models_fit_after_a_fit_that_raised_uses_its_own_batch_size(digits_flat):
    (x, y), _ = digits_flat
    schedule = BatchIncreaseSchedule([1], factor=4, initial_batch_size=100, max_batch_size=1000)
    with pytest.raises(RuntimeError, match="stopped by the test"):
        _model().fit(adaptive_dataset(x, y, seed=0), epochs=3, callbacks=[schedule, RaiseAtEpochEnd(1)], verbose=0)
    recorder = Recorder()
    other = _model(1, recorder)
    other.fit(adaptive_dataset(x, y, seed=0, batch_size=50), epochs=1, verbose=0)
    assert max(recorder.sizes) == 50  # not the 400 the raised fit left in the control
    assert len(recorder.sizes) == -(-len(x) // 50)


def test_a_stale_backup_of_another_run_is_not_restored(digits_flat, tmp_path):
    (x, y), _ = digits_flat
    backup = str(tmp_path / "backup")
    first = BatchIncreaseSchedule([1], factor=4, initial_batch_size=100, max_batch_size=1000, backup_dir=backup)
    with pytest.raises(RuntimeError):
        _model().fit(adaptive_dataset(x, y, seed=0), epochs=3, callbacks=[first, RaiseAtEpochEnd(1)], verbose=0)
    # Another run (other weights) in the same directory, started at epoch 2 by hand.
    second = BatchIncreaseSchedule([], initial_batch_size=100, max_batch_size=1000, backup_dir=backup)
    history = _model(seed=5).fit(
        adaptive_dataset(x, y, seed=0), epochs=3, initial_epoch=2, callbacks=[second], verbose=0
    )
    assert history.history["batch_size"] == [100.0]


def test_the_same_runs_backup_is_restored(digits_flat, tmp_path):
    (x, y), _ = digits_flat
    backup = str(tmp_path / "backup")
    first = BatchIncreaseSchedule([1], factor=4, initial_batch_size=100, max_batch_size=1000, backup_dir=backup)
    model = _model()
    with pytest.raises(RuntimeError):
        model.fit(adaptive_dataset(x, y, seed=0), epochs=3, callbacks=[first, RaiseAtEpochEnd(1)], verbose=0)
    # The same weights (what BackupAndRestore would restore), resumed at epoch 2: the state comes back.
    second = BatchIncreaseSchedule([1], factor=4, initial_batch_size=100, max_batch_size=1000, backup_dir=backup)
    history = model.fit(adaptive_dataset(x, y, seed=0), epochs=3, initial_epoch=2, callbacks=[second], verbose=0)
    assert history.history["batch_size"] == [400.0]


class RaiseOnceAtEpochEnd(keras.callbacks.Callback):
    """Raises at the end of `epoch` the first time only (the interrupted fit; the resumed one goes on)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.raised = epoch, False

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch and not self.raised:
            self.raised = True
            raise RuntimeError("stopped by the test")


@pytest.mark.parametrize("backup_first", [True, False])
def test_same_process_resume_with_backup_and_restore_continues_the_schedule(digits_flat, tmp_path, backup_first):
    # Keras' own resume pattern: the fit raises, then fit again with the same callback objects. The truth is
    # the uninterrupted fit: the same batch size and learning rate in every epoch, whichever callback runs first.
    from keras_hessian.callbacks import TimerBatchSize

    (x, y), _ = digits_flat

    def run(interrupt):
        timer = TimerBatchSize(
            every=1,
            initial_batch_size=50,
            max_batch_size=1000,
            backup_dir=str(tmp_path / f"s{interrupt}{backup_first}"),
        )
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / f"b{interrupt}{backup_first}"))
        callbacks = [backup, timer] if backup_first else [timer, backup]
        model = _model()
        if not interrupt:
            return model.fit(adaptive_dataset(x, y, seed=0), epochs=4, callbacks=callbacks, verbose=0).history
        stop = RaiseOnceAtEpochEnd(1)
        with pytest.raises(RuntimeError, match="stopped by the test"):
            model.fit(adaptive_dataset(x, y, seed=0), epochs=4, callbacks=[*callbacks, stop], verbose=0)
        return model.fit(adaptive_dataset(x, y, seed=0), epochs=4, callbacks=[*callbacks, stop], verbose=0).history

    reference, resumed = run(False), run(True)
    assert reference["batch_size"] == [50.0, 100.0, 200.0, 400.0]
    assert resumed["batch_size"] == reference["batch_size"][2:]  # epochs 2 and 3, after the restore
    np.testing.assert_allclose(resumed["learning_rate"], reference["learning_rate"][2:], rtol=1e-6)
