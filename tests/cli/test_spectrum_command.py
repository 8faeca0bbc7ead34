"""`keras-hessian spectrum`: which split it measures, the whole model next to the layers, progress."""

from __future__ import annotations

import json

import numpy as np

from keras_hessian.cli import main
from tests.conftest import by_magnitude, exact_hessian


def test_spectrum_on_the_test_split_with_layers(tmp_path, linear_keras, digits_npz, capsys):
    # Bug 16: the training split was measured without saying so; --layers printed no whole-model row.
    model, path = linear_keras
    out_json = tmp_path / "s.json"
    argv = ["spectrum", str(path), "--data", str(digits_npz), "--split", "test", "--layers", "--top-k", "1",
            "--json", str(out_json)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "40 examples of arrays x_test, y_test" in printed
    assert "loading" in printed and "top-1 eigenvalues" in printed and "done (" in printed
    report = json.loads(out_json.read_text())
    assert report["split"] == "test" and report["examples"] == 40
    data = np.load(digits_npz)
    top = by_magnitude(np.linalg.eigvalsh(exact_hessian(model, data["x_test"], data["y_test"])))[0]
    train_top = by_magnitude(np.linalg.eigvalsh(exact_hessian(model, data["x"], data["y"])))[0]
    assert abs(top - train_top) > 1e-3 * abs(top)  # the two splits are told apart
    # The whole model and its one layer block: the same Hessian here.
    np.testing.assert_allclose(report["blocks"]["model"]["eigenvalues"], [top], rtol=1e-3)
    np.testing.assert_allclose(report["blocks"]["logits"]["eigenvalues"], [top], rtol=1e-3)
    rows = [line.split()[0] for line in printed.splitlines() if line.split() and line.split()[0] in ("model", "logits")]
    assert rows == ["model", "logits"]


def test_spectrum_default_split_is_train_and_said(tmp_path, linear_keras, digits_npz, capsys):
    _, path = linear_keras
    assert main(["spectrum", str(path), "--data", str(digits_npz), "--top-k", "1"]) == 0
    assert "60 examples of arrays x, y" in capsys.readouterr().out


def test_spectrum_landscape_png(tmp_path, linear_keras, digits_npz, capsys):
    model, path = linear_keras
    png, out_json = tmp_path / "landscape.png", tmp_path / "s.json"
    argv = ["spectrum", str(path), "--data", str(digits_npz), "--top-k", "1", "--landscape", str(png),
            "--json", str(out_json)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "loss landscape along the top eigenvector" in printed and "point 21/21" in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(out_json.read_text())["landscape"]
    data = np.load(digits_npz)
    logits = model(data["x"], training=False)
    import keras

    loss = float(np.mean(keras.losses.sparse_categorical_crossentropy(data["y"], logits, from_logits=True)))
    assert report["offsets"][10] == 0.0 and len(report["losses"]) == 21
    np.testing.assert_allclose(report["losses"][10], loss, rtol=1e-5)


def test_spectrum_landscape_path_checked_before_any_work(tmp_path, linear_keras, capsys):
    argv = ["spectrum", str(linear_keras[1]), "--data", "digits", "--landscape", str(tmp_path / "missing" / "l.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--landscape" in err and err.count("\n") == 1
