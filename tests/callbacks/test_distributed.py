"""ABS, ABSA and HessianSpectrum in `model.fit` under MirroredStrategy on two logical CPU devices.

The two devices are configured for the whole suite in conftest.py (before TensorFlow starts), so
the strategy runs in this process. The truth is the same fit on one device with the same seeds
and initial weights: the strategy splits each global batch across the replicas and all-reduces
gradients and Hessian products, so the schedule must be the same and every float the same up to
the order of the sums.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.callbacks import AdaptiveBatchSize, AdversarialAugmentation, HessianSpectrum
from keras_hessian.data import adaptive_dataset

EXAMPLES, INITIAL_BATCH, MICRO_BATCH, LR, DROP = 512, 32, 16, 0.05, 1.05


class ReplicaRecorder(keras.layers.Layer):
    """Identity that records (replica id, batch size) of every training forward pass."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen: list[tuple[int, int]] = []

    def call(self, x, training=None):
        if training:
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            tf.py_function(lambda r, s: self.seen.append((int(r), int(s))), [replica, tf.shape(x)[0]], [])
        return x


class EpochMarks(keras.callbacks.Callback):
    def __init__(self, recorder):
        super().__init__()
        self.recorder, self.marks = recorder, [0]

    def on_epoch_end(self, epoch, logs=None):
        self.marks.append(len(self.recorder.seen))


def _fit(strategy, initial_weights, data, held_out):
    x, y = data
    recorder = ReplicaRecorder()
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = keras.Sequential(
            [keras.Input((64,)), recorder, keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(10)]
        )
        model.set_weights(initial_weights)
        model.compile(
            keras.optimizers.SGD(LR, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
    abs_callback = AdaptiveBatchSize(
        (x[:256], y[:256]), INITIAL_BATCH, 256, patience=None, drop_ratio=DROP,
        max_physical_batch_size=MICRO_BATCH, method="lanczos", max_iter=20, tol=1e-4,
    )
    adversarial = AdversarialAugmentation(epsilon=0.05, ratio=0.25)
    spectrum = HessianSpectrum(held_out, top_k=2, max_iter=30, tol=1e-4)
    marks = EpochMarks(recorder)
    history = model.fit(
        adaptive_dataset(x, y, seed=3), epochs=4, verbose=0, shuffle=False,
        callbacks=[abs_callback, adversarial, spectrum, marks],
    )
    per_epoch = [recorder.seen[a:b] for a, b in zip(marks.marks, marks.marks[1:])]
    return history.history, abs_callback, per_epoch, model


@pytest.fixture(scope="module")
def runs(digits_flat):
    (x, y), (x_test, y_test) = digits_flat
    data, held_out = (x[:EXAMPLES], y[:EXAMPLES]), (x_test[:256], y_test[:256])
    keras.utils.set_random_seed(0)
    initial = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(10)]
    ).get_weights()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    return _fit(None, initial, data, held_out), _fit(strategy, initial, data, held_out), strategy


def test_the_global_batch_is_split_across_the_replicas(runs):
    (one, _, one_seen, _), (mirrored, _, mirrored_seen, _), strategy = runs
    assert strategy.num_replicas_in_sync == 2
    assert one["batch_size"] == mirrored["batch_size"]
    for batch, seen in zip(mirrored["batch_size"], mirrored_seen):
        # Each replica computes half of every global batch, in micro-batches of at most 16.
        for replica in (0, 1):
            sizes = [s for r, s in seen if r == replica]
            assert sum(sizes) == EXAMPLES // 2 and max(sizes) <= MICRO_BATCH
            assert len(sizes) == (EXAMPLES // int(batch)) * max(1, int(batch) // 2 // MICRO_BATCH)
    for seen in one_seen:
        assert {r for r, _ in seen} == {0} and sum(s for _, s in seen) == EXAMPLES


def test_schedule_and_learning_rate_follow_the_global_batch(runs):
    (one, one_abs, _, _), (mirrored, mirrored_abs, _, _), _ = runs
    assert mirrored["batch_size"] == one["batch_size"]
    assert [h["trigger"] for h in mirrored_abs.history] == [h["trigger"] for h in one_abs.history]
    assert mirrored_abs.eigenvalue_increases >= 1 and mirrored_abs.patience_increases == 0
    # Linear scaling on the GLOBAL batch: lr = base * batch / initial batch.
    np.testing.assert_allclose(mirrored["learning_rate"], [LR * b / INITIAL_BATCH for b in one["batch_size"]], rtol=1e-6)
    # The eigenvalue alone grew the batch, and exactly where it had fallen by the drop ratio.
    reference = None
    for epoch, row in enumerate(mirrored_abs.history):
        value = row["eigenvalue"]
        if reference is None:
            reference = value
            continue
        ratio = abs(reference) / abs(value)
        assert abs(ratio - DROP) > 1e-3, "a decision this close to the threshold would not be a test"
        assert row["trigger"] == ("eigenvalue" if ratio >= DROP else None), epoch
        if row["trigger"]:
            reference = value


def test_eigenvalues_equal_the_one_device_run(runs):
    (one, one_abs, _, _), (mirrored, mirrored_abs, _, _), _ = runs
    abs_one = [h["eigenvalue"] for h in one_abs.history]
    abs_mirrored = [h["eigenvalue"] for h in mirrored_abs.history]
    np.testing.assert_allclose(abs_mirrored, abs_one, rtol=1e-5)
    # HessianSpectrum (held-out data, two eigenvalues) writes the logs after ABS: its values.
    for key in ("hessian/top_eigenvalue", "hessian/eigenvalue_2"):
        np.testing.assert_allclose(mirrored[key], one[key], rtol=1e-5)
    np.testing.assert_allclose(mirrored["loss"], one["loss"], rtol=1e-5)


def test_adversarial_examples_per_replica_share(runs):
    """With micro-batches of 16 on both sides, one device's micro-batches are exactly the replicas'
    micro-batches, so the FGSM examples (the first quarter of each) are the same ones and the
    weights after training are equal."""
    (one, _, _, one_model), (mirrored, _, _, mirrored_model), _ = runs
    assert one["adversarial/ratio"] == mirrored["adversarial/ratio"]
    assert one["adversarial/ratio"][0] == 0.25 and one["adversarial/ratio"][-1] == 0.0  # stop_epoch="half"
    for a, b in zip(one_model.get_weights(), mirrored_model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
