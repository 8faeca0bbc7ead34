"""Quantized KerasHub TransformerEncoder (`keras_hessian/layers/hub_encoder.py`).

Truths: KerasHub's own float TransformerEncoder with its kernels rounded in numpy by the integer
rule (`round(w / s_c) * s_c`, `s_c = max |w[..., c]| / (2^(b-1) - 1)` per output feature); hand
counts of the block's kernels and multiplications; the Keras model's logits for the LiteRT file;
saved-and-loaded models' outputs.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub", reason="KerasHub (the hub / test extra) is not installed")

from keras_hessian.export import to_tflite
from keras_hessian.hawq.candidates import get_candidate, kernel_size
from keras_hessian.layers.hub_encoder import (
    BinaryTransformerEncoder,
    Float16TransformerEncoder,
    IntegerTransformerEncoder,
    TernaryResidualTransformerEncoder,
)
from keras_hessian.quantize import quantization_summary, quantize_model

HUB_LAYERS = [
    BinaryTransformerEncoder,
    TernaryResidualTransformerEncoder,
    IntegerTransformerEncoder,
    Float16TransformerEncoder,
]
SEQUENCE, WIDTH, INTERMEDIATE = 5, 16, 24
# Kernel weights of one block: query, key, value, output (16 x 16 each), then 16 x 24 and 24 x 16.
BLOCK_KERNEL_WEIGHTS = 4 * WIDTH * WIDTH + 2 * WIDTH * INTERMEDIATE
BLOCK_OUTPUT_FEATURES = 4 * WIDTH + INTERMEDIATE + WIDTH


def float_encoder(seed: int = 0, normalize_first: bool = False):
    keras.utils.set_random_seed(seed)
    layer = keras_hub.layers.TransformerEncoder(
        intermediate_dim=INTERMEDIATE, num_heads=2, normalize_first=normalize_first, name="block"
    )
    layer.build((None, SEQUENCE, WIDTH))
    rng = np.random.default_rng(seed)
    for weight in layer.weights:  # non-zero biases and layer-norm offsets: every weight matters
        weight.assign(weight.numpy() + 0.1 * rng.normal(size=weight.shape).astype(np.float32))
    return layer


def kernel_layers(encoder):
    """(kernel layer, reduction rows of its kernel) in KerasHub's own attribute names, written out here."""
    attention = encoder._self_attention_layer
    return [
        (attention._query_dense, 1),  # (16, heads, head_dim): reduction over the first axis
        (attention._key_dense, 1),
        (attention._value_dense, 1),
        (attention._output_dense, 2),  # (heads, head_dim, 16): reduction over the first two axes
        (encoder._feedforward_intermediate_dense, 1),
        (encoder._feedforward_output_dense, 1),
    ]


def integer_rounded(kernel: np.ndarray, reduction_axes: int, bits: int) -> np.ndarray:
    matrix = kernel.reshape(int(np.prod(kernel.shape[:reduction_axes])), -1).astype(np.float64)
    step = np.abs(matrix).max(axis=0) / (2 ** (bits - 1) - 1)
    return (np.round(matrix / step) * step).reshape(kernel.shape)


def sample(batch: int = 4, seed: int = 1):
    return np.random.default_rng(seed).normal(size=(batch, SEQUENCE, WIDTH)).astype(np.float32)


