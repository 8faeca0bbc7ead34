"""quantize_model and quantization_summary: new model, weights carried, errors, counts."""

import json

import keras
import numpy as np
import pytest

from keras_hessian.layers import (
    BinaryConv2D,
    BinaryDense,
    DFP16Conv1D,
    DFP16Conv2D,
    DFP16Dense,
    TernaryResidualConv2D,
    TernaryResidualDense,
)
from keras_hessian.layers import quantizers as q
from keras_hessian.quantize import quantization_summary, quantize_model


@pytest.fixture(scope="module")
def small_cnn():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="first"),
            keras.layers.Conv2D(6, 3, activation="relu", name="middle_conv"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, activation="relu", name="middle_dense"),
            keras.layers.Dense(10, activation="softmax", name="last"),
        ],
        name="small_cnn",
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(size=(8, 8, 8, 1)).astype(np.float32)


def snapshot(model):
    return (
        [layer for layer in model.layers],
        [type(layer) for layer in model.layers],
        [w.copy() for w in model.get_weights()],
        json.dumps(model.get_config(), sort_keys=True, default=str),
    )


def assert_unchanged(model, before):
    layers, types, weights, config = before
    assert model.layers == layers
    assert [type(layer) for layer in model.layers] == types
    for old, new in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert json.dumps(model.get_config(), sort_keys=True, default=str) == config


