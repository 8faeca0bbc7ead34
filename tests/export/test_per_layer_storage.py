"""`to_tflite(mode="auto")` of a model whose layers carry different schemes: each layer at its bits.

Truths: the tensor types and quantization parameters of the written file, read with the TFLite
flatbuffer schema; the kernels the quantizers' rules give, written out in numpy; LiteRT's
outputs against the Keras model on the digits test split.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from keras_hessian.export import auto_mode, parity_report, to_tflite
from keras_hessian.quantize import quantization_summary, quantize_model
from tests.export._helpers import LOSS

# TFLite schema TensorType values (tensorflow/lite/schema/schema.fbs).
FLOAT32, FLOAT16, INT8, INT4, INT2 = 0, 1, 9, 17, 19

# One plan with five precisions: the first convolution in DFP-16, int4 and int8 elsewhere,
# per-channel ternary on the big Dense, binary on the second Dense.
PLAN = {
    "conv_1": "dfp16",
    "conv_2": {"scheme": "integer", "bits": 4},
    "dense": {"scheme": "ternary_residual", "residuals": 0, "block_size": 1152},
    "dense_2": "binary",
    "logits": {"scheme": "integer", "bits": 8},
}
# The planned file type of each layer's kernel, keyed by its TFLite shape (output channels first).
PLANNED_TYPES = {
    (16, 3, 3, 1): FLOAT16,  # conv_1, DFP-16
    (32, 3, 3, 16): INT4,  # conv_2
    (64, 1152): INT2,  # dense, ternary {-a_c, 0, +a_c}
    (32, 64): INT2,  # dense_2, binary +-a_c
    (10, 32): INT8,  # logits
}


def digits_cnn():
    """`keras_hessian.models.compact_cnn` with one more hidden Dense, so one plan holds five precisions."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_1"),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv_2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="dense"),
            keras.layers.Dense(32, activation="relu", name="dense_2"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="digits_cnn",
    )


@pytest.fixture(scope="module")
def planned(digits):
    (x, y), _ = digits
    keras.utils.set_random_seed(0)
    model = digits_cnn()
    model.compile(keras.optimizers.Adam(3e-3), LOSS, metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=64, verbose=0)
    quantized = quantize_model(model, PLAN)
    # A short quantization-aware fine-tune, as a plan would get.
    quantized.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    quantized.fit(x, y, epochs=2, batch_size=64, verbose=0)
    return model, quantized


