"""The loss landscape: the loss along the top Hessian eigenvectors or random filter-normalized directions.

`loss_landscape` evaluates L(w + a d1) on a grid of offsets a (1-D) or L(w + a d1 + b d2) on a
grid of (a, b) (2-D), where w are the model's trainable weights:

- along the top eigenvector(s) of the Hessian (PyHessian's picture, Yao et al. 2020): unit
  vectors, so the curvature of the 1-D curve at 0 is the top eigenvalue;
- along random Gaussian directions, filter-normalized (Li et al., "Visualizing the Loss
  Landscape of Neural Nets", NeurIPS 2018): each filter of the direction is rescaled to the norm
  of the corresponding filter of the weights, so that landscapes of networks with different
  weight scales compare. A filter is one slice along the last axis of a kernel (Keras' layout
  of Dense and Conv kernels: the output unit / channel); one-dimensional weights (biases,
  BatchNorm) get a zero direction, as in Li et al.'s `ignore='biasbn'`.

Why our own code: the peers (PyHessian's example, Li et al.'s `loss-landscape`) are PyTorch
scripts; here the work is moving a Keras model's weights and putting them back EXACTLY: every
grid point is assigned from a saved copy of the weights (w0 + a d1 + b d2, never by stepping
from the last point), and a `finally` block assigns the saved copy back, so the model is
bit-identical afterwards, also when a loss evaluation raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from keras_hessian._validation import check_choice, check_float, check_int
from keras_hessian.hessian import vectors as V
from keras_hessian.hessian.algorithms.eigen import top_eigenvalues
from keras_hessian.hessian.operators import HessianOperator, tf_variable
from keras_hessian.hessian.results import EigenResult, LandscapeResult

DIRECTION_KINDS = ("top_eigenvector", "random")
NORMALIZATIONS = ("filter", "unit", None)
# Lanczos tolerance for the eigenvector directions: tighter than top_eigenvalues' default, so
# that the curvature along them matches the eigenvalue well within a finite difference's error.
_EIGEN_TOL = 1e-5


def filter_normalized(direction: Sequence[tf.Tensor], weights: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """Li et al.'s filter normalization: each last-axis slice of `direction` rescaled to the norm
    of the same slice of `weights`; one-dimensional (and scalar) weights get zeros."""
    out = []
    for d, w in zip(direction, weights):
        if d.shape.rank <= 1:
            out.append(tf.zeros_like(d))
            continue
        axes = list(range(d.shape.rank - 1))
        d_norm = tf.sqrt(tf.reduce_sum(tf.square(d), axis=axes, keepdims=True))
        w_norm = tf.sqrt(tf.reduce_sum(tf.square(w), axis=axes, keepdims=True))
        out.append(d * w_norm / (d_norm + tf.cast(1e-10, d.dtype)))
    return out


def _given_directions(vectors, dims: int, variables) -> list:
    shapes = [tuple(v.shape) for v in variables]
    if not isinstance(vectors, (list, tuple)) or len(vectors) != dims:
        raise ValueError(
            f"directions must be 'top_eigenvector', 'random', or a list of {dims} direction(s) (dims={dims}), "
            f"each a list of arrays shaped like the model's trainable weights. Received {type(vectors).__name__}"
            + (f" of length {len(vectors)}." if isinstance(vectors, (list, tuple)) else ".")
        )
    out = []
    for index, vector in enumerate(vectors):
        got = [tuple(np.shape(t)) for t in vector] if isinstance(vector, (list, tuple)) else None
        if got != shapes:
            raise ValueError(
                f"directions[{index}] must be a list of arrays shaped like the model's trainable weights {shapes}. "
                f"Received {got if got is not None else type(vector).__name__}."
            )
        converted = [tf.cast(tf.convert_to_tensor(t), tf.as_dtype(v.dtype)) for t, v in zip(vector, variables)]
        if float(V.norm(converted)) == 0.0:
            raise ValueError(f"directions[{index}] is the zero vector: there is no landscape along it.")
        out.append(converted)
    return out


def _normalized(direction, weights, normalize):
    if normalize == "filter":
        return filter_normalized(direction, weights)
    if normalize == "unit":
        return V.normalize(direction)
    return list(direction)


def loss_landscape(
    model,
    data,
    directions: str | Sequence = "top_eigenvector",
    span: float = 1.0,
    steps: int = 21,
    dims: int = 1,
    loss: str | Callable | None = None,
    seed: int | None = None,
    normalize: str | None = "filter",
    *,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LandscapeResult:
    """The mean loss of `model` on `data` along one or two directions in weight space.

    Use it to look at the sharpness the top eigenvalue measures (along the top eigenvector the
    curve's curvature at 0 is that eigenvalue), or at the landscape around a minimum along
    random filter-normalized directions (Li et al. 2018). The model's weights are restored
    bit-identically afterwards, also on error. Draw the result with
    `keras_hessian.plots.plot_landscape`.

    Example:

    ```python
    result = loss_landscape(model, (x_test, y_test), directions="top_eigenvector", span=0.5)
    result.offsets, result.losses, result.eigenvalues
    surface = loss_landscape(model, (x_test, y_test), directions="random", dims=2, seed=0)
    plot_landscape(surface, "surface.png")
    ```

    Args:
        model: a built Keras model (as for `HessianOperator`).
        data: numpy `(x, y)` / `(x, y, sample_weight)` or a batched `tf.data.Dataset`.
        directions: `"top_eigenvector"` (the top `dims` eigenvectors of the Hessian, unit norm,
            by Lanczos), an `EigenResult` of this model (its first `dims` eigenvectors, used as
            they are), `"random"` (Gaussian, normalized by `normalize`), or a list of `dims`
            directions, each a list of arrays shaped like `model.trainable_variables`
            (normalized by `normalize`).
        span: the grid runs from `-span` to `span` along each direction.
        steps: grid points per direction, odd (so the model's own weights are the centre), >= 3.
        dims: 1 (a curve) or 2 (a surface).
        loss: a loss name or callable; `None` uses the model's compiled loss.
        seed: seed of the random directions and of Lanczos' start vector.
        normalize: `"filter"` (Li et al.), `"unit"` (unit norm in parameter space) or None (as
            given) for random and given directions.
        batch_size: batch size for numpy data (as for `HessianOperator`).
        progress: called as `progress(done, total)` after each grid point.

    Returns:
        A `LandscapeResult`.
    """
    dims = check_choice("dims", dims, (1, 2))
    steps = check_int("steps", steps, 3)
    if steps % 2 == 0:
        raise ValueError(f"steps must be odd, so that the grid's centre is the model's own weights. Received steps={steps}.")
    span = check_float("span", span, minimum=0, exclusive_minimum=True)
    seed = check_int("seed", seed, 0, allow_none=True)
    normalize = check_choice("normalize", normalize, NORMALIZATIONS)
    if isinstance(directions, str):
        check_choice("directions", directions, DIRECTION_KINDS)
    operator = HessianOperator(model, data, loss=loss, batch_size=batch_size)
    tf_vars = [tf_variable(v) for v in operator.variables]
    saved = [tf.identity(v.read_value()) for v in tf_vars]  # copies: the weights come back from these
    eigenvalues = None
    named = directions if isinstance(directions, str) else None
    if named == "top_eigenvector":
        kind, applied = "top_eigenvector", None
        eigen = top_eigenvalues(operator, k=dims, seed=seed, tol=_EIGEN_TOL, max_iter=max(100, 4 * dims))
        chosen, eigenvalues = [list(v) for v in eigen.eigenvectors], np.asarray(eigen.eigenvalues)
    elif isinstance(directions, EigenResult):  # eigenvectors already found: no second Lanczos run
        if len(directions.eigenvectors) < dims:
            raise ValueError(
                f"directions: the EigenResult holds {len(directions.eigenvectors)} eigenvector(s), fewer than "
                f"dims={dims}."
            )
        kind, applied = "top_eigenvector", None
        chosen = _given_directions(directions.eigenvectors[:dims], dims, operator.variables)
        eigenvalues = np.asarray(directions.eigenvalues[:dims])
    elif named == "random":
        kind, applied = "random", normalize
        seeds = V.seed_stream(seed)
        chosen = [_normalized(V.gaussian_like(operator.variables, next(seeds)), saved, normalize) for _ in range(dims)]
    else:
        kind, applied = "vectors", normalize
        chosen = [_normalized(d, saved, normalize) for d in _given_directions(directions, dims, operator.variables)]
    centre = steps // 2
    # Symmetric with an exact 0 at the centre (np.linspace's centre can be off by a rounding),
    # so the centre point is the model's own weights, bit for bit.
    offsets = span * (np.arange(steps) - centre) / centre
    grid = [(i,) for i in range(steps)] if dims == 1 else [(i, j) for i in range(steps) for j in range(steps)]
    losses = np.empty((steps,) * dims)
    try:
        for done, index in enumerate(grid, 1):
            for n, (v, w) in enumerate(zip(tf_vars, saved)):
                point = w
                for axis, direction in zip(index, chosen):
                    point = point + tf.cast(offsets[axis], w.dtype) * direction[n]
                v.assign(point)
            losses[index] = operator.mean_loss()
            if progress is not None:
                progress(done, len(grid))
    finally:
        for v, w in zip(tf_vars, saved):
            v.assign(w)
    return LandscapeResult(
        offsets=offsets,
        losses=losses,
        directions=[[np.asarray(t) for t in d] for d in chosen],
        kind=kind,
        normalize=applied,
        eigenvalues=eigenvalues,
    )
