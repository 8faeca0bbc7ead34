"""Quantizer math against brute force, closed forms and the paper formulas."""

import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_hessian.layers import quantizers as q

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
finite = st.floats(-8.0, 8.0, allow_nan=False, width=32)


# --------------------------------------------------------------------------- references


def brute_force_ternary_error(w: np.ndarray) -> float:
    """min over every threshold (|w| > T, T in {0} U {|w_i|}) and the optimal alpha."""
    w = np.asarray(w, dtype=np.float64).ravel()
    best = float(np.sum(w**2))  # alpha = 0
    for threshold in np.concatenate([[0.0], np.abs(w)]):
        kept = np.abs(w) > threshold
        if not kept.any():
            continue
        for alpha in [np.abs(w[kept]).mean()]:
            error = float(np.sum((w - alpha * np.sign(w) * kept) ** 2))
            best = min(best, error)
    return best


def blocks_of(matrix: np.ndarray, block_size: int):
    """The blocks of the block-wise quantizers: per output channel (rows after transposing the
    reduction axes), consecutive runs of `block_size` elements."""
    rows = matrix.reshape(-1, matrix.shape[-1]).T.astype(np.float64)
    for row in rows:
        for start in range(0, len(row), block_size):
            yield row[start : start + block_size]


# --------------------------------------------------------------------------- ternarize


@SETTINGS
@given(hnp.arrays(np.float32, st.integers(1, 12), elements=finite))
def test_exact_ternary_matches_brute_force_and_beats_twn(w):
    exact = q.ternarize(w, "exact").numpy().astype(np.float64)
    twn = q.ternarize(w, "twn").numpy().astype(np.float64)
    error_exact = float(np.sum((w - exact) ** 2))
    error_twn = float(np.sum((w - twn) ** 2))
    truth = brute_force_ternary_error(w)
    scale = max(float(np.sum(w.astype(np.float64) ** 2)), 1e-30)
    assert abs(error_exact - truth) <= 1e-5 * scale
    assert error_exact <= error_twn + 1e-5 * scale
    # Forward values are alpha * {-1, 0, +1} with one alpha.
    assert len({round(abs(v), 6) for v in exact if v != 0}) <= 1


def test_ternary_fit_threshold_and_twn_rule():
    w = np.array([0.1, -1.0, 0.9, 0.2], np.float32)
    alpha, threshold = q.ternary_fit(w)
    assert float(alpha) == pytest.approx(0.95)
    assert 0.2 <= float(threshold) < 0.9
    alpha, threshold = q.ternary_fit(w, "twn")
    assert float(threshold) == pytest.approx(0.7 * np.abs(w).mean())
    assert float(alpha) == pytest.approx(0.95)


@SETTINGS
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 9), st.integers(1, 3)), elements=finite),
    st.integers(1, 5),
    st.integers(0, 2),
)
def test_ternary_residual_matches_blockwise_brute_force(w, block_size, residuals):
    """Each term is an optimal ternary fit (brute force over all thresholds) of what the earlier
    terms left, block by block. Checked by error, not by value: ties between thresholds (e.g.
    a block [1, 2, 2, 2]) have several optimal terms."""
    approx, parts = q.ternary_residual(w, block_size=block_size, residuals=residuals)
    assert len(parts) == residuals + 1
    scale = max(float(np.sum(w.astype(np.float64) ** 2)), 1e-12)
    remainder = w.astype(np.float64)
    for part in parts:
        part = part.numpy().astype(np.float64)
        for left, term in zip(blocks_of(remainder, block_size), blocks_of(part, block_size)):
            assert len({round(abs(v), 5) for v in term if v != 0}) <= 1  # alpha * {-1, 0, +1}
            error = float(np.sum((left - term) ** 2))
            assert abs(error - brute_force_ternary_error(left)) <= 1e-5 * scale
        remainder = remainder - part
    np.testing.assert_allclose(sum(p.numpy() for p in parts), approx.numpy(), atol=1e-6 * np.sqrt(scale))


@SETTINGS
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 4)), elements=finite),
    st.integers(1, 16),
    st.sampled_from(["exact", "twn"]),
)
def test_ternary_residual_error_never_increases_with_r(w, block_size, method):
    errors = []
    for residuals in range(5):
        approx, _ = q.ternary_residual(w, block_size, residuals, method)
        errors.append(float(np.sum((w.astype(np.float64) - approx.numpy()) ** 2)))
    scale = float(np.sum(w.astype(np.float64) ** 2)) + 1e-30
    for before, after in itertools.pairwise(errors):
        assert after <= before + 1e-6 * scale


