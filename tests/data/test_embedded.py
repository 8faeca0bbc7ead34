"""The embedded datasets: real data, the documented shapes and ranges."""

import numpy as np
import pytest

from keras_hessian.data import load_dataset, load_digits, load_mnist1d


def test_digits():
    (x, y), (x_test, _) = load_digits()
    assert x.shape[1:] == (8, 8, 1) and len(x) + len(x_test) == 1797
    assert 0.0 <= x.min() and x.max() <= 1.0 and set(np.unique(y)) == set(range(10))
    (flat, _), _ = load_digits(image=False)
    np.testing.assert_array_equal(flat.reshape(-1, 8, 8, 1), x)


def test_mnist1d():
    (x, y), (x_test, _) = load_mnist1d(num_samples=500)
    assert x.shape == (400, 40, 1) and x_test.shape == (100, 40, 1)
    assert set(np.unique(y)) == set(range(10))
    (again, _), _ = load_mnist1d(num_samples=500)
    np.testing.assert_array_equal(again, x)


def test_bad_names_and_sizes():
    with pytest.raises(ValueError, match="name must be one of"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.5)
    with pytest.raises(ValueError, match="num_samples"):
        load_mnist1d(num_samples=3)
