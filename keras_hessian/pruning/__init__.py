"""Pruning for Keras 3 models: criteria, per-layer allocation, masks, strip / shrink, summary.

tensorflow-model-optimization's `prune_low_magnitude` rejects Keras 3 models, so the parts that
touch the model are ours; its schedules (`PolynomialDecay`, `ConstantSparsity`) run standalone
and drive `keras_hessian.callbacks.PruneDuringTraining` during `fit`.
"""

from keras_hessian.pruning.allocation import ALLOCATIONS, allocate_by_sensitivity, hessian_allocation, layer_sparsities
from keras_hessian.pruning.criteria import CRITERIA, saliency
from keras_hessian.pruning.masks import GRANULARITIES, apply_masks, compute_masks
from keras_hessian.pruning.strip import shrink_filters, strip_pruning
from keras_hessian.pruning.summary import SparsitySummary, sparsity_summary

__all__ = [
    "ALLOCATIONS",
    "CRITERIA",
    "GRANULARITIES",
    "SparsitySummary",
    "allocate_by_sensitivity",
    "apply_masks",
    "compute_masks",
    "hessian_allocation",
    "layer_sparsities",
    "saliency",
    "shrink_filters",
    "sparsity_summary",
    "strip_pruning",
]
