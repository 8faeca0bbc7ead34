"""`keras-hessian train`: --save (a model the other commands load), --data tfds:NAME, epochs counted as Keras does."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest

from keras_hessian.cli import main
from keras_hessian.data import load_digits


def test_save_writes_a_loadable_model_and_epochs_count_from_one(tmp_path, capsys):
    save, rows = tmp_path / "model.keras", tmp_path / "rows.json"
    argv = ["train", "--method", "baseline", "--data", "digits", "--epochs", "2", "--batch-size", "200",
            "--save", str(save), "--json", str(rows)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    epochs = [row["epoch"] for row in json.loads(rows.read_text())["epochs"]]
    assert epochs == [1, 2]  # as Keras' "Epoch 1/2", "Epoch 2/2"
    (x, _), (xt, yt) = load_digits(seed=0)
    # Closed form: a fixed batch of 200 over the training split, two epochs.
    assert f"SGD iterations: {2 * math.ceil(len(x) / 200)}" in out
    model = keras.models.load_model(save)
    assert model.input_shape[1:] == x.shape[1:]
    assert model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"] > 0.1


@pytest.mark.parametrize("path", ["model.h5", "missing_dir/model.keras"])
def test_a_bad_save_path_fails_before_any_work(tmp_path, capsys, monkeypatch, path):
    import keras_hessian.callbacks

    monkeypatch.setattr(keras_hessian.callbacks, "training_callbacks", lambda *a, **k: pytest.fail("trained"))
    assert main(["train", "--epochs", "1", "--save", str(tmp_path / path)]) == 2
    err = capsys.readouterr().err
    assert "--save" in err and "Traceback" not in err
    assert not (tmp_path / path).exists()


def test_tfds_data(tmp_path, capsys):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        assert main(["train", "--method", "baseline", "--data", "tfds:mnist", "--epochs", "1", "--batch-size", "4",
                     "--save", str(tmp_path / "m.keras")]) == 0
    out = capsys.readouterr().out
    assert "12 train / 12 test examples" in out
    assert "SGD iterations: 3" in out
    assert keras.models.load_model(tmp_path / "m.keras").input_shape[1:] == (28, 28, 1)
    assert np.isfinite(keras.models.load_model(tmp_path / "m.keras").count_params())
