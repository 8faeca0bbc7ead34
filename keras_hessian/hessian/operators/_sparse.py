"""Gradients that arrive as `tf.IndexedSlices` (an `Embedding`'s, or any `tf.gather`'s) inside the products.

The first-order gradient of a gathered weight is sparse: only the rows the batch looked up. The
second-order products take it as a target (`outer.gradient(grads, ..., output_gradients=v)`,
`g . v`), which `tf.GradientTape` refuses for `IndexedSlices`. Two ways out, the same product:

- keep it sparse: `g . v = sum(g.values * gather(v, g.indices))`, so the backward pass runs
  from `g.values` with `gather(v, g.indices)` as its output gradient (rows never looked up
  cost nothing);
- convert it to a dense tensor of the weight's shape first (`tf.convert_to_tensor`).

`SPARSE` picks the first; `benchmarks/real_models.py` measures both on the token models. Measured
there (batch 32, 2 shared cores): the same time and allocator peak within noise (dense / sparse 0.89x
to 1.03x, peaks within 1 MB), also on a 30,522-token vocabulary, because the product that leaves
is dense either way. The sparse route is kept as the default: it never forms the dense first-order
gradient, which grows with the vocabulary. What leaves a compiled function is always dense: the
estimators add and scale parameter vectors.
"""

from __future__ import annotations

import tensorflow as tf

# benchmarks/real_models.py ("indexed_slices") times both routes; a switch for that measurement.
SPARSE = True


def dense(t):
    """`t` as a dense tensor (an `IndexedSlices` scattered into its dense shape)."""
    return tf.convert_to_tensor(t) if isinstance(t, tf.IndexedSlices) else t


def pullback_targets(grads: list, vector: list) -> tuple[list, list]:
    """`(targets, output_gradients)` whose backward pass is the gradient of `grads . vector`."""
    targets, cotangents = [], []
    for g, v in zip(grads, vector):
        if isinstance(g, tf.IndexedSlices):
            if SPARSE:
                targets.append(g.values)
                cotangents.append(tf.gather(tf.cast(v, g.values.dtype), g.indices))
                continue
            g = dense(g)
        targets.append(g)
        cotangents.append(tf.cast(v, g.dtype))
    return targets, cotangents


def dot(grads: list, vector: list) -> tf.Tensor:
    """`sum_i <grads_i, vector_i>`, reading only the looked-up rows of a sparse gradient."""
    return tf.add_n([tf.reduce_sum(t * c) for t, c in zip(*pullback_targets(grads, vector))])
