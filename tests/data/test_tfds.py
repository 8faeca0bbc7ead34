"""The TFDS loader, run against TFDS' own mock data (no network): tfds.testing.mock_data."""

from __future__ import annotations

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from keras_hessian.data import load_dataset, load_tfds


@pytest.fixture
def mock_mnist():
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


def _raw(split: str):
    """The mocked split as TFDS itself gives it (uint8 images, int64 labels)."""
    examples = list(tfds.as_numpy(tfds.load("mnist", split=split, as_supervised=True)))
    return np.stack([e[0] for e in examples]), np.array([e[1] for e in examples])


def test_arrays_are_the_tfds_examples_scaled_to_unit_range(mock_mnist, tmp_path):
    (x, y), (x_test, y_test) = load_tfds("mnist", data_dir=str(tmp_path))
    raw_x, raw_y = _raw("train")
    assert x.shape == (12, 28, 28, 1) and x.dtype == np.float32
    assert y.dtype == np.int32
    np.testing.assert_array_equal(x * 255.0, raw_x.astype("float32"))
    np.testing.assert_array_equal(y, raw_y)
    assert x.min() >= 0.0 and x.max() <= 1.0
    raw_test_x, _ = _raw("test")
    np.testing.assert_array_equal(x_test * 255.0, raw_test_x.astype("float32"))
    assert len(y_test) == 12


def test_max_examples_and_the_tfds_prefix_of_load_dataset(mock_mnist, tmp_path):
    (x, y), (x_test, y_test) = load_dataset("tfds:mnist", max_examples=5, data_dir=str(tmp_path))
    assert x.shape == (5, 28, 28, 1) and y.shape == (5,)
    assert x_test.shape == (5, 28, 28, 1) and y_test.shape == (5,)
    np.testing.assert_array_equal(x * 255.0, _raw("train")[0][:5].astype("float32"))


def test_cli_data_spec_reaches_tfds(mock_mnist):
    from keras_hessian.cli._common import load_data as _load_data

    x, y = _load_data("tfds:mnist", "test")
    assert x.shape == (12, 28, 28, 1) and y.shape == (12,)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"name": "no_such_dataset_xyz"}, ValueError, "name='no_such_dataset_xyz' is not in the TFDS catalog"),
        ({"name": "celeb_a"}, ValueError, "no supervised"),
        ({"name": ""}, ValueError, "name must be"),
        ({"name": "mnist", "max_examples": 0}, ValueError, "max_examples=0"),
        ({"name": "mnist", "splits": ("train",)}, ValueError, "splits must be"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, words):
    with pytest.raises(error, match=words):
        load_tfds(**kwargs)


def test_not_prepared_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_tfds("mnist", data_dir=str(tmp_path), download=False)
