"""Weight storage of dynamic_int8 files: int8 exactly, binary kernels in int2/int4, float layers kept."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from keras_hessian import layers as kh_layers
from keras_hessian.export import (
    narrow_integer_weights,
    parity_report,
    predict_tflite,
    to_tflite,
)
from tests.export._helpers import (
    _inputs_for,
    _int8_weights,
)


def test_dynamic_int8_stores_plus_minus_alpha_kernels_exactly(tmp_path):
    # A binary kernel +-alpha_j per output channel j is exactly +-127 * (alpha_j / 127).
    rng = np.random.default_rng(0)
    alpha = rng.uniform(0.01, 0.5, size=64).astype(np.float32)
    kernel = (np.where(rng.random((512, 64)) < 0.5, -1.0, 1.0) * alpha).astype(np.float32)
    model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(64, use_bias=False)])
    model.layers[0].kernel.assign(kernel)
    float_path = to_tflite(model, tmp_path / "f.tflite", mode="float32")
    path = to_tflite(model, tmp_path / "d.tflite", mode="dynamic_int8", narrow_weights=False)
    (values, scales, dequantized), = _int8_weights(path).values()
    assert set(np.unique(values)) == {-127, 127}
    np.testing.assert_allclose(scales * 127, alpha, rtol=1e-6)
    np.testing.assert_allclose(dequantized.T, kernel, rtol=1e-6)
    assert os.path.getsize(path) <= 0.3 * os.path.getsize(float_path)


def test_binary_kernels_are_stored_in_two_bits_without_error(tmp_path):
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [keras.Input((256,)), kh_layers.BinaryDense(128, per_channel_scale=True)]
    )
    x = _inputs_for((256,))
    float_path = to_tflite(model, tmp_path / "f.tflite", mode="float32")
    int8_path = to_tflite(model, tmp_path / "i8.tflite", mode="dynamic_int8", narrow_weights=False)
    int2_path = to_tflite(model, tmp_path / "i2.tflite", mode="dynamic_int8")
    stored = flatbuffer_utils.read_model(str(int2_path)).subgraphs[0].tensors
    assert schema.TensorType.INT2 in {tensor.type for tensor in stored}
    # The int2 file computes what the int8 file computes (same hybrid kernels).
    np.testing.assert_allclose(predict_tflite(int2_path, x), predict_tflite(int8_path, x), atol=1e-5)
    assert os.path.getsize(int2_path) <= 0.1 * os.path.getsize(float_path)
    assert os.path.getsize(int2_path) < 0.5 * os.path.getsize(int8_path)


def test_narrowing_leaves_general_int8_weights_alone(float_model, tmp_path):
    path = to_tflite(float_model, tmp_path / "d.tflite", mode="dynamic_int8", narrow_weights=False)
    content = path.read_bytes()
    assert narrow_integer_weights(content) == content


def test_binary_convolution_kernels_are_stored_in_four_bits(tmp_path):
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    keras.utils.set_random_seed(6)
    model = keras.Sequential(
        [keras.Input((8, 8, 16)), kh_layers.BinaryConv2D(32, 3, per_channel_scale=True)]
    )
    x = _inputs_for((8, 8, 16), count=8)
    int8_path = to_tflite(model, tmp_path / "i8.tflite", mode="dynamic_int8", narrow_weights=False)
    int4_path = to_tflite(model, tmp_path / "i4.tflite", mode="dynamic_int8")
    stored = flatbuffer_utils.read_model(str(int4_path)).subgraphs[0].tensors
    assert schema.TensorType.INT4 in {tensor.type for tensor in stored}
    np.testing.assert_allclose(predict_tflite(int4_path, x), predict_tflite(int8_path, x), atol=1e-5)
    assert os.path.getsize(int4_path) < os.path.getsize(int8_path) - 2000


def test_auto_mode_keeps_float_layers_in_float32(tmp_path):
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu", name="float_first"),
            kh_layers.BinaryDense(128, per_channel_scale=True, name="binary"),
            keras.layers.Dense(16, name="float_last"),
        ]
    )
    first = model.get_layer("float_first").kernel.numpy()
    last = model.get_layer("float_last").kernel.numpy()

    def stored(path):
        tensors = flatbuffer_utils.read_model(str(path)).subgraphs[0]
        found = {}
        for tensor in tensors.tensors:
            found.setdefault(tuple(tensor.shape), []).append(tensor.type)
        return found

    auto = stored(to_tflite(model, tmp_path / "auto.tflite"))
    assert schema.TensorType.FLOAT32 in auto[first.T.shape]  # 8,192 weights, kept float
    assert schema.TensorType.FLOAT32 in auto[last.T.shape]  # 2,048 weights, kept float
    assert schema.TensorType.INT2 in auto[(128, 128)]  # the binary kernel
    read = flatbuffer_utils.read_model(str(tmp_path / "auto.tflite"))
    kept = [
        np.frombuffer(bytes(bytearray(read.buffers[t.buffer].data)), "<f4").reshape(t.shape)
        for t in read.subgraphs[0].tensors
        if tuple(t.shape) == first.T.shape and t.type == schema.TensorType.FLOAT32
    ]
    np.testing.assert_array_equal(kept[0], first.T)
    explicit = stored(to_tflite(model, tmp_path / "all.tflite", mode="dynamic_int8"))
    assert schema.TensorType.INT8 in explicit[first.T.shape]
    x = _inputs_for((64,))
    path = tmp_path / "auto.tflite"
    # Float layers exact, binary layer exact in weights: only the hybrid kernel's on-the-fly
    # activation quantization of the binary layer's input remains.
    assert parity_report(model, path, x)["top1_agreement"] >= 0.95


def _stored_levels(path, shape):
    """Dequantized weights of the int2/int4 tensor of `shape` in a file (TFLite layout)."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils
    from tensorflow.lite.python import schema_py_generated as schema

    model = tfl_flatbuffer_utils.read_model(str(path))
    for tensor in model.subgraphs[0].tensors:
        if tuple(tensor.shape) != shape or tensor.type not in (schema.TensorType.INT2, schema.TensorType.INT4):
            continue
        bits = 2 if tensor.type == schema.TensorType.INT2 else 4
        packed = np.frombuffer(bytes(bytearray(model.buffers[tensor.buffer].data)), np.uint8)
        per_byte = 8 // bits
        values = np.stack([(packed >> (bits * i)) & ((1 << bits) - 1) for i in range(per_byte)], -1).reshape(-1)
        values = values[: int(np.prod(shape))].astype(np.int8)
        values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values).reshape(shape)
        scales = np.asarray(tensor.quantization.scale, np.float32).reshape([-1] + [1] * (len(shape) - 1))
        return values * scales
    raise AssertionError(f"no int2/int4 tensor of shape {shape}")