@pytest.mark.parametrize(
    "scheme, conv_type, dense_type",
    [
        ("binary", BinaryConv2D, BinaryDense),
        ("ternary_residual", TernaryResidualConv2D, TernaryResidualDense),
        ("dfp16", DFP16Conv2D, DFP16Dense),
    ],
)
def test_new_model_swaps_middle_layers_and_keeps_original(small_cnn, x, scheme, conv_type, dense_type):
    before = snapshot(small_cnn)
    reference = small_cnn.predict(x, verbose=0)
    quantized = quantize_model(small_cnn, scheme)
    assert quantized is not small_cnn
    assert_unchanged(small_cnn, before)
    np.testing.assert_array_equal(small_cnn.predict(x, verbose=0), reference)
    names = [layer.name for layer in quantized.layers]
    assert names == [layer.name for layer in small_cnn.layers]
    assert type(quantized.get_layer("first")) is keras.layers.Conv2D
    assert type(quantized.get_layer("last")) is keras.layers.Dense
    assert isinstance(quantized.get_layer("middle_dense"), dense_type)
    assert isinstance(quantized.get_layer("middle_conv"), conv_type)
    for name in ("middle_conv", "middle_dense"):
        new, old = quantized.get_layer(name), small_cnn.get_layer(name)
        np.testing.assert_array_equal(new.kernel.numpy(), old.kernel.numpy())
        np.testing.assert_array_equal(new.bias.numpy(), old.bias.numpy())
        assert new.activation is old.activation
    for name in ("first", "norm", "last"):
        for a, b in zip(quantized.get_layer(name).get_weights(), small_cnn.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert quantized.get_layer("middle_dense").bias is not small_cnn.get_layer("middle_dense").bias


def test_binary_post_training_forward_uses_scaled_signs(small_cnn, x):
    quantized = quantize_model(small_cnn, "binary")
    layer = quantized.get_layer("middle_dense")
    assert layer.per_channel_scale and not layer.binary_activations
    kernel = small_cnn.get_layer("middle_dense").kernel.numpy()
    expected = np.where(kernel >= 0, 1.0, -1.0) * np.abs(kernel).mean(axis=0)
    np.testing.assert_allclose(layer.quantized_kernel().numpy(), expected, rtol=1e-6)


def test_dfp16_and_float32_schemes_track_the_float_model(small_cnn, x):
    reference = small_cnn.predict(x, verbose=0)
    same = quantize_model(small_cnn, "float32")
    np.testing.assert_array_equal(same.predict(x, verbose=0), reference)
    dfp = quantize_model(small_cnn, "dfp16", skip_first_last=False)
    assert type(dfp.get_layer("first")) is DFP16Conv2D
    np.testing.assert_allclose(dfp.predict(x, verbose=0), reference, atol=2e-3)


def test_per_layer_plan_and_scheme_options(small_cnn):
    before = snapshot(small_cnn)
    plan = {
        "first": {"scheme": "ternary_residual", "block_size": 3, "residuals": 2},
        "middle_dense": "dfp16",
        "last": "float32",
    }
    quantized = quantize_model(small_cnn, plan)
    first = quantized.get_layer("first")
    assert isinstance(first, TernaryResidualConv2D)
    assert (first.block_size, first.residuals, first.active_residuals) == (3, 2, 2)
    assert isinstance(quantized.get_layer("middle_dense"), DFP16Dense)
    assert type(quantized.get_layer("middle_conv")) is keras.layers.Conv2D
    assert type(quantized.get_layer("last")) is keras.layers.Dense
    whole = quantize_model(small_cnn, {"scheme": "ternary_residual", "residuals": 3, "block_size": 8})
    assert whole.get_layer("middle_dense").residuals == 3
    assert_unchanged(small_cnn, before)


def test_functional_model_with_conv1d_and_nested_model():
    keras.utils.set_random_seed(1)
    inner = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(8, name="inner_dense")], name="inner"
    )
    inputs = keras.Input((20, 2))
    h = keras.layers.Conv1D(4, 3, name="c1")(inputs)
    h = keras.layers.Conv1D(4, 3, name="c2")(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    a = keras.layers.Dense(16, name="branch")(h)
    outputs = keras.layers.Dense(2, name="out")(inner(a))
    model = keras.Model(inputs, outputs)
    before = snapshot(model)
    quantized = quantize_model(model, "dfp16")
    assert isinstance(quantized.get_layer("c2"), DFP16Conv1D)
    assert isinstance(quantized.get_layer("inner").get_layer("inner_dense"), DFP16Dense)
    data = np.random.default_rng(0).normal(size=(4, 20, 2)).astype(np.float32)
    np.testing.assert_allclose(quantized(data), model(data), atol=1e-3)
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    "scheme, error, pattern",
    [
        ({"no_such_layer": "binary"}, ValueError, "no_such_layer"),
        ({"norm": "binary"}, TypeError, "BatchNormalization"),
        ({"flatten": "dfp16"}, TypeError, "cannot be quantized"),
        ({"middle_dense": {"scheme": "ternary_residual", "residuals": -1}}, ValueError, "residuals"),
        ({"middle_dense": {"scheme": "ternary_residual", "block_size": 0}}, ValueError, "block_size"),
        ({"middle_dense": {"scheme": "dfp16", "precision": 40}}, ValueError, "precision"),
        ({"middle_dense": {"scheme": "dfp16", "precision": 1}}, ValueError, "precision"),
        ({"middle_dense": {"scheme": "binary", "bits": 3}}, ValueError, "bits"),
        ({"middle_dense": {"bits": 3}}, TypeError, "scheme"),
        ("int4", ValueError, "int4"),
        ({"scheme": "bfloat16", "block_size": 3}, ValueError, "no options"),
    ],
)
def test_bad_input_is_rejected_and_model_unchanged(small_cnn, x, scheme, error, pattern):
    before = snapshot(small_cnn)
    reference = small_cnn.predict(x, verbose=0)
    with pytest.raises(error, match=pattern):
        quantize_model(small_cnn, scheme)
    assert_unchanged(small_cnn, before)
    np.testing.assert_array_equal(small_cnn.predict(x, verbose=0), reference)


def test_non_float_weights_rejected():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(3, name="b")]
    )
    model.get_layer("a").quantize("int8")
    before = snapshot(model)
    with pytest.raises(TypeError, match="non-float"):
        quantize_model(model, {"a": "binary"})
    assert_unchanged(model, before)


def test_unbuilt_and_non_model_inputs():
    with pytest.raises(ValueError, match="built"):
        quantize_model(keras.Sequential([keras.layers.Dense(2)]), "binary")
    with pytest.raises(TypeError, match="model"):
        quantize_model(keras.layers.Dense(2), "binary")


