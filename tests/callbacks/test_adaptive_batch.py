"""AdaptiveBatchSize: schedule seen by the step, no retrace, exact LR rule, trigger, bad input."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.callbacks import AdaptiveBatchSize
from keras_hessian.data import adaptive_dataset, batch_size_control
from tests.conftest import by_magnitude, exact_hessian

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class Recorder(keras.layers.Layer):
    """Identity that records the batch size of every training forward pass, and its traces."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sizes: list[int] = []
        self.traces = 0

    def call(self, x, training=None):
        self.traces += 1  # Python: runs only while a function is traced
        if training:
            tf.py_function(lambda s: self.sizes.append(int(s)), [tf.shape(x)[0]], [])
        return x


class EpochMarks(keras.callbacks.Callback):
    def __init__(self, recorder):
        super().__init__()
        self.recorder = recorder
        self.marks, self.traces = [0], []

    def on_epoch_end(self, epoch, logs=None):
        self.marks.append(len(self.recorder.sizes))
        self.traces.append(self.recorder.traces)

    def per_epoch(self):
        s = self.recorder.sizes
        return [s[a:b] for a, b in zip(self.marks, self.marks[1:])]


def _model(lr=0.05, seed=0, recorder=None):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,))]
    if recorder is not None:
        layers.append(recorder)
    layers += [keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(10)]
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.SGD(lr, momentum=0.9), LOSS, metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def data(digits_flat):
    (x, y), _ = digits_flat
    return x[:400], y[:400]


def _expected_batches(n, size):
    return [size] * (n // size) + ([n % size] if n % size else [])


def test_step_sees_the_schedule_without_retracing(data):
    x, y = data
    recorder = Recorder()
    model = _model(recorder=recorder)
    marks = EpochMarks(recorder)
    callback = AdaptiveBatchSize((x[:100], y[:100]), 16, 64, patience=1, max_iter=5)
    history = model.fit(adaptive_dataset(x, y), epochs=4, verbose=0, callbacks=[callback, marks])
    schedule = [16, 32, 64, 64]  # patience=1: grow every epoch, capped at 64
    assert history.history["batch_size"] == [float(b) for b in schedule]
    for seen, size in zip(marks.per_epoch(), schedule):
        assert seen == _expected_batches(len(x), size)
    assert marks.traces[-1] == marks.traces[0]  # no retrace after the first epoch
    assert int(model.optimizer.iterations.numpy()) == sum(len(s) for s in marks.per_epoch())


def test_accumulation_bounds_the_physical_batch(data):
    x, y = data
    recorder = Recorder()
    model = _model(recorder=recorder)
    marks = EpochMarks(recorder)
    callback = AdaptiveBatchSize(
        (x[:100], y[:100]), 32, 128, patience=1, max_iter=5, max_physical_batch_size=32
    )
    model.fit(adaptive_dataset(x, y), epochs=3, verbose=0, callbacks=[callback, marks])
    per_epoch = marks.per_epoch()
    # Effective batches 32, 64, 128: the forward passes never exceed 32 examples ...
    assert max(recorder.sizes) == 32
    assert [sum(s) for s in per_epoch] == [len(x)] * 3
    # ... and there is one SGD update per effective batch.
    updates = sum(math.ceil(len(x) / b) for b in (32, 64, 128))
    assert int(model.optimizer.iterations.numpy()) == updates


@pytest.mark.parametrize("rule, scale", [("linear", lambda f: f), ("sqrt", math.sqrt), ("none", lambda f: 1.0)])
def test_learning_rate_rule_is_exact(data, rule, scale):
    x, y = data
    lr = 0.01
    model = _model(lr=lr)
    callback = AdaptiveBatchSize((x[:100], y[:100]), 16, 48, patience=1, lr_scaling=rule, max_iter=5)
    history = model.fit(adaptive_dataset(x, y), epochs=4, verbose=0, callbacks=[callback])
    # 16 -> 32 (x2) -> 48 (x1.5, the cap) -> 48
    assert history.history["batch_size"] == [16.0, 32.0, 48.0, 48.0]
    expected = [lr, lr * scale(2.0), lr * scale(2.0) * scale(1.5), lr * scale(2.0) * scale(1.5)]
    np.testing.assert_allclose(history.history["learning_rate"], expected, rtol=1e-6)


def test_nothing_changes_when_the_eigenvalue_does_not_fall_enough(data):
    """No growth without a large enough drop; the logged eigenvalue is the exact top one."""
    x, y = data
    hx, hy = x[:120], y[:120]
    model = _model(lr=0.02)
    exact = []

    class ExactTop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            exact.append(by_magnitude(np.linalg.eigvalsh(exact_hessian(model, hx, hy)))[0])

    callback = AdaptiveBatchSize(
        (hx, hy), 16, 256, drop_ratio=1e6, patience=None, method="arpack", max_iter=100, tol=1e-8
    )
    history = model.fit(adaptive_dataset(x, y), epochs=3, verbose=0, callbacks=[callback, ExactTop()])
    assert history.history["batch_size"] == [16.0] * 3
    np.testing.assert_allclose(history.history["learning_rate"], [0.02] * 3, rtol=1e-6)
    np.testing.assert_allclose(history.history["hessian/top_eigenvalue"], exact, rtol=1e-4)
    assert callback.reference == pytest.approx(exact[0], rel=1e-4)  # first measurement


def test_trigger_follows_the_measured_eigenvalues(data):
    x, y = data
    model = _model(lr=0.2)
    callback = AdaptiveBatchSize((x[:120], y[:120]), 8, 1024, drop_ratio=1.05, patience=None, max_iter=20, tol=1e-4)
    history = model.fit(adaptive_dataset(x, y), epochs=5, verbose=0, callbacks=[callback])
    eigen = history.history["hessian/top_eigenvalue"]
    batch, reference, expected = 8, None, []
    for value in eigen:  # the published rule, written out
        expected.append(batch)
        if reference is None:
            reference = value
        elif value <= reference / 1.05:
            batch, reference = batch * 2, value
    assert history.history["batch_size"] == [float(b) for b in expected]
    assert 8 < expected[-1] < 8 * 2**4  # the run saw both an increase and a refusal


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"drop_ratio": 1.0}, ValueError, "drop_ratio=1.0"),
        ({"drop_ratio": 0.5}, ValueError, "drop_ratio=0.5"),
        ({"initial_batch_size": 256, "max_batch_size": 128}, ValueError, "max_batch_size=128"),
        ({"factor": 1}, ValueError, "factor=1"),
        ({"lr_scaling": "cube"}, ValueError, "lr_scaling='cube'"),
        ({"check_every": 0}, ValueError, "check_every=0"),
        ({"max_physical_batch_size": 0}, ValueError, "max_physical_batch_size=0"),
        ({"method": "jacobi"}, ValueError, "method='jacobi'"),
        ({"hvp_method": "reverse"}, ValueError, "hvp_method='reverse'"),
    ],
)
def test_bad_arguments_are_named(data, kwargs, error, words):
    x, y = data
    with pytest.raises(error, match=words):
        AdaptiveBatchSize((x[:10], y[:10]), **kwargs)


