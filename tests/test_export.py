"""TFLite export: real converter, real LiteRT interpreter, digits data."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian import layers as kh_layers
from keras_hessian.data import load_digits
from keras_hessian.export import (
    MODES,
    evaluate_tflite,
    inference_copy,
    narrow_integer_weights,
    parity_report,
    predict_tflite,
    to_tflite,
)
from keras_hessian.quantize import quantize_model

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _cnn(dtype=None, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(16, 3, activation="relu", dtype=dtype)(inputs)
    h = keras.layers.BatchNormalization(dtype=dtype)(h)
    h = keras.layers.MaxPooling2D(2, dtype=dtype)(h)
    h = keras.layers.Flatten(dtype=dtype)(h)
    h = keras.layers.Dropout(0.1, dtype=dtype)(h)
    h = keras.layers.Dense(64, activation="relu", dtype=dtype)(h)
    outputs = keras.layers.Dense(10, dtype=dtype)(h)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(3e-3), LOSS, metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def float_model(digits):
    (x, y), _ = digits
    model = _cnn()
    model.fit(x, y, epochs=6, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def bf16_model(digits):
    (x, y), _ = digits
    model = _cnn(dtype="mixed_bfloat16", seed=1)
    model.fit(x, y, epochs=6, batch_size=64, verbose=0)
    return model


def _keras_outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float32)


def _snapshot(model):
    return [np.array(w) for w in model.get_weights()], [
        layer.dtype_policy.name for layer in model.layers
    ]


def _assert_unchanged(model, snapshot):
    weights, policies = _snapshot(model)
    assert policies == snapshot[1]
    for before, after in zip(snapshot[0], weights):
        np.testing.assert_array_equal(before, after)


def _int8_weights(path):
    """Dequantized int8 constant tensors of a file: {name: (int values, scales, float)}."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    found = {}
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] != np.int8 or len(detail["shape"]) < 2:
            continue
        try:
            values = interpreter.get_tensor(detail["index"])
        except ValueError:  # activations have no data before invoke
            continue
        scales = detail["quantization_parameters"]["scales"]
        axis = detail["quantization_parameters"]["quantized_dimension"]
        shape = [1] * values.ndim
        shape[axis] = -1
        found[detail["name"]] = (values, scales, values * scales.reshape(shape))
    return found


# ------------------------------------------------------------------------- float parity


def test_float32_export_matches_keras_within_1e_5(float_model, digits, tmp_path):
    _, (x, y) = digits
    snapshot = _snapshot(float_model)
    path = to_tflite(float_model, tmp_path / "model.tflite", mode="float32")
    np.testing.assert_allclose(predict_tflite(path, x), _keras_outputs(float_model, x), atol=1e-5)
    report = parity_report(float_model, path, (x, y))
    assert report["max_abs_logit_diff"] <= 1e-5
    assert report["top1_agreement"] == 1.0
    assert report["litert_accuracy"] == report["keras_accuracy"]
    _assert_unchanged(float_model, snapshot)


def test_auto_mode_of_a_plain_model_is_float32(float_model, digits, tmp_path):
    _, (x, _) = digits
    auto = to_tflite(float_model, tmp_path / "auto.tflite")
    np.testing.assert_allclose(predict_tflite(auto, x), _keras_outputs(float_model, x), atol=1e-5)


@pytest.mark.parametrize("mode", ["float16", "dynamic_int8", "int8", "int16x8"])
def test_reduced_modes_agree_on_top1_for_99_percent(float_model, digits, tmp_path, mode):
    (x_train, _), (x, y) = digits
    path = to_tflite(
        float_model, tmp_path / f"{mode}.tflite", mode=mode, representative_data=x_train[:200]
    )
    report = parity_report(float_model, path, (x, y))
    assert report["top1_agreement"] >= 0.99, report
    float_bytes = os.path.getsize(to_tflite(float_model, tmp_path / "f32.tflite", mode="float32"))
    assert os.path.getsize(path) < float_bytes


def test_evaluate_tflite_accuracy_and_size(float_model, digits, tmp_path):
    _, (x, y) = digits
    path = to_tflite(float_model, tmp_path / "model.tflite", mode="float32")
    result = evaluate_tflite(path, (x, y), latency_examples=20)
    keras_accuracy = float(np.mean(np.argmax(_keras_outputs(float_model, x), -1) == y))
    assert result["accuracy"] == pytest.approx(keras_accuracy)
    assert result["file_bytes"] == os.path.getsize(path)
    assert result["num_examples"] == len(x)
    assert result["latency_ms"] > 0


