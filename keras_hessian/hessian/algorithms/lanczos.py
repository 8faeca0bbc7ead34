"""The Lanczos process with full reorthogonalization, run for one or several start vectors.

Shared by `eigen.py` (one run, stopped when the top Ritz values converge) and `density.py`
(several runs in lockstep, so each step is one batched product `hvp_many`). The basis is kept
as one `(steps, n)` matrix per run on the device, so reorthogonalization is two matrix
products, not a loop over basis vectors.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.linalg
import tensorflow as tf

from keras_hessian.hessian import vectors as V

# A beta below this fraction of the largest |alpha| means the Krylov space is exhausted
# (an invariant subspace was found): the Ritz values are then exact.
BREAKDOWN = 1e-6


def lanczos_steps(operator, starts: list, max_steps: int) -> Iterator[tuple[np.ndarray, np.ndarray, list, bool]]:
    """Yield `(alphas, betas, bases, exhausted)` after each Lanczos step.

    `alphas[r]`, `betas[r]` hold run `r`'s tridiagonal: the diagonal, and the off-diagonal
    followed by the current residual norm (so `betas[r]` has as many entries as `alphas[r]`).
    `bases[r]` is the `(steps, n)` matrix of run `r`'s orthonormal Lanczos vectors. Full
    reorthogonalization against every previous vector, done twice ("twice is enough",
    Kahan/Parlett), keeps the basis orthonormal in float32; without it the top eigenvalues come
    back as ghost copies (Paige, 1971).
    """
    variables = operator.variables
    runs = len(starts)
    current = [tf.math.l2_normalize(V.to_flat(s)) for s in starts]
    bases = [c[None, :] for c in current]
    alphas = np.zeros((runs, 0))
    betas = np.zeros((runs, 0))
    for step in range(max_steps):
        as_vectors = [V.from_flat(c, variables) for c in current]
        products = operator.hvp_many(as_vectors) if runs > 1 else [operator.hvp(as_vectors[0])]
        new_alpha, new_beta, residuals = np.zeros(runs), np.zeros(runs), []
        for r in range(runs):
            w = V.to_flat(products[r])
            new_alpha[r] = float(tf.tensordot(w, current[r], 1))
            for _ in range(2):
                w = w - tf.linalg.matvec(bases[r], tf.linalg.matvec(bases[r], w), transpose_a=True)
            new_beta[r] = float(tf.norm(w))
            residuals.append(w)
        alphas = np.concatenate([alphas, new_alpha[:, None]], axis=1)
        betas = np.concatenate([betas, new_beta[:, None]], axis=1)
        scale = max(float(np.max(np.abs(alphas))), 1e-30)
        exhausted = bool(np.all(new_beta <= BREAKDOWN * scale))
        yield alphas, betas, bases, exhausted
        if exhausted or step == max_steps - 1:
            return
        current = [w / max(b, 1e-30) for w, b in zip(residuals, new_beta)]
        bases = [tf.concat([basis, c[None, :]], axis=0) for basis, c in zip(bases, current)]


def ritz(alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of the symmetric tridiagonal with diagonal `alphas` and
    off-diagonal `betas[:-1]` (the last beta is the residual, not part of the matrix)."""
    if len(alphas) == 1:
        return np.asarray(alphas, dtype=np.float64), np.ones((1, 1))
    return scipy.linalg.eigh_tridiagonal(alphas, betas[: len(alphas) - 1])