def test_hessian_data_without_labels_is_refused(data):
    x, _ = data
    with pytest.raises(ValueError, match="labels"):
        AdaptiveBatchSize((x[:10],))
    with pytest.raises(ValueError, match="y=None"):
        AdaptiveBatchSize((x[:10], None))
    with pytest.raises(ValueError, match="labels"):
        AdaptiveBatchSize(tf.data.Dataset.from_tensor_slices(x[:10]).batch(5))


def _snapshot(model):
    return [w.copy() for w in model.get_weights()], float(model.optimizer.learning_rate.numpy())


def _unchanged(model, snapshot):
    weights, lr = snapshot
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert float(model.optimizer.learning_rate.numpy()) == lr
    assert "train_step" not in model.__dict__


def test_plain_arrays_get_a_clear_error_and_nothing_changes(data):
    x, y = data
    model = _model()
    model.fit(x[:16], y[:16], epochs=1, verbose=0)  # builds the optimizer
    before = _snapshot(model)
    with pytest.raises(ValueError, match="adaptive_dataset"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[AdaptiveBatchSize((x[:50], y[:50]), 16, 64)])
    _unchanged(model, before)


def test_other_pipelines_fail_before_any_update(data):
    x, y = data
    model = _model()
    model.fit(x[:16], y[:16], epochs=1, verbose=0)
    before = _snapshot(model)
    unknown = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True).batch(16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="adaptive_dataset"):
        model.fit(unknown, epochs=1, verbose=0, callbacks=[AdaptiveBatchSize((x[:50], y[:50]), 16, 64)])
    weights, _lr = before
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    history = model.fit(x[:32], y[:32], batch_size=16, epochs=1, verbose=0)  # plain fit works again
    assert "train_step" not in model.__dict__ and len(history.history["loss"]) == 1


def test_learning_rate_schedule_is_refused(data):
    x, y = data
    model = _model()
    model.compile(keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)), LOSS)
    with pytest.raises(TypeError, match="LearningRateSchedule"):
        model.fit(adaptive_dataset(x, y), epochs=1, verbose=0, callbacks=[AdaptiveBatchSize((x[:50], y[:50]), 16, 64)])
    assert "train_step" not in model.__dict__


