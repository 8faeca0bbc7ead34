"""Hutchinson's stochastic estimator of the Hessian's diagonal with Rademacher probes."""

from __future__ import annotations

import numpy as np

from keras_hessian._validation import check_float, check_int
from keras_hessian.hessian import vectors as V
from keras_hessian.hessian.algorithms._per_block import per_block
from keras_hessian.hessian.algorithms.trace import DEFAULT_PROBES_PER_STEP, MIN_PROBES, step_size
from keras_hessian.hessian.results import DiagonalResult


@per_block
def hessian_diagonal(
    operator,
    num_probes: int = 200,
    seed: int | None = None,
    tol: float = 0.05,
    probes_per_step: int = DEFAULT_PROBES_PER_STEP,
) -> DiagonalResult:
    """Estimate diag(H) as the mean of z * (H z) over Rademacher probes z (Bekas, Kokiopoulou & Saad, 2007).

    For z with independent +-1 entries, E[z_i (Hz)_i] = H_ii + sum_{j != i} H_ij E[z_i z_j] = H_ii,
    with variance sum_{j != i} H_ij^2 per entry: the estimate is exact on a diagonal Hessian and
    noisier where the off-diagonal curvature of a weight's row is large. Probes are multiplied
    `probes_per_step` at a time (`operator.hvp_many`, as the trace). Sampling stops after
    `num_probes` products or, after at least 16, when the root-mean-square standard error falls
    below `tol` times the root-mean-square diagonal.

    Use it for per-weight curvature: the Optimal Brain Damage saliency 1/2 H_ii w_i^2
    (`keras_hessian.pruning`), per-channel sensitivity. On a `blocks="layer"` operator it
    returns `{layer_name: DiagonalResult}` (the diagonal of each diagonal block is the full
    diagonal's piece; the estimate is less noisy, since only in-block off-diagonal terms add
    variance).

    Example:

    ```python
    result = hessian_diagonal(HessianOperator(model, (x, y)), seed=0)
    kernel_curvature = result.diagonal[0]  # shaped like model.trainable_variables[0]
    ```

    Args:
        operator: a `HessianOperator`.
        num_probes: the most probes (Hessian-vector products) to spend.
        tol: target relative root-mean-square standard error.
        seed: seed of the probes; `None` draws fresh ones.
        probes_per_step: probes multiplied together in one batched product.

    Returns:
        A `DiagonalResult`: `diagonal` and `standard_error`, numpy arrays shaped like the
        operator's variables.
    """
    num_probes = check_int("num_probes", num_probes, 1)
    check_float("tol", tol, minimum=0, exclusive_minimum=True)
    probes_per_step = check_int("probes_per_step", probes_per_step, 1)
    check_int("seed", seed, 0, allow_none=True)
    seeds = V.seed_stream(seed)
    count0 = operator.hvp_count
    variables = operator.variables
    # Running sums in float64 (Welford would be overkill: the values are O(curvature), the
    # probe count is small, and float64 keeps sum of squares minus square of sum accurate).
    total = [np.zeros(tuple(v.shape), np.float64) for v in variables]
    squares = [np.zeros(tuple(v.shape), np.float64) for v in variables]
    n = 0
    while n < num_probes:
        k = step_size(probes_per_step, num_probes - n)
        probes = [V.rademacher_like(variables, next(seeds)) for _ in range(k)]
        products = operator.hvp_many(probes) if k > 1 else [operator.hvp(probes[0])]
        for z, hz in zip(probes, products):
            for i, (zi, hi) in enumerate(zip(z, hz)):
                sample = np.asarray(zi, np.float64) * np.asarray(hi, np.float64)
                total[i] += sample
                squares[i] += sample * sample
        n += k
        if n >= MIN_PROBES:
            mean, error = _mean_and_error(total, squares, n)
            if _rms(error) <= tol * _rms(mean):
                break
    mean, error = _mean_and_error(total, squares, n)
    return DiagonalResult(
        diagonal=mean,
        standard_error=error,
        num_probes=n,
        hvp_count=operator.hvp_count - count0,
        names=[getattr(v, "path", None) or getattr(v, "name", f"variable_{i}") for i, v in enumerate(variables)],
    )


def _mean_and_error(total: list, squares: list, n: int) -> tuple[list, list]:
    means = [t / n for t in total]
    if n < 2:
        return means, [np.full_like(m, np.inf) for m in means]
    errors = []
    for m, s in zip(means, squares):
        variance = np.maximum(s / n - m * m, 0.0) * n / (n - 1)
        errors.append(np.sqrt(variance / n))
    return means, errors


def _rms(arrays: list) -> float:
    size = sum(a.size for a in arrays)
    return float(np.sqrt(sum(float(np.sum(a * a)) for a in arrays) / max(size, 1)))
