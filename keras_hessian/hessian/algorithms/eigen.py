"""Top-k eigenvalues of a Hessian operator: Lanczos, power iteration with deflation, ARPACK.

- `"lanczos"`: the Lanczos process with full reorthogonalization; stops when each of the
  top-k Ritz values is within `tol` (relative) by the residual bound of Kahan/Parlett,
  |theta - lambda| <= min(r, r^2 / gap) with r = beta_m |s_m| (Parlett, "The Symmetric
  Eigenvalue Problem", 11.7). One product per step, shared by all k eigenvalues.
- `"power"`: power iteration with Gram-Schmidt deflation against the eigenvectors found, and
  PyHessian's stopping rule |lambda_t - lambda_{t-1}| / (|lambda_{t-1}| + 1e-6) < tol (Yao et
  al., "PyHessian", 2020; the reference decks' Algorithm 2). One run per eigenvalue.
- `"arpack"`: `scipy.sparse.linalg.eigsh` (ARPACK's implicitly restarted Lanczos) over a
  `LinearOperator` whose matvec is the HVP: the field's reference for accuracy, with a host
  round trip per product.

All three find the eigenvalues of largest MAGNITUDE (as PyHessian does); near a minimum these
are the largest ones.

Warm start (`initial=`): the Hessian moves little between two measurements of one training
run, so the last eigenvectors are a far better start than a random vector (the ABSA authors'
setting: one measurement per epoch). Power iteration starts eigenvalue j from the j-th given
vector; Lanczos and ARPACK start from the sum of the given vectors (a Krylov space grown from a
combination of k eigenvectors holds all k), random vectors filling in for missing ones.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_hessian._validation import check_choice, check_float, check_int
from keras_hessian.hessian import vectors as V
from keras_hessian.hessian.algorithms._per_block import per_block
from keras_hessian.hessian.algorithms.lanczos import lanczos_steps, ritz
from keras_hessian.hessian.results import EigenResult

EIGEN_METHODS = ("lanczos", "power", "arpack")
# benchmarks/eigen_speed.py: Lanczos reaches tol 1e-3 with fewer products than power iteration.
DEFAULT_EIGEN_METHOD = "lanczos"
# The gap in the Kahan/Parlett bound is measured between Ritz values, which can overstate the
# true gap early on; asking the bound for a quarter of `tol` keeps the actual error below `tol`
# (benchmarks/eigen_speed.py reports the errors reached).
SAFETY = 0.25


def _initial_vectors(operator, initial) -> list:
    """The start vectors given as `initial` (an `EigenResult` or a list of parameter vectors),
    checked against the operator's variables; `[]` for None."""
    if initial is None:
        return []
    vectors = initial.eigenvectors if isinstance(initial, EigenResult) else initial
    if not isinstance(vectors, (list, tuple)):
        raise TypeError(
            "initial must be an EigenResult or a list of parameter vectors (each a list of tensors "
            f"shaped like the operator's variables). Received initial of type {type(initial).__name__}."
        )
    shapes = [tuple(v.shape) for v in operator.variables]
    out = []
    for index, vector in enumerate(vectors):
        got = [tuple(np.shape(t)) for t in vector] if isinstance(vector, (list, tuple)) else None
        if got != shapes:
            raise ValueError(
                f"initial[{index}] must be a list of tensors shaped like the operator's variables "
                f"{shapes}. Received {got if got is not None else type(vector).__name__}."
            )
        converted = [tf.cast(tf.convert_to_tensor(t), tf.as_dtype(v.dtype)) for t, v in zip(vector, operator.variables)]
        if float(V.norm(converted)) == 0.0:
            raise ValueError(f"initial[{index}] is the zero vector: it cannot start an eigen-solver.")
        out.append(V.normalize(converted))
    return out