def stored_tensors(path):
    """{TFLite shape: [(type, tensor, buffer bytes)]} of the constant tensors of a file."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    found = {}
    for tensor in model.subgraphs[0].tensors:
        data = model.buffers[tensor.buffer].data
        if data is not None and len(data):
            found.setdefault(tuple(int(d) for d in tensor.shape), []).append(
                (int(tensor.type), tensor, bytes(bytearray(data)))
            )
    return found


def dequantized(tensor, data):
    """The float values of an int2/int4/int8 tensor with per-channel scales (axis 0), zero point 0."""
    bits = {INT8: 8, INT4: 4, INT2: 2}[int(tensor.type)]
    shape = tuple(int(d) for d in tensor.shape)
    packed = np.frombuffer(data, np.uint8)
    if bits == 8:
        values = packed.view(np.int8).astype(np.int64)
    else:
        values = np.stack([(packed >> (bits * i)) & ((1 << bits) - 1) for i in range(8 // bits)], -1).reshape(-1)
        values = values.astype(np.int64)
        values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
    values = values[: int(np.prod(shape))].reshape(shape)
    assert not np.any(np.asarray(tensor.quantization.zeroPoint))
    scales = np.asarray(tensor.quantization.scale, np.float64).reshape([-1] + [1] * (len(shape) - 1))
    return values * scales


def test_each_layer_is_stored_at_its_planned_type(planned, digits, tmp_path):
    _, quantized = planned
    _, (x, y) = digits
    assert auto_mode(quantized) == "per_layer"
    path = to_tflite(quantized, tmp_path / "plan.tflite")
    tensors = stored_tensors(path)
    for shape, planned_type in PLANNED_TYPES.items():
        assert planned_type in [entry[0] for entry in tensors[shape]], (shape, tensors[shape])
    report = parity_report(quantized, path, (x, y))
    assert report["top1_agreement"] >= 0.99, report


def test_stored_levels_are_the_quantizers_rules_in_numpy(planned, tmp_path):
    _, quantized = planned
    path = to_tflite(quantized, tmp_path / "plan.tflite")
    tensors = stored_tensors(path)

    def stored(shape, kind):
        (entry,) = [e for e in tensors[shape] if e[0] == kind]
        return entry

    # int4: round(w / s_c) * s_c with s_c = max|w[..., c]| / 7 (symmetric, per output channel).
    w = quantized.get_layer("conv_2").kernel.numpy().astype(np.float64)
    step = np.abs(w).max(axis=(0, 1, 2)) / 7
    expected = np.moveaxis(np.clip(np.round(w / step), -7, 7) * step, -1, 0)
    _, tensor, data = stored((32, 3, 3, 16), INT4)
    np.testing.assert_allclose(dequantized(tensor, data), expected, rtol=1e-5, atol=1e-7)
    # int8 logits: the same rule with 127 levels.
    w = quantized.get_layer("logits").kernel.numpy().astype(np.float64)
    step = np.abs(w).max(axis=0) / 127
    _, tensor, data = stored((10, 32), INT8)
    np.testing.assert_allclose(dequantized(tensor, data), (np.round(w / step) * step).T, rtol=1e-5, atol=1e-7)
    # binary: each stored channel holds two values, +-a_c.
    _, tensor, data = stored((32, 64), INT2)
    levels = dequantized(tensor, data)
    assert all(len(np.unique(np.abs(row))) == 1 for row in levels)
    np.testing.assert_array_equal(np.sign(levels), np.where(quantized.get_layer("dense_2").kernel.numpy() >= 0, 1, -1).T)
    # float16: the DFP-16 kernel rounded to IEEE half.
    _, _, data = stored((16, 3, 3, 1), FLOAT16)
    kernel = np.asarray(quantized.get_layer("conv_1").quantized_kernel(), np.float32)
    np.testing.assert_array_equal(
        np.frombuffer(data, "<f2").reshape(16, 3, 3, 1), np.moveaxis(kernel, -1, 0).astype(np.float16)
    )


def graph_bytes(path):
    """Bytes of a file that are not tensor data: ops, tensor records, metadata (its fixed overhead)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    return os.path.getsize(path) - sum(len(b.data) for b in model.buffers if b.data is not None)


def test_file_size_is_the_summary_plus_a_fixed_overhead(planned, tmp_path):
    _, quantized = planned
    path = to_tflite(quantized, tmp_path / "plan.tflite")
    predicted = quantization_summary(quantized)["total"]["weight_bytes"]
    # The fixed overhead: the same graph written in float32, less its weights (measured 9,668
    # bytes here: the DFP-16 input quantizer's ops included; 888 for Input(1) -> Dense(1)).
    float_path = to_tflite(quantized, tmp_path / "float.tflite", mode="float32")
    overhead = graph_bytes(float_path)
    size = os.path.getsize(path)
    # Beyond that the file adds an int64 zero point per integer channel and each quantized op's
    # records, and stores binary in int2 (the summary counts 1 bit): measured 1.06x.
    assert abs(size - (predicted + overhead)) <= 0.15 * (predicted + overhead), (size, predicted, overhead)
    assert size < 0.11 * os.path.getsize(float_path)


def test_float_layers_stay_float32_and_failures_leave_the_model_unchanged(planned, tmp_path):
    model, _ = planned
    half = quantize_model(model, {"dense": {"scheme": "integer", "bits": 4}})
    path = to_tflite(half, tmp_path / "one.tflite")
    tensors = stored_tensors(path)
    assert [e[0] for e in tensors[(64, 1152)]] == [INT4]
    for shape in ((16, 3, 3, 1), (32, 3, 3, 16), (32, 64), (10, 32)):
        (entry,) = tensors[shape]
        assert entry[0] == FLOAT32
    kept = np.frombuffer(tensors[(32, 64)][0][2], "<f4").reshape(32, 64)
    np.testing.assert_array_equal(kept, half.get_layer("dense_2").kernel.numpy().T)
    weights = [w.copy() for w in half.get_weights()]
    with pytest.raises(ValueError, match="path"):
        to_tflite(half, tmp_path / "missing" / "x.tflite")
    for before, after in zip(weights, half.get_weights()):
        np.testing.assert_array_equal(before, after)