def block_model(seed: int = 0):
    """A functional model around one KerasHub encoder block, as a text classifier has it."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SEQUENCE, WIDTH))
    h = keras.layers.Dense(WIDTH, name="project")(inputs)
    h = keras_hub.layers.TransformerEncoder(intermediate_dim=INTERMEDIATE, num_heads=2, name="block")(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


@pytest.mark.parametrize("normalize_first", [False, True])
def test_integer_block_is_keras_hubs_block_with_numpy_rounded_kernels(normalize_first):
    source = float_encoder(normalize_first=normalize_first)
    quantized = IntegerTransformerEncoder.from_float_layer(source, bits=4)
    quantized.build((None, SEQUENCE, WIDTH))
    quantized.load_float_weights(source)
    reference = keras_hub.layers.TransformerEncoder.from_config(source.get_config())
    reference.build((None, SEQUENCE, WIDTH))
    reference.set_weights(source.get_weights())
    for layer, axes in kernel_layers(reference):
        layer.kernel.assign(integer_rounded(layer.kernel.numpy(), axes, bits=4).astype(np.float32))
    x = sample()
    padding = np.ones((len(x), SEQUENCE), bool)
    padding[:, -2:] = False  # the last two positions are padding: the mask reaches the attention
    for kwargs in ({}, {"padding_mask": padding}):
        np.testing.assert_allclose(
            quantized(x, training=False, **kwargs), reference(x, training=False, **kwargs), rtol=1e-5, atol=1e-5
        )
    assert np.abs(np.asarray(quantized(x, padding_mask=padding)) - np.asarray(quantized(x))).max() > 1e-3
    # ... and not the float block's outputs: 4-bit kernels move them.
    assert np.abs(np.asarray(quantized(x)) - np.asarray(source(x))).max() > 1e-3


def test_importing_keras_hub_after_keras_hessian_registers_the_blocks():
    # `import keras_hub` imports keras, whose import hook imports keras_hessian.layers while keras_hub is
    # half way through its own import: the registration must not depend on the half-built keras_hub.layers.
    import subprocess
    import sys

    code = (
        "import keras_hessian, keras_hub\n"
        "from keras_hessian.layers import registry\n"
        "print(registry.quantized_layer_class('integer', keras_hub.layers.TransformerEncoder).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "IntegerTransformerEncoder"


def test_unbuilt_block_says_so():
    with pytest.raises(ValueError, match="build"):
        IntegerTransformerEncoder(intermediate_dim=8, num_heads=2).projections()


@pytest.mark.parametrize("cls", HUB_LAYERS, ids=[c.__name__ for c in HUB_LAYERS])
def test_quantize_model_swaps_the_block_and_it_saves_and_reloads(cls, tmp_path):
    model = block_model()
    before = [w.copy() for w in model.get_weights()]
    scheme = {"BinaryTransformerEncoder": "binary", "TernaryResidualTransformerEncoder": "ternary_residual",
              "IntegerTransformerEncoder": "integer", "Float16TransformerEncoder": "float16"}[cls.__name__]
    quantized = quantize_model(model, scheme, skip_first_last=False, verbose=False)
    assert type(quantized.get_layer("block")) is cls
    assert "block" in {row.path for row in quantized.quantize_report.quantized}
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)  # the user's model is untouched
    x = sample()
    path = tmp_path / "block.keras"
    quantized.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer("block")) is cls
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), quantized.predict(x, verbose=0))
    config = quantized.get_layer("block").get_config()
    assert cls.from_config(config).get_config() == config


def test_weight_only_export_computes_the_keras_logits(tmp_path):
    quantized = quantize_model(block_model(), "integer", skip_first_last=False, verbose=False)
    x = sample(16)
    path = to_tflite(quantized, tmp_path / "block.tflite", weight_only=True)
    float_bytes = to_tflite(quantized, tmp_path / "float.tflite", mode="float32").stat().st_size
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    litert = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(litert, np.asarray(quantized(x, training=False)), rtol=1e-4, atol=1e-5)
    assert path.stat().st_size < float_bytes
    # Every kernel of the block is stored as int8 (TFLite layout: output features first).
    from tests.export.test_per_layer_storage import INT8, stored_tensors

    int8_shapes = [shape for shape, entries in stored_tensors(path).items() for entry in entries if entry[0] == INT8]
    assert int8_shapes.count((WIDTH, WIDTH)) >= 5  # query, key, value, output, and the model's own `project`
    assert {(INTERMEDIATE, WIDTH), (WIDTH, INTERMEDIATE)} <= set(int8_shapes)


def test_summary_and_hawq_see_the_blocks_parts():
    model = block_model()
    quantized = quantize_model(model, {"block": "binary"}, verbose=False)
    rows = {row["path"]: row for row in quantization_summary(quantized)["layers"]}
    block = rows["block"]
    # Binary: every kernel multiplication becomes a sign / add; one scale multiply per output value remains
    # (each part: one vector per position).
    assert block["replaced_multiplications"] == SEQUENCE * BLOCK_KERNEL_WEIGHTS
    assert block["multiplications"] == SEQUENCE * BLOCK_OUTPUT_FEATURES
    float_rows = {row["path"]: row for row in quantization_summary(model)["layers"]}
    assert float_rows["block"]["multiplications"] == SEQUENCE * BLOCK_KERNEL_WEIGHTS
    encoder = model.get_layer("block")
    assert kernel_size(encoder) == BLOCK_KERNEL_WEIGHTS
    # HAWQ's perturbation ||Q(W) - W||^2 of int4 over the parts, against the numpy rule.
    expected = sum(
        float(np.sum((integer_rounded(layer.kernel.numpy(), axes, bits=4) - layer.kernel.numpy()) ** 2))
        for layer, axes in kernel_layers(encoder)
    )
    np.testing.assert_allclose(get_candidate("int4").perturbation(encoder), expected, rtol=1e-5)


def test_mixed_bfloat16_block():
    source = float_encoder()
    config = {**source.get_config(), "dtype": "mixed_bfloat16"}
    mixed = keras_hub.layers.TransformerEncoder.from_config(config)
    mixed.build((None, SEQUENCE, WIDTH))
    mixed.set_weights(source.get_weights())
    quantized = TernaryResidualTransformerEncoder.from_float_layer(mixed)
    quantized.build((None, SEQUENCE, WIDTH))
    quantized.load_float_weights(mixed)
    twin = TernaryResidualTransformerEncoder.from_float_layer(source)
    twin.build((None, SEQUENCE, WIDTH))
    twin.load_float_weights(source)
    assert quantized._feedforward_output_dense.kernel.dtype == "float32"  # latent weights stay float32
    x = sample()
    y = quantized(x, training=False)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(twin(x, training=False)), atol=0.1, rtol=0.05)