def test_int8_file_keeps_float_inputs_and_quantizes_all_weights(float_model, digits, tmp_path):
    (x_train, _), _ = digits
    path = to_tflite(float_model, tmp_path / "i8.tflite", mode="int8", representative_data=x_train)
    weights = _int8_weights(path)
    kernels = {k.shape for k in (float_model.layers[i].kernel for i in (1, 6, 7))}
    # TFLite stores kernels output-channel first: (out, ..., in).
    stored = {tuple(v[0].shape) for v in weights.values()}
    assert {(16, 3, 3, 1), (64, 144), (10, 64)} <= stored, (stored, kernels)


# ------------------------------------------------------------------ int8 weight storage


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


# ------------------------------------------------------------------------------ bfloat16


def test_bfloat16_model_exports_and_matches_its_float32_rebuild(bf16_model, digits, tmp_path):
    _, (x, y) = digits
    snapshot = _snapshot(bf16_model)
    rebuilt = inference_copy(bf16_model)
    assert all(layer.dtype_policy.name == "float32" for layer in rebuilt.layers)
    # The rebuild holds the bf16 model's (float32) weights, unchanged.
    for before, after in zip(bf16_model.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(np.asarray(before, np.float32), after)
    path = to_tflite(bf16_model, tmp_path / "bf16.tflite", mode="float32")
    np.testing.assert_allclose(predict_tflite(path, x), _keras_outputs(rebuilt, x), atol=1e-5)
    # Against the bf16 model itself only bf16 rounding separates them.
    report = parity_report(bf16_model, path, (x, y))
    assert report["top1_agreement"] >= 0.99
    assert abs(report["litert_accuracy"] - report["keras_accuracy"]) <= 0.01
    _assert_unchanged(bf16_model, snapshot)


def test_quantize_model_bfloat16_scheme_exports(float_model, digits, tmp_path):
    _, (x, _) = digits
    bf16 = quantize_model(float_model, "bfloat16")
    assert any(layer.dtype_policy.name == "mixed_bfloat16" for layer in bf16.layers)
    path = to_tflite(bf16, tmp_path / "bf16.tflite")
    reference = _keras_outputs(inference_copy(bf16), x)
    np.testing.assert_allclose(predict_tflite(path, x), reference, atol=1e-5)


def test_representative_data_as_dataset_or_callable(float_model, digits, tmp_path):
    (x_train, y_train), (x, _) = digits
    dataset = tf.data.Dataset.from_tensor_slices((x_train[:128], y_train[:128])).batch(32)

    def calibration():
        for i in range(64):
            yield [x_train[i : i + 1]]

    for name, data in (("dataset", dataset), ("callable", calibration)):
        path = to_tflite(
            float_model, tmp_path / f"{name}.tflite", mode="int8", representative_data=data
        )
        report = parity_report(float_model, path, x)
        assert report["top1_agreement"] >= 0.99, (name, report)


# --------------------------------------------------------------------------- bad inputs


def test_int8_without_representative_data_is_refused(float_model, tmp_path):
    target = tmp_path / "model.tflite"
    for mode in ("int8", "int16x8"):
        with pytest.raises(ValueError, match="representative_data"):
            to_tflite(float_model, target, mode=mode)
    assert list(tmp_path.iterdir()) == []


def test_bad_representative_data_is_refused(float_model, tmp_path):
    with pytest.raises(ValueError, match=r"representative_data.*\(None, 8, 8, 1\)"):
        to_tflite(float_model, tmp_path / "m.tflite", mode="int8", representative_data=np.ones((4, 64)))
    assert list(tmp_path.iterdir()) == []


def test_unknown_mode_is_refused(float_model, tmp_path):
    with pytest.raises(ValueError, match="mode='int4'"):
        to_tflite(float_model, tmp_path / "m.tflite", mode="int4")
    with pytest.raises(TypeError, match="model"):
        to_tflite("model.keras", tmp_path / "m.tflite")
    assert set(MODES) >= {"float32", "float16", "dynamic_int8", "int8", "int16x8"}


def test_unwritable_paths_are_refused(float_model, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        to_tflite(float_model, tmp_path / "missing" / "m.tflite")
    with pytest.raises(ValueError, match="directory"):
        to_tflite(float_model, tmp_path)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="path"):
        to_tflite(float_model, a_file / "m.tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


class SingularValues(keras.layers.Layer):
    """A layer whose op (SVD) has no TFLite builtin kernel."""

    def call(self, inputs):
        matrices = tf.reshape(inputs, (-1, 4, 4))
        return tf.linalg.svd(matrices, compute_uv=False)


def test_unconvertible_layer_is_named_and_leaves_no_file(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(16),
            SingularValues(name="spectral_features"),
            keras.layers.Dense(3),
        ]
    )
    target = tmp_path / "model.tflite"
    target.write_bytes(b"previous export")
    with pytest.raises(ValueError, match="spectral_features.*SingularValues.*Svd"):
        to_tflite(model, target)
    # The earlier file is untouched and no temporary file is left behind.
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_written_file_replaces_an_older_one_completely(float_model, tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"x" * 10_000_000)
    to_tflite(float_model, target, mode="float32")
    content = target.read_bytes()
    assert content[4:8] == b"TFL3" and len(content) < 1_000_000
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_evaluate_and_parity_check_their_data(float_model, digits, tmp_path):
    _, (x, y) = digits
    path = to_tflite(float_model, tmp_path / "m.tflite", mode="float32")
    with pytest.raises(ValueError, match=r"data must be a tuple \(x, y\)"):
        evaluate_tflite(path, x)
    with pytest.raises(ValueError, match=r"shape \(batch, 8, 8, 1\).*\(450, 64\)"):
        parity_report(float_model, path, x.reshape(len(x), 64))
    with pytest.raises(ValueError, match="existing .tflite file"):
        evaluate_tflite(tmp_path / "missing.tflite", (x, y))


# --------------------------------------------------------------------------------- CLI


def test_cli_export_prints_the_parity_report(float_model, tmp_path, capsys):
    from keras_hessian import cli

    model_path = tmp_path / "model.keras"
    float_model.save(model_path)
    out = tmp_path / "out.tflite"
    code = cli.main(["export", str(model_path), str(out), "--mode", "int8", "--data", "digits"])
    printed = capsys.readouterr().out
    assert code == 0
    assert out.is_file()
    agreement = float(next(line for line in printed.splitlines() if "top1_agreement" in line).split()[1])
    assert agreement >= 0.99
    assert "max_abs_logit_diff" in printed


def test_cli_export_reports_bad_input_without_a_file(float_model, tmp_path, capsys):
    from keras_hessian import cli

    model_path = tmp_path / "model.keras"
    float_model.save(model_path)
    out = tmp_path / "out.tflite"
    code = cli.main(["export", str(model_path), str(out), "--mode", "int8"])
    assert code == 2
    assert "--data" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------- quantized layers

# (layer factory, input shape): every quantized layer type of keras-hessian, with and
# without an input quantizer.
QUANTIZED_CASES = {
    "BinaryDense": (lambda: kh_layers.BinaryDense(32, per_channel_scale=True), (64,)),
    "BinaryDense-binary-inputs": (
        lambda: kh_layers.BinaryDense(32, binary_activations=True, activation="relu"),
        (64,),
    ),
    "BinaryConv2D": (
        lambda: kh_layers.BinaryConv2D(8, 3, per_channel_scale=True, padding="same"),
        (8, 8, 1),
    ),
    "BinaryConv1D": (lambda: kh_layers.BinaryConv1D(8, 5, strides=2), (40, 1)),
    "TernaryResidualDense": (
        lambda: kh_layers.TernaryResidualDense(32, block_size=16, residuals=2),
        (64,),
    ),
    "TernaryResidualDense-dfp-inputs": (
        lambda: kh_layers.TernaryResidualDense(
            32, residuals=1, input_quantizer=kh_layers.DFP16(precision=8), activation="relu"
        ),
        (64,),
    ),
    "TernaryResidualConv2D": (
        lambda: kh_layers.TernaryResidualConv2D(8, 3, block_size=4, residuals=1),
        (8, 8, 1),
    ),
    "TernaryResidualConv1D": (lambda: kh_layers.TernaryResidualConv1D(8, 3), (40, 1)),
    # Chunks of 4 products keep these int32 accumulators in range (see the test below).
    "DFP16Dense": (
        lambda: kh_layers.DFP16Dense(32, activation="relu", accumulation_chunk=4),
        (64,),
    ),
    "DFP16Conv2D": (lambda: kh_layers.DFP16Conv2D(8, 3, padding="same"), (8, 8, 1)),
    "DFP16Conv1D": (lambda: kh_layers.DFP16Conv1D(8, 3), (40, 1)),
}


def _single_layer_model(name):
    factory, shape = QUANTIZED_CASES[name]
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [keras.Input(shape), factory(), keras.layers.Flatten(), keras.layers.Dense(10)]
    )


