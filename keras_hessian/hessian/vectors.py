"""Parameter vectors as lists of tensors, one per variable: algebra and seeded random draws.

A vector in parameter space is kept in the shape of the model's variables (a list of tensors),
so Hessian-vector products never flatten or copy the model. `flatten`/`unflatten` convert to
one numpy array for host-side solvers (scipy's ARPACK).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

Vector = list  # list[tf.Tensor], one tensor per variable


def dot(a: Sequence[tf.Tensor], b: Sequence[tf.Tensor]) -> tf.Tensor:
    """Inner product of two parameter vectors (a float64 scalar, to keep sums over many
    parameters accurate)."""
    return tf.add_n([tf.reduce_sum(tf.cast(x, tf.float64) * tf.cast(y, tf.float64)) for x, y in zip(a, b)])


def norm(a: Sequence[tf.Tensor]) -> tf.Tensor:
    """Euclidean norm of a parameter vector."""
    return tf.sqrt(dot(a, a))


def scale(a: Sequence[tf.Tensor], factor) -> Vector:
    """`factor * a`."""
    return [x * tf.cast(factor, x.dtype) for x in a]


def axpy(alpha, x: Sequence[tf.Tensor], y: Sequence[tf.Tensor]) -> Vector:
    """`alpha * x + y`."""
    return [tf.cast(alpha, yi.dtype) * xi + yi for xi, yi in zip(x, y)]


def normalize(a: Sequence[tf.Tensor]) -> Vector:
    """`a / ||a||` (a zero vector stays zero)."""
    n = norm(a)
    return scale(a, tf.where(n > 0, 1.0 / n, tf.zeros_like(n)))


def orthogonalize(a: Sequence[tf.Tensor], basis: Sequence[Sequence[tf.Tensor]]) -> Vector:
    """Remove from `a` its components along the (orthonormal) vectors of `basis`.

    Modified Gram-Schmidt: one projection after another, which stays orthogonal in float32
    where the classical variant drifts.
    """
    out = list(a)
    for b in basis:
        out = axpy(-dot(out, b), b, out)
    return out


def _shapes(variables) -> list[tuple[tuple[int, ...], tf.DType]]:
    return [(tuple(v.shape), tf.as_dtype(v.dtype)) for v in variables]


def _variable_seeds(seed: tf.Tensor, count: int) -> tf.Tensor:
    """`count` independent stateless seeds derived from one, shape `(count, 2)`.

    Offsetting the seed per variable (`seed + [0, i]`) would give probe k's variable i + 1 and
    probe k + 1's variable i the same seed, hence the same entries: probes would not be
    independent, which the trace's standard error and the SLQ average assume. `stateless_split`
    derives the seeds through the generator itself (a Philox draw keyed by `seed`).
    """
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=count)


def rademacher_like(variables, seed: tf.Tensor) -> Vector:
    """A vector of independent +1/-1 entries shaped like `variables`.

    `seed` is a shape-(2,) int tensor; the draw is stateless, so it consumes no global RNG
    state (training stays bit-identical with or without the measurement). Distinct seeds give
    independent vectors, and each variable of a vector has its own stream.
    """
    shapes = _shapes(variables)
    seeds = _variable_seeds(seed, len(shapes))
    out = []
    for i, (shape, dtype) in enumerate(shapes):
        bits = tf.random.stateless_uniform(shape, seed=seeds[i], minval=0, maxval=2, dtype=tf.int32)
        out.append(tf.cast(2 * bits - 1, dtype))
    return out


def gaussian_like(variables, seed: tf.Tensor) -> Vector:
    """A vector of independent standard normal entries shaped like `variables` (stateless, as
    `rademacher_like`)."""
    shapes = _shapes(variables)
    seeds = _variable_seeds(seed, len(shapes))
    return [tf.random.stateless_normal(shape, seed=seeds[i], dtype=dtype) for i, (shape, dtype) in enumerate(shapes)]


def seed_stream(seed: int | None):
    """Yield distinct stateless seeds `[seed, k]`, k = 0, 1, ...; a fresh random base if None."""
    base = int(np.random.SeedSequence(seed).generate_state(1)[0] % 2**31)
    k = 0
    while True:
        yield tf.constant([base, k], dtype=tf.int32)
        k += 1


def flatten(a: Sequence[tf.Tensor]) -> np.ndarray:
    """One float64 numpy array holding all entries of a parameter vector."""
    return np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in a])


def unflatten(flat: np.ndarray, variables) -> Vector:
    """Inverse of `flatten`, shaped and typed like `variables`."""
    out, start = [], 0
    for shape, dtype in _shapes(variables):
        size = int(np.prod(shape, dtype=np.int64))
        out.append(tf.constant(np.reshape(flat[start : start + size], shape), dtype=dtype))
        start += size
    return out


def to_flat(a: Sequence[tf.Tensor]) -> tf.Tensor:
    """One 1-D tensor holding all entries of a parameter vector (stays on the device)."""
    return tf.concat([tf.reshape(x, [-1]) for x in a], axis=0)


def from_flat(flat: tf.Tensor, variables) -> Vector:
    """Inverse of `to_flat`, shaped like `variables`."""
    shapes = [shape for shape, _ in _shapes(variables)]
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    return [tf.reshape(part, s) for part, s in zip(tf.split(flat, sizes), shapes)]
