"""Models quantized by Keras' own `model.quantize("int8" | "int4")` export with int8 / int4 weights."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from keras_hessian.export import parity_report, to_tflite
from keras_hessian.export.keras_quantized import keras_dense_kernel
from tests.export._helpers import LOSS
from tests.export.test_per_layer_storage import INT4, INT8, dequantized, stored_tensors


@pytest.fixture(scope="module")
def float_mlp(digits):
    (x, y), _ = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", name="hidden_1"),
            keras.layers.Dense(64, activation="relu", name="hidden_2"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    model.compile(keras.optimizers.Adam(3e-3), LOSS, metrics=["accuracy"])
    model.fit(x, y, epochs=10, batch_size=64, verbose=0)
    return model


def keras_quantized(model, mode, config=None):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    with pytest.warns(UserWarning, match="quantize"):  # Keras warns about its layers without one
        copy.quantize(mode, config=config)
    return copy


@pytest.mark.parametrize("mode, stored_type", [("int8", INT8), ("int4", INT4)])
def test_keras_quantized_model_exports_at_its_width(float_mlp, digits, tmp_path, mode, stored_type):
    _, (x, y) = digits
    model = keras_quantized(float_mlp, mode)
    path = to_tflite(model, tmp_path / f"{mode}.tflite")
    tensors = stored_tensors(path)
    for shape in ((128, 64), (64, 128), (10, 64)):
        assert [entry[0] for entry in tensors[shape]] == [stored_type], (shape, tensors[shape])
    report = parity_report(model, path, (x, y))
    assert report["top1_agreement"] >= 0.99, report
    float_path = to_tflite(float_mlp, tmp_path / "float.tflite")
    ratio = os.path.getsize(path) / os.path.getsize(float_path)
    assert ratio < {"int8": 0.35, "int4": 0.22}[mode], ratio


def test_per_channel_int8_and_int4_are_stored_exactly(float_mlp, tmp_path):
    # Independent truth: Keras' rule written out, W = round(w * 127 / max|w|) * max|w| / 127.
    for mode, levels, config in (
        ("int8", 127, None),
        ("int4", 7, keras.quantizers.Int4QuantizationConfig(block_size=-1)),
    ):
        model = keras_quantized(float_mlp, mode, config)
        path = to_tflite(model, tmp_path / f"{mode}.tflite")
        (entry,) = stored_tensors(path)[(64, 128)]
        w = float_mlp.get_layer("hidden_2").kernel.numpy().astype(np.float64)
        step = np.abs(w).max(axis=0) / levels
        np.testing.assert_allclose(dequantized(entry[1], entry[2]), (np.round(w / step) * step).T, rtol=1e-5, atol=1e-6)


def test_other_keras_quantized_layers_are_named(tmp_path):
    model = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(50, 8, name="tokens")])
    with pytest.warns(UserWarning):
        model.quantize("int8")
    with pytest.raises(ValueError, match="tokens.*Embedding.*int8"):
        to_tflite(model, tmp_path / "e.tflite")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="tokens"):
        keras_dense_kernel(model.get_layer("tokens"))
