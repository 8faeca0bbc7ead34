"""Bug 4 of issue 9: labels shaped (n, 1) are class indices, not one-hot rows."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_hessian.data import load_digits
from keras_hessian.export import evaluate_tflite, parity_report, to_tflite


@pytest.fixture(scope="module")
def small_classifier():
    (x, y), (x_test, y_test) = load_digits()
    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    return model, x_test, y_test


def test_column_labels_score_like_flat_labels(small_classifier, tmp_path):
    model, x, y = small_classifier
    path = to_tflite(model, tmp_path / "m.tflite", mode="float32")
    # Independent truth: numpy argmax of the Keras logits against the flat labels.
    expected = float(np.mean(np.argmax(keras.ops.convert_to_numpy(model(x)), axis=-1) == y))
    assert expected > 0.5  # far from the share of class 0, so the bug cannot hide
    column = y.reshape(-1, 1)
    assert evaluate_tflite(path, (x, column), latency_examples=2)["accuracy"] == pytest.approx(expected)
    report = parity_report(model, path, (x, column))
    assert report["keras_accuracy"] == pytest.approx(expected)
    assert report["litert_accuracy"] == pytest.approx(expected)


def test_one_hot_labels_still_score_as_their_argmax(small_classifier, tmp_path):
    model, x, y = small_classifier
    path = to_tflite(model, tmp_path / "m.tflite", mode="float32")
    expected = float(np.mean(np.argmax(keras.ops.convert_to_numpy(model(x)), axis=-1) == y))
    one_hot = np.eye(10, dtype=np.float32)[y]
    assert parity_report(model, path, (x, one_hot))["keras_accuracy"] == pytest.approx(expected)
