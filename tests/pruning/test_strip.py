"""strip_pruning and shrink_filters give the masked model's outputs; sparsity_summary counts."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from keras_hessian.pruning import apply_masks, compute_masks, shrink_filters, sparsity_summary, strip_pruning

X_IMAGE = np.random.default_rng(0).normal(size=(64, 8, 8, 1)).astype("float32")
X_FLAT = np.random.default_rng(1).normal(size=(64, 64)).astype("float32")


def test_strip_pruning_is_a_plain_copy_with_the_zeros(cnn_model):
    apply_masks(cnn_model, compute_masks(cnn_model, 0.7))
    cnn_model.compile("sgd", "mse")
    plain = strip_pruning(cnn_model)
    assert plain is not cnn_model and "train_step" not in plain.__dict__
    assert plain.optimizer is not cnn_model.optimizer  # a fresh one, from the compile config
    assert [type(a) for a in plain.layers] == [type(b) for b in cnn_model.layers]
    for a, b in zip(plain.get_weights(), cnn_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(plain.predict(X_IMAGE, verbose=0), cnn_model.predict(X_IMAGE, verbose=0))
    assert abs(sparsity_summary(plain)["total"]["sparsity"] - 0.7) < 0.01


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75])
def test_shrunk_cnn_gives_the_masked_models_outputs(cnn_model, sparsity):
    masks = compute_masks(cnn_model, sparsity, granularity="filter")
    apply_masks(cnn_model, masks)
    shrunk = shrink_filters(cnn_model)
    np.testing.assert_allclose(shrunk.predict(X_IMAGE, verbose=0), cnn_model.predict(X_IMAGE, verbose=0), atol=1e-5)
    by_name = {layer.name: layer for layer in shrunk.layers}
    for name in ("conv1", "conv2", "dense1"):
        assert by_name[name].kernel.shape[-1] == int(masks[name][..., :].reshape(-1, masks[name].shape[-1]).any(0).sum())
    assert by_name["logits"].kernel.shape[-1] == 10  # the outputs stay
    assert shrunk.count_params() < cnn_model.count_params()


def test_shrunk_mlp_gives_the_masked_models_outputs(mlp_model):
    apply_masks(mlp_model, compute_masks(mlp_model, 0.5, granularity="filter"))
    before = [w.copy() for w in mlp_model.get_weights()]
    shrunk = shrink_filters(mlp_model)
    np.testing.assert_allclose(shrunk.predict(X_FLAT, verbose=0), mlp_model.predict(X_FLAT, verbose=0), atol=1e-5)
    assert [layer.kernel.shape for layer in shrunk.layers] == [(64, 16), (16, 8), (8, 10)]
    assert all(np.array_equal(a, b) for a, b in zip(before, mlp_model.get_weights()))  # model unchanged


def test_shrink_refuses_a_layer_that_makes_zero_channels_non_zero():
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, activation="sigmoid"), keras.layers.Dense(2)], name="sigmoid_mlp"
    )
    apply_masks(model, compute_masks(model, 0.5, granularity="filter"))
    with pytest.raises(ValueError, match="sigmoid"):
        shrink_filters(model)
    functional = keras.Model(model.inputs, model.outputs)
    with pytest.raises(TypeError, match="Sequential"):
        shrink_filters(functional)


def test_sparsity_summary_counts_by_brute_force(cnn_model):
    apply_masks(cnn_model, compute_masks(cnn_model, 0.6))
    report = sparsity_summary(cnn_model)
    kernels = {layer.name: layer.kernel.numpy() for layer in cnn_model.layers if hasattr(layer, "kernel")}
    assert [row["layer"] for row in report["layers"]] == list(kernels)
    for row in report["layers"]:
        kernel = kernels[row["layer"]]
        nonzeros = sum(1 for v in kernel.ravel() if v != 0)
        assert row["nonzeros"] == nonzeros and row["parameters"] == kernel.size
        assert row["sparsity"] == pytest.approx(1 - nonzeros / kernel.size)
        assert row["bytes_dense"] == 4 * kernel.size
        assert row["bytes_sparse"] == 4 * nonzeros + math.ceil(kernel.size / 8)
    assert report["total"]["parameters"] == sum(k.size for k in kernels.values())
    text = repr(report)
    assert "conv1" in text and "total" in text and len(text.splitlines()) == len(kernels) + 3
