"""HessianSpectrum inside model.fit: values in logs, training untouched."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest

from keras_hessian.callbacks import HessianSpectrum
from tests.conftest import by_magnitude, exact_hessian


def make_model():
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(10)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def fit(x, y, callbacks, epochs=3, seed=11):
    keras.utils.set_random_seed(seed)
    model = make_model()
    history = model.fit(x, y, batch_size=64, epochs=epochs, shuffle=True, verbose=0, callbacks=callbacks)
    return model, history


@pytest.fixture(scope="module")
def digits_small(digits_flat):
    (x, y), (x_test, y_test) = digits_flat
    return x[:600], y[:600], x_test[:200], y_test[:200]


def test_values_in_history_csv_and_training_unchanged(tmp_path, digits_small):
    x, y, x_h, y_h = digits_small
    plain, plain_history = fit(x, y, [])
    spectrum = HessianSpectrum((x_h, y_h), top_k=2, trace=True, seed=0)
    csv_path = tmp_path / "log.csv"
    measured, history = fit(x, y, [spectrum, keras.callbacks.CSVLogger(str(csv_path))])

    for key in ("hessian/top_eigenvalue", "hessian/eigenvalue_2", "hessian/trace"):
        assert len(history.history[key]) == 3 and np.all(np.isfinite(history.history[key]))
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and "hessian/top_eigenvalue" in rows[0]

    # The last measurement is the spectrum of the final model: check it against the exact one.
    exact = by_magnitude(np.linalg.eigvalsh(exact_hessian(measured, x_h, y_h)))[:2]
    np.testing.assert_allclose([history.history["hessian/top_eigenvalue"][-1], history.history["hessian/eigenvalue_2"][-1]], exact, rtol=1e-3)

    # Weights, optimizer state and metrics are exactly those of the run without the callback.
    for a, b in zip(plain.weights, measured.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(plain.optimizer.variables, measured.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert plain_history.history["loss"] == history.history["loss"]
    assert plain_history.history["accuracy"] == history.history["accuracy"]


def test_every_n_epochs_logs_nan_between(digits_small):
    x, y, x_h, y_h = digits_small
    spectrum = HessianSpectrum((x_h, y_h), every_n_epochs=2, seed=0)
    _, history = fit(x, y, [spectrum], epochs=3)
    values = history.history["hessian/top_eigenvalue"]
    assert np.isfinite(values[0]) and np.isnan(values[1]) and np.isfinite(values[2])


@pytest.mark.parametrize(
    "kwargs, message",
    [({"every_n_epochs": 0}, "every_n_epochs"), ({"top_k": 0}, "top_k"), ({"tol": -1.0}, "tol")],
)
def test_bad_arguments(digits_small, kwargs, message):
    x, y, _, _ = digits_small
    with pytest.raises(ValueError, match=message):
        HessianSpectrum((x, y), **kwargs)


def test_top_k_above_parameter_count_fails_before_training(digits_small):
    x, y, x_h, y_h = digits_small
    keras.utils.set_random_seed(0)
    model = make_model()
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match="top_k must not exceed"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[HessianSpectrum((x_h, y_h), top_k=10_000)])
    for b, w in zip(before, model.weights):
        np.testing.assert_array_equal(b, w.numpy())
