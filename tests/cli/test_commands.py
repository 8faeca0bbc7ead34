"""The keras-hessian sub-commands end to end, run in-process through the entry point."""

from __future__ import annotations

import json

import keras
import numpy as np

from keras_hessian.cli import main
from tests.conftest import by_magnitude, exact_hessian


def test_spectrum_command(tmp_path, cnn, digits_image, capsys):
    path = tmp_path / "cnn.keras"
    cnn.save(path)
    (x, y), _ = digits_image
    np.savez(tmp_path / "data.npz", x=x[:200], y=y[:200])
    out_json, out_png = tmp_path / "s.json", tmp_path / "d.png"
    code = main([
        "spectrum", str(path), "--data", str(tmp_path / "data.npz"), "--top-k", "2", "--trace",
        "--json", str(out_json), "--density", str(out_png),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "lambda_1" in printed and "trace" in printed
    assert "step 25/25" in printed  # the density's progress line, redrawn per Lanczos step
    report = json.loads(out_json.read_text())
    exact = exact_hessian(cnn, x[:200], y[:200])
    np.testing.assert_allclose(report["blocks"]["model"]["eigenvalues"], by_magnitude(np.linalg.eigvalsh(exact))[:2], rtol=1e-3)
    assert abs(report["blocks"]["model"]["trace"] - np.trace(exact)) < 0.02 * np.trace(exact)
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_spectrum_command_per_layer_on_embedded_digits(tmp_path, mlp, capsys):
    path = tmp_path / "mlp.keras"
    mlp.save(path)
    assert main(["spectrum", str(path), "--data", "digits", "--samples", "100", "--layers", "--top-k", "1"]) == 0
    printed = capsys.readouterr().out
    for layer in mlp.layers:
        assert layer.name in printed


def test_spectrum_command_bad_input(tmp_path, capsys):
    def error_of(argv):
        assert main(argv) == 2  # argparse's status for bad input
        err = capsys.readouterr().err
        assert err.startswith("keras-hessian spectrum: error: ")
        return err

    assert "no such file" in error_of(["spectrum", str(tmp_path / "missing.keras"), "--data", "digits"])
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.save(tmp_path / "m.keras")
    assert "--data must be" in error_of(["spectrum", str(tmp_path / "m.keras"), "--data", "imagenet"])
    assert "--top-k" in error_of(["spectrum", str(tmp_path / "m.keras"), "--data", "digits", "--top-k", "0"])
    assert "do not fit the model's input (64,)" in error_of(["spectrum", str(tmp_path / "m.keras"), "--data", "mnist1d"])


def test_demo_command(quick_demo):
    # The demo of issue 15 (the --quick run, shared with tests/cli/test_demo.py): ABSA's history,
    # the HAWQ model as quantized / tflite, its file hawq.tflite.
    tmp_path, _ = quick_demo
    report = json.loads((tmp_path / "demo.json").read_text())
    assert len(report["history"]["hessian/top_eigenvalue"]) == 3  # --epochs 3
    assert (tmp_path / "density.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "history.png").read_bytes()[:4] == b"\x89PNG"
    # The exported HAWQ model, run here with LiteRT directly, gives the accuracy the
    # demo reports, and the quantization report counts the cheaper layers.
    from ai_edge_litert.interpreter import Interpreter

    from keras_hessian.data import load_digits

    _, (x_test, y_test) = load_digits()
    interpreter = Interpreter(model_path=str(tmp_path / "hawq.tflite"))
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [len(x_test), *x_test.shape[1:]])
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x_test.astype(detail["dtype"]))
    interpreter.invoke()
    logits = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert report["tflite"]["litert_accuracy"] == float(np.mean(np.argmax(logits, axis=-1) == y_test))
    assert report["tflite"]["top1_agreement"] >= 0.99
    assert report["tflite"]["file_bytes"] == (tmp_path / "hawq.tflite").stat().st_size
    quantized = report["quantized"]
    assert quantized["weight_bytes"] < quantized["float32_weight_bytes"] / 4
    # HAWQ keeps conv_2 (two thirds of the multiplications) at int8: fewer, not 4x fewer.
    assert quantized["multiplications"] < quantized["float32_multiplications"]
