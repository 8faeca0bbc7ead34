"""assign_precision: the Hessian-aware mixed-precision plan (HAWQ-V2 objective, HAWQ-V3's exact ILP).

For every quantizable layer i and candidate precision p the objective term is
`s_i * ||Q_p(W_i) - W_i||^2`, with `s_i` the layer's sensitivity (average Hessian trace, HAWQ-V2,
or top eigenvalue per weight, HAWQ-V1): the second-order estimate of the loss increase
quantization causes. The plan minimises the sum under a size budget (and optionally a
bit-operations budget) exactly, with `scipy.optimize.milp` (`ilp.py`). With every sensitivity set
to 1 (`sensitivity="uniform"`) the same program is the Hessian-free ablation: it spends bits where
the quantization error is largest, whatever the curvature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import keras
import numpy as np

from keras_hessian._validation import check_float, check_int
from keras_hessian.hawq.candidates import Candidate, kernel_size, resolve
from keras_hessian.hawq.ilp import solve_allocation
from keras_hessian.hawq.precision_plan import LayerChoice, PrecisionPlan
from keras_hessian.hawq.sensitivity import LayerSensitivity, kernel_layers, layer_sensitivity
from keras_hessian.layers import registry
from keras_hessian.quantize.summary import kernel_multiplications

__all__ = ["DEFAULT_CANDIDATES", "assign_precision", "planned_layers"]

DEFAULT_CANDIDATES = ("int8", "int4", "ternary", "binary")
_ACTIVATION_BITS = 32  # activations stay float32 in every candidate here (binary w+a aside)


def planned_layers(model: keras.Model) -> list[tuple[str, keras.layers.Layer]]:
    """`(path, layer)` of the layers a plan covers: kernel layers of a quantizable Keras type."""
    quantizable = registry.quantizable_types()
    return [(path, layer) for path, layer in kernel_layers(model) if type(layer) in quantizable]


def _macs(layer: keras.layers.Layer) -> int | None:
    """Multiply-accumulates per example of the layer's kernels, counted as `quantization_summary` does."""
    return kernel_multiplications(layer)


def _pinned(pin: Iterable[str] | None, paths: list[str]) -> set[str]:
    if pin is None:
        return set()
    if isinstance(pin, str):
        pin = [pin]
    chosen = set()
    for item in pin:
        if item == "first":
            chosen.add(paths[0])
        elif item == "last":
            chosen.add(paths[-1])
        elif item in paths:
            chosen.add(item)
        else:
            raise ValueError(f"pin: {item!r} is not 'first', 'last' or a planned layer. Planned layers: {paths}.")
    return chosen


def _sensitivities(model, data, sensitivity, metric, loss, paths, sensitivity_options) -> tuple[dict, str]:
    if isinstance(sensitivity, str):
        if sensitivity != "uniform":
            raise ValueError(f"sensitivity must be None, 'uniform' or a mapping. Received sensitivity={sensitivity!r}.")
        return dict.fromkeys(paths, 1.0), "none"
    if sensitivity is None:
        if data is None:
            raise ValueError("data is None: pass data to measure the sensitivities, or sensitivity=.")
        measured = layer_sensitivity(model, data, metric, loss, layers=paths, **sensitivity_options)
        return {p: measured[p].sensitivity for p in paths}, metric
    if not isinstance(sensitivity, Mapping):
        raise TypeError(f"sensitivity must be None, 'uniform' or a mapping. Received {type(sensitivity).__name__}.")
    missing = [p for p in paths if p not in sensitivity]
    if missing:
        raise ValueError(f"sensitivity has no value for layers {missing}.")
    values = {}
    for p in paths:
        value = sensitivity[p]
        values[p] = value.sensitivity if isinstance(value, LayerSensitivity) else float(value)
        if not np.isfinite(values[p]) or values[p] < 0:
            raise ValueError(f"sensitivity[{p!r}] must be a finite number >= 0. Received {sensitivity[p]!r}.")
    first = next(iter(sensitivity.values()))
    return values, first.metric if isinstance(first, LayerSensitivity) else "given"


def _budget_bytes(budget, budget_bytes, bits_per_weight, float32_bytes: int, parameters: int) -> float:
    given = [b is not None for b in (budget, budget_bytes, bits_per_weight)]
    if sum(given) != 1:
        raise ValueError(
            "Give exactly one of budget= (a fraction of the float32 weight bytes), budget_bytes= or "
            f"bits_per_weight=. Received budget={budget!r}, budget_bytes={budget_bytes!r}, "
            f"bits_per_weight={bits_per_weight!r}."
        )
    if budget is not None:
        return check_float("budget", budget, minimum=0.0, exclusive_minimum=True, maximum=1.0) * float32_bytes
    if budget_bytes is not None:
        return float(check_int("budget_bytes", budget_bytes, 1))
    return check_float("bits_per_weight", bits_per_weight, minimum=0.0, exclusive_minimum=True) * parameters / 8


