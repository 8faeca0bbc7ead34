"""The float32 inference copy: bfloat16 rebuilt, every quantized layer folded, in LiteRT."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_hessian import layers as kh_layers
from keras_hessian.export import (
    inference_copy,
    parity_report,
    predict_tflite,
    to_tflite,
)
from keras_hessian.quantize import quantize_model
from tests.export._helpers import (
    QUANTIZED_CASES,
    _assert_unchanged,
    _inputs_for,
    _keras_outputs,
    _single_layer_model,
    _snapshot,
)


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


def test_exporting_adds_no_node_to_the_users_operations(tmp_path):
    # `h + pos` and `keras.ops.mean` are operations of the user's graph: the inference copy must not call them
    # (each call would add a node to the user's model and keep the copy alive).
    import keras

    from keras_hessian.export import to_tflite
    from keras_hessian.quantize import quantize_model

    inputs = keras.Input((5, 4))
    h = keras.layers.Dense(4)(inputs) + keras.ops.ones((5, 4))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.ops.mean(h, axis=1)))
    operations = [op for op in model.operations if not isinstance(op, keras.layers.Layer)]
    assert [type(op).__name__ for op in operations] == ["Add", "Mean"]
    for exported in (model, quantize_model(model, "integer", skip_first_last=False, verbose=False), model):
        to_tflite(exported, tmp_path / "m.tflite", mode="float32")
    assert [len(op._inbound_nodes) for op in operations] == [1, 1]


def test_the_float32_rebuild_leaves_integer_layers_their_dtype():
    import keras

    from keras_hessian.export.inference_copy import _float32_config

    assert keras.dtype_policies.get(_float32_config(keras.layers.Identity(dtype="int32"))["dtype"]).name == "int32"
    assert _float32_config(keras.layers.Dense(2, dtype="mixed_bfloat16"))["dtype"] == "float32"
