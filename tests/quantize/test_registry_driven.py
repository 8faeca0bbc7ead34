"""quantize_model and quantization_summary read the one registry: a new quantized layer is one decorator."""

import keras
import keras_hub
import numpy as np

from keras_hessian.layers import BinaryDense, registry
from keras_hessian.quantize import QUANTIZABLE_LAYERS, SCHEMES, quantization_summary, quantize_model


def test_schemes_and_quantizable_layers_come_from_the_registry():
    assert set(SCHEMES) == set(registry.schemes()) | {"bfloat16", "float32"}
    assert set(QUANTIZABLE_LAYERS) == {
        keras.layers.Dense,
        keras.layers.Conv1D,
        keras.layers.Conv2D,
        keras.layers.DepthwiseConv2D,
        keras.layers.EinsumDense,
        keras.layers.Embedding,
        keras.layers.MultiHeadAttention,
        keras.layers.SeparableConv2D,
        keras_hub.layers.TransformerEncoder,  # registered when KerasHub is installed (it is in the test extra)
    }


def test_a_new_quantized_layer_is_one_decorator(monkeypatch):
    # Registry copies, so the class registered here does not outlive the test.
    monkeypatch.setattr(registry, "_REGISTRY", {k: dict(v) for k, v in registry._REGISTRY.items()})
    monkeypatch.setattr(registry, "_SCHEME_OF", dict(registry._SCHEME_OF))

    @registry.register_quantized_layer("sign_dense", keras.layers.Dense)
    class SignDense(BinaryDense):
        pass

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(3, name="b"), keras.layers.Dense(2)]
    )
    quantized = quantize_model(model, "sign_dense")
    layer = quantized.get_layer("b")
    assert type(layer) is SignDense
    kernel = model.get_layer("b").kernel.numpy()
    # Post-training options of the family apply: signs times the per-channel mean magnitude.
    expected = np.where(kernel >= 0, 1.0, -1.0) * np.abs(kernel).mean(axis=0)
    np.testing.assert_allclose(layer.quantized_kernel().numpy(), expected, rtol=1e-6)
    row = {r["name"]: r for r in quantization_summary(quantized)["layers"]}["b"]
    assert row["weight_bits"] == 4 * 3 + 32 * 3 + 32 * 3  # 1 bit per weight, a scale and a bias per unit
    assert row["replaced_multiplications"] == 4 * 3
