"""Calibration data for the `"int8"` / `"int16x8"` modes, as the TFLite converter wants it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = ["representative_dataset"]


def _input_shape(model: keras.Model) -> tuple:
    count = len(model.inputs) if hasattr(model, "inputs") and model.inputs else 1
    if count != 1:
        raise ValueError(
            f"to_tflite calibrates single-input models only. Received a model with {count} "
            "inputs; pass representative_data as a TFLite-style callable instead."
        )
    return tuple(model.input_shape)


def representative_dataset(data: Any, model: keras.Model) -> Callable[[], Iterable[list]]:
    """`data` (array, `(x, y)`, dataset or callable) as a callable yielding `[batch of 1]` lists."""
    if callable(data) and not isinstance(data, (np.ndarray, tf.Tensor, tf.data.Dataset)):
        return data
    expected = _input_shape(model)
    if isinstance(data, tf.data.Dataset):

        def from_dataset():
            for element in data:
                x = element[0] if isinstance(element, (tuple, list)) else element
                x = np.asarray(x, dtype=np.float32)
                batch = x if x.ndim == len(expected) else x[None]
                for i in range(len(batch)):
                    yield [batch[i : i + 1]]

        return from_dataset
    if isinstance(data, (tuple, list)) and len(data) == 2:
        data = data[0]
    x = np.asarray(data, dtype=np.float32)
    if x.ndim != len(expected) or len(x) == 0 or any(
        want is not None and want != got for want, got in zip(expected[1:], x.shape[1:])
    ):
        raise ValueError(
            f"representative_data must be a non-empty batch of model inputs of shape {expected}. "
            f"Received shape {x.shape}."
        )

    def from_array():
        for i in range(len(x)):
            yield [x[i : i + 1]]

    return from_array