def test_uncompiled_model_is_refused(data):
    x, y = data
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="not compiled"):
        AdaptiveBatchSize((x[:50], y[:50])).set_model(model)
    assert "train_step" not in model.__dict__


def test_dict_inputs_are_accepted_and_measured_exactly():
    rng = np.random.default_rng(0)
    xa = rng.normal(size=(64, 3)).astype("float32")
    xb = rng.normal(size=(64, 2)).astype("float32")
    y = rng.integers(0, 4, 64)
    keras.utils.set_random_seed(0)
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(4)(keras.layers.Concatenate()([a, b])))
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    callback = AdaptiveBatchSize(({"a": xa, "b": xb}, y), 16, 64, method="lanczos", max_iter=40, tol=1e-8)
    model.fit(adaptive_dataset({"a": xa, "b": xb}, y), epochs=1, verbose=0, callbacks=[callback])
    # Measured at the end of the only epoch: the weights are the final ones.
    expected = by_magnitude(np.linalg.eigvalsh(exact_hessian(model, {"a": xa, "b": xb}, y)))[0]
    assert callback.eigenvalue == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match=r"\[10, 64\]"):
        AdaptiveBatchSize(({"a": xa, "b": xb[:10]}, y))


class _RaiseAtEpochEnd(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("callback failed")


def test_a_fit_that_raises_does_not_keep_the_batch_size(data):
    x, y = data
    recorder = Recorder()
    model = _model(recorder=recorder)
    with pytest.raises(RuntimeError, match="callback failed"):
        model.fit(
            adaptive_dataset(x, y), epochs=2, verbose=0,
            callbacks=[AdaptiveBatchSize((x[:50], y[:50]), 128, 256, max_iter=3), _RaiseAtEpochEnd()],
        )
    assert recorder.sizes == _expected_batches(len(x), 128)  # the control was active in that fit
    marks = EpochMarks(recorder)
    marks.marks = [len(recorder.sizes)]
    model.fit(adaptive_dataset(x, y, batch_size=16), epochs=2, verbose=0, callbacks=[marks])
    assert marks.per_epoch() == [_expected_batches(len(x), 16)] * 2
    assert "train_step" not in model.__dict__


def test_bad_hessian_data_fails_before_any_step(data):
    x, y = data
    model = _model()
    model.fit(x[:16], y[:16], epochs=1, verbose=0)  # builds the optimizer
    before = _snapshot(model)
    iterations = int(model.optimizer.iterations.numpy())
    bad_labels = np.zeros((50, 7), "float32")  # 7 columns for a 10-class output
    with pytest.raises(ValueError, match="labels"):
        model.fit(adaptive_dataset(x, y), epochs=1, verbose=0, callbacks=[AdaptiveBatchSize((x[:50], bad_labels), 16, 64)])
    _unchanged(model, before)
    assert int(model.optimizer.iterations.numpy()) == iterations
    assert not bool(batch_size_control().controlled.numpy())  # adaptive datasets use their own size


class _Scripted(AdaptiveBatchSize):
    """Measures a given sequence instead of the Hessian, to test the decision rule alone."""

    def __init__(self, values, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.values = list(values)

    def measure(self):
        return float(self.values[len(self.history)])


def test_the_rule_compares_magnitudes_of_negative_eigenvalues(data):
    """Issue 9, bug 7: a growing |lambda| with lambda < 0 is no fall; a shrinking one is."""
    x, y = data
    values = [-10.0, -30.0, -40.0, -4.0, -4.0]
    callback = _Scripted(values, (x[:50], y[:50]), 16, 256, patience=None)
    history = _model().fit(adaptive_dataset(x, y), epochs=5, verbose=0, callbacks=[callback])
    batch, reference, expected = 16, None, []
    for value in values:  # the authors' rule on the top eigenvalue by magnitude, written out
        expected.append(batch)
        if reference is None:
            reference = abs(value)
        elif abs(value) <= reference / 2.0:
            batch, reference = batch * 2, abs(value)
    assert expected == [16, 16, 16, 16, 32]
    assert history.history["batch_size"] == [float(b) for b in expected]
    assert history.history["hessian/top_eigenvalue"] == values  # logged with its sign


def test_a_reused_callback_does_not_compound_the_learning_rate(data):
    """Issue 9, bug 7: the second fit with the same callback has the first fit's schedule."""
    x, y = data
    lr = 0.01
    model = _model(lr=lr)
    callback = AdaptiveBatchSize((x[:50], y[:50]), 16, 64, patience=1, max_iter=3)
    expected = [lr, 2 * lr, 4 * lr]  # linear rule: 16 -> 32 -> 64
    for _ in range(2):
        history = model.fit(adaptive_dataset(x, y), epochs=3, verbose=0, callbacks=[callback])
        np.testing.assert_allclose(history.history["learning_rate"], expected, rtol=1e-6)