def _inputs_for(shape, count=64):
    rng = np.random.default_rng(1)
    return rng.normal(size=(count, *shape)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(QUANTIZED_CASES))
def test_every_quantized_layer_converts_and_matches_keras(name, tmp_path):
    model = _single_layer_model(name)
    x = _inputs_for(model.input_shape[1:])
    snapshot = _snapshot(model)
    layer = model.layers[0]
    if hasattr(layer, "accumulator_overflows"):
        # A saturated int32 accumulator is the one documented break of the export identity
        # layer(x) == activation(linear(input_quantizer(x), quantized_kernel()) + bias).
        assert layer.accumulator_overflows(x) == 0
    path = to_tflite(model, tmp_path / "f32.tflite", mode="float32")
    # Same batches for LiteRT and Keras: DFP's input exponent is shared per batch.
    litert = predict_tflite(path, x, batch_size=len(x))
    reference = _keras_outputs(model, x)
    np.testing.assert_allclose(litert, reference, atol=1e-5, rtol=1e-5)
    auto = to_tflite(model, tmp_path / "auto.tflite")
    assert parity_report(model, auto, x, batch_size=len(x))["top1_agreement"] >= 0.95
    _assert_unchanged(model, snapshot)


@pytest.fixture(scope="module")
def quantized_models(float_model):
    return {
        scheme if isinstance(scheme, str) else f"ternary_residual_r{scheme['residuals']}": (
            quantize_model(float_model, scheme, skip_first_last=False)
        )
        for scheme in (
            "binary",
            {"scheme": "ternary_residual", "residuals": 1},
            {"scheme": "ternary_residual", "residuals": 2},
            "dfp16",
        )
    }


