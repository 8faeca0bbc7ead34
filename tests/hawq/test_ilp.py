"""The allocation ILP against brute force over every plan."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from keras_hessian.hawq.ilp import solve_allocation


def brute_force(cost, size, budget, allowed=None, bops=None, bops_budget=None):
    layers, candidates = cost.shape
    best = None
    for plan in itertools.product(range(candidates), repeat=layers):
        rows = np.arange(layers), np.array(plan)
        if allowed is not None and not allowed[rows].all():
            continue
        if size[rows].sum() > budget or (bops is not None and bops[rows].sum() > bops_budget):
            continue
        value = cost[rows].sum()
        if best is None or value < best[0]:
            best = (value, plan)
    return best


def problem(seed: int, layers: int = 5):
    rng = np.random.default_rng(seed)
    bits = np.array([32, 16, 8, 4, 2, 1], float)
    params = rng.integers(50, 5000, size=layers).astype(float)
    sensitivity = rng.lognormal(size=layers)
    # Perturbation falls ~4x per extra bit, as a uniform quantizer's does; noise breaks ties.
    perturbation = params[:, None] * 4.0 ** (-bits[None, :]) * rng.uniform(0.5, 1.5, (layers, bits.size))
    return sensitivity[:, None] * perturbation, params[:, None] * bits[None, :] / 8.0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fraction", [0.06, 0.1, 0.15, 0.3])
def test_plan_equals_brute_force(seed, fraction):
    cost, size = problem(seed)
    budget = fraction * size[:, 0].sum()  # a fraction of the float32 bytes
    result = solve_allocation(cost, size, budget)
    value, plan = brute_force(cost, size, budget)
    assert result.choice == plan
    assert result.objective == pytest.approx(value, rel=1e-9)
    assert result.size <= budget


def test_bops_budget_and_allowed_mask_equal_brute_force():
    cost, size = problem(7, layers=4)
    bops = size * np.array([[3.0], [1.0], [2.0], [5.0]])
    allowed = np.ones_like(cost, bool)
    allowed[0, 5] = allowed[3, 4:] = False  # e.g. a layer with no binary / ternary form
    budget, bops_budget = 0.2 * size[:, 0].sum(), 0.15 * bops[:, 0].sum()
    result = solve_allocation(cost, size, budget, allowed=allowed, bops=bops, bops_budget=bops_budget)
    value, plan = brute_force(cost, size, budget, allowed, bops, bops_budget)
    assert result.choice == plan and result.objective == pytest.approx(value, rel=1e-9)
    assert result.bops <= bops_budget


def test_a_budget_that_fits_everything_widest_gives_all_widest():
    cost, size = problem(1)
    result = solve_allocation(cost, size, size[:, 0].sum())
    assert result.choice == (0,) * cost.shape[0]


def test_a_budget_below_the_smallest_size_names_the_minimum():
    cost, size = problem(2)
    smallest = size[:, -1].sum()
    with pytest.raises(ValueError, match=f"smallest reachable size, {smallest:g}"):
        solve_allocation(cost, size, 0.99 * smallest)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="size must be"):
        solve_allocation(np.ones((3, 2)), np.ones((2, 3)), 10.0)
    with pytest.raises(ValueError, match="bops and bops_budget"):
        solve_allocation(np.ones((3, 2)), np.ones((3, 2)), 10.0, bops=np.ones((3, 2)))
