"""Step transforms under XLA (`jit_compile=True`, which Keras picks by default on a GPU): issue 9, bug 9."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.callbacks import AdaptiveBatchSize, AdversarialAugmentation, FixedBatchSize
from keras_hessian.data import adaptive_dataset

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model(jit_compile, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.3), LOSS, metrics=["accuracy"], jit_compile=jit_compile)
    return model


def _data(n=32, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def _twins():
    xla, plain = _model(True), _model(False)
    plain.set_weights(xla.get_weights())
    return xla, plain


def _assert_same_weights(a, b):
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("clip", [None, "batch"])
def test_fgsm_augmentation_runs_under_xla_like_without(clip):
    x, y = _data()
    xla, plain = _twins()
    histories = []
    for model in (xla, plain):
        callback = AdversarialAugmentation(0.1, 0.3, clip=clip, stop_epoch=None, stop_at_max_batch=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback: the transform itself compiles
            histories.append(model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[callback]))
    assert xla.jit_compile is True
    _assert_same_weights(xla, plain)
    np.testing.assert_allclose(histories[0].history["loss"], histories[1].history["loss"], rtol=1e-5)


def test_accumulation_under_xla_warns_and_gives_the_same_update():
    x, y = _data()
    xla, plain = _twins()
    with pytest.warns(UserWarning, match="FixedBatchSize.*jit_compile"):
        xla.fit(adaptive_dataset(x, y, shuffle=False), epochs=2, verbose=0,
                callbacks=[FixedBatchSize(32, max_physical_batch_size=8)])
    plain.fit(adaptive_dataset(x, y, shuffle=False), epochs=2, verbose=0,
              callbacks=[FixedBatchSize(32, max_physical_batch_size=8)])
    assert xla.jit_compile is True  # restored after the fit
    _assert_same_weights(xla, plain)


def test_adaptive_batch_check_still_refuses_other_pipelines_under_xla():
    x, y = _data(64)
    model = _model(True)
    model.fit(x[:16], y[:16], epochs=1, verbose=0)
    before = model.get_weights()
    unknown = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True).batch(16)
    with pytest.warns(UserWarning, match="AdaptiveBatchSize"), pytest.raises(
        tf.errors.InvalidArgumentError, match="adaptive_dataset"
    ):
        model.fit(unknown, epochs=1, verbose=0, callbacks=[AdaptiveBatchSize((x[:50], y[:50]), 16, 64)])
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.jit_compile is True  # restored although the fit raised
    assert "train_step" not in model.__dict__
