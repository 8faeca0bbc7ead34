"""`keras-hessian export`: the same file as the library, and never over its own input."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from keras_hessian.cli import main


@pytest.fixture(scope="module")
def ternary_keras(tmp_path_factory):
    """A ternary-residual model whose float first layer (64 x 32 = 2,048 weights) is large enough
    for the converter's dynamic int8 (which leaves tensors under 1,024 elements in float)."""
    from keras_hessian import quantize_model

    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu", name="first"),
            keras.layers.Dense(32, activation="relu", name="middle"),
            keras.layers.Dense(10, name="last"),
        ]
    )
    quantized = quantize_model(model, {"scheme": "ternary_residual", "residuals": 1})
    path = tmp_path_factory.mktemp("export") / "ternary.keras"
    quantized.save(path)
    return path


def _tensor_types(path) -> list[tuple]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return sorted((tuple(t["shape"]), np.dtype(t["dtype"]).name) for t in interpreter.get_tensor_details())


def test_export_auto_writes_the_library_file(tmp_path, ternary_keras, capsys):
    # Bug 3: the CLI resolved mode="auto" itself and skipped to_tflite's float first/last layers.
    import keras_hessian.layers  # noqa: F401  (registers the quantized layers for load_model)
    from keras_hessian.export import to_tflite

    assert main(["export", str(ternary_keras), str(tmp_path / "cli.tflite")]) == 0
    library = to_tflite(keras.models.load_model(ternary_keras), tmp_path / "library.tflite", mode="auto")
    cli_types = _tensor_types(tmp_path / "cli.tflite")
    assert cli_types == _tensor_types(library)
    # The float first layer's kernel is stored as float32 (64 -> 32, TFLite's (out, in) layout).
    assert ((32, 64), "float32") in cli_types
    assert (tmp_path / "cli.tflite").read_bytes() == library.read_bytes()


def test_export_refuses_to_overwrite_its_input(tmp_path, capsys):
    # Bug 11 (data loss): `export swap.keras swap.keras --data digits` replaced the model with TFLite.
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.save(tmp_path / "swap.keras")
    os.symlink(tmp_path / "swap.keras", tmp_path / "link.tflite")
    os.link(tmp_path / "swap.keras", tmp_path / "hard.tflite")
    original = (tmp_path / "swap.keras").read_bytes()
    for output in ("swap.keras", "link.tflite", "hard.tflite"):
        assert main(["export", str(tmp_path / "swap.keras"), str(tmp_path / output), "--data", "digits"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("keras-hessian export: error: ") and err.count("\n") == 1, err
        assert "input" in err
        assert (tmp_path / "swap.keras").read_bytes() == original


def test_export_warns_on_an_extension_that_is_not_tflite(tmp_path, capsys):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    assert main(["export", str(tmp_path / "m.keras"), str(tmp_path / "m.keras2")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and ".tflite" in err
    assert (tmp_path / "m.keras2").read_bytes()[4:8] == b"TFL3"
