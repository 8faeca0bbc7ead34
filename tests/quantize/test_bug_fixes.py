"""Issue 9, bug 5 (activity regularizer, same-named layers in nested models) and bug 15 (summary printing)."""

import keras
import numpy as np
import pytest

from keras_hessian.layers import TernaryResidualDense
from keras_hessian.quantize import quantization_summary, quantize_model


def regularized_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, name="first"),
            keras.layers.Dense(4, activation="tanh", activity_regularizer=keras.regularizers.L2(0.1), name="reg"),
            keras.layers.Dense(2, name="last"),
        ]
    )


@pytest.mark.parametrize("scheme", ["float32", "ternary_residual", "binary", "dfp16"])
def test_activity_regularizer_is_kept(scheme):
    model = regularized_model()
    x = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
    quantized = quantize_model(model, scheme)
    quantized(x)
    # Independent truth: Keras' activity loss is 0.1 * sum(y ** 2) / batch on the layer's own output.
    hidden = quantized.get_layer("first")(x)
    y = np.asarray(quantized.get_layer("reg")(hidden), np.float64)
    expected = 0.1 * np.sum(y**2) / len(x)
    assert len(quantized.losses) == 1
    np.testing.assert_allclose(float(quantized.losses[0]), expected, rtol=1e-5)
    assert quantized.get_layer("reg").get_config()["activity_regularizer"] is not None


def nested_model():
    keras.utils.set_random_seed(3)

    def inner(name):
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(6, name="dense")], name=name)

    return keras.Sequential(
        [keras.Input((6,)), inner("inner_a"), inner("inner_b"), keras.layers.Dense(2, name="head")], name="outer"
    )


def kernels(model):
    return {name: model.get_layer(name).get_layer("dense").kernel.numpy() for name in ("inner_a", "inner_b")}


@pytest.mark.parametrize("scheme", ["float32", "ternary_residual"])
def test_same_name_layers_in_nested_models_stay_apart(scheme):
    model = nested_model()
    sources = kernels(model)
    assert not np.array_equal(sources["inner_a"], sources["inner_b"])
    quantized = quantize_model(model, scheme)
    for name, kernel in kernels(quantized).items():
        np.testing.assert_array_equal(kernel, sources[name])
    first = quantized.get_layer("inner_a").get_layer("dense")
    middle = quantized.get_layer("inner_b").get_layer("dense")
    # skip_first_last keeps the first quantizable layer (inner_a/dense) float; only inner_b/dense changes.
    assert type(first) is keras.layers.Dense
    assert isinstance(middle, TernaryResidualDense) == (scheme == "ternary_residual")


def test_per_layer_plan_addresses_nested_layers_by_path():
    model = nested_model()
    sources = kernels(model)
    plan = {"inner_a/dense": {"scheme": "ternary_residual", "block_size": 3}, "inner_b/dense": "binary"}
    quantized = quantize_model(model, plan)
    a = quantized.get_layer("inner_a").get_layer("dense")
    b = quantized.get_layer("inner_b").get_layer("dense")
    assert isinstance(a, TernaryResidualDense) and a.block_size == 3
    assert type(b).__name__ == "BinaryDense"
    np.testing.assert_array_equal(a.kernel.numpy(), sources["inner_a"])
    np.testing.assert_array_equal(b.kernel.numpy(), sources["inner_b"])
    assert type(quantized.get_layer("head")) is keras.layers.Dense
    with pytest.raises(ValueError, match="inner_a/dense"):
        quantize_model(model, {"dense": "binary"})  # ambiguous: the error lists the paths


def test_summary_prints_only_when_asked(capsys):
    model = regularized_model()
    report = quantization_summary(model)
    assert capsys.readouterr().out == ""
    assert report["total"]["weight_bytes"] == 4 * (6 * 5 + 5 + 5 * 4 + 4 + 4 * 2 + 2)
    assert [row["name"] for row in report["layers"]] == ["first", "reg", "last"]
    table = repr(report)
    assert "Quantization summary" in table and "Weight memory" in table and str(report) == table
    lines = []
    quantization_summary(model, print_fn=lines.append)
    assert "\n".join(lines) == table
    report.print()
    assert capsys.readouterr().out.strip() == table.strip()