def test_summary_counts_against_closed_form():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, name="c0"),  # out 4x4x3, 18 products per output
            keras.layers.Conv2D(4, 3, name="c1"),  # out 2x2x4, 27 products per output
            keras.layers.Flatten(),
            keras.layers.Dense(5, name="d0"),  # 16 -> 5
            keras.layers.Dense(2, name="d1"),  # 5 -> 2
        ]
    )
    float_report = quantization_summary(model, print_fn=None)
    macs = {"c0": 48 * 18, "c1": 16 * 27, "d0": 80, "d1": 10}
    params = {"c0": 57, "c1": 112, "d0": 85, "d1": 12}
    rows = {row["name"]: row for row in float_report["layers"]}
    for name, count in macs.items():
        assert rows[name]["multiplications"] == count
        assert rows[name]["weight_bits"] == 32 * params[name]
    assert float_report["total"]["weight_bytes"] == 4 * sum(params.values())

    plan = {
        "c0": {"scheme": "ternary_residual", "block_size": 10, "residuals": 2},
        "c1": "binary",
        "d0": "dfp16",
    }
    lines = []
    quantized = quantize_model(model, plan)
    quantized.get_layer("c0").active_residuals = 1
    report = quantization_summary(quantized, print_fn=lines.append)
    rows = {row["name"]: row for row in report["layers"]}
    # Ternary: 2 terms, ceil(18 / 10) = 2 blocks per filter, 2 bits per weight and term,
    # one float32 scale per block and term, one multiplication per block and term.
    assert rows["c0"]["weight_bits"] == 2 * 54 * 2 + 32 * 3 * 2 * 2 + 32 * 3
    assert rows["c0"]["multiplications"] == 48 * 2 * 2
    assert rows["c0"]["replaced_multiplications"] == macs["c0"]
    # Binary with per-channel scale: 1 bit per weight, a float32 scale per filter.
    assert rows["c1"]["weight_bits"] == 108 + 32 * 4 + 32 * 4
    assert rows["c1"]["multiplications"] == 16
    assert rows["c1"]["replaced_multiplications"] == macs["c1"]
    # DFP-16: 16 bits per weight plus the 8-bit shared exponent.
    assert rows["d0"]["weight_bits"] == 16 * 80 + 8 + 32 * 5
    assert rows["d0"]["multiplications"] == 80
    assert report["total"]["multiplications"] == 192 + 16 + 80 + 10
    assert report["total"]["weight_bytes"] == sum(r["weight_bytes"] for r in report["layers"])
    text = "\n".join(lines)
    assert "ternary x2 N=10" in text and "binary w" in text and "DFP-16" in text
    assert "Multiplications replaced by sign/add" in text


def test_quantizer_precision_metadata_on_swapped_layers(small_cnn):
    binary = quantize_model(small_cnn, "binary").get_layer("middle_dense")
    ternary = quantize_model(small_cnn, {"scheme": "ternary_residual", "residuals": 2})
    assert binary.kernel_quantizer.precision == 1
    assert ternary.get_layer("middle_dense").kernel_quantizer.precision == 6
    assert isinstance(ternary.get_layer("middle_dense").kernel_quantizer, q.TernaryResidual)


def test_quantized_model_saves_and_fine_tunes(small_cnn, x, tmp_path):
    quantized = quantize_model(small_cnn, {"scheme": "ternary_residual", "residuals": 1, "block_size": 16})
    quantized.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    y = np.arange(8) % 10
    before = quantized.evaluate(x, y, verbose=0)
    quantized.fit(x, y, epochs=5, verbose=0)
    assert quantized.evaluate(x, y, verbose=0) < before
    path = tmp_path / "q.keras"
    quantized.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), quantized.predict(x, verbose=0))


def test_benchmark_quick_mode(tmp_path):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "quantized_accuracy.py"
    spec = importlib.util.spec_from_file_location("quantized_accuracy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick", "--datasets", "digits", "--output", str(tmp_path)])
    rows = json.loads((tmp_path / "quantized_accuracy.json").read_text())["rows"]
    assert rows == json.loads(json.dumps(result["rows"]))
    schemes = {(r["scheme"], r["stage"]) for r in rows}
    assert ("ternary_residual", "fine_tuned") in schemes and ("dfp16", "trained") in schemes
    keys = {"dataset", "scheme", "residuals", "stage", "accuracy_mean", "accuracy_std",
            "weight_bytes", "multiplications"}
    assert all(keys <= set(r) and 0 <= r["accuracy_mean"] <= 1 for r in rows)
    assert (tmp_path / "quantized_accuracy.md").exists()