@pytest.mark.parametrize(
    "scheme", ["binary", "ternary_residual_r1", "ternary_residual_r2", "dfp16"]
)
@pytest.mark.parametrize("mode", ["auto", "int8"])
def test_quantized_exports_agree_on_top1_for_99_percent(
    quantized_models, digits, tmp_path, scheme, mode
):
    (x_train, _), (x, y) = digits
    model = quantized_models[scheme]
    path = to_tflite(model, tmp_path / "q.tflite", mode=mode, representative_data=x_train[:200])
    report = parity_report(model, path, (x, y))
    assert report["top1_agreement"] >= 0.99, report


def test_ternary_export_bakes_in_the_active_residual_count(tmp_path):
    model = _single_layer_model("TernaryResidualDense")
    layer = model.layers[0]
    x = _inputs_for((64,))
    full = _keras_outputs(model, x)
    layer.active_residuals = 0
    base_only = _keras_outputs(model, x)
    assert np.abs(full - base_only).max() > 1e-2  # the residual terms matter
    path = to_tflite(model, tmp_path / "r0.tflite", mode="float32")
    np.testing.assert_allclose(predict_tflite(path, x), base_only, atol=1e-5, rtol=1e-5)
    assert layer.active_residuals == 0


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


def test_subclassed_model_with_quantized_layers_is_refused(tmp_path):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.inner = kh_layers.BinaryDense(4)

        def call(self, inputs):
            return self.inner(inputs)

    model = Subclassed()
    model(np.ones((1, 8), np.float32))
    with pytest.raises(ValueError, match="Subclassed.*functional"):
        to_tflite(model, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_a_saved_quantized_model(quantized_models, tmp_path, capsys):
    from keras_hessian import cli

    model_path = tmp_path / "binary.keras"
    quantized_models["binary"].save(model_path)
    out = tmp_path / "binary.tflite"
    assert cli.main(["export", str(model_path), str(out), "--data", "digits"]) == 0
    printed = capsys.readouterr().out
    agreement = float(next(line for line in printed.splitlines() if "top1_agreement" in line).split()[1])
    assert agreement >= 0.99


def test_benchmark_quick_mode_writes_its_table(tmp_path):
    import importlib.util
    import pathlib

    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "tflite_table.py"
    spec = importlib.util.spec_from_file_location("tflite_table", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.run(quick=True, results_dir=tmp_path)
    import json

    written = json.loads((tmp_path / "tflite_table.json").read_text())["rows"]
    assert len(written) == len(rows) >= 3
    assert set(module.COLUMNS) <= set(written[0])
    assert written[0]["model"] == "float32" and written[0]["size_ratio"] == 1.0


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


def test_cli_export_keeps_an_existing_file_when_the_parity_report_fails(float_model, tmp_path, capsys):
    from keras_hessian import cli

    model_path = tmp_path / "model.keras"
    float_model.save(model_path)
    out = tmp_path / "out.tflite"
    previous = b"previous export " * 1000
    out.write_bytes(previous)
    data = tmp_path / "wrong.npz"  # 7 features: cannot be shaped for the (8, 8, 1) input
    np.savez(data, x=np.zeros((20, 7), "float32"), y=np.zeros(20, "int64"))
    code = cli.main(["export", str(model_path), str(out), "--mode", "float32", "--data", str(data)])
    assert code == 2
    assert "(20, 7)" in capsys.readouterr().err
    assert out.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "out.tflite", "wrong.npz"]
