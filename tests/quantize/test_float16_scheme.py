"""The `float16` scheme: kernels rounded to IEEE half in the forward pass, stored as FLOAT16 tensors."""

from __future__ import annotations

import keras
import numpy as np

from keras_hessian.export import predict_tflite, to_tflite
from keras_hessian.layers import Float16Conv2D, Float16Dense
from keras_hessian.quantize import SCHEMES, quantization_summary, quantize_model

FLOAT16 = 1  # TFLite schema TensorType


def cnn(output_activation=None):
    keras.utils.set_random_seed(2)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation=output_activation, name="out"),
        ]
    )


def inputs(count=16):
    return np.random.default_rng(0).normal(size=(count, 8, 8, 1)).astype(np.float32)


def test_outputs_are_the_float_model_with_kernels_rounded_through_float16():
    model = cnn()
    quantized = quantize_model(model, "float16", skip_first_last=False)
    assert "float16" in SCHEMES
    assert [type(layer) for layer in quantized.layers if "norm" not in layer.name][:1] == [Float16Conv2D]
    assert type(quantized.get_layer("hidden")) is Float16Dense
    assert type(quantized.get_layer("norm")) is keras.layers.BatchNormalization
    # Independent truth: the float model whose kernels numpy rounded to half precision.
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    for name in ("conv", "hidden", "out"):
        kernel = model.get_layer(name).kernel.numpy()
        reference.get_layer(name).kernel.assign(kernel.astype(np.float16).astype(np.float32))
    x = inputs()
    np.testing.assert_allclose(quantized(x), reference(x), rtol=1e-6, atol=1e-6)
    assert not np.allclose(model(x), reference(x), rtol=0, atol=1e-7)  # the rounding is visible
    row = {r["name"]: r for r in quantization_summary(quantized)["layers"]}["hidden"]
    assert row["bits_per_weight"] == 16 and row["weight_bits"] == 16 * 288 * 32 + 32 * 32


def test_softmax_classifier_stays_float32_as_for_bfloat16():
    quantized = quantize_model(cnn("softmax"), "float16", skip_first_last=False)
    assert type(quantized.get_layer("out")) is keras.layers.Dense
    assert type(quantized.get_layer("hidden")) is Float16Dense


def test_saves_loads_and_exports_as_float16_tensors(tmp_path):
    from tensorflow.lite.tools import flatbuffer_utils

    quantized = quantize_model(cnn(), "float16", skip_first_last=False)
    x = inputs()
    quantized.save(tmp_path / "f16.keras")
    loaded = keras.models.load_model(tmp_path / "f16.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded(x), quantized(x))
    path = to_tflite(loaded, tmp_path / "f16.tflite")
    tensors = flatbuffer_utils.read_model(str(path)).subgraphs[0].tensors
    types = {tuple(int(d) for d in t.shape): int(t.type) for t in tensors if t.type == FLOAT16}
    assert set(types) == {(8, 3, 3, 1), (32, 288), (10, 32)}
    # float16 weights are dequantized exactly at load: LiteRT computes what Keras computes.
    np.testing.assert_allclose(predict_tflite(path, x), quantized(x), rtol=1e-5, atol=1e-5)