def test_narrow_storage_holds_exactly_the_trained_levels(tmp_path):
    # Independent truth: the kernel the Keras layer applies, +-alpha_c per output channel.
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((256,)), kh_layers.BinaryDense(128, per_channel_scale=True)])
    path = to_tflite(model, tmp_path / "i2.tflite", mode="dynamic_int8")
    kernel = np.asarray(model.layers[0].quantized_kernel())
    np.testing.assert_allclose(_stored_levels(path, (128, 256)), kernel.T, rtol=1e-6, atol=0)


def test_narrow_integer_weights_narrows_a_converter_int8_file(tmp_path):
    # A +-alpha_c kernel in plain Dense, int8 by the TFLite converter itself: +-127 per channel.
    rng = np.random.default_rng(0)
    alpha = rng.uniform(0.01, 0.5, size=64).astype(np.float32)
    kernel = (np.where(rng.random((512, 64)) < 0.5, -1.0, 1.0) * alpha).astype(np.float32)
    model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(64, use_bias=False)])
    model.layers[0].kernel.assign(kernel)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    int8 = converter.convert()
    narrowed = narrow_integer_weights(int8)
    assert len(narrowed) < 0.5 * len(int8)
    path = tmp_path / "n.tflite"
    path.write_bytes(narrowed)
    np.testing.assert_allclose(_stored_levels(path, (64, 512)), kernel.T, rtol=1e-6, atol=0)
    # Same hybrid kernels (activations quantized on the fly) as the int8 file: same outputs.
    int8_path = tmp_path / "i8.tflite"
    int8_path.write_bytes(int8)
    x = rng.normal(size=(8, 512)).astype(np.float32)
    np.testing.assert_allclose(predict_tflite(path, x), predict_tflite(int8_path, x), atol=1e-5)


def test_keeps_narrow_accepts_no_larger_error_against_float_and_rejects_storage_faults(tmp_path):
    from keras_hessian.export.storage import keeps_narrow, same_outputs

    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((256,)), kh_layers.BinaryDense(128, per_channel_scale=True)])
    float_file = to_tflite(model, tmp_path / "f.tflite", mode="float32").read_bytes()
    int8 = to_tflite(model, tmp_path / "i8.tflite", mode="dynamic_int8", narrow_weights=False).read_bytes()
    int2 = to_tflite(model, tmp_path / "i2.tflite", mode="dynamic_int8").read_bytes()
    assert keeps_narrow(float_file, int8, int2)  # same outputs as the int8 file
    # The float file itself differs from the int8 file by the hybrid kernel's activation rounding but
    # has no error against the float truth: kept by the second test, not by the first.
    assert not same_outputs(int8, float_file) and keeps_narrow(float_file, int8, float_file)
    # A storage fault: the same levels at scales 1.5x too large; and a file LiteRT cannot read.
    model.layers[0].kernel.assign(1.5 * model.layers[0].kernel)
    faulty = to_tflite(model, tmp_path / "bad.tflite", mode="dynamic_int8").read_bytes()
    assert not keeps_narrow(float_file, int8, faulty)
    assert not keeps_narrow(float_file, int8, b"not a flatbuffer")
