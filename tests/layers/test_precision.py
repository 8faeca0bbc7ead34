"""bfloat16 helpers: float32 exceptions, scope restore, float32 loss."""

import keras
import numpy as np

from keras_hessian.layers.precision import (
    bfloat16_layer_policy,
    keeps_float32,
    mixed_bfloat16_scope,
)
from keras_hessian.quantize import quantize_model


def test_float32_exceptions():
    assert keeps_float32(keras.layers.BatchNormalization())
    assert keeps_float32(keras.layers.LayerNormalization())
    assert keeps_float32(keras.layers.Softmax())
    assert keeps_float32(keras.layers.Dense(3, activation="softmax"))
    assert keeps_float32(keras.layers.Activation("softmax"))
    assert not keeps_float32(keras.layers.Dense(3, activation="relu"))
    assert bfloat16_layer_policy(keras.layers.Conv2D(2, 3)) == "mixed_bfloat16"
    assert bfloat16_layer_policy(keras.layers.BatchNormalization()) == "float32"


def test_scope_sets_and_restores_the_global_policy():
    before = keras.config.dtype_policy().name
    with mixed_bfloat16_scope():
        layer = keras.layers.Dense(2)
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before
    assert layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32"


def test_bfloat16_model_keeps_batchnorm_softmax_and_loss_in_float32():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Dense(8, activation="relu", name="hidden2"),
            keras.layers.Dense(4, activation="softmax", name="classifier"),
        ]
    )
    converted = quantize_model(model, "bfloat16", skip_first_last=False)
    policies = {layer.name: layer.dtype_policy.name for layer in converted.layers}
    assert policies == {
        "hidden": "mixed_bfloat16",
        "norm": "float32",
        "hidden2": "mixed_bfloat16",
        "classifier": "float32",
    }
    x = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    y = np.arange(16) % 4
    assert keras.backend.standardize_dtype(converted(x).dtype) == "float32"
    converted.compile("sgd", "sparse_categorical_crossentropy")
    loss = converted.compute_loss(x=x, y=y, y_pred=converted(x))
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    # bfloat16 has 8 significant bits: outputs agree with float32 to about 1e-2.
    np.testing.assert_allclose(converted(x), model(x), atol=2e-2)
    # skip_first_last keeps the first and last quantizable layers in float32.
    skipped = quantize_model(model, "bfloat16")
    assert skipped.get_layer("hidden").dtype_policy.name == "float32"
    assert skipped.get_layer("hidden2").dtype_policy.name == "mixed_bfloat16"
