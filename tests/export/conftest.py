"""Shared fixtures of the export tests: digits, a trained float CNN, its bfloat16 twin, quantized models."""

from __future__ import annotations

import keras
import pytest

from keras_hessian.data import load_digits
from keras_hessian.quantize import quantize_model
from tests.export._helpers import (
    LOSS,
)


@pytest.fixture(scope="session")
def digits():
    return load_digits()


def _cnn(dtype=None, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(16, 3, activation="relu", dtype=dtype)(inputs)
    h = keras.layers.BatchNormalization(dtype=dtype)(h)
    h = keras.layers.MaxPooling2D(2, dtype=dtype)(h)
    h = keras.layers.Flatten(dtype=dtype)(h)
    h = keras.layers.Dropout(0.1, dtype=dtype)(h)
    h = keras.layers.Dense(64, activation="relu", dtype=dtype)(h)
    outputs = keras.layers.Dense(10, dtype=dtype)(h)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(3e-3), LOSS, metrics=["accuracy"])
    return model


@pytest.fixture(scope="session")
def float_model(digits):
    (x, y), _ = digits
    model = _cnn()
    model.fit(x, y, epochs=6, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="session")
def bf16_model(digits):
    (x, y), _ = digits
    model = _cnn(dtype="mixed_bfloat16", seed=1)
    model.fit(x, y, epochs=6, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="session")
def quantized_models(float_model):
    return {
        scheme if isinstance(scheme, str) else f"ternary_residual_r{scheme['residuals']}": (
            quantize_model(float_model, scheme, skip_first_last=False)
        )
        for scheme in (
            "binary",
            {"scheme": "ternary_residual", "residuals": 1},
            {"scheme": "ternary_residual", "residuals": 2},
            "dfp16",
        )
    }
