"""Every failure of the command is one line `keras-hessian COMMAND: error: ...`, exit 2, and says what to do."""

from __future__ import annotations

import sys

import keras
import numpy as np

from keras_hessian.cli import main
from tests.cli.conftest import linear_classifier
from tests.conftest import by_magnitude, exact_hessian


def _error(argv, capsys, command="spectrum") -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"keras-hessian {command}: error: "), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_tfds_without_tensorflow_datasets(monkeypatch, linear_keras, capsys):
    # Bug 12: an ImportError traceback.
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    err = _error(["spectrum", str(linear_keras[1]), "--data", "tfds:mnist"], capsys)
    assert "tensorflow-datasets" in err and "pip install" in err


def test_corrupt_model_file_is_not_reported_missing(tmp_path, linear_keras, capsys):
    # Bug 12: a truncated .keras file was reported as "File not found".
    content = linear_keras[1].read_bytes()
    (tmp_path / "truncated.keras").write_bytes(content[: len(content) // 2])
    (tmp_path / "text.keras").write_text("not a model")
    for name in ("truncated.keras", "text.keras"):
        err = _error(["spectrum", str(tmp_path / name), "--data", "digits"], capsys)
        assert "not a valid .keras file" in err and "not found" not in err.lower()


def test_lambda_layer_needs_unsafe(tmp_path, digits_npz, capsys):
    # Bug 12: the advice was to pass safe_mode=False, which the command had no flag for.
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Lambda(lambda t: 2.0 * t), keras.layers.Dense(10)])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.save(tmp_path / "lambda.keras")
    err = _error(["spectrum", str(tmp_path / "lambda.keras"), "--data", str(digits_npz)], capsys)
    assert "--unsafe" in err and "safe_mode" not in err
    argv = ["spectrum", str(tmp_path / "lambda.keras"), "--data", str(digits_npz), "--top-k", "1", "--unsafe"]
    assert main(argv) == 0
    assert "warning: --unsafe" in capsys.readouterr().err


def test_uncompiled_model_needs_loss(tmp_path, digits_npz, capsys):
    # Bug 12: the advice was to pass loss=, which the command had no flag for.
    model = linear_classifier(compiled=False)
    model.save(tmp_path / "plain.keras")
    err = _error(["spectrum", str(tmp_path / "plain.keras"), "--data", str(digits_npz)], capsys)
    assert "--loss" in err
    out_json = tmp_path / "s.json"
    argv = ["spectrum", str(tmp_path / "plain.keras"), "--data", str(digits_npz), "--top-k", "2",
            "--loss", "sparse_categorical_crossentropy", "--json", str(out_json)]
    assert main(argv) == 0
    assert "from_logits=True" in capsys.readouterr().out  # a Dense without softmax gives logits
    import json

    data = np.load(digits_npz)
    exact = exact_hessian(model, data["x"], data["y"])  # sparse cross-entropy on logits
    eigenvalues = json.loads(out_json.read_text())["blocks"]["model"]["eigenvalues"]
    np.testing.assert_allclose(eigenvalues, by_magnitude(np.linalg.eigvalsh(exact))[:2], rtol=1e-3)


def test_one_hot_labels_with_a_sparse_loss(tmp_path, linear_keras, capsys):
    # Bug 12: a raw Keras message about tensor ranks.
    x = np.random.default_rng(0).random((20, 64), dtype=np.float32)
    np.savez(tmp_path / "onehot.npz", x=x, y=np.eye(10, dtype=np.float32)[np.arange(20) % 10])
    err = _error(["spectrum", str(linear_keras[1]), "--data", str(tmp_path / "onehot.npz")], capsys)
    assert "labels of shape (10,)" in err and "predictions of shape (10,)" in err
    assert "Argument `output`" not in err


def test_flat_images_for_an_image_model(tmp_path, digits_npz, capsys):
    # Bug 12: Keras' message printed the whole input array.
    keras.utils.set_random_seed(6)
    model = keras.Sequential(
        [keras.Input((None, None, 1)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
         keras.layers.Dense(10)]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.save(tmp_path / "conv.keras")
    err = _error(["spectrum", str(tmp_path / "conv.keras"), "--data", str(digits_npz)], capsys)
    assert "examples of shape (64,)" in err and "(None, None, 1)" in err
    assert len(err) < 300


def test_output_paths_are_checked_before_any_work(tmp_path, monkeypatch, linear_keras, capsys):
    # Bug 13: SLQ ran 27 s, then the missing directory of --json was reported as a raw errno.
    import keras_hessian.callbacks
    import keras_hessian.hessian

    calls = []
    monkeypatch.setattr(keras.models, "load_model", lambda *a, **k: calls.append("load_model"))
    monkeypatch.setattr(keras_hessian.hessian, "top_eigenvalues", lambda *a, **k: calls.append("top_eigenvalues"))
    monkeypatch.setattr(keras_hessian.callbacks, "training_callbacks", lambda *a, **k: calls.append("train"))
    missing = tmp_path / "no_such_dir"
    for option in ("--json", "--density"):
        argv = ["spectrum", str(linear_keras[1]), "--data", "digits", option, str(missing / "x")]
        assert option in _error(argv, capsys)
    assert "OUTPUT" in _error(["export", str(linear_keras[1]), str(missing / "m.tflite")], capsys, "export")
    assert "--json" in _error(["train", "--epochs", "1", "--json", str(missing / "t.json")], capsys, "train")
    assert "--density" in _error(
        ["spectrum", str(linear_keras[1]), "--data", "digits", "--density", str(tmp_path)], capsys
    )
    assert calls == []


def test_no_output_may_overwrite_the_input_model_or_another_output(tmp_path, monkeypatch, linear_keras, capsys):
    # A review found `spectrum --json MODEL.keras` destroying the model after the whole run.
    import shutil

    import keras_hessian.hessian

    calls = []
    monkeypatch.setattr(keras_hessian.hessian, "top_eigenvalues", lambda *a, **k: calls.append("top_eigenvalues"))
    model = tmp_path / "m.keras"
    shutil.copy(linear_keras[1], model)
    before = model.read_bytes()
    for option in ("--json", "--density", "--landscape"):
        argv = ["spectrum", str(model), "--data", "digits", option, str(model)]
        assert "is the input model" in _error(argv, capsys)
    same = str(tmp_path / "out.png")
    assert "same file" in _error(["spectrum", str(model), "--data", "digits", "--density", same, "--landscape", same], capsys)
    both = str(tmp_path / "t.keras")
    assert "same file as --save" in _error(["train", "--epochs", "1", "--save", both, "--json", both], capsys, "train")
    assert "--save must name a .keras file" in _error(
        ["quantize", str(model), "--data", "digits", "--budget", "0.5", "--out", str(tmp_path / "q.tflite"), "--save", str(tmp_path / "q")], capsys, "quantize"
    )
    assert model.read_bytes() == before and calls == []


def test_train_numbers_are_checked_by_their_flag_names(capsys):
    for argv, flag in ((["--lr-decay", "0"], "--lr-decay"), (["--lr-decay", "1"], "--lr-decay"), (["--seed", "-1"], "--seed")):
        assert flag in _error(["train", "--epochs", "1", *argv], capsys, "train")


def test_export_weight_only_with_a_float_mode_is_refused_by_flag_name(tmp_path, linear_keras, capsys):
    out = tmp_path / "m.tflite"
    err = _error(["export", str(linear_keras[1]), str(out), "--mode", "float16", "--weight-only"], capsys, "export")
    assert "--weight-only" in err and "--mode float16" in err
    assert not out.exists()
