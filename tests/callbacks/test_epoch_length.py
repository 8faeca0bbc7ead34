"""Keras is told each epoch's length on an adaptive dataset: no "ran out of data", no "1/Unknown"."""

from __future__ import annotations

import math
import warnings

import keras

from keras_hessian.callbacks import BatchIncreaseSchedule
from keras_hessian.data import adaptive_dataset

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class Steps(keras.callbacks.Callback):
    """Counts the batches of every epoch and the steps the callbacks were told."""

    def __init__(self):
        super().__init__()
        self.batches, self.told = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.batches[-1] += 1

    def on_epoch_end(self, epoch, logs=None):
        self.told.append(self.params["steps"])


def _model():
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=LOSS)
    return model


def test_growing_batches_give_keras_each_epochs_steps(digits_flat, capsys):
    (x, y), _ = digits_flat
    n = len(x)
    steps = Steps()
    schedule = BatchIncreaseSchedule([1, 2], factor=2, initial_batch_size=100, max_batch_size=1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _model().fit(adaptive_dataset(x, y, seed=0), epochs=3, callbacks=[schedule, steps], verbose=1, shuffle=False)
    out = capsys.readouterr().out
    expected = [math.ceil(n / b) for b in (100, 200, 400)]  # 18, 9, 5
    assert steps.batches == expected
    assert steps.told == expected
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    assert "Unknown" not in out
    for s in expected:
        assert f"{s}/{s}" in out


def test_drop_remainder_counts_full_batches(digits_flat):
    (x, y), _ = digits_flat
    steps = Steps()
    schedule = BatchIncreaseSchedule([1], factor=3, initial_batch_size=128, max_batch_size=1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _model().fit(adaptive_dataset(x, y, seed=0, drop_remainder=True), epochs=2, callbacks=[schedule, steps], verbose=0)
    assert steps.batches == [len(x) // 128, len(x) // 384]
    assert not [w for w in caught if "ran out of data" in str(w.message)]

