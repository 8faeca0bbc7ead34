"""to_tflite: modes, calibration data, conversion errors (real converter, real LiteRT, digits)."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.export import (
    MODES,
    parity_report,
    predict_tflite,
    to_tflite,
)
from tests.export._helpers import (
    _assert_unchanged,
    _int8_weights,
    _keras_outputs,
    _snapshot,
)


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


def test_int8_file_keeps_float_inputs_and_quantizes_all_weights(float_model, digits, tmp_path):
    (x_train, _), _ = digits
    path = to_tflite(float_model, tmp_path / "i8.tflite", mode="int8", representative_data=x_train)
    weights = _int8_weights(path)
    kernels = {k.shape for k in (float_model.layers[i].kernel for i in (1, 6, 7))}
    # TFLite stores kernels output-channel first: (out, ..., in).
    stored = {tuple(v[0].shape) for v in weights.values()}
    assert {(16, 3, 3, 1), (64, 144), (10, 64)} <= stored, (stored, kernels)


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
