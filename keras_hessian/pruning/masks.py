"""Pruning masks: which kernel entries to keep, element-wise or as whole filters (output channels).

A mask is a boolean array shaped like the layer's kernel (True = keep), `{layer name: mask}`.
Element-wise, layer l keeps the round(n_l * (1 - s_l)) entries of highest score (the count
TFMOT's `prune_low_magnitude` keeps); by filter, it keeps the round(C_l * (1 - s_l)) output
channels (the kernel's last axis) of highest mean score (mean |w| for `magnitude`: Li et al.,
"Pruning Filters for Efficient ConvNets", 2017). Every layer keeps at least one entry / filter.
Ties go to the lower index (a stable sort), so masks are reproducible.

An output channel whose kernel is masked entirely is a removed unit: `apply_masks` zeroes its
bias too, so it outputs exactly activation(0) and `shrink_filters` can remove it outright.
"""

from __future__ import annotations

import numpy as np

from keras_hessian._validation import ArgumentTypeError, check_choice
from keras_hessian.pruning._layers import check_sparsity, prunable_layers
from keras_hessian.pruning.allocation import ALLOCATIONS, layer_sparsities
from keras_hessian.pruning.criteria import CRITERIA, saliency

GRANULARITIES = ("element", "filter")


def compute_masks(
    model,
    sparsity: float,
    *,
    criterion: str = "magnitude",
    allocation: str = "uniform",
    granularity: str = "element",
    data=None,
    layers: list[str] | None = None,
    loss=None,
    seed: int | None = None,
    num_probes: int = 64,
    scores: dict | None = None,
) -> dict[str, np.ndarray]:
    """Masks pruning `sparsity` of the prunable layers' kernel weights; the model is not changed.

    Example:

    ```python
    masks = compute_masks(model, 0.9, criterion="obd", data=(x[:512], y[:512]), seed=0)
    apply_masks(model, masks)
    ```

    Args:
        model: a built Keras model.
        sparsity: the fraction of kernel weights to remove, in [0, 1).
        criterion: one of `CRITERIA` (`magnitude`, `obd`, `random`).
        allocation: one of `ALLOCATIONS` (`uniform`, `global`, `hessian`).
        granularity: one of `GRANULARITIES` (`element`, `filter`).
        data: `(x, y)` for the Hessian (`obd`, `hessian`).
        layers: names of the layers to prune (default: every Dense / Conv layer).
        loss: the Hessian's loss (default: the compiled one).
        seed: seed of the probes / random scores.
        num_probes: Hutchinson probes for `obd`'s H_ii.
        scores: precomputed `{layer: scores}` (skips the criterion).
    """
    sparsity = check_sparsity(sparsity)
    check_choice("criterion", criterion, CRITERIA)
    check_choice("allocation", allocation, ALLOCATIONS)
    check_choice("granularity", granularity, GRANULARITIES)
    chosen = prunable_layers(model, layers)
    names = [layer.name for layer in chosen]
    if criterion == "obd" and data is None and scores is None:
        raise ValueError("criterion='obd' needs data=(x, y) to take the Hessian's diagonal on. Received data=None.")
    if allocation == "hessian" and data is None:
        raise ValueError("allocation='hessian' needs data=(x, y) for the layers' Hessian traces. Received data=None.")
    if scores is None:
        scores = saliency(model, criterion, data, layers=names, loss=loss, seed=seed, num_probes=num_probes)
    elif not isinstance(scores, dict) or set(scores) != set(names):
        raise ArgumentTypeError(f"scores must be a dict with one array per pruned layer {names}. Received {type(scores).__name__}.")
    shapes = {layer.name: tuple(layer.kernel.shape) for layer in chosen}
    scores = {name: np.asarray(scores[name], np.float64).reshape(shapes[name]) for name in names}
    if granularity == "filter":
        scores = {name: _filter_scores(s) for name, s in scores.items()}
    per_layer = layer_sparsities(model, sparsity, allocation, data, layers=names, loss=loss, seed=seed)
    if per_layer is None:
        keep = _global_keep(scores, shapes, sparsity, granularity)
    else:
        keep = {name: _top(scores[name].ravel(), _kept(scores[name].size, per_layer[name])) for name in names}
    masks = {}
    for name in names:
        kept = keep[name].reshape(scores[name].shape)
        masks[name] = np.broadcast_to(kept, shapes[name]).copy() if granularity == "filter" else kept
    return masks


