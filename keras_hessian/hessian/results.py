"""What the algorithms return: plain dataclasses of numpy values, printed as short summaries.

The arrays (eigenvectors, probe samples, density grid) stay attributes; the reprs show the
values people look at, the counts and the shapes, never a dump of the arrays (a dict of
per-block results then prints one short line per block).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np

from keras_hessian._files import check_output_path, write_atomically

# Values listed in full up to this many; longer arrays show their first and last few.
_SHOWN = 8
_EDGE = 3


def _number(value: float, digits: int = 6) -> str:
    return f"{float(value):.{digits}g}"


def _values(values) -> str:
    values = np.asarray(values).ravel()
    if len(values) <= _SHOWN:
        return "[" + ", ".join(_number(v) for v in values) + "]"
    head = ", ".join(_number(v) for v in values[:_EDGE])
    tail = ", ".join(_number(v) for v in values[-_EDGE:])
    return f"[{head}, ..., {tail}] ({len(values)} values)"


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

    def save(self, path: str | os.PathLike) -> str:
        """Write the result as `.npz` (eigenvalues, counts, and eigenvector `j` of variable `i` as `vector_j_i`)."""
        arrays = {
            "eigenvalues": np.asarray(self.eigenvalues),
            "hvp_count": np.asarray(self.hvp_count),
            "converged": np.asarray(self.converged),
            "method": np.asarray(self.method),
            "shapes": np.asarray(len(self.eigenvectors[0]) if self.eigenvectors else 0),
        }
        for j, vector in enumerate(self.eigenvectors):
            for i, tensor in enumerate(vector):
                arrays[f"vector_{j}_{i}"] = np.asarray(tensor)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        target = check_output_path(path)
        write_atomically(target, buffer.getvalue())
        return str(target)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EigenResult:
        """Read a result written by `save`; eigenvectors come back as lists of numpy arrays."""
        with np.load(os.fspath(path), allow_pickle=False) as data:
            count = int(data["shapes"])
            vectors = [
                [data[f"vector_{j}_{i}"] for i in range(count)] for j in range(len(data["eigenvalues"]))
            ] if count else []
            return cls(
                eigenvalues=data["eigenvalues"],
                eigenvectors=vectors,
                hvp_count=int(data["hvp_count"]),
                converged=bool(data["converged"]),
                method=str(data["method"]),
            )

    def __repr__(self) -> str:
        sizes = {int(sum(np.prod(tuple(t.shape), dtype=np.int64) for t in v)) for v in self.eigenvectors}
        vectors = f"{len(self.eigenvectors)} x {sizes.pop()} parameters" if len(sizes) == 1 else str(len(self.eigenvectors))
        return (
            f"EigenResult(eigenvalues={_values(self.eigenvalues)}, eigenvectors={vectors}, "
            f"hvp_count={self.hvp_count}, converged={self.converged}, method={self.method!r})"
        )


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

    def __repr__(self) -> str:
        return (
            f"TraceResult(trace={_number(self.trace)}, standard_error={_number(self.standard_error, 3)}, "
            f"samples={len(self.samples)}, hvp_count={self.hvp_count})"
        )


@dataclass
class DiagonalResult:
    """A stochastic estimate of the Hessian's diagonal, shaped like the operator's variables.

    Attributes:
        diagonal: one numpy array per variable, the estimate of each H_ii.
        standard_error: one numpy array per variable, each entry's standard error (sample
            standard deviation of z_i (Hz)_i / sqrt(probes)).
        num_probes: probes averaged.
        hvp_count: Hessian-vector products spent.
        names: the variables' names (paths), in the order of `diagonal`.
    """

    diagonal: list
    standard_error: list
    num_probes: int
    hvp_count: int
    names: list = field(default_factory=list)

    @property
    def num_parameters(self) -> int:
        """Number of entries estimated."""
        return int(sum(np.asarray(d).size for d in self.diagonal))

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """The diagonal and its standard errors as two flat arrays (variables in order)."""
        if not self.diagonal:
            return np.zeros(0), np.zeros(0)
        return (
            np.concatenate([np.ravel(d) for d in self.diagonal]),
            np.concatenate([np.ravel(e) for e in self.standard_error]),
        )

    def __repr__(self) -> str:
        diagonal, error = self.flat()
        shapes = ", ".join(str(tuple(np.shape(d))) for d in self.diagonal[:_SHOWN])
        if len(self.diagonal) > _SHOWN:
            shapes += ", ..."
        total = _number(diagonal.sum()) if diagonal.size else "0"
        mean_error = _number(float(np.sqrt(np.mean(error**2))), 3) if error.size else "0"
        return (
            f"DiagonalResult(shapes=[{shapes}], sum={total}, rms_standard_error={mean_error}, "
            f"num_probes={self.num_probes}, hvp_count={self.hvp_count})"
        )


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

    def __repr__(self) -> str:
        span = f"[{_number(self.grid[0], 4)}, {_number(self.grid[-1], 4)}]" if len(self.grid) else "[]"
        return (
            f"DensityResult(trace={_number(self.trace)}, nodes={tuple(self.nodes.shape)}, "
            f"grid_points={len(self.grid)} in {span}, sigma={_number(self.sigma, 3)}, "
            f"num_parameters={self.num_parameters}, hvp_count={self.hvp_count})"
        )


@dataclass
class LandscapeResult:
    """The loss of a model along one or two directions in weight space (`loss_landscape`).

    Attributes:
        offsets: the grid of step lengths along each direction, `linspace(-span, span, steps)`
            (it holds 0, the model's own weights, at its centre).
        losses: the mean loss at each offset, shape `(steps,)` for one direction or
            `(steps, steps)` for two (`losses[i, j]` at `offsets[i]` along the first direction and
            `offsets[j]` along the second).
        directions: the directions used, each a list of numpy arrays shaped like the model's
            trainable weights (after normalization).
        kind: `"top_eigenvector"`, `"random"` or `"vectors"` (given by the caller).
        normalize: the normalization applied (`"filter"`, `"unit"`, or None); top eigenvectors
            are always unit vectors.
        eigenvalues: the Hessian eigenvalues of the directions (`kind="top_eigenvector"`), else None.
    """

    offsets: np.ndarray
    losses: np.ndarray
    directions: list
    kind: str
    normalize: str | None
    eigenvalues: np.ndarray | None = None

    @property
    def dims(self) -> int:
        """Number of directions (1 or 2)."""
        return int(np.ndim(self.losses))

    @property
    def loss_at_origin(self) -> float:
        """The loss at the model's own weights (the grid's centre)."""
        centre = len(self.offsets) // 2
        return float(self.losses[(centre,) * self.dims])

    def __repr__(self) -> str:
        eigen = f", eigenvalues={_values(self.eigenvalues)}" if self.eigenvalues is not None else ""
        span = _number(self.offsets[-1], 4)
        return (
            f"LandscapeResult(kind={self.kind!r}, dims={self.dims}, steps={len(self.offsets)}, span={span}, "
            f"loss_at_origin={_number(self.loss_at_origin)}, min={_number(np.min(self.losses))}, "
            f"max={_number(np.max(self.losses))}, normalize={self.normalize!r}{eigen})"
        )