def compatible_vectors(vectors: list | None, variables) -> list | None:
    """`vectors` if each is shaped like `variables` (so it can start a solver on them), else None.

    A callback keeps the last eigenvectors across measurements and fits; on a model whose
    trainable weights changed shape they are dropped (a random start), not an error.
    """
    if not vectors:
        return None
    shapes = [tuple(v.shape) for v in variables]
    for vector in vectors:
        if not isinstance(vector, (list, tuple)) or [tuple(np.shape(t)) for t in vector] != shapes:
            return None
    return vectors


def _starts(operator, initial: list, k: int, seeds) -> list:
    """`k` unit start vectors: the given ones first, random ones for the rest."""
    out = list(initial[:k])
    while len(out) < k:
        out.append(V.normalize(V.gaussian_like(operator.variables, next(seeds))))
    return out


def _combined_start(operator, initial: list, k: int, seed) -> list:
    """One start vector for a single Krylov run: the sum of the `k` starts."""
    starts = _starts(operator, initial, k, V.seed_stream(seed))
    total = starts[0]
    for vector in starts[1:]:
        total = V.axpy(1.0, vector, total)
    return V.normalize(total)


def _validate(operator, k, max_iter, tol, seed, method) -> str:
    method = check_choice("method", DEFAULT_EIGEN_METHOD if method is None else method, EIGEN_METHODS)
    k = check_int("k", k, 1)
    n = operator.num_parameters
    if k > n:
        raise ValueError(f"k must not exceed the number of parameters ({n}). Received k={k}.")
    check_int("max_iter", max_iter, 1)
    check_float("tol", tol, minimum=0, exclusive_minimum=True)
    check_int("seed", seed, 0, allow_none=True)
    return method


@per_block
def top_eigenvalues(
    operator,
    k: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int | None = None,
    method: str | None = None,
    initial=None,
) -> EigenResult:
    """The `k` eigenvalues of largest magnitude of a Hessian operator, and their eigenvectors.

    Use it to measure sharpness (the top eigenvalue) or the top of the spectrum; on an operator
    built with `blocks="layer"` it returns `{layer_name: EigenResult}`, the spectra of the
    Hessian's diagonal blocks.

    Example:

    ```python
    op = HessianOperator(model, (x, y))
    result = top_eigenvalues(op, k=3, seed=0)
    result.eigenvalues, result.hvp_count
    ```

    Args:
        operator: a `HessianOperator` (or anything with `hvp`, `hvp_many`, `variables`,
            `num_parameters`).
        k: how many eigenvalues, 1 <= k <= number of parameters.
        max_iter: at most this many products per eigenvalue for `"power"`, in all for
            `"lanczos"`, and ARPACK's restart limit for `"arpack"`.
        tol: relative tolerance (see the module docstring for each method's rule).
        seed: seed of the random start vector(s); `None` draws a fresh one.
        method: `"lanczos"` (default: fewest products), `"power"` or `"arpack"`.
        initial: a previous `EigenResult`, or a list of parameter vectors shaped like
            `EigenResult.eigenvectors`, to start from (warm start; see the module docstring);
            `None`: random start vectors. On a `blocks="layer"` operator, a dict
            `{layer_name: ...}` of such values (as the per-block results).

    Returns:
        An `EigenResult`.
    """
    method = _validate(operator, k, max_iter, tol, seed, method)
    starts = _initial_vectors(operator, initial)
    solver = {"lanczos": _lanczos, "power": _power_iteration, "arpack": _arpack}[method]
    return solver(operator, int(k), int(max_iter), float(tol), seed, starts)


def _order_by_magnitude(values: np.ndarray) -> np.ndarray:
    return np.argsort(-np.abs(values), kind="stable")


