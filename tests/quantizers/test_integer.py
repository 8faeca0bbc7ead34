"""Integer quantizer: the grid, the half-step bound, the straight-through gradient, serialization."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.quantizers import Integer, get, quantize_integer


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_grid_and_half_step_bound_per_channel(bits):
    w = np.random.default_rng(bits).normal(size=(3, 3, 5, 7)).astype(np.float32)
    w[..., 2] = 0.0  # a zero channel stays exactly zero
    q = quantize_integer(w, bits).numpy().astype(np.float64)
    levels = 2 ** (bits - 1) - 1
    for c in range(w.shape[-1]):
        channel, quantized = w[..., c].astype(np.float64), q[..., c]
        largest = np.abs(channel).max()
        if largest == 0:
            assert not quantized.any()
            continue
        step = largest / levels
        integers = quantized / step
        np.testing.assert_allclose(integers, np.round(integers), atol=1e-4)  # on the grid
        assert np.abs(integers).max() <= levels + 1e-4  # within -q..q
        assert np.abs(channel - quantized).max() <= step / 2 * (1 + 1e-5)  # half a step at most
        assert np.abs(quantized).max() == pytest.approx(largest, rel=1e-6)  # the maximum is kept


def test_straight_through_gradient_is_the_identity():
    w = tf.constant(np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32))
    upstream = tf.constant(np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(w)
        y = tf.reduce_sum(quantize_integer(w, 4) * upstream)
    np.testing.assert_array_equal(tape.gradient(y, w), upstream)


def test_serialization_and_bad_bits():
    quantizer = Integer(4)
    assert quantizer.precision == 4 and get(keras.saving.serialize_keras_object(quantizer)) == quantizer
    assert get("integer") == Integer(8)
    with pytest.raises(ValueError, match="bits must be an integer >= 2 and <= 8"):
        Integer(9)
    with pytest.raises(TypeError, match="bits"):
        quantize_integer([1.0], bits=4.0)
