"""adaptive_dataset: batch size read from the control variable at each epoch start."""

from __future__ import annotations

import numpy as np
import pytest

from keras_hessian.data import adaptive_dataset, batch_size_control


def _epoch(dataset):
    return [tuple(np.asarray(t) for t in batch) for batch in dataset]


def test_each_epoch_is_a_permutation_and_orders_differ():
    x = np.arange(50, dtype="float32").reshape(50, 1)
    y = np.arange(50)
    dataset = adaptive_dataset(x, y, batch_size=8, seed=3)
    first, second = _epoch(dataset), _epoch(dataset)
    for batches in (first, second):
        assert [len(b[0]) for b in batches] == [8] * 6 + [2]
        xs = np.concatenate([b[0][:, 0] for b in batches])
        ys = np.concatenate([b[1] for b in batches])
        np.testing.assert_array_equal(np.sort(xs), np.arange(50))
        np.testing.assert_array_equal(xs, ys)  # pairs stay together
    order1 = np.concatenate([b[1] for b in first])
    order2 = np.concatenate([b[1] for b in second])
    assert not np.array_equal(order1, order2)


def test_batch_size_follows_the_control_when_an_epoch_starts():
    x = np.zeros((40, 3), "float32")
    y = np.zeros(40, "int32")
    control = batch_size_control()
    owner = object()
    dataset = adaptive_dataset(x, y, batch_size=4, shuffle=False)
    assert [len(b[0]) for b in _epoch(dataset)] == [4] * 10
    try:
        control.take(owner, 16, 16, 64)
        assert [len(b[0]) for b in _epoch(dataset)] == [16, 16, 8]
        control.batch_size.assign(32)
        assert [len(b[0]) for b in _epoch(dataset)] == [32, 8]
    finally:
        control.release(owner)
    assert [len(b[0]) for b in _epoch(dataset)] == [4] * 10


def test_sample_weight_and_drop_remainder():
    x = np.arange(10, dtype="float32")[:, None]
    y = np.arange(10)
    w = np.arange(10, dtype="float32") / 10
    batches = _epoch(adaptive_dataset(x, y, w, batch_size=4, drop_remainder=True))
    assert [len(b[0]) for b in batches] == [4, 4]
    for bx, by, bw in batches:
        np.testing.assert_allclose(bw, bx[:, 0] / 10)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"y": None}, ValueError, "y=None"),
        ({"y": np.zeros(3)}, ValueError, "same number of examples"),
        ({"y": np.zeros(5), "batch_size": 0}, ValueError, "batch_size=0"),
        ({"y": np.zeros(5), "seed": 1.5}, TypeError, "seed=1.5"),
    ],
)
def test_bad_input_is_named(kwargs, error, words):
    with pytest.raises(error, match=words):
        adaptive_dataset(np.zeros((5, 2), "float32"), **kwargs)