@SETTINGS
@given(st.data(), st.integers(1, 4), st.integers(1, 16))
def test_ternary_residual_reaches_zero_on_few_magnitudes(data, levels, block_size):
    # Each element's magnitude is one of `levels` powers of two 2^-6 apart (or zero). Each
    # block's top level is then its exact optimum (the next level is too small to be worth
    # joining when the ratio is below 1 / (N + 2)), so the residuals peel one level per term
    # and r = levels - 1 reconstructs exactly (powers of two: no rounding).
    shape = (data.draw(st.integers(1, 20)), data.draw(st.integers(1, 3)))
    level = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(-1, levels - 1)))
    sign = data.draw(hnp.arrays(np.float32, shape, elements=st.sampled_from([-1.0, 1.0])))
    w = np.where(level >= 0, sign * np.exp2(-6.0 * level), 0.0).astype(np.float32)
    approx, _ = q.ternary_residual(w, block_size, levels - 1)
    np.testing.assert_array_equal(approx.numpy(), w)
    if levels == 1:
        np.testing.assert_array_equal(q.ternary_residual(w, block_size, 0)[0].numpy(), w)


def test_active_residuals_equals_fewer_terms():
    w = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    for active in range(4):
        partial, _ = q.ternary_residual(w, 8, 3, active_residuals=tf.constant(active))
        direct, _ = q.ternary_residual(w, 8, active)
        np.testing.assert_array_equal(partial.numpy(), direct.numpy())


# --------------------------------------------------------------------------- DFP-16


def dfp_exponent_formula(x: np.ndarray, precision: int) -> int:
    """E_s = E(max|f|) - (P - 2), E from numpy's frexp (independent of the bit trick)."""
    _, exponent = np.frexp(np.abs(x).max())
    return int(exponent - 1 - (precision - 2))


wide = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False, width=32)


@SETTINGS
@given(hnp.arrays(np.float32, st.integers(1, 50), elements=wide), st.integers(2, 16))
def test_dfp_round_trip_error_bound_and_exponent(x, precision):
    if not np.abs(x).max() > 1e-30:
        x = x + np.float32(1.0)
    mantissa, exponent = q.dfp16_quantize(x, precision)
    mantissa, exponent = mantissa.numpy(), int(exponent)
    formula = dfp_exponent_formula(x, precision)
    limit = 2 ** (precision - 1) - 1
    # The paper's exponent, raised by one only where the max would round past the range.
    assert exponent in (formula, formula + 1)
    assert (exponent == formula + 1) == bool(np.abs(x).max() > limit * 2.0**formula)
    assert np.abs(mantissa).max() <= limit
    value = q.dfp16(x, precision).numpy().astype(np.float64)
    np.testing.assert_array_equal(value, mantissa * 2.0**exponent)
    assert np.all(np.abs(value - x) <= 2.0 ** (exponent - 1))


@SETTINGS
@given(
    hnp.arrays(np.int64, st.integers(1, 30), elements=st.integers(-(2**15 - 1), 2**15 - 1)),
    st.integers(-30, 10),
)
def test_dfp_representable_values_round_trip_exactly(integers, exponent):
    integers[0] = 2**14 + abs(int(integers[0])) % 2**14  # max |i| in [2^14, 2^15): E_s = exponent
    x = (integers * 2.0**exponent).astype(np.float32)
    mantissa, shared = q.dfp16_quantize(x)
    assert int(shared) == exponent
    np.testing.assert_array_equal(mantissa.numpy(), integers)
    np.testing.assert_array_equal(q.dfp16(x).numpy(), x)
    np.testing.assert_array_equal(q.dfp16(q.dfp16(x)).numpy(), q.dfp16(x).numpy())


def test_dfp_stochastic_rounding_is_unbiased():
    tf.random.set_seed(1)
    x = np.array([1.0, 0.30001, -0.7071, 1e-4, -0.123456], np.float32)
    draws = 20000
    tiled = np.tile(x, (draws, 1))  # same maximum, hence the same shared exponent
    mantissa, exponent = q.dfp16_quantize(tiled, rounding="stochastic")
    mantissa, exponent = mantissa.numpy().astype(np.float64), int(exponent)
    scaled = x.astype(np.float64) / 2.0**exponent
    assert np.all((mantissa == np.floor(scaled)) | (mantissa == np.ceil(scaled)))
    mean = mantissa.mean(axis=0)
    fraction = scaled - np.floor(scaled)
    sigma = np.sqrt(fraction * (1 - fraction) / draws) + 1e-12
    assert np.all(np.abs(mean - scaled) <= 5 * sigma + 1e-9)


def test_dfp_zero_tensor_and_bad_arguments():
    np.testing.assert_array_equal(q.dfp16(np.zeros(4, np.float32)).numpy(), np.zeros(4))
    for bad in (1, 17, 32):
        with pytest.raises(ValueError, match="precision"):
            q.dfp16_quantize([1.0], precision=bad)
    with pytest.raises(TypeError, match="precision"):
        q.DFP16(precision="16")
    with pytest.raises(ValueError, match="rounding"):
        q.dfp16([1.0], rounding="up")
    with pytest.raises(TypeError, match="float"):
        q.dfp16(tf.constant([1, 2], tf.int32))


def test_ternary_bad_arguments():
    with pytest.raises(ValueError, match="residuals"):
        q.ternary_residual(np.ones((4, 2), np.float32), 2, -1)
    with pytest.raises(ValueError, match="block_size"):
        q.TernaryResidual(block_size=0)
    with pytest.raises(ValueError, match="method"):
        q.ternarize([1.0], "median")
    with pytest.raises(TypeError, match="float"):
        q.ternarize(tf.constant([1, 2]))


