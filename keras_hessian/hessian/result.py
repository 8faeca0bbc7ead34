"""What the estimators return: plain dataclasses of numpy values."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EigenResult:
    """Top eigenvalues of a Hessian operator.

    Attributes:
        eigenvalues: sorted by magnitude, largest first.
        eigenvectors: one parameter vector (a list of tensors shaped like the operator's
            variables) per eigenvalue, unit norm.
        hvp_count: Hessian-vector products spent.
        converged: whether every eigenvalue met the tolerance before `max_iter`.
        method: the solver used (`"lanczos"`, `"power"` or `"arpack"`).
    """

    eigenvalues: np.ndarray
    eigenvectors: list
    hvp_count: int
    converged: bool
    method: str


@dataclass
class TraceResult:
    """A stochastic estimate of the Hessian's trace.

    Attributes:
        trace: the estimate.
        standard_error: its standard error (sample standard deviation / sqrt(probes)).
        samples: the per-probe values `z^T H z`.
        hvp_count: Hessian-vector products spent.
    """

    trace: float
    standard_error: float
    samples: np.ndarray
    hvp_count: int


@dataclass
class DensityResult:
    """Spectral density of the Hessian by stochastic Lanczos quadrature.

    Attributes:
        grid: points where the density is evaluated.
        density: the Gaussian-broadened density on `grid` (integrates to 1).
        nodes: Ritz values, shape `(n_vectors, steps)`.
        weights: quadrature weights (squared first components), shape `(n_vectors, steps)`;
            each row sums to 1.
        sigma: the Gaussian broadening's standard deviation.
        num_parameters: dimension of the operator.
        hvp_count: Hessian-vector products spent.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float
    num_parameters: int
    hvp_count: int
    extra: dict = field(default_factory=dict)

    @property
    def trace(self) -> float:
        """The trace implied by the quadrature: parameter count times the spectrum's mean."""
        return float(self.num_parameters * np.mean(np.sum(self.nodes * self.weights, axis=1)))