def _lanczos(operator, k, max_iter, tol, seed, initial) -> EigenResult:
    start = _combined_start(operator, initial, k, seed)
    count0 = operator.hvp_count
    steps = max(max_iter, k)
    converged = False
    for alphas, betas, bases, exhausted in lanczos_steps(operator, [start], steps):
        alpha, beta = alphas[0], betas[0]
        theta, s = ritz(alpha, beta)
        # Fewer than k values only if the start vector spans an invariant subspace of dim < k.
        top = _order_by_magnitude(theta)[:k]
        if len(alpha) <= k and not exhausted:
            continue  # with no other Ritz value there is no gap to bound the error by
        if exhausted:
            converged = True
            break
        residual = np.abs(beta[-1] * s[-1, top])
        gaps = np.array([np.min(np.abs(np.delete(theta, i) - theta[i])) if len(theta) > 1 else np.inf for i in top])
        error = np.where(np.isfinite(gaps), np.minimum(residual, residual**2 / np.maximum(gaps, 1e-30)), residual)
        if np.all(error <= SAFETY * tol * np.abs(theta[top])):
            converged = True
            break
    # Ritz vectors: the basis combined by the tridiagonal's eigenvectors.
    ritz_vectors = tf.linalg.matmul(tf.cast(s[:, top], bases[0].dtype), bases[0][: len(alpha)], transpose_a=True)
    eigenvectors = [V.from_flat(tf.math.l2_normalize(row), operator.variables) for row in ritz_vectors]
    return EigenResult(
        eigenvalues=theta[top].astype(np.float64),
        eigenvectors=eigenvectors,
        hvp_count=operator.hvp_count - count0,
        converged=converged,
        method="lanczos",
    )


def _power_iteration(operator, k, max_iter, tol, seed, initial) -> EigenResult:
    starts = _starts(operator, initial, k, V.seed_stream(seed))
    count0 = operator.hvp_count
    eigenvalues, eigenvectors, all_converged = [], [], True
    for j in range(k):
        v = starts[j]
        eigenvalue, converged = None, False
        for _ in range(max_iter):
            v = V.normalize(V.orthogonalize(v, eigenvectors))
            hv = operator.hvp(v)
            estimate = float(V.dot(hv, v))
            v = V.normalize(hv)
            if eigenvalue is not None and abs(estimate - eigenvalue) / (abs(eigenvalue) + 1e-6) < tol:
                eigenvalue, converged = estimate, True
                break
            eigenvalue = estimate
        all_converged &= converged
        eigenvalues.append(eigenvalue)
        eigenvectors.append(V.normalize(V.orthogonalize(v, eigenvectors)))
    values = np.asarray(eigenvalues, dtype=np.float64)
    order = _order_by_magnitude(values)
    return EigenResult(
        eigenvalues=values[order],
        eigenvectors=[eigenvectors[i] for i in order],
        hvp_count=operator.hvp_count - count0,
        converged=all_converged,
        method="power",
    )


def _arpack(operator, k, max_iter, tol, seed, initial) -> EigenResult:
    import scipy.sparse.linalg as spla

    n = operator.num_parameters
    if k >= n:
        raise ValueError(f"k must be below the number of parameters ({n}) for method='arpack'. Received k={k}.")
    count0 = operator.hvp_count
    variables = operator.variables

    def matvec(x):
        return V.flatten(operator.hvp(V.unflatten(np.asarray(x).ravel(), variables)))

    linear_operator = spla.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    if initial:
        v0 = V.flatten(_combined_start(operator, initial, k, seed))
    else:
        v0 = np.random.default_rng(seed).standard_normal(n)
    converged = True
    try:
        values, vectors = spla.eigsh(linear_operator, k=k, which="LM", tol=tol, maxiter=max_iter, v0=v0)
    except spla.ArpackNoConvergence as error:
        values, vectors, converged = error.eigenvalues, error.eigenvectors, False
    order = _order_by_magnitude(values)
    return EigenResult(
        eigenvalues=np.asarray(values[order], dtype=np.float64),
        eigenvectors=[V.unflatten(vectors[:, i], variables) for i in order],
        hvp_count=operator.hvp_count - count0,
        converged=converged,
        method="arpack",
    )
