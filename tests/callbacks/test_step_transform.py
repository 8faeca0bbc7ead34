"""The step-transform module: accumulation equals one big batch; the model's step comes back."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.callbacks import FixedBatchSize
from keras_hessian.callbacks.step_transform import StepTransform, StepTransformCallback
from keras_hessian.data import adaptive_dataset


def _model(seed=0, dropout=False):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((6,)), keras.layers.Dense(8, activation="tanh")]
    layers.append(keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L2(1e-3)))
    model = keras.Sequential(layers)
    model.compile(
        keras.optimizers.SGD(0.5),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _data(n, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = rng.integers(0, 3, n).astype("int32")
    w = rng.uniform(0.2, 2.0, n).astype("float32")
    return x, y, w


@pytest.mark.parametrize("micro, weighted", [(8, False), (11, True)])
def test_accumulation_equals_one_large_batch(micro, weighted):
    """k micro-batches (uneven when micro=11) give Keras' own update on the whole batch."""
    n = 32
    x, y, w = _data(n)
    w = w if weighted else None
    reference = _model()
    initial = [v.numpy() for v in reference.weights]
    # Independent truth: Keras' own train_step on the whole batch of 32.
    ref_logs = reference.fit(x, y, sample_weight=w, batch_size=n, epochs=1, shuffle=False, verbose=0)

    model = _model()
    for v, value in zip(model.weights, initial):
        v.assign(value)
    logs = model.fit(
        adaptive_dataset(x, y, w, shuffle=False),
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[FixedBatchSize(n, max_physical_batch_size=micro)],
    )
    assert int(model.optimizer.iterations.numpy()) == 1
    for got, want, start in zip(model.weights, reference.weights, initial):
        change_got, change_want = got.numpy() - start, want.numpy() - start
        np.testing.assert_allclose(change_got, change_want, rtol=1e-5, atol=1e-5 * np.abs(change_want).max())
    np.testing.assert_allclose(logs.history["loss"], ref_logs.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(logs.history["accuracy"], ref_logs.history["accuracy"], rtol=1e-6)


class _Probe(StepTransformCallback):
    """Counts (in the graph) the batches it transformed and adds `shift` to x."""

    def __init__(self, shift=0.0, order=None, name="probe"):
        super().__init__()
        self.count = tf.Variable(0, dtype=tf.int64)
        self.shift = shift
        self.order = order
        self.tag = name

    def step_transform(self):
        def transform(model, data):
            x, y, w = keras.utils.unpack_x_y_sample_weight(data)
            if self.order is not None:
                self.order.append(self.tag)  # Python: runs when the step is traced
            with tf.control_dependencies([self.count.assign_add(1)]):
                x = tf.identity(x) + self.shift
            return keras.utils.pack_x_y_sample_weight(x, y, w)

        return StepTransform(transform_batch=transform)


def test_transforms_compose_in_callback_order_and_the_step_comes_back():
    x, y, _ = _data(24)
    model = _model()
    order = []
    first, second = _Probe(order=order, name="first"), _Probe(order=order, name="second")
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[first, second])
    assert order and order == ["first", "second"] * (len(order) // 2)  # once per trace
    assert int(first.count.numpy()) == 6 and int(second.count.numpy()) == 6
    assert "train_step" not in model.__dict__ and model.train_function is None
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # a plain fit runs the model's own step
    assert int(first.count.numpy()) == 6


def test_transform_changes_what_is_trained_on():
    """A shift of x by 1 inside the step equals training on x + 1 (independent: plain fit)."""
    x, y, _ = _data(16)
    shifted, plain = _model(), _model()
    plain.set_weights(shifted.get_weights())
    shifted.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False, callbacks=[_Probe(shift=1.0)])
    plain.fit(x + 1.0, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(shifted.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


class _Boom(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("boom")


def test_a_fit_that_raises_leaves_no_transform_behind():
    x, y, _ = _data(16)
    model = _model()
    probe = _Probe()
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[probe, _Boom()])
    assert int(probe.count.numpy()) == 2
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(probe.count.numpy()) == 2  # the stale composed step did not run
    assert "train_step" not in model.__dict__


class OwnStepModel(keras.Sequential):
    def train_step(self, data):
        return super().train_step(data)


def test_accumulation_refuses_a_custom_train_step_and_changes_nothing():
    keras.utils.set_random_seed(0)
    model = OwnStepModel([keras.Input((6,)), keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = model.get_weights()
    x, y, _ = _data(16)
    with pytest.raises(TypeError, match="overrides train_step"):
        model.fit(adaptive_dataset(x, y), epochs=1, verbose=0, callbacks=[FixedBatchSize(16, max_physical_batch_size=4)])
    assert "train_step" not in model.__dict__
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Without accumulation the custom step is kept and wrapped.
    model.fit(adaptive_dataset(x, y), epochs=1, verbose=0, callbacks=[FixedBatchSize(16)])


def test_uncompiled_model_is_refused():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not compiled"):
        FixedBatchSize(8).set_model(model)
    assert "train_step" not in model.__dict__


def test_evaluate_and_predict_leave_no_transform_behind():
    """Issue 9, bug 2: Keras calls set_model in evaluate/predict too; a plain fit afterwards is plain."""
    x, y, _ = _data(16)
    model, twin = _model(), _model()
    twin.set_weights(model.get_weights())
    stale = [_Probe(shift=1.0) for _ in range(3)]
    model.evaluate(x, y, verbose=0, callbacks=[stale[0]])
    model.evaluate(x, y, verbose=0, callbacks=[stale[1]])
    model.predict(x, verbose=0, callbacks=[stale[2]])
    assert "train_step" not in model.__dict__
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    twin.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)  # independent: never saw a callback
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)
    # A fit with one transform after those evaluate calls runs that one only (no pile-up) ...
    probe = _Probe(shift=1.0)
    model.evaluate(x, y, verbose=0, callbacks=[_Probe(shift=1.0)])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[probe])
    assert int(probe.count.numpy()) == 2
    assert all(int(p.count.numpy()) == 0 for p in stale)


def test_validation_inside_fit_keeps_the_transform():
    x, y, _ = _data(16)
    model = _model()
    probe = _Probe()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x, y), callbacks=[probe])
    assert int(probe.count.numpy()) == 4  # 2 batches x 2 epochs: validation did not drop it
    assert "train_step" not in model.__dict__
