"""The exact bit-allocation integer program of HAWQ-V3, solved by `scipy.optimize.milp` (HiGHS).

One binary variable x[i, j] per layer i and candidate precision j:

    minimise    sum_ij cost[i, j] * x[i, j]                (HAWQ-V2/V3: s_i * ||Q_j(W_i) - W_i||^2)
    subject to  sum_j x[i, j] = 1                for every layer i   (one precision per layer)
                sum_ij size[i, j] * x[i, j] <= size_budget          (bytes, or bits)
                sum_ij bops[i, j] * x[i, j] <= bops_budget          (optional bit operations)
                x[i, j] = 0 where candidate j is not allowed for layer i

Yao et al., "HAWQ-V3: Dyadic Neural Network Quantization", ICML 2021, section 3.3. HAWQ's own
code solves it with PuLP + GLPK; scipy's HiGHS needs no new dependency and proves optimality
(`mip_rel_gap=0`), so no greedy heuristic is kept here.

HiGHS compares objective values to an absolute tolerance (about 1e-6 of the largest term after
scaling), so candidates whose costs differ by less than that look tied to it: a float16 and a
float32 kernel, say, whose perturbations are both ~1e-12 of an int2 one. The solution is then
polished in float64 by single-layer moves that keep every budget and lower the exact objective;
the polish only ever improves on HiGHS' optimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

__all__ = ["AllocationResult", "solve_allocation"]


@dataclass(frozen=True)
class AllocationResult:
    """The optimal choice per layer (column indices into the cost matrix) and its totals."""

    choice: tuple[int, ...]
    objective: float
    size: float
    bops: float | None


def _matrix(name: str, value, shape: tuple[int, int] | None = None) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2 or (shape is not None and array.shape != shape):
        wanted = "a 2-D (layers, candidates) array" + (f" of shape {shape}" if shape else "")
        raise ValueError(f"{name} must be {wanted}. Received {name} of shape {array.shape}.")
    return array


def solve_allocation(
    cost,
    size,
    size_budget: float,
    *,
    allowed=None,
    bops=None,
    bops_budget: float | None = None,
) -> AllocationResult:
    """Solve the allocation program exactly.

    Args:
        cost: `(layers, candidates)` objective terms (finite where allowed).
        size: `(layers, candidates)` sizes, in the unit of `size_budget`.
        size_budget: the largest total size allowed.
        allowed: optional `(layers, candidates)` booleans; False forbids a candidate for a layer.
        bops: optional `(layers, candidates)` bit operations.
        bops_budget: the largest total of `bops` allowed (needs `bops`).

    Returns:
        An `AllocationResult`.

    Raises:
        ValueError: if the shapes disagree, or no plan meets the budgets; the message names the
            smallest reachable size (and bit operations).
    """
    cost = _matrix("cost", cost)
    shape = cost.shape
    size = _matrix("size", size, shape)
    allowed = np.ones(shape, bool) if allowed is None else np.asarray(allowed, bool)
    if allowed.shape != shape:
        raise ValueError(f"allowed must have shape {shape}. Received allowed of shape {allowed.shape}.")
    if not allowed.any(axis=1).all():
        empty = np.flatnonzero(~allowed.any(axis=1)).tolist()
        raise ValueError(f"Every layer needs at least one allowed candidate; layers {empty} have none.")
    if (bops is None) != (bops_budget is None):
        raise ValueError("bops and bops_budget go together: pass both or neither.")
    if not np.isfinite(cost[allowed]).all() or not np.isfinite(size[allowed]).all():
        raise ValueError("cost and size must be finite wherever a candidate is allowed.")

    smallest = float(np.where(allowed, size, np.inf).min(axis=1).sum())
    if smallest > size_budget * (1 + 1e-12):
        raise ValueError(
            f"size_budget={size_budget:g} is below the smallest reachable size, {smallest:g} "
            "(every layer at its smallest allowed candidate)."
        )
    layers, candidates = shape
    n = layers * candidates
    rows = [LinearConstraint(np.kron(np.eye(layers), np.ones(candidates)), 1, 1)]
    rows.append(LinearConstraint(size.reshape(1, n), -np.inf, size_budget))
    if bops is not None:
        bops = _matrix("bops", bops, shape)
        fewest = float(np.where(allowed, bops, np.inf).min(axis=1).sum())
        if fewest > bops_budget * (1 + 1e-12):
            raise ValueError(
                f"bops_budget={bops_budget:g} is below the fewest reachable bit operations, {fewest:g}."
            )
        rows.append(LinearConstraint(bops.reshape(1, n), -np.inf, bops_budget))

    # Objective scaled to O(1) so HiGHS' absolute tolerances do not decide between near ties.
    objective = np.where(allowed, cost, 0.0).reshape(n)
    scale = float(np.abs(objective).max()) or 1.0
    upper = allowed.reshape(n).astype(float)
    result = milp(
        objective / scale,
        integrality=np.ones(n),
        bounds=Bounds(np.zeros(n), upper),
        constraints=rows,
        options={"mip_rel_gap": 0.0},
    )
    if result.status != 0 or result.x is None:
        raise ValueError(f"No precision plan meets the budgets together (HiGHS: {result.message}).")
    x = np.round(result.x).reshape(shape).astype(bool)
    choice = _polish([int(np.flatnonzero(row)[0]) for row in x], cost, size, size_budget, allowed, bops, bops_budget)
    picked = (np.arange(layers), np.asarray(choice))
    return AllocationResult(
        choice=choice,
        objective=float(cost[picked].sum()),
        size=float(size[picked].sum()),
        bops=None if bops is None else float(bops[picked].sum()),
    )


def _polish(choice, cost, size, size_budget, allowed, bops, bops_budget) -> tuple[int, ...]:
    """Single-layer moves that keep the budgets and lower the objective, until none is left."""
    rows = np.arange(len(choice))
    improved = True
    while improved:
        improved = False
        used = size[rows, choice].sum()
        used_bops = None if bops is None else bops[rows, choice].sum()
        for i, j in enumerate(choice):
            for k in np.flatnonzero(allowed[i]):
                if cost[i, k] >= cost[i, j]:
                    continue
                if used - size[i, j] + size[i, k] > size_budget:
                    continue
                if bops is not None and used_bops - bops[i, j] + bops[i, k] > bops_budget:
                    continue
                choice[i] = int(k)
                improved = True
                break
            if improved:
                break
    return tuple(choice)
