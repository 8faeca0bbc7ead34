"""Replica reduction under `tf.distribute`: one batch split across the replicas, the parts summed.

Each replica weights its share of the batch by its own size over the whole data, so the
all-reduced sum is the same mean over the data as on one device.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf


def unscale_for_replicas(loss: tf.Tensor) -> tf.Tensor:
    """Undo Keras' division of a loss by the replica count inside a replica context.

    Keras 3 `Loss` objects and `compute_loss` divide by `num_replicas_in_sync` so that summed
    replica gradients give the mean; the operator weights each replica's mean by its share of
    the examples itself, so it needs the plain mean (same rule as Keras'
    `unscale_loss_for_distribution`).
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss * tf.cast(replicas, loss.dtype) if replicas > 1 else loss


def distributed_mean(strategy: tf.distribute.Strategy, fn: Callable, packed: list, total: int, *args):
    """`fn` on each replica's slice of the batch `packed`, weighted by slice size / `total`, summed."""
    size = int(tf.nest.flatten(packed[0])[0].shape[0])
    bounds = np.linspace(0, size, strategy.num_replicas_in_sync + 1).astype(int)

    def local_part(context):
        i = context.replica_id_in_sync_group
        return tf.nest.map_structure(lambda t: t[bounds[i] : bounds[i + 1]], packed)

    local = strategy.experimental_distribute_values_from_function(local_part)

    def replica_step(part, *replica_args):
        weight = tf.cast(tf.shape(tf.nest.flatten(part[0])[0])[0], tf.float32) / float(total)
        return tf.nest.map_structure(lambda t: t * tf.cast(weight, t.dtype), fn(part, *replica_args))

    per_replica = strategy.run(replica_step, args=(local, *args))
    return tf.nest.map_structure(lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None), per_replica)
