"""Data intake for the operators: numpy arrays or a `tf.data.Dataset` as checked, finite batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tensorflow as tf

# Batch size used to split numpy data when the caller gives none. The result does not depend
# on it (batches are combined by size); it only bounds the memory of one product.
DEFAULT_NUMPY_BATCH_SIZE = 1024


@dataclass
class Batches:
    """What the operator keeps of its data.

    Attributes:
        dataset: the batched dataset (read again for each product when `batches` is None).
        batches: `(x, y, sample_weight)` triples in memory, or None to stream `dataset`.
        first: the first batch (for tracing and the checks of the loss).
        num_examples: examples in the whole data.
        has_weights: whether the batches carry sample weights.
    """

    dataset: tf.data.Dataset
    batches: list | None
    first: tuple
    num_examples: int
    has_weights: bool

    def __iter__(self):
        if self.batches is not None:
            yield from self.batches
            return
        for element in self.dataset:
            yield split_element(element)


def _lists_to_tuples(value):
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    return value


def _as_tensor_tree(value):
    return tf.nest.map_structure(lambda a: tf.convert_to_tensor(a), value)


def first_dim(tree) -> int:
    """The batch size of a (nested) batch."""
    return int(tf.nest.flatten(tree)[0].shape[0])


def _check_finite(tree, what: str) -> None:
    for t in tf.nest.flatten(tree):
        if t.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(t))):
            raise ValueError(f"data: {what} contains NaN or inf values.")


def split_element(element) -> tuple[Any, Any, Any]:
    """`(x, y, sample_weight or None)` of one dataset element, or a clear error."""
    if not isinstance(element, (tuple, list)) or len(element) not in (2, 3):
        raise ValueError(
            "data must yield (x, y) or (x, y, sample_weight); labels are needed for the loss. "
            f"Received elements of type {type(element).__name__}"
            + (f" with {len(element)} parts." if isinstance(element, (tuple, list)) else ".")
        )
    x, y = element[0], element[1]
    weights = element[2] if len(element) == 3 else None
    if y is None:
        raise ValueError("data must hold labels: received y=None.")
    return x, y, weights


def _check_batched(model, dataset: tf.data.Dataset) -> None:
    inputs = getattr(model, "inputs", None)
    try:
        x_spec = split_element(dataset.element_spec)[0]
    except ValueError:
        return  # reported with a clearer message when the data is read
    if not inputs or len(tf.nest.flatten(x_spec)) != len(inputs):
        return
    for spec, tensor in zip(tf.nest.flatten(x_spec), inputs):
        if spec.shape.rank is not None and spec.shape.rank == len(tensor.shape) - 1:
            raise ValueError(
                "data looks unbatched (its x has the rank of ONE example of the model's input): "
                "batch the dataset (dataset.batch(n)) or pass batch_size= to HessianOperator."
            )


def _as_dataset(model, data, batch_size: int | None) -> tf.data.Dataset:
    if isinstance(data, tf.data.Dataset):
        if data.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise ValueError(
                "data is an infinite dataset (e.g. after .repeat()): the Hessian is of the mean "
                "loss over all of it. Pass a finite dataset, e.g. data.take(n)."
            )
        if batch_size is not None:
            return data.batch(batch_size)
        _check_batched(model, data)
        return data
    if isinstance(data, (tuple, list)):
        x, y, weights = split_element(tuple(data))
        # Lists of arrays are several inputs / outputs (as in model.fit), not one stacked array.
        x, y = _as_tensor_tree(_lists_to_tuples(x)), _as_tensor_tree(_lists_to_tuples(y))
        n = first_dim(x)
        if n == 0:
            raise ValueError("data is empty: x has 0 examples.")
        if first_dim(y) != n:
            raise ValueError(f"data: y has {first_dim(y)} examples but x has {n}.")
        parts = (x, y) if weights is None else (x, y, _as_tensor_tree(weights))
        return tf.data.Dataset.from_tensor_slices(parts).batch(batch_size or min(n, DEFAULT_NUMPY_BATCH_SIZE))
    raise TypeError(
        "data must be a tuple (x, y) / (x, y, sample_weight) of arrays or a tf.data.Dataset. "
        f"Received {type(data).__name__}."
    )


def prepare_data(model, data, batch_size: int | None, cache: bool) -> Batches:
    """Read `data` once: check every batch (labels present, finite values), count the examples.

    numpy data is in memory already, so it is always kept; `cache=False` only streams datasets
    (the first batch is kept for tracing and the checks).
    """
    dataset = _as_dataset(model, data, batch_size)
    keep_all = cache or not isinstance(data, tf.data.Dataset)
    batches, total, has_weights = [], 0, None
    for element in dataset:
        x, y, w = split_element(element)
        if has_weights is None:
            has_weights = w is not None
        _check_finite(x, "x")
        _check_finite(y, "y")
        if w is not None:
            _check_finite(w, "sample_weight")
        total += first_dim(x)
        if keep_all or not batches:
            batches.append((x, y, w))
    if total == 0:
        raise ValueError("data is empty: it yielded no examples.")
    return Batches(dataset, batches if keep_all else None, batches[0], total, bool(has_weights))


def check_label_shape(y, y_pred) -> None:
    """Refuse labels that would broadcast silently against single-output predictions."""
    if len(tf.nest.flatten(y)) != 1 or len(tf.nest.flatten(y_pred)) != 1:
        return  # several outputs: the compiled loss checks its own structure
    y_shape = tf.nest.flatten(y)[0].shape.as_list()
    p_shape = tf.nest.flatten(y_pred)[0].shape.as_list()
    fits = (
        y_shape == p_shape
        or (len(y_shape) == len(p_shape) and y_shape[:-1] == p_shape[:-1] and y_shape[-1] == 1)
        or (len(y_shape) == len(p_shape) - 1 and y_shape == p_shape[:-1])
    )
    if not fits:
        raise ValueError(
            f"data: labels of shape {y_shape} do not fit predictions of shape {p_shape}; expected "
            f"{p_shape} (one-hot / regression targets) or {p_shape[:-1]} (class indices)."
        )
