"""Hutchinson's stochastic trace estimator with Rademacher probes."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_hessian._validation import check_float, check_int
from keras_hessian.hessian import vectors as V
from keras_hessian.hessian.algorithms._per_block import per_block
from keras_hessian.hessian.results import TraceResult

# Probes are multiplied a batch at a time (`hvp_many`: one forward and first-order backward
# pass shared per batch of probes).
DEFAULT_PROBES_PER_STEP = 8
MIN_PROBES = 16
# Hutch++'s sketch size: Hessians of classifiers have a few outliers (about one per class,
# Papyan 2019) that dominate the Hutchinson variance; taking their trace exactly on a sketched
# subspace leaves the bulk to the probes.
DEFAULT_DEFLATION = 16


@per_block
def hutchinson_trace(
    operator,
    max_iter: int = 400,
    tol: float = 5e-3,
    seed: int | None = None,
    probes_per_step: int = DEFAULT_PROBES_PER_STEP,
    deflation: int = DEFAULT_DEFLATION,
) -> TraceResult:
    """Estimate tr(H) as the mean of z^T H z over Rademacher probes z (Hutchinson, 1990).

    E[z^T H z] = tr(H) for z with independent +-1 entries; the variance is
    2 * sum_{i != j} H_ij^2, the smallest of all i.i.d. probe distributions (Avron & Toledo,
    2011). Probes are drawn `probes_per_step` at a time (the rest of a budget in powers of two,
    `step_size`); sampling stops when the standard error
    falls below `tol * |estimate|` (after at least 16 probes) or after `max_iter` products.
    PyHessian stops instead when the running mean changes by less than `tol`, which says little
    about the error; the standard error is the honest rule.

    With `deflation=s > 0` (default 16) this is Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA
    2021): Q = orth(H S) for s Rademacher vectors S, the trace splits into tr(Q^T H Q), computed
    exactly with s more products, plus the Hutchinson estimate of the rest with probes
    projected as (I - QQ^T) z. The standard error is that of the second part. `deflation=0` is
    plain Hutchinson.

    Use it for the average curvature (HAWQ-V2 sensitivity, the SLQ mean). On a `blocks="layer"`
    operator it returns `{layer_name: TraceResult}`.

    Example:

    ```python
    result = hutchinson_trace(HessianOperator(model, (x, y)), seed=0)
    print(result.trace, "+-", result.standard_error)
    ```

    Args:
        operator: a `HessianOperator`.
        max_iter: the most probes (Hessian-vector products) to spend.
        tol: target relative standard error.
        seed: seed of the probes; `None` draws fresh ones.
        probes_per_step: probes multiplied together in one batched product.
        deflation: Hutch++ sketch size (products spent on the exact part: 2 x deflation,
            capped at a quarter of `max_iter` and below the parameter count); 0 for plain
            Hutchinson.

    Returns:
        A `TraceResult`.
    """
    max_iter = check_int("max_iter", max_iter, 1)
    check_float("tol", tol, minimum=0, exclusive_minimum=True)
    probes_per_step = check_int("probes_per_step", probes_per_step, 1)
    deflation = check_int("deflation", deflation, 0)
    check_int("seed", seed, 0, allow_none=True)
    seeds = V.seed_stream(seed)
    count0 = operator.hvp_count
    variables = operator.variables
    sketch = min(int(deflation), int(max_iter) // 4, operator.num_parameters - 1)
    exact_part, basis = 0.0, None
    if sketch > 0:
        sketched = _products(operator, [V.rademacher_like(variables, next(seeds)) for _ in range(sketch)], probes_per_step)
        basis, _ = tf.linalg.qr(tf.stack([V.to_flat(p) for p in sketched], axis=1))  # (n, s)
        columns = [V.from_flat(basis[:, j], variables) for j in range(sketch)]
        exact_part = sum(float(V.dot(q, hq)) for q, hq in zip(columns, _products(operator, columns, probes_per_step)))
    samples: list[float] = []
    budget = int(max_iter) - (operator.hvp_count - count0)
    while len(samples) < budget:
        k = step_size(int(probes_per_step), budget - len(samples))
        probes = [V.rademacher_like(variables, next(seeds)) for _ in range(k)]
        if basis is not None:
            probes = [_deflate(z, basis, variables) for z in probes]
        products = _products(operator, probes, k)
        samples.extend(exact_part + float(V.dot(z, hz)) for z, hz in zip(probes, products))
        if len(samples) >= MIN_PROBES:
            mean, error = _mean_and_error(samples)
            if error <= tol * abs(mean):
                break
    mean, error = _mean_and_error(samples)
    return TraceResult(
        trace=mean, standard_error=error, samples=np.asarray(samples), hvp_count=operator.hvp_count - count0
    )


def step_size(per_step: int, left: int) -> int:
    """Vectors in the next batched product: `per_step`, then what is left in powers of two.

    Each vector count is a compiled function of its own (traced on first use, which costs as much as
    several products); budgets that vary from call to call then reuse a few sizes (8, 4, 2, 1)."""
    return per_step if left >= per_step else 1 << (left.bit_length() - 1)


def _products(operator, vectors: list, per_step: int) -> list:
    out: list = []
    while len(out) < len(vectors):
        chunk = vectors[len(out) : len(out) + step_size(per_step, len(vectors) - len(out))]
        out.extend(operator.hvp_many(chunk) if len(chunk) > 1 else [operator.hvp(chunk[0])])
    return out


def _deflate(z, basis: tf.Tensor, variables) -> list:
    flat = V.to_flat(z)
    return V.from_flat(flat - tf.linalg.matvec(basis, tf.linalg.matvec(basis, flat, transpose_a=True)), variables)


def _mean_and_error(samples: list[float]) -> tuple[float, float]:
    values = np.asarray(samples, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), float("inf")
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))
