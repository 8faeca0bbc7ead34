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
