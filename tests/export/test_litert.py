"""evaluate_tflite / parity_report against Keras."""

from __future__ import annotations

import os

import numpy as np
import pytest

from keras_hessian.export import (
    evaluate_tflite,
    parity_report,
    to_tflite,
)
from tests.export._helpers import (
    _keras_outputs,
)


def test_evaluate_tflite_accuracy_and_size(float_model, digits, tmp_path):
    _, (x, y) = digits
    path = to_tflite(float_model, tmp_path / "model.tflite", mode="float32")
    result = evaluate_tflite(path, (x, y), latency_examples=20)
    keras_accuracy = float(np.mean(np.argmax(_keras_outputs(float_model, x), -1) == y))
    assert result["accuracy"] == pytest.approx(keras_accuracy)
    assert result["file_bytes"] == os.path.getsize(path)
    assert result["num_examples"] == len(x)
    assert result["latency_ms"] > 0


def test_evaluate_and_parity_check_their_data(float_model, digits, tmp_path):
    _, (x, y) = digits
    path = to_tflite(float_model, tmp_path / "m.tflite", mode="float32")
    with pytest.raises(ValueError, match=r"data must be a tuple \(x, y\)"):
        evaluate_tflite(path, x)
    with pytest.raises(ValueError, match=r"shape \(batch, 8, 8, 1\).*\(450, 64\)"):
        parity_report(float_model, path, x.reshape(len(x), 64))
    with pytest.raises(ValueError, match="existing .tflite file"):
        evaluate_tflite(tmp_path / "missing.tflite", (x, y))


def test_a_single_output_unit_has_no_top1_to_report(tmp_path):
    # argmax over one unit is always 0: accuracy and agreement would be meaningless, so they are refused.
    import keras
    import numpy as np
    import pytest

    from keras_hessian.export import evaluate_tflite, parity_report, to_tflite

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    path = to_tflite(model, tmp_path / "sigmoid.tflite", mode="float32")
    x, y = np.random.default_rng(0).normal(size=(8, 4)).astype("float32"), np.zeros(8, int)
    for report in (evaluate_tflite, lambda p, d: parity_report(model, p, d)):
        with pytest.raises(ValueError, match="one score per class"):
            report(path, (x, y))
