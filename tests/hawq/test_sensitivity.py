"""HAWQ sensitivities against the exact Hessian and against a rescaling with a closed form."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_hessian.hawq.sensitivity import layer_sensitivity
from tests.conftest import exact_hessian


def _kernel_slices(model):
    """Index ranges of each Dense kernel in the flat trainable-variable vector."""
    slices, start = {}, 0
    for variable in model.trainable_variables:
        size = int(np.prod(variable.shape))
        if variable.path.endswith("kernel"):
            slices[variable.path.split("/")[-2]] = slice(start, start + size)
        start += size
    return slices


def test_v2_and_v1_equal_the_exact_kernel_blocks(mlp, hessian_batch_flat):
    hessian = exact_hessian(mlp, *hessian_batch_flat)
    trace = layer_sensitivity(mlp, hessian_batch_flat, metric="trace", tol=1e-3, max_iter=2000, seed=0)
    top = layer_sensitivity(mlp, hessian_batch_flat, metric="top_eigenvalue", tol=1e-6, seed=0)
    for name, index in _kernel_slices(mlp).items():
        block = hessian[index, index]
        n = block.shape[0]
        s = trace[name]
        assert s.parameters == n
        # Within 4 standard errors of the exact trace / n, and within 1% of it.
        assert abs(s.sensitivity - np.trace(block) / n) <= 4 * s.standard_error + 1e-9
        assert s.sensitivity == pytest.approx(np.trace(block) / n, rel=1e-2)
        exact_top = np.max(np.abs(np.linalg.eigvalsh(block)))
        assert top[name].sensitivity == pytest.approx(exact_top / n, rel=1e-4)
    assert [p.split("/")[-1] for p in trace] == list(_kernel_slices(mlp))  # model order


def test_rescaling_a_relu_layer_scales_its_block_as_the_closed_form_says(digits_flat):
    # f = W2 relu(W1 x + b1) + b2 is unchanged by W1, b1 -> c W1, c b1 and W2 -> W2 / c (ReLU is
    # positively homogeneous), and then the Hessian block of W1 scales by exactly 1/c^2, W2's by c^2.
    (x, y), _ = digits_flat
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(16, activation="relu", name="first"), keras.layers.Dense(10, name="second")]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, verbose=0)
    data = (x[:256], y[:256])
    before = layer_sensitivity(model, data, metric="top_eigenvalue", tol=1e-6, seed=0)
    c = 4.0
    first, second = model.get_layer("first"), model.get_layer("second")
    first.kernel.assign(first.kernel * c)
    first.bias.assign(first.bias * c)
    second.kernel.assign(second.kernel / c)
    after = layer_sensitivity(model, data, metric="top_eigenvalue", tol=1e-6, seed=0)
    assert after["first"].sensitivity == pytest.approx(before["first"].sensitivity / c**2, rel=1e-3)
    assert after["second"].sensitivity == pytest.approx(before["second"].sensitivity * c**2, rel=1e-3)
    # The ranking follows: the rescaled first layer becomes the less sensitive one per weight.
    ratio_before = before["first"].sensitivity / before["second"].sensitivity
    ratio_after = after["first"].sensitivity / after["second"].sensitivity
    assert ratio_after == pytest.approx(ratio_before / c**4, rel=2e-3)


def test_weights_untouched_and_bad_arguments_named(mlp, hessian_batch_flat):
    weights = [w.copy() for w in mlp.get_weights()]
    layer_sensitivity(mlp, hessian_batch_flat, metric="trace", max_iter=64, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(weights, mlp.get_weights()))
    with pytest.raises(ValueError, match="metric must be one of"):
        layer_sensitivity(mlp, hessian_batch_flat, metric="hessian")
    with pytest.raises(ValueError, match="layers: 'nope'"):
        layer_sensitivity(mlp, hessian_batch_flat, layers=["nope"])
    assert all(np.array_equal(a, b) for a, b in zip(weights, mlp.get_weights()))