def _filter_scores(scores: np.ndarray) -> np.ndarray:
    """One score per output channel (the mean over its kernel entries), shaped (1, ..., 1, C)."""
    return scores.reshape(-1, scores.shape[-1]).mean(axis=0).reshape((1,) * (scores.ndim - 1) + scores.shape[-1:])


def _kept(count: int, sparsity: float) -> int:
    return max(1, round(count * (1.0 - sparsity)))


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Boolean array selecting the k highest values (ties: the lower index wins)."""
    order = np.argsort(-values, kind="stable")
    keep = np.zeros(values.size, bool)
    keep[order[:k]] = True
    return keep


def _global_keep(scores: dict, shapes: dict, sparsity: float, granularity: str) -> dict:
    """One ranking across layers, keeping (1 - sparsity) of all kernel weights."""
    names = list(scores)
    # A filter of layer l stands for n_l / C_l weights; element-wise every entry weighs one.
    weight = {n: (int(np.prod(shapes[n])) // shapes[n][-1] if granularity == "filter" else 1) for n in names}
    values = np.concatenate([scores[n].ravel() for n in names])
    costs = np.concatenate([np.full(scores[n].size, weight[n]) for n in names])
    budget = (1.0 - sparsity) * sum(int(np.prod(shapes[n])) for n in names)
    order = np.argsort(-values, kind="stable")
    cumulative = np.cumsum(costs[order])
    # The longest prefix of the ranking whose cost is nearest the budget (half an item's cost).
    count = int(np.sum(cumulative - 0.5 * costs[order] <= budget))
    keep_flat = np.zeros(values.size, bool)
    keep_flat[order[:count]] = True
    out, start = {}, 0
    for name in names:
        size = scores[name].size
        piece = keep_flat[start : start + size]
        if not piece.any():  # every layer keeps its best entry / filter
            piece[np.argmax(values[start : start + size])] = True
        out[name] = piece
        start += size
    return out


def check_masks(model, masks) -> dict:
    """`masks` validated against `model`'s prunable layers: `{layer: bool array like its kernel}`."""
    if not isinstance(masks, dict):
        raise ArgumentTypeError(f"masks must be a dict {{layer name: boolean array}}. Received {type(masks).__name__}.")
    chosen = {layer.name: layer for layer in prunable_layers(model, list(masks))}
    out = {}
    for name, mask in masks.items():
        mask = np.asarray(mask)
        shape = tuple(chosen[name].kernel.shape)
        if mask.shape != shape:
            raise ValueError(f"masks[{name!r}] has shape {mask.shape}, but the layer's kernel has shape {shape}.")
        out[name] = mask.astype(bool)
    return out


def bias_mask(mask: np.ndarray) -> np.ndarray:
    """Keep the bias of every output channel that keeps at least one kernel entry."""
    return mask.reshape(-1, mask.shape[-1]).any(axis=0)


def apply_masks(model, masks: dict) -> None:
    """Zero the masked kernel entries of `model` in place (and the bias of removed units).

    All masks are checked before any weight changes.
    """
    masks = check_masks(model, masks)
    layers = {layer.name: layer for layer in prunable_layers(model, list(masks))}
    for name, mask in masks.items():
        layer = layers[name]
        layer.kernel.assign(layer.kernel.numpy() * mask.astype(layer.kernel.numpy().dtype))
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(layer.bias.numpy() * bias_mask(mask).astype(layer.bias.numpy().dtype))