def assign_precision(
    model: keras.Model,
    data: Any = None,
    candidates: Iterable[str | Candidate] | str = DEFAULT_CANDIDATES,
    budget: float | None = None,
    *,
    budget_bytes: int | None = None,
    bits_per_weight: float | None = None,
    bops_budget: float | None = None,
    pin: Iterable[str] | None = ("first", "last"),
    sensitivity: Mapping | str | None = None,
    metric: str = "trace",
    loss: str | Callable | None = None,
    **sensitivity_options: Any,
) -> PrecisionPlan:
    """Choose a precision per layer that minimises the Hessian-weighted quantization error in a budget.

    Use it to compress a trained model to a size (e.g. 0.15x of its float32 weights) while giving
    more bits to the layers whose loss is most curved; apply the plan with
    `quantize_model(model, plan)`, fine-tune, and export with `to_tflite`.

    Example:

    ```python
    plan = assign_precision(model, (x_val, y_val), ["int8", "int4", "ternary", "binary"], budget=0.15)
    print(plan.table())
    quantized = quantize_model(model, plan)
    ```

    Args:
        model: a built, compiled Keras model (or pass `loss=`); it is not changed.
        data: the data of the sensitivities (`layer_sensitivity`); not needed with `sensitivity=`.
        candidates: precision names (see `keras_hessian.hawq.CANDIDATES`) or `Candidate`s.
        budget: the weight-byte budget as a fraction of the planned layers' float32 bytes.
        budget_bytes: the budget in bytes instead.
        bits_per_weight: the budget as average bits per weight (scales and biases included).
        bops_budget: an optional budget of bit operations per example, sum of MACs x weight bits x
            activation bits (activations are float32 here).
        pin: layers kept in float32 (not planned): `"first"`, `"last"` (of the planned layers) or
            paths; `None` pins nothing.
        sensitivity: `None` measures them (`metric`), a `{layer path: value or LayerSensitivity}`
            mapping gives them, `"uniform"` sets every one to 1 (the Hessian-free ablation).
        metric: `"trace"` (HAWQ-V2) or `"top_eigenvalue"` (HAWQ-V1).
        loss: the loss of the sensitivities (default: the compiled one).
        **sensitivity_options: passed to `layer_sensitivity` (`tol`, `max_iter`, `seed`, ...).

    Returns:
        A `PrecisionPlan`.

    Raises:
        ValueError: for an unknown precision, a pin that is no planned layer, or a budget below the
            smallest reachable size (the message names that minimum).
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise TypeError(f"model must be a built keras.Model. Received model={model!r}.")
    chosen = resolve(candidates)
    layers = planned_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no layer a precision can be planned for.")
    paths = [path for path, _ in layers]
    pinned = _pinned(pin, paths)
    free = [(path, layer) for path, layer in layers if path not in pinned]
    float32 = resolve(["float32"])[0]
    float32_bytes = sum(float32.weight_bytes(layer) for _, layer in layers)
    parameters = sum(kernel_size(layer) for _, layer in layers)
    limit = _budget_bytes(budget, budget_bytes, bits_per_weight, float32_bytes, parameters)
    values, used_metric = _sensitivities(
        model, data, sensitivity, metric, loss, [p for p, _ in free], sensitivity_options
    )

    cost = np.zeros((len(free), len(chosen)))
    size = np.zeros_like(cost)
    bops = np.zeros_like(cost)
    allowed = np.zeros(cost.shape, bool)
    options = {}
    for i, (path, layer) in enumerate(free):
        macs = _macs(layer)
        options[path] = {}
        for j, candidate in enumerate(chosen):
            if not candidate.applies_to(layer):
                continue
            allowed[i, j] = True
            perturbation = candidate.perturbation(layer)
            size[i, j] = candidate.weight_bytes(layer)
            cost[i, j] = values[path] * perturbation
            bops[i, j] = np.nan if macs is None else macs * candidate.bits * _ACTIVATION_BITS
            options[path][candidate.name] = {
                "objective": float(cost[i, j]),
                "perturbation": perturbation,
                "bytes": int(size[i, j]),
                "bops": None if macs is None else float(bops[i, j]),
            }
    fixed = sum(float32.weight_bytes(layer) for path, layer in layers if path in pinned)
    smallest = fixed + float(np.where(allowed, size, np.inf).min(axis=1).sum())
    if limit < smallest:
        raise ValueError(
            f"The budget ({limit:,.0f} bytes, {limit / float32_bytes:.4f} of the float32 {float32_bytes:,}) is "
            f"below the smallest reachable size: {smallest:,.0f} bytes ({smallest / float32_bytes:.4f} of float32), "
            f"every layer at its smallest candidate{' and the pinned layers in float32' if pinned else ''}."
        )
    if bops_budget is not None and np.isnan(bops[allowed]).any():
        raise ValueError("bops_budget needs every planned layer's output shape; build the model on its inputs.")
    result = solve_allocation(
        cost,
        size,
        limit - fixed,
        allowed=allowed,
        bops=None if bops_budget is None else np.nan_to_num(bops),
        bops_budget=bops_budget,
    )
    rows = {}
    free_index = {path: i for i, (path, _) in enumerate(free)}
    for path, layer in layers:
        n = kernel_size(layer)
        if path in pinned:
            entry = {"objective": 0.0, "perturbation": 0.0, "bytes": float32.weight_bytes(layer), "bops": None}
            rows[path] = LayerChoice(path, n, None, "float32", "float32", {"float32": entry})
            continue
        candidate = chosen[result.choice[free_index[path]]]
        rows[path] = LayerChoice(path, n, values[path], candidate.name, candidate.spec_for(layer), options[path])
    return PrecisionPlan(
        layers=rows, budget_bytes=limit, float32_bytes=float32_bytes, metric=used_metric, bops_budget=bops_budget
    )
