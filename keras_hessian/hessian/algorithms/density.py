"""Spectral density of the Hessian by stochastic Lanczos quadrature (SLQ)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from keras_hessian._validation import check_float, check_int
from keras_hessian.hessian import vectors as V
from keras_hessian.hessian.algorithms import lanczos as L
from keras_hessian.hessian.algorithms._per_block import per_block
from keras_hessian.hessian.algorithms.eigen import top_eigenvalues
from keras_hessian.hessian.operators.deflated import DeflatedOperator
from keras_hessian.hessian.results import DensityResult


@per_block
def spectral_density(
    operator,
    n_vectors: int = 4,
    lanczos_steps: int = 25,
    seed: int | None = None,
    grid_points: int = 2000,
    sigma: float | None = None,
    deflation: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> DensityResult:
    """Estimate the Hessian's eigenvalue density by stochastic Lanczos quadrature.

    For a random unit vector v, the Lanczos tridiagonal T_m built from v gives a Gauss
    quadrature of the spectral measure seen from v: nodes are T_m's eigenvalues theta_i, weights
    the squared first components tau_i^2 of its eigenvectors. Averaging over `n_vectors` start
    vectors and replacing each node by a Gaussian of width `sigma` gives the density
    phi(t) = 1/n_v * sum_v sum_i tau_i^2 N(t; theta_i, sigma^2) (Lin, Saad & Yang, "Approximating
    spectral densities of large matrices", SIAM Review 2016; Ghorbani, Krishnan & Xiao, ICML
    2019; PyHessian). Lanczos uses full reorthogonalization; the runs go in lockstep so each
    step is one batched product. Start vectors are Rademacher (normalized), so the density's
    mean times the parameter count is a Hutchinson trace estimate.

    The defaults (4 vectors x 25 steps, no deflation) spend 100 products, PyHessian's default budget
    (one vector x 100 steps), and are closer to the exact spectrum than it: measured against the
    exact Hessian of two small digits models, the median Wasserstein-1 distance of the quadrature to
    the eigenvalues is 0.72x PyHessian's configuration (`tests/hessian/algorithms/test_density.py`;
    `benchmarks/vs_pyhessian.py` on an 85k-parameter CNN). Several short runs sample more directions
    than one long one, and the bulk needs few steps to resolve.

    With `deflation=s > 0` the top-s eigenpairs are first found by Lanczos and
    enter the quadrature exactly (weight 1/n each); SLQ then runs on the deflated operator
    (I - QQ^T) H (I - QQ^T), weighted (n - s)/n. The few outliers of a classifier's Hessian
    carry most of its trace and most of SLQ's variance, so this both resolves the outliers and
    makes the density's mean (times n) an accurate trace (within 5% at 16 x 60 with 10 deflated;
    the defaults' mean is a 4-probe Hutchinson trace, for a trace use `hutchinson_trace`).

    Use it to see the whole spectrum (bulk and outliers), e.g. before and after training.

    Example:

    ```python
    result = spectral_density(HessianOperator(model, (x, y)), n_vectors=8, seed=0)
    keras_hessian.plots.plot_density(result, "density.png")
    ```

    Args:
        operator: a `HessianOperator`.
        n_vectors: number of random start vectors.
        lanczos_steps: Lanczos steps per vector (capped at the parameter count).
        seed: seed of the start vectors.
        grid_points: resolution of the returned grid.
        sigma: Gaussian broadening; default 1/200 of the spectral range.
        deflation: number of top eigenpairs taken exactly (0 for plain SLQ).
        progress: called as `progress(step, steps)` after the deflation (step 0) and after each
            lockstep Lanczos step, e.g. to draw a progress line.

    Returns:
        A `DensityResult`.
    """
    n_vectors = check_int("n_vectors", n_vectors, 1)
    steps = check_int("lanczos_steps", lanczos_steps, 1)
    grid_points = check_int("grid_points", grid_points, 1)
    check_float("sigma", sigma, minimum=0, exclusive_minimum=True, allow_none=True)
    deflation = check_int("deflation", deflation, 0)
    check_int("seed", seed, 0, allow_none=True)
    n = operator.num_parameters
    deflation = min(int(deflation), n - 1)
    seeds = V.seed_stream(seed)
    count0 = operator.hvp_count
    exact = np.zeros(0)
    bulk = operator
    if deflation > 0:
        top = top_eigenvalues(operator, k=deflation, max_iter=max(100, 4 * deflation), tol=1e-4, seed=next(seeds).numpy()[0] + 1, method="lanczos")
        exact = top.eigenvalues
        bulk = DeflatedOperator(operator, top.eigenvectors)
    starts = [V.rademacher_like(operator.variables, next(seeds)) for _ in range(int(n_vectors))]
    if deflation > 0:
        starts = [bulk.project(z) for z in starts]
    steps = min(int(steps), n - len(exact))
    if progress is not None:
        progress(0, steps)
    for step, (alphas, betas, _, _) in enumerate(L.lanczos_steps(bulk, starts, steps), 1):
        if progress is not None:
            progress(step, steps)
    m = alphas.shape[1]
    bulk_share = (n - len(exact)) / n
    nodes = np.zeros((len(starts), m + len(exact)))
    weights = np.zeros((len(starts), m + len(exact)))
    for r in range(len(starts)):
        theta, s = L.ritz(alphas[r], betas[r])
        nodes[r] = np.concatenate([theta, exact])
        weights[r] = np.concatenate([bulk_share * s[0] ** 2, np.full(len(exact), 1.0 / n)])
    low, high = float(nodes.min()), float(nodes.max())
    spread = max(high - low, 1e-12 * max(abs(high), 1.0), 1e-12)
    sigma = float(sigma) if sigma is not None else spread / 200.0
    pad = 5.0 * sigma + 0.01 * spread
    grid = np.linspace(low - pad, high + pad, int(grid_points))
    kernel = np.exp(-0.5 * ((grid[:, None] - nodes.ravel()[None, :]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    density = kernel @ weights.ravel() / len(starts)
    return DensityResult(
        grid=grid,
        density=density,
        nodes=nodes,
        weights=weights,
        sigma=sigma,
        num_parameters=operator.num_parameters,
        hvp_count=operator.hvp_count - count0,
    )
