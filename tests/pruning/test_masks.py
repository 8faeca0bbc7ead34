"""Masks select exactly the k lowest scores (checked by brute force), per layer, globally, by filter."""

from __future__ import annotations

import numpy as np
import pytest

from keras_hessian.pruning import allocate_by_sensitivity, apply_masks, compute_masks, hessian_allocation


def _brute_force_smallest(values: np.ndarray, k: int) -> set:
    flat = list(np.ravel(values))
    return set(sorted(range(len(flat)), key=lambda i: flat[i])[:k])


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.95])
def test_element_masks_remove_the_k_smallest_magnitudes(cnn_model, sparsity):
    masks = compute_masks(cnn_model, sparsity)
    for layer in cnn_model.layers:
        if layer.name not in masks:
            continue
        kernel = layer.kernel.numpy()
        k = kernel.size - max(1, round(kernel.size * (1 - sparsity)))
        pruned = set(np.flatnonzero(~masks[layer.name].ravel()))
        assert pruned == _brute_force_smallest(np.abs(kernel), k), layer.name


def test_global_masks_rank_all_layers_together(mlp_model):
    masks = compute_masks(mlp_model, 0.8, allocation="global")
    values = np.concatenate([np.abs(layer.kernel.numpy()).ravel() for layer in mlp_model.layers])
    k = values.size - round(values.size * 0.2)
    pruned = set(np.flatnonzero(~np.concatenate([masks[layer.name].ravel() for layer in mlp_model.layers])))
    assert pruned == _brute_force_smallest(values, k)


def test_filter_masks_remove_whole_output_channels_of_lowest_mean_magnitude(cnn_model):
    masks = compute_masks(cnn_model, 0.5, granularity="filter")
    for layer in cnn_model.layers:
        if layer.name not in masks:
            continue
        kernel = layer.kernel.numpy()
        channels = kernel.shape[-1]
        means = [np.mean(np.abs(kernel[..., c])) for c in range(channels)]
        k = channels - max(1, round(channels * 0.5))
        mask = masks[layer.name]
        pruned = {c for c in range(channels) if not mask[..., c].any()}
        assert pruned == _brute_force_smallest(np.array(means), k), layer.name
        assert all(mask[..., c].all() for c in range(channels) if c not in pruned)


def test_apply_masks_zeroes_kernels_and_the_bias_of_removed_units(cnn_model):
    masks = compute_masks(cnn_model, 0.5, granularity="filter")
    before = {layer.name: layer.get_weights() for layer in cnn_model.layers if layer.weights}
    apply_masks(cnn_model, masks)
    for layer in cnn_model.layers:
        if layer.name in masks:
            kernel, bias = layer.get_weights()
            kernel0, bias0 = before[layer.name]
            np.testing.assert_array_equal(kernel, kernel0 * masks[layer.name])
            removed = ~masks[layer.name].reshape(-1, kernel.shape[-1]).any(axis=0)
            np.testing.assert_array_equal(bias, np.where(removed, 0, bias0))


def test_random_criterion_is_seeded(mlp_model):
    a = compute_masks(mlp_model, 0.5, criterion="random", seed=1)
    b = compute_masks(mlp_model, 0.5, criterion="random", seed=1)
    c = compute_masks(mlp_model, 0.5, criterion="random", seed=2)
    assert all(np.array_equal(a[n], b[n]) for n in a) and not all(np.array_equal(a[n], c[n]) for n in a)


def test_sensitivity_allocation_closed_form():
    """Unsaturated: densities proportional to sensitivity ** 1/2, total kept = (1 - s) * total."""
    sensitivity, sizes = np.array([1.0, 4.0, 16.0]), np.array([1000.0, 1000.0, 1000.0])
    sparsities = np.array(allocate_by_sensitivity(sensitivity, sizes, 0.9))
    density = 1 - sparsities
    np.testing.assert_allclose(density / density[0], [1, 2, 4], rtol=1e-9)
    np.testing.assert_allclose(np.sum(density * sizes), 0.1 * sizes.sum(), rtol=1e-9)
    # A saturated layer keeps everything; the others share the rest in the same proportion.
    sparsities = np.array(allocate_by_sensitivity([1.0, 1.0, 1e4], [1000, 1000, 10], 0.5))
    assert sparsities[2] == 0.0
    np.testing.assert_allclose(sparsities[:2], 1 - (2010 * 0.5 - 10) / 2000, rtol=1e-9)
    np.testing.assert_allclose(allocate_by_sensitivity([1.0, 9.0], [10, 10], 0.3, exponent=0.0), [0.3, 0.3])


def test_hessian_allocation_keeps_the_budget_and_spares_the_curved_layer(mlp, hessian_batch_flat, mlp_hessian):
    sparsities = hessian_allocation(mlp, 0.8, hessian_batch_flat, max_iter=32, seed=0)
    # The exact trace per weight of each kernel's block (variables: kernel 64x24, bias, kernel 24x10, bias).
    diagonal = np.diag(mlp_hessian)
    per_weight = {mlp.layers[0].name: diagonal[:1536].mean(), mlp.layers[1].name: diagonal[1560:1800].mean()}
    flatter, curved = sorted(per_weight, key=per_weight.get)
    assert sparsities[flatter] > sparsities[curved]
    sizes = {layer.name: layer.kernel.numpy().size for layer in mlp.layers}
    mean = sum(sparsities[n] * sizes[n] for n in sizes) / sum(sizes.values())
    assert abs(mean - 0.8) < 1e-6
    masks = compute_masks(mlp, 0.8, allocation="hessian", data=hessian_batch_flat, seed=0)
    for name, mask in masks.items():
        assert abs((1 - mask.mean()) - sparsities[name]) <= 1 / mask.size