# --------------------------------------------------------------------------- gradients


def gradient(fn, x, upstream=None):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        loss = tf.reduce_sum(y * (upstream if upstream is not None else tf.ones_like(y)))
    return tape.gradient(loss, x).numpy()


def test_binarize_forward_and_cancelled_straight_through_gradient():
    x = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], np.float32)
    upstream = np.arange(1, 8, dtype=np.float32)
    np.testing.assert_array_equal(q.binarize(x).numpy(), [-1, -1, -1, 1, 1, 1, 1])
    expected = upstream * (np.abs(x) <= 1.0)
    np.testing.assert_array_equal(gradient(q.binarize, x, upstream), expected)
    np.testing.assert_array_equal(
        gradient(lambda v: q.binarize(v, clip_value=None), x, upstream), upstream
    )
    np.testing.assert_array_equal(
        gradient(lambda v: q.binarize(v, stochastic=True), x, upstream), expected
    )


def test_stochastic_binarization_follows_hard_sigmoid():
    tf.random.set_seed(3)
    x = np.array([-2.0, -0.5, 0.0, 0.6, 2.0], np.float32)
    draws = q.binarize(np.tile(x, (20000, 1)), stochastic=True).numpy()
    probability_plus = (draws == 1).mean(axis=0)
    expected = np.clip((x + 1) / 2, 0, 1)
    np.testing.assert_allclose(probability_plus, expected, atol=0.015)


def test_scaled_binarize_gradient_closed_form():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.5, 1.5, size=(5, 3)).astype(np.float32)
    upstream = rng.normal(size=(5, 3)).astype(np.float32)
    quantizer = q.Binarize(per_channel_scale=True)
    signs = np.where(x >= 0, 1.0, -1.0)
    alpha = np.abs(x).mean(axis=0)
    # d/dx_ic of alpha_c * s_ic: STE on s plus the XNOR-Net scale term sign(x_ic) / n.
    expected = alpha * upstream * (np.abs(x) <= 1) + np.sign(x) / 5 * (upstream * signs).sum(0)
    np.testing.assert_allclose(gradient(quantizer, x, upstream), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "fn",
    [
        q.ternarize,
        lambda v: q.ternarize(v, "twn"),
        lambda v: q.ternary_residual(v, 3, 2, active_residuals=1)[0],
        q.dfp16,
        lambda v: q.dfp16(v, 8, "stochastic"),
    ],
)
def test_identity_straight_through_gradients(fn):
    x = np.random.default_rng(1).normal(size=(7, 2)).astype(np.float32)
    upstream = np.random.default_rng(2).normal(size=(7, 2)).astype(np.float32)
    np.testing.assert_array_equal(gradient(fn, x, upstream), upstream)


def test_quantize_gradient_applies_dfp_to_upstream_only():
    x = tf.constant([0.1, 0.2])
    upstream = np.array([0.30001, -1.0], np.float32)
    grad = gradient(lambda v: q.quantize_gradient(v, q.DFP16(precision=4)), x, upstream)
    np.testing.assert_array_equal(grad, q.dfp16(upstream, 4).numpy())
    np.testing.assert_array_equal(q.quantize_gradient(x, q.DFP16()).numpy(), x.numpy())


# --------------------------------------------------------------------------- objects


@pytest.mark.parametrize(
    "quantizer, bits",
    [
        (q.Binarize(stochastic=True, clip_value=2.0, per_channel_scale=True), 1),
        (q.Ternarize("twn"), 2),
        (q.TernaryResidual(block_size=8, residuals=2), 6),
        (q.DFP16(precision=12, rounding="stochastic"), 12),
    ],
)
def test_quantizer_objects_serialize_by_name(quantizer, bits):
    assert quantizer.precision == bits
    serialized = keras.saving.serialize_keras_object(quantizer)
    assert serialized["registered_name"].startswith("keras_hessian>")
    restored = keras.saving.deserialize_keras_object(serialized)
    assert restored == quantizer and restored.get_config() == quantizer.get_config()
    assert q.get(serialized) == quantizer
    x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(8, 3)
    np.testing.assert_array_equal(restored(x).numpy(), quantizer(x).numpy())


def test_get_rejects_unknown_names():
    assert q.get(None) is None and isinstance(q.get("dfp16"), q.DFP16)
    with pytest.raises(ValueError, match="quantizer"):
        q.get("int3")
    with pytest.raises(TypeError, match="quantizer"):
        q.get(3.5)


def test_ternary_residual_block_layout_follows_reduction_axis():
    # A Dense kernel (in=6, out=2): blocks of 3 along the input axis of each output.
    w = np.array([[1, 10], [1, 10], [1, 10], [2, 20], [2, 20], [2, 20]], np.float32)
    approx, _ = q.ternary_residual(w, block_size=3, residuals=0)
    np.testing.assert_array_equal(approx.numpy(), w)  # one magnitude per block: exact
    assert math.isclose(float(q.ternary_residual(w, 6, 0)[0].numpy()[0, 0]), 1.5)
