"""How a model's target sparsity is split among its layers.

* `uniform`: every layer gets the target sparsity.
* `global`: one ranking of all scores across layers (`masks.compute_masks` ranks them together),
  so layers whose scores are low lose more.
* `hessian`: per-layer sparsity from the block's curvature (HAWQ-V2's sensitivity, the trace per
  weight t_l = tr(H_l) / n_l of the layer kernel's diagonal Hessian block, by Hutchinson). Layer
  l keeps the density

      d_l = min(1, c * (t_l / t_mean) ** exponent),

  with c solved (bisection; the kept count is monotone in c) so that the kept weights total
  (1 - sparsity) * sum_l n_l: the same weight budget as uniform, less pruning where the
  curvature per weight is high. The argument for it: to second order, removing a fraction of a
  layer's weights of typical size costs about 1/2 t_l |removed|^2, so a flatter layer absorbs
  more zeros. exponent = 1/2 damps the noisy, heavy-tailed traces; 0 gives uniform.
"""

from __future__ import annotations

import numpy as np

from keras_hessian._validation import check_choice, check_float, check_int
from keras_hessian.hessian import HessianOperator, hutchinson_trace
from keras_hessian.pruning._layers import check_sparsity, prunable_layers

ALLOCATIONS = ("uniform", "global", "hessian")


def hessian_allocation(
    model,
    sparsity: float,
    data,
    *,
    layers: list[str] | None = None,
    loss=None,
    exponent: float = 0.5,
    max_iter: int = 64,
    seed: int | None = None,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Per-layer sparsities `{layer name: sparsity}` from the trace per weight of each kernel's block.

    The weighted mean of the result (weights: kernel sizes) is `sparsity`. See the module
    docstring for the formula.
    """
    sparsity = check_sparsity(sparsity)
    exponent = check_float("exponent", exponent, minimum=0.0)
    max_iter = check_int("max_iter", max_iter, 1)
    chosen = prunable_layers(model, layers)
    if data is None:
        raise ValueError("allocation='hessian' needs data=(x, y) for the layers' Hessian traces. Received data=None.")
    operator = HessianOperator(model, data, loss, blocks={layer.name: [layer.kernel] for layer in chosen}, batch_size=batch_size)
    traces = hutchinson_trace(operator, max_iter=max_iter, seed=seed)
    if not isinstance(traces, dict):
        traces = {chosen[0].name: traces}
    sizes = np.array([int(np.prod(layer.kernel.shape)) for layer in chosen], np.float64)
    per_weight = np.array([traces[layer.name].trace for layer in chosen]) / sizes
    return dict(zip([layer.name for layer in chosen], allocate_by_sensitivity(per_weight, sizes, sparsity, exponent)))


def allocate_by_sensitivity(sensitivity, sizes, sparsity: float, exponent: float = 0.5) -> list[float]:
    """Sparsities with densities d_l = min(1, c (s_l / mean s) ** exponent) keeping (1 - sparsity) * sum(sizes).

    Non-positive sensitivities (negative curvature, noise) are floored at a thousandth of the
    largest, so such a layer is pruned most, never divided by zero.
    """
    sensitivity = np.asarray(sensitivity, np.float64)
    sizes = np.asarray(sizes, np.float64)
    floor = 1e-3 * max(float(sensitivity.max()), 1e-30)
    relative = np.maximum(sensitivity, floor)
    relative = (relative / relative.mean()) ** exponent
    budget = (1.0 - sparsity) * sizes.sum()

    def kept(c: float) -> float:
        return float(np.sum(sizes * np.minimum(1.0, c * relative)))

    low, high = 0.0, 1.0 / relative.min()  # kept(high) = everything
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if kept(middle) < budget else (low, middle)
    density = np.minimum(1.0, high * relative)
    return [float(1.0 - d) for d in density]


def layer_sparsities(model, sparsity: float, allocation: str = "uniform", data=None, **kwargs) -> dict[str, float] | None:
    """`{layer: sparsity}` for `uniform` and `hessian`; None for `global` (decided by one ranking)."""
    check_choice("allocation", allocation, ALLOCATIONS)
    sparsity = check_sparsity(sparsity)
    if allocation == "global":
        return None
    if allocation == "hessian":
        return hessian_allocation(model, sparsity, data, **kwargs)
    return {layer.name: sparsity for layer in prunable_layers(model, kwargs.get("layers"))}
