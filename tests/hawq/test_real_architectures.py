"""HAWQ and quantization_summary on the real architectures: depthwise, einsum (attention) and embedding
layers, their bytes and multiply counts against hand counts from the layers' configs and shapes."""

import keras
import numpy as np
import pytest

from keras_hessian import architectures
from keras_hessian.data import load_digits_rgb, load_digits_tokens
from keras_hessian.hawq import assign_precision
from keras_hessian.hawq.assign import _macs, planned_layers
from keras_hessian.hawq.candidates import get_candidate
from keras_hessian.quantize import quantization_summary, quantize_model

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def transformer():
    keras.utils.set_random_seed(5)
    model = architectures.transformer_classifier()
    model.compile(loss=LOSS)
    return model


@pytest.fixture(scope="module")
def mobilenet():
    keras.utils.set_random_seed(6)
    model = architectures.mobilenet_v2()
    model.compile(loss=LOSS)
    return model


def int8_bytes(rows, channels, bias):
    """Hand count: one byte per weight, a float32 scale and an int64 zero point per output channel, float32 bias."""
    return rows * channels + 12 * channels + 4 * bias


def test_depthwise_bytes_and_multiplications_against_a_hand_count(mobilenet):
    layer = mobilenet.get_layer("block_1_depthwise")
    kh, kw = layer.kernel_size
    channels = layer.input.shape[-1]
    _, height, width, out_channels = layer.output.shape
    assert out_channels == channels  # depth multiplier 1
    # One 3x3 window per output value: 9 multiplies each, not 9 * C.
    assert _macs(layer) == height * width * channels * kh * kw
    assert get_candidate("int8").weight_bytes(layer) == int8_bytes(kh * kw, channels, 0)  # no bias in MobileNetV2
    assert get_candidate("float32").weight_bytes(layer) == 4 * kh * kw * channels
    row = {r["path"]: r for r in quantization_summary(mobilenet)["layers"]}["block_1_depthwise"]
    assert row["multiplications"] == height * width * channels * kh * kw


