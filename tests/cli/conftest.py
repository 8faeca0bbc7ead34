"""Tiny saved models and data files for the command-line tests (a few hundred parameters each)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_hessian.data import load_digits


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory):
    """Flat digits as FILE.npz: 60 training (x, y) and 40 test (x_test, y_test) examples."""
    (x, y), (x_test, y_test) = load_digits(image=False)
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x=x[:60], y=y[:60], x_test=x_test[:40], y_test=y_test[:40])
    return path


def linear_classifier(compiled: bool = True) -> keras.Model:
    """64 -> 10 logits (650 parameters): its exact Hessian is cheap."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, name="logits")], name="linear")
    if compiled:
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="session")
def linear_keras(tmp_path_factory):
    """A saved, compiled `linear_classifier`: (the model, its .keras path)."""
    model = linear_classifier()
    path = tmp_path_factory.mktemp("models") / "linear.keras"
    model.save(path)
    return model, path


@pytest.fixture(scope="session")
def mlp_keras(tmp_path_factory, digits_npz):
    """A small trained MLP (64 -> 32 -> 16 -> 10, logits) saved as .keras, compiled with its loss."""
    data = np.load(digits_npz)
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu", name="hidden"),
         keras.layers.Dense(16, activation="relu", name="middle"), keras.layers.Dense(10, name="logits")]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data["x"], data["y"], epochs=3, verbose=0)
    path = tmp_path_factory.mktemp("models") / "mlp.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """`keras-hessian demo --quick --epochs 3` run once: (its output directory, what it printed)."""
    import contextlib
    import io

    from keras_hessian.cli import main

    out = tmp_path_factory.mktemp("demo") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--quick", "--epochs", "3", "--out", str(out)])
    assert code == 0, printed.getvalue()[-2000:]
    return out, printed.getvalue()
