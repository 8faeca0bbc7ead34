"""Small untrained models with distinct random weights (no ties), rebuilt for every test."""

from __future__ import annotations

import keras
import numpy as np
import pytest


def random_cnn(seed: int = 0) -> keras.Sequential:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Conv2D(6, 3, activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(12, activation="tanh", name="dense1"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="random_cnn",
    )
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    return model


def random_mlp(seed: int = 0) -> keras.Sequential:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu", name="hidden1"),
            keras.layers.Dense(16, activation="relu", name="hidden2"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="random_mlp",
    )
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.fixture
def cnn_model():
    return random_cnn()


@pytest.fixture
def mlp_model():
    return random_mlp()
