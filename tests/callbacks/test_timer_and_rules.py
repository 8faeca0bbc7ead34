"""TimerBatchSize follows its closed form; ABS without the duration rule grows only on the eigenvalue (ARPACK check)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_hessian.callbacks import AdaptiveBatchSize, TimerBatchSize
from keras_hessian.data import adaptive_dataset
from keras_hessian.hessian import HessianOperator, top_eigenvalues

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model(seed=0, lr=0.05):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(24, activation="tanh"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=LOSS)
    return model


@pytest.mark.parametrize("every, rule", [(1, "linear"), (2, "sqrt"), (3, "none")])
def test_timer_batch_sizes_and_rates_follow_the_closed_form(digits_flat, every, rule):
    (x, y), _ = digits_flat
    b0, cap, lr0, epochs = 32, 200, 0.01, 7
    timer = TimerBatchSize(every, initial_batch_size=b0, max_batch_size=cap, lr_scaling=rule, max_physical_batch_size=64)
    history = _model(lr=lr0).fit(adaptive_dataset(x, y, seed=0), epochs=epochs, callbacks=[timer], verbose=0)
    sizes = [min(b0 * 2 ** (e // every), cap) for e in range(epochs)]
    assert history.history["batch_size"] == [float(s) for s in sizes]
    rates, rate = [], lr0
    for previous, size in zip([b0, *sizes], sizes):
        # One growth step at a time: each multiplies the rate by the rule's factor for that step.
        while previous < size:
            step = min(previous * 2, cap)
            rate *= {"linear": step / previous, "sqrt": np.sqrt(step / previous), "none": 1.0}[rule]
            previous = step
        rates.append(rate)
    np.testing.assert_allclose(history.history["learning_rate"], rates, rtol=1e-6)


def test_timer_arguments_are_checked():
    with pytest.raises(ValueError, match="every"):
        TimerBatchSize(0)
    with pytest.raises(ValueError, match="lr_scaling"):
        TimerBatchSize(2, lr_scaling="cubic")


class Weights(keras.callbacks.Callback):
    """The weights at the end of every epoch (what the ABS check measured)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


def test_abs_without_the_duration_rule_grows_only_when_the_eigenvalue_fell(digits_flat):
    (x, y), _ = digits_flat
    data = (x[:300], y[:300])
    drop = 1.1
    abs_callback = AdaptiveBatchSize(
        data, initial_batch_size=32, max_batch_size=1024, patience=None, drop_ratio=drop, method="lanczos",
        max_iter=200, tol=1e-5, lr_scaling="none",
    )
    weights = Weights()
    model = _model(lr=0.05)
    history = model.fit(adaptive_dataset(x, y, seed=0), epochs=6, callbacks=[abs_callback, weights], verbose=0).history
    logged = np.asarray(history["hessian/top_eigenvalue"])
    # Independent recomputation: ARPACK on a copy with each epoch's weights.
    copy = keras.models.clone_model(model)
    copy.compile(loss=LOSS)
    recomputed = []
    for w in weights.weights:
        copy.set_weights(w)
        recomputed.append(top_eigenvalues(HessianOperator(copy, data), k=1, method="arpack", tol=1e-8, seed=0).eigenvalues[0])
    recomputed = np.asarray(recomputed)
    np.testing.assert_allclose(logged, recomputed, rtol=1e-3)
    triggers = [h["trigger"] for h in abs_callback.history]
    assert "patience" not in triggers
    reference = abs(recomputed[0])
    for epoch in range(1, len(recomputed)):
        fell = abs(recomputed[epoch]) <= reference / drop
        if abs(abs(recomputed[epoch]) - reference / drop) > 1e-3 * reference:  # not on the threshold
            assert (triggers[epoch] == "eigenvalue") == fell, (epoch, recomputed, triggers)
        if triggers[epoch] == "eigenvalue":
            reference = abs(recomputed[epoch])
    assert abs_callback.eigenvalue_increases == triggers.count("eigenvalue")
    assert history["eigenvalue_increases"][-1] == triggers.count("eigenvalue")
    assert history["patience_increases"][-1] == 0.0 == abs_callback.patience_increases
    # The batch of epoch e doubled once per eigenvalue increase decided before it.
    before = np.cumsum([0] + [t == "eigenvalue" for t in triggers[:-1]])
    assert history["batch_size"] == [float(min(32 * 2**int(k), 1024)) for k in before]
    assert 0 < triggers.count("eigenvalue") < len(triggers) - 1  # both outcomes were checked


def test_patience_increases_are_counted(digits_flat):
    (x, y), _ = digits_flat
    abs_callback = AdaptiveBatchSize((x[:200], y[:200]), initial_batch_size=32, max_batch_size=1024, patience=1, drop_ratio=1e6)
    history = _model().fit(adaptive_dataset(x, y, seed=0), epochs=3, callbacks=[abs_callback], verbose=0).history
    assert history["patience_increases"] == [1.0, 2.0, 3.0]
    assert history["eigenvalue_increases"] == [0.0, 0.0, 0.0]
    assert history["batch_size"] == [32.0, 64.0, 128.0]


def test_patience_three_with_a_check_every_two_epochs_follows_the_closed_form(digits_flat):
    # The eigenvalue never falls far enough (drop_ratio 1e6): only the duration rule grows the batch, after
    # 3 epochs without an increase, i.e. at the ends of epochs 2 and 5; the Hessian is measured at the ends
    # of epochs 1, 3, 5 (every 2nd), independently of the increases.
    (x, y), _ = digits_flat
    abs_callback = AdaptiveBatchSize(
        (x[:200], y[:200]), initial_batch_size=32, max_batch_size=1024, patience=3, check_every=2, drop_ratio=1e6
    )
    history = _model().fit(adaptive_dataset(x, y, seed=0), epochs=7, callbacks=[abs_callback], verbose=0).history
    assert history["batch_size"] == [32.0, 32.0, 32.0, 64.0, 64.0, 64.0, 128.0]
    assert history["patience_increases"] == [0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0]
    assert history["eigenvalue_increases"] == [0.0] * 7
    measured = [not np.isnan(count) for count in history["hessian/hvp_count"]]
    assert measured == [False, True, False, True, False, True, False]
