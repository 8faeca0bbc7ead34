"""FGSM and AdversarialAugmentation: exact epsilon, higher loss, which examples are replaced."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.callbacks import AdaptiveBatchSize, AdversarialAugmentation, FixedBatchSize, fgsm
from keras_hessian.data import adaptive_dataset

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _per_example_loss(model, x, y):
    """The cross-entropy written out here (not the model's compiled loss)."""
    logits = model(x, training=False)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=logits)


class InputRecorder(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batches = []

    def call(self, x, training=None):
        if training:
            tf.py_function(lambda t: self.batches.append(t.numpy()), [x], [])
        return x


def _model(seed=0, recorder=None, lr=0.05):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,))] + ([recorder] if recorder is not None else [])
    layers += [keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(10)]
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.SGD(lr), LOSS, metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def data(digits_flat):
    (x, y), _ = digits_flat
    return x[:240], y[:240]


@pytest.fixture(scope="module")
def trained(data):
    x, y = data
    model = _model()
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    return model


def test_fgsm_moves_every_coordinate_by_exactly_epsilon(trained, data):
    x, y = data
    epsilon = 0.01
    x_adv = fgsm(trained, x, y, epsilon, clip=None).numpy()
    xt = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_mean(_per_example_loss(trained, xt, y))
    sign = np.sign(tape.gradient(loss, xt).numpy())
    step = x_adv.astype(np.float64) - x.astype(np.float64)
    ulp = float(np.spacing(np.float32(np.abs(x).max() + epsilon)))
    np.testing.assert_allclose(step, epsilon * sign, rtol=0, atol=2 * ulp)
    assert np.abs(step).max() == pytest.approx(epsilon, abs=2 * ulp)
    assert np.count_nonzero(sign) > 0.9 * sign.size


def test_fgsm_raises_the_loss_on_average(trained, data):
    x, y = data
    clean = _per_example_loss(trained, x, y).numpy()
    adversarial = _per_example_loss(trained, fgsm(trained, x, y, 0.05, clip=None), y).numpy()
    assert adversarial.mean() > clean.mean()
    assert np.mean(adversarial > clean) > 0.9


def test_fgsm_clipping(trained, data):
    x, y = data
    batch = fgsm(trained, x, y, 0.2, clip="batch").numpy()
    assert batch.min() >= x.min() and batch.max() <= x.max()
    box = fgsm(trained, x, y, 0.2, clip=(0.1, 0.9)).numpy()
    assert box.min() >= 0.1 and box.max() <= 0.9


@pytest.mark.parametrize("micro", [None, 8])
def test_first_ratio_of_each_batch_is_replaced(data, micro):
    x, y = data
    x, y = x[:32], y[:32]
    recorder = InputRecorder()
    model = _model(recorder=recorder)
    initial = keras.models.clone_model(model)
    initial.set_weights(model.get_weights())
    initial.compile(loss=LOSS)
    ratio, epsilon = 0.3, 0.05
    callbacks = [AdversarialAugmentation(epsilon, ratio, clip=None, stop_epoch=None, stop_at_max_batch=False)]
    if micro is None:
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
        parts = [(x, y)]
    else:
        callbacks.insert(0, FixedBatchSize(32, max_physical_batch_size=micro))
        model.fit(adaptive_dataset(x, y, shuffle=False), epochs=1, verbose=0, callbacks=callbacks)
        parts = [(x[i : i + micro], y[i : i + micro]) for i in range(0, 32, micro)]
    assert len(recorder.batches) == len(parts)
    for seen, (px, py) in zip(recorder.batches, parts):
        k = math.floor(ratio * len(px))  # replaced, not appended
        assert seen.shape == px.shape
        expected = fgsm(initial, px[:k], py[:k], epsilon, clip=None).numpy()
        np.testing.assert_allclose(seen[:k], expected, atol=1e-6)
        np.testing.assert_array_equal(seen[k:], px[k:])
    assert "train_step" not in model.__dict__


def _ratios(data, **kwargs):
    x, y = data
    model = _model()
    callbacks = [
        AdaptiveBatchSize((x[:60], y[:60]), 16, 64, patience=1, max_iter=3),
        AdversarialAugmentation(0.01, 0.4, **kwargs),
    ]
    history = model.fit(adaptive_dataset(x, y), epochs=4, verbose=0, callbacks=callbacks)
    assert history.history["batch_size"] == [16.0, 32.0, 64.0, 64.0]
    return history.history["adversarial/ratio"]


def test_ratio_halves_with_each_doubling_and_stops_at_the_cap(data):
    np.testing.assert_allclose(_ratios(data, stop_epoch=None), [0.4, 0.2, 0.0, 0.0])


def test_ratio_waits_for_the_first_increase_and_stops_at_an_epoch(data):
    np.testing.assert_allclose(_ratios(data, start="after_increase", stop_epoch=None), [0.0, 0.2, 0.0, 0.0])
    np.testing.assert_allclose(_ratios(data, stop_epoch=1, stop_at_max_batch=False), [0.4, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(_ratios(data, stop_epoch="half", stop_at_max_batch=False), [0.4, 0.2, 0.0, 0.0])


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"epsilon": -0.1}, ValueError, "epsilon=-0.1"),
        ({"epsilon": "big"}, TypeError, "epsilon='big'"),
        ({"ratio": 1.5}, ValueError, "ratio=1.5"),
        ({"ratio": -0.1}, ValueError, "ratio=-0.1"),
        ({"start": "later"}, ValueError, "start='later'"),
        ({"stop_epoch": -1}, ValueError, "stop_epoch=-1"),
        ({"clip": (1.0, 0.0)}, ValueError, "clip="),
    ],
)
def test_bad_arguments_are_named(kwargs, error, words):
    with pytest.raises(error, match=words):
        AdversarialAugmentation(**kwargs)


def test_bad_fgsm_input(trained, data):
    x, y = data
    with pytest.raises(ValueError, match="y=None"):
        fgsm(trained, x, None, 0.1)
    with pytest.raises(ValueError, match="epsilon=-1"):
        fgsm(trained, x, y, -1)


def test_uncompiled_model_is_refused_and_left_alone():
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="not compiled"):
        AdversarialAugmentation().set_model(model)
    assert "train_step" not in model.__dict__


def test_evaluate_with_the_callback_then_a_plain_fit_is_plain(data):
    """Issue 9, bug 2: the FGSM step installed by evaluate's set_model must not reach a later fit."""
    x, y = data
    x, y = x[:32], y[:32]
    recorder = InputRecorder()
    model, twin = _model(recorder=recorder), _model()
    twin.set_weights(model.get_weights())
    for _ in range(2):
        model.evaluate(x, y, verbose=0, callbacks=[AdversarialAugmentation(0.1, 0.5, clip=None, stop_epoch=None)])
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    twin.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_array_equal(recorder.batches[0], x)  # the step saw the clean batch
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)
