"""`to_tflite(..., weight_only=True)`: integer weights in the file, float32 compute in LiteRT.

Truths: the Keras model's own outputs (a weight-only file of exact levels must compute them to
float rounding, where the default hybrid file rounds activations to int8 and must not); the
tensor types and ops of the written file, read with the TFLite flatbuffer schema.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_hessian.export import to_tflite
from keras_hessian.quantize import quantize_model
from tests.export._helpers import LOSS, _keras_outputs
from tests.export.test_per_layer_storage import INT4, INT8, digits_cnn, stored_tensors

# Every layer at exact integer levels: int8 and int4 grids, per-channel ternary, binary.
PLAN = {
    "conv_1": {"scheme": "integer", "bits": 8},
    "conv_2": {"scheme": "integer", "bits": 4},
    "dense": {"scheme": "ternary_residual", "residuals": 0, "block_size": 1152},
    "dense_2": "binary",
    "logits": {"scheme": "integer", "bits": 8},
}
# Where the hybrid file stores int2 (binary / ternary FullyConnected), weight-only stores int4.
WEIGHT_ONLY_TYPES = {(32, 3, 3, 16): INT4, (64, 1152): INT4, (32, 64): INT4, (10, 32): INT8}


@pytest.fixture(scope="module")
def exact_plan(digits):
    (x, y), _ = digits
    keras.utils.set_random_seed(0)
    model = digits_cnn()
    model.compile(keras.optimizers.Adam(3e-3), LOSS)
    model.fit(x, y, epochs=4, batch_size=64, verbose=0)
    quantized = quantize_model(model, PLAN)
    quantized.compile(keras.optimizers.Adam(1e-3), LOSS)
    quantized.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return quantized


def litert_outputs(path, x):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [len(x), *x.shape[1:]])
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x.astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def op_names(path):
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    codes = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    return [
        codes[
            max(
                model.operatorCodes[op.opcodeIndex].builtinCode,
                model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode,
            )
        ]
        for op in model.subgraphs[0].operators
    ]


def test_weight_only_computes_the_keras_outputs_where_hybrid_kernels_do_not(exact_plan, digits, tmp_path):
    _, (x, _) = digits
    truth = _keras_outputs(exact_plan, x)
    scale = float(np.abs(truth).max())
    weight_only = litert_outputs(to_tflite(exact_plan, tmp_path / "w.tflite", weight_only=True), x)
    hybrid = litert_outputs(to_tflite(exact_plan, tmp_path / "h.tflite"), x)
    np.testing.assert_allclose(weight_only, truth, rtol=1e-4, atol=1e-5 * scale)
    # The hybrid kernels' activation rounding is far above float rounding: the check above can fail.
    assert np.abs(hybrid - truth).max() > 100 * np.abs(weight_only - truth).max()


def test_weight_only_stores_integers_and_dequantizes_them(exact_plan, tmp_path):
    weight_only = to_tflite(exact_plan, tmp_path / "w.tflite", weight_only=True)
    float32 = to_tflite(exact_plan, tmp_path / "f.tflite", mode="float32")
    tensors = stored_tensors(weight_only)
    for shape, kind in WEIGHT_ONLY_TYPES.items():
        assert kind in [entry[0] for entry in tensors[shape]], (shape, [entry[0] for entry in tensors[shape]])
    ops = op_names(weight_only)
    assert ops.count("DEQUANTIZE") >= len(WEIGHT_ONLY_TYPES)
    assert weight_only.stat().st_size < float32.stat().st_size / 4


def test_dynamic_int8_mode_of_a_binary_model(quantized_models, digits, tmp_path):
    _, (x, _) = digits
    model = quantized_models["binary"]
    truth = _keras_outputs(model, x)
    path = to_tflite(model, tmp_path / "b.tflite", mode="dynamic_int8", weight_only=True)
    np.testing.assert_allclose(litert_outputs(path, x), truth, rtol=1e-4, atol=1e-5 * float(np.abs(truth).max()))
    assert "DEQUANTIZE" in op_names(path)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"weight_only": True}, "mode='float32'"),  # auto on a float model
        ({"weight_only": True, "mode": "float16"}, "mode='float16'"),
        ({"weight_only": "yes"}, "weight_only"),
    ],
)
def test_weight_only_needs_integer_storage(float_model, tmp_path, kwargs, expected):
    target = tmp_path / "x.tflite"
    with pytest.raises((TypeError, ValueError), match=expected):
        to_tflite(float_model, target, **kwargs)
    assert not target.exists()


def test_cli_weight_only(exact_plan, tmp_path, capsys):
    from keras_hessian import cli

    model_path = tmp_path / "plan.keras"
    exact_plan.save(model_path)
    out = tmp_path / "plan.tflite"
    assert cli.main(["export", str(model_path), str(out), "--weight-only", "--data", "digits"]) == 0
    printed = capsys.readouterr().out
    assert float(next(line for line in printed.splitlines() if "top1_agreement" in line).split()[1]) == 1.0
    assert "DEQUANTIZE" in op_names(out)


def test_ternary_residual_on_a_shared_grid_is_exact_in_litert(digits, tmp_path):
    """Block-wise ternary residuals (blocks of 64 along a 1,152 reduction: 18 alphas per channel
    and term) on the int4 grid: int4 in the file, Keras' outputs in LiteRT; free alphas are not."""
    (x, y), (xt, _) = digits
    keras.utils.set_random_seed(0)
    model = digits_cnn()
    model.compile(keras.optimizers.Adam(3e-3), LOSS)
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    diffs = {}
    for grid_bits in (4, None):
        spec = {"scheme": "ternary_residual", "grid_bits": grid_bits}
        quantized = quantize_model(model, {"conv_2": spec, "dense": spec}, verbose=False)
        path = to_tflite(quantized, tmp_path / f"grid_{grid_bits}.tflite", weight_only=True)
        truth = _keras_outputs(quantized, xt)
        diffs[grid_bits] = float(np.abs(litert_outputs(path, xt) - truth).max()) / float(np.abs(truth).max())
        if grid_bits:
            tensors = stored_tensors(path)
            assert [entry[0] for entry in tensors[(32, 3, 3, 16)]] == [INT4]
            assert [entry[0] for entry in tensors[(64, 1152)]] == [INT4]
            quantized.save(tmp_path / "grid.keras")
            restored = keras.saving.load_model(tmp_path / "grid.keras")
            assert restored.get_layer("dense").grid_bits == 4
            np.testing.assert_array_equal(_keras_outputs(restored, xt), truth)
    assert diffs[4] < 1e-5
    assert diffs[None] > 100 * diffs[4]