def test_einsum_attention_and_embedding_against_hand_counts(transformer):
    attention = transformer.get_layer("block_0_attention")
    length, dim, heads, head = 64, 32, 2, 16
    # q, k, v: (dim, heads, head) kernels with (heads, head) biases; output: (heads, head, dim) with a (dim,) bias.
    assert get_candidate("int8").weight_bytes(attention) == 4 * int8_bytes(dim, heads * head, heads * head)
    assert get_candidate("int4").weight_bytes(attention) == 4 * (dim * heads * head // 2 + 12 * dim + 4 * dim)
    assert _macs(attention) == 4 * length * dim * dim  # each projection: 64 positions x 32 outputs x 32 inputs
    embedding = transformer.get_layer("position_embedding")
    assert _macs(embedding) == 0  # a lookup
    # int4 table: half a byte per weight, a scale and zero point per row (token), no bias.
    assert get_candidate("int4").weight_bytes(embedding) == length * dim // 2 + 12 * length
    # The per-row scale is the quantizer's: against numpy, symmetric int8 per row of the table.
    table = embedding.embeddings.numpy().astype(np.float64)
    scale = np.abs(table).max(axis=1, keepdims=True) / 127
    expected = np.sum((np.clip(np.round(table / scale), -127, 127) * scale - table) ** 2)
    np.testing.assert_allclose(get_candidate("int8").perturbation(embedding), expected, rtol=1e-4, atol=1e-9)
    rows = {r["path"]: r for r in quantization_summary(transformer)["layers"]}
    assert rows["block_0_attention"]["multiplications"] == 4 * length * dim * dim
    assert rows["position_embedding"]["multiplications"] == 0


def test_assign_precision_on_the_transformer_within_budget(transformer):
    (x, y), _ = load_digits_tokens()
    plan = assign_precision(transformer, (x[:32], y[:32]), budget=0.3, max_iter=2, tol=0.5)
    assert plan.predicted_bytes <= plan.budget_bytes
    assert "block_0_attention" in plan.layers and "position_embedding" in plan.layers
    quantized = quantize_model(transformer, plan, verbose=False)
    report = quantization_summary(quantized)
    rows = {r["path"]: r for r in report["layers"]}
    attention = rows["block_0_attention"]
    # Every multiply-accumulate of the four projections is either kept (integer) or replaced by sign/add.
    assert attention["precision"] != "float32"
    assert max(attention["multiplications"], attention["replaced_multiplications"]) == 4 * 64 * 32 * 32
    assert attention["bits_per_weight"] <= 8
    assert rows["position_embedding"]["multiplications"] == 0
    assert report["total"]["weight_bytes"] < report["total"]["float32_weight_bytes"] / 2


def test_assign_precision_on_mobilenet_v2_within_budget(mobilenet):
    (x, y), _ = load_digits_rgb(32)
    # Sensitivities of 53 layers would cost minutes; the byte and multiply accounting is what is checked here.
    plan = assign_precision(mobilenet, (x[:32], y[:32]), budget=0.25, sensitivity="uniform")
    assert plan.predicted_bytes <= plan.budget_bytes
    depthwise = [p for p, layer in planned_layers(mobilenet) if isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert len(depthwise) == 17 and all(p in plan.layers for p in depthwise)
    quantized = quantize_model(mobilenet, plan, verbose=False)
    rows = {r["path"]: r for r in quantization_summary(quantized)["layers"]}
    layer = mobilenet.get_layer("block_1_depthwise")
    _, height, width, channels = layer.output.shape
    assert rows["block_1_depthwise"]["precision"] != "float32"
    # Real multiplies left never exceed the float layer's one 3x3 window per output value.
    assert 0 < rows["block_1_depthwise"]["multiplications"] <= height * width * channels * 9
    assert rows["block_1_depthwise"]["parameters"] == 9 * channels


def test_summary_of_quantized_attention_embedding_and_separable_against_hand_counts(transformer):
    quantized = quantize_model(transformer, "integer", skip_first_last=False, verbose=False)
    rows = {r["path"]: r for r in quantization_summary(quantized)["layers"]}
    # int8: 8 bits per weight and a float32 scale per output channel, float32 biases.
    attention = rows["block_0_attention"]
    assert attention["precision"] != "float32"
    assert attention["weight_bits"] == 4 * (8 * 32 * 32 + 32 * 32) + 32 * (3 * 32 + 32)
    assert (attention["multiplications"], attention["replaced_multiplications"]) == (4 * 64 * 32 * 32, 0)
    embedding = rows["position_embedding"]  # (64, 32) table, one scale per row
    assert embedding["weight_bits"] == 8 * 64 * 32 + 32 * 64 and embedding["multiplications"] == 0

    keras.utils.set_random_seed(7)
    inputs = keras.Input((6, 6, 4))
    hidden = keras.layers.SeparableConv2D(8, 3, name="separable")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(hidden)))
    positions, depthwise, pointwise = 4 * 4, 9 * 4, 4 * 8
    float_row = {r["path"]: r for r in quantization_summary(model)["layers"]}["separable"]
    assert float_row["multiplications"] == positions * (4 * 9 + 8 * 4)
    row = {r["path"]: r for r in quantization_summary(quantize_model(model, "integer", skip_first_last=False,
                                                                     verbose=False))["layers"]}["separable"]
    assert row["precision"] != "float32"
    assert row["weight_bits"] == 8 * depthwise + 32 * 4 + 8 * pointwise + 32 * 8 + 32 * 8
    assert row["multiplications"] == positions * (4 * 9 + 8 * 4)


def test_separable_perturbation_is_its_two_kernels_rounded_in_numpy():
    # ||Q(W) - W||^2 of int4 on a SeparableConv2D: its depthwise (kh*kw x channels) and pointwise
    # (channels x filters) matrices, each rounded per column as the integer quantizer does.
    keras.utils.set_random_seed(5)
    layer = keras.layers.SeparableConv2D(4, 3)
    layer.build((None, 6, 6, 3))

    def rounded_error(matrix):
        step = np.abs(matrix).max(axis=0) / 7
        return float(np.sum((np.round(matrix / step) * step - matrix) ** 2))

    depthwise = layer.depthwise_kernel.numpy().astype(np.float64).reshape(9, 3)
    pointwise = layer.pointwise_kernel.numpy().astype(np.float64).reshape(3, 4)
    expected = rounded_error(depthwise) + rounded_error(pointwise)
    np.testing.assert_allclose(get_candidate("int4").perturbation(layer), expected, rtol=1e-5)
