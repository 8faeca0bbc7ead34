"""Bad input: clear errors naming the argument and the value; the model unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from keras_hessian.pruning import apply_masks, compute_masks, saliency, sparsity_summary


def _weights(model):
    return [w.copy() for w in model.get_weights()]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"sparsity": 1.0}, ValueError, r"sparsity must be a number >= 0.0 and < 1.0. Received sparsity=1.0"),
        ({"sparsity": -0.1}, ValueError, r"Received sparsity=-0.1"),
        ({"sparsity": "half"}, TypeError, r"Received sparsity='half'"),
        ({"sparsity": 0.5, "criterion": "hessian"}, ValueError, r"criterion must be one of \['magnitude', 'obd', 'random'\]"),
        ({"sparsity": 0.5, "granularity": "channel"}, ValueError, r"granularity must be one of \['element', 'filter'\]"),
        ({"sparsity": 0.5, "allocation": "layer"}, ValueError, r"allocation must be one of"),
        ({"sparsity": 0.5, "layers": ["hidden1", "nope"]}, ValueError, r"no prunable layer named 'nope'.*hidden1"),
        ({"sparsity": 0.5, "criterion": "obd"}, ValueError, r"criterion='obd' needs data"),
        ({"sparsity": 0.5, "allocation": "hessian"}, ValueError, r"allocation='hessian' needs data"),
    ],
)
def test_compute_masks_rejects_bad_input_and_leaves_the_model(mlp_model, kwargs, error, message):
    before = _weights(mlp_model)
    with pytest.raises(error, match=message):
        compute_masks(mlp_model, **kwargs)
    assert all(np.array_equal(a, b) for a, b in zip(before, mlp_model.get_weights()))


def test_apply_masks_checks_every_mask_before_changing_anything(mlp_model):
    masks = compute_masks(mlp_model, 0.5)
    masks["hidden2"] = masks["hidden2"][:, :3]
    before = _weights(mlp_model)
    with pytest.raises(ValueError, match=r"masks\['hidden2'\] has shape \(32, 3\)"):
        apply_masks(mlp_model, masks)
    with pytest.raises(ValueError, match="no prunable layer named 'ghost'"):
        apply_masks(mlp_model, {"ghost": np.ones(3, bool)})
    with pytest.raises(TypeError, match="masks must be a dict"):
        apply_masks(mlp_model, [np.ones(3)])
    assert all(np.array_equal(a, b) for a, b in zip(before, mlp_model.get_weights()))


def test_other_entry_points_validate(mlp_model):
    with pytest.raises(ValueError, match="criterion must be one of"):
        saliency(mlp_model, "weight")
    with pytest.raises(TypeError, match="model must be a Keras 3 model"):
        sparsity_summary("model.keras")
    with pytest.raises(ValueError, match="no prunable layer named 'x'"):
        sparsity_summary(mlp_model, layers=["x"])
