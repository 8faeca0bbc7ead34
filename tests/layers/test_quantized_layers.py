"""Quantized layers: export identity, exact integer emulation, saving, bfloat16, training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.layers import (
    QUANTIZED_LAYERS,
    BinaryConv1D,
    BinaryConv2D,
    BinaryDense,
    DFP16Conv1D,
    DFP16Conv2D,
    DFP16Dense,
    Float16Conv1D,
    Float16Conv2D,
    Float16Dense,
    IntegerConv1D,
    IntegerConv2D,
    IntegerDense,
    TernaryResidualConv1D,
    TernaryResidualConv2D,
    TernaryResidualDense,
)
from keras_hessian.layers import quantizers as q

# (class, constructor arguments, input shape without batch)
CASES = [
    (BinaryDense, {"units": 6, "binary_activations": True, "per_channel_scale": True}, (12,)),
    (BinaryConv2D, {"filters": 4, "kernel_size": 3, "per_channel_scale": True, "padding": "same"}, (6, 6, 3)),
    (BinaryConv1D, {"filters": 4, "kernel_size": 3, "strides": 2}, (10, 2)),
    (TernaryResidualDense, {"units": 6, "block_size": 5, "residuals": 2, "active_residuals": 1}, (12,)),
    (TernaryResidualConv2D, {"filters": 4, "kernel_size": (3, 2), "block_size": 8, "residuals": 1}, (6, 6, 3)),
    (TernaryResidualConv1D, {"filters": 4, "kernel_size": 3, "block_size": 4, "dilation_rate": 2}, (10, 2)),
    (DFP16Dense, {"units": 6}, (12,)),
    (DFP16Conv2D, {"filters": 4, "kernel_size": 3, "strides": (2, 1)}, (6, 6, 3)),
    (DFP16Conv1D, {"filters": 4, "kernel_size": 3, "padding": "same"}, (10, 2)),
    (IntegerDense, {"units": 6, "bits": 4}, (12,)),
    (IntegerConv2D, {"filters": 4, "kernel_size": 3, "bits": 8, "padding": "same"}, (6, 6, 3)),
    (IntegerConv1D, {"filters": 4, "kernel_size": 3, "bits": 2, "strides": 2}, (10, 2)),
    (Float16Dense, {"units": 6}, (12,)),
    (Float16Conv2D, {"filters": 4, "kernel_size": 3, "padding": "same"}, (6, 6, 3)),
    (Float16Conv1D, {"filters": 4, "kernel_size": 3}, (10, 2)),
]
IDS = [case[0].__name__ for case in CASES]


def make_layer(cls, arguments, shape, seed=0, **extra):
    keras.utils.set_random_seed(seed)
    layer = cls(**arguments, activation="tanh", bias_initializer="random_normal", **extra)
    layer.build((None, *shape))
    return layer


def sample(shape, batch=5, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype(np.float32)


def reference_linear(layer, x, kernel):
    """dense_or_conv written with tf.nn ops, independent of the layer's own `_linear`."""
    if isinstance(layer, (BinaryDense, TernaryResidualDense, DFP16Dense, IntegerDense, Float16Dense)):
        return tf.matmul(x, kernel)
    return tf.nn.convolution(
        x,
        kernel,
        strides=layer.strides,
        padding=layer.padding.upper(),
        dilations=layer.dilation_rate,
    )


@pytest.mark.parametrize("cls, arguments, shape", CASES, ids=IDS)
def test_export_protocol_identity(cls, arguments, shape):
    layer = make_layer(cls, arguments, shape)
    x = sample(shape)
    # The attributes an exporter reads.
    for name in ("kernel_size", "strides", "padding", "data_format", "dilation_rate"):
        if "Conv" in cls.__name__:
            assert hasattr(layer, name)
    assert layer.use_bias and layer.bias is not None and layer.activation is not None
    assert layer.kernel_quantizer.precision >= 1
    kernel = layer.quantized_kernel()
    assert kernel.dtype == tf.float32 and kernel.shape == layer.kernel.shape
    inputs = x if layer.input_quantizer is None else layer.input_quantizer(x)
    expected = layer.activation(reference_linear(layer, inputs, kernel) + layer.bias)
    if isinstance(layer, (DFP16Dense, DFP16Conv2D, DFP16Conv1D)):
        assert layer.accumulator_overflows(x) == 0
        assert layer.input_quantizer.get_config() == {"precision": 16, "rounding": "nearest"}
    np.testing.assert_allclose(layer(x, training=False), expected, rtol=1e-5, atol=1e-6)


def test_quantized_kernels_are_what_the_quantizers_say():
    x_shape = (12,)
    binary = make_layer(BinaryDense, {"units": 3}, x_shape)
    latent = binary.kernel.numpy()
    np.testing.assert_array_equal(binary.quantized_kernel(), np.where(latent >= 0, 1.0, -1.0))
    ternary = make_layer(TernaryResidualDense, {"units": 3, "block_size": 4, "residuals": 2}, x_shape)
    ternary.active_residuals = 1
    # ternary_residual itself is checked against brute force in test_quantizers.py.
    expected, _ = q.ternary_residual(ternary.kernel.numpy(), block_size=4, residuals=1)
    np.testing.assert_allclose(ternary.quantized_kernel(), expected, rtol=0, atol=1e-7)
    dfp = make_layer(DFP16Dense, {"units": 3}, x_shape)
    mantissa, exponent = numpy_dfp(dfp.kernel.numpy())  # the rule written out in numpy
    np.testing.assert_array_equal(dfp.quantized_kernel(), (mantissa * 2.0**exponent).astype(np.float32))
    int4 = make_layer(IntegerDense, {"units": 3, "bits": 4}, x_shape)
    w = int4.kernel.numpy().astype(np.float64)
    step = np.abs(w).max(axis=0) / 7  # symmetric int4: levels -7..7 per output channel
    np.testing.assert_allclose(int4.quantized_kernel(), np.round(w / step) * step, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- DFP-16 integers


def numpy_dfp(x, precision=16):
    _, e = np.frexp(np.abs(x).max())
    shared = e - 1 - (precision - 2)
    limit = 2 ** (precision - 1) - 1
    if np.abs(x).max() > limit * 2.0**shared:
        shared += 1
    return np.clip(np.round(x.astype(np.float64) / 2.0**shared), -limit, limit).astype(np.int64), shared


@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
@pytest.mark.parametrize("chunk", [None, 4])
def test_dfp_dense_matches_int32_accumulators(overflow, chunk):
    # Inputs at full scale make int32 accumulators overflow: compare with numpy int64
    # arithmetic clamped / wrapped to int32 per chunk.
    rng = np.random.default_rng(0)
    layer = DFP16Dense(3, use_bias=False, accumulator_overflow=overflow, accumulation_chunk=chunk)
    layer.build((None, 10))
    kernel = rng.choice([-1.0, 1.0], size=(10, 3)) * rng.uniform(0.01, 0.05, size=(10, 3))
    kernel[:, 0] = 1.99  # column 0: products near 2^30, all positive: int32 must overflow
    layer.kernel.assign(kernel.astype(np.float32))
    x = rng.uniform(1.5, 1.99, size=(4, 10)).astype(np.float32)
    xi, xe = numpy_dfp(x)
    wi, we = numpy_dfp(layer.kernel.numpy())
    size = 10 if chunk is None else chunk
    total = np.zeros((4, 3), np.float32)
    for start in range(0, 10, size):
        accumulator = xi[:, start : start + size] @ wi[start : start + size]
        if overflow == "saturate":
            accumulator = np.clip(accumulator, -(2**31), 2**31 - 1)
        else:
            accumulator = accumulator.astype(np.int32)  # two's complement wrap-around
        total += accumulator.astype(np.float32) * np.float32(2.0 ** (xe + we))
    assert layer.accumulator_overflows(x) > 0
    np.testing.assert_allclose(layer(x).numpy(), total, rtol=1e-6)
    # Where an accumulator overflowed, the float identity of the export protocol breaks.
    identity = layer.input_quantizer(x).numpy() @ layer.quantized_kernel().numpy()
    assert np.abs(identity[:, 0] - layer(x).numpy()[:, 0]).min() > 1e-3 * np.abs(identity).max()
    np.testing.assert_allclose(identity[:, 1:], layer(x).numpy()[:, 1:], rtol=1e-5)


def test_dfp_gradient_is_quantized_to_dfp16():
    layer = DFP16Dense(4, use_bias=False)
    layer.build((None, 6))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    upstream = rng.normal(size=(5, 4)).astype(np.float32) * np.float32(1e-3)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True) * upstream)
    (grad,) = tape.gradient(loss, [layer.kernel])
    xi, xe = numpy_dfp(x)
    gi, ge = numpy_dfp(upstream)
    expected = (xi * 2.0**xe).T @ (gi * 2.0**ge)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-5, atol=1e-12)
    # Without gradient quantization the exact float product of the unquantized upstream.
    plain = DFP16Dense(4, use_bias=False, quantize_gradients=False)
    plain.build((None, 6))
    plain.kernel.assign(layer.kernel)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(plain(x, training=True) * upstream)
    np.testing.assert_allclose(
        tape.gradient(loss, plain.kernel).numpy(), (xi * 2.0**xe).T @ upstream, rtol=1e-5
    )


def test_binary_dense_straight_through_kernel_gradient():
    layer = BinaryDense(3, use_bias=False)
    layer.build((None, 4))
    kernel = np.array([[0.5, -2.0, 0.1], [-0.3, 0.9, 1.5], [0.2, 0.2, -0.2], [-1.2, 0.0, 0.4]])
    layer.kernel.assign(kernel.astype(np.float32))
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True))
    grad = tape.gradient(loss, layer.kernel).numpy()
    expected = (x.T @ np.ones((6, 3))) * (np.abs(kernel) <= 1.0)
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


# --------------------------------------------------------------------------- ternary knob


def test_active_residuals_changes_traced_predict_without_retracing():
    keras.utils.set_random_seed(0)
    layer = TernaryResidualDense(5, block_size=4, residuals=3, name="ternary")
    model = keras.Sequential([keras.Input((12,)), layer])
    x = sample((12,), batch=8)
    full = model.predict(x, verbose=0)
    predict_function = model.predict_function
    outputs = {}
    for active in (0, 1, 2, 3):
        layer.active_residuals = active
        outputs[active] = model.predict(x, verbose=0)
        assert model.predict_function is predict_function
        _, parts = q.ternary_residual(layer.kernel.numpy(), 4, 3)
        kernel = sum(p.numpy() for p in parts[: active + 1])
        np.testing.assert_allclose(outputs[active], x @ kernel + layer.bias.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs[3], full)
    assert not np.allclose(outputs[0], outputs[3])
    # A serving function traced once follows the variable too.
    serve = tf.function(lambda v: layer(v, training=False))
    first = serve(x).numpy()
    layer.active_residuals = 0
    np.testing.assert_allclose(serve(x).numpy(), outputs[0], rtol=1e-6)
    assert serve.experimental_get_tracing_count() == 1
    assert not np.allclose(first, outputs[0])


def test_layer_argument_validation_names_the_argument():
    with pytest.raises(ValueError, match="residuals"):
        TernaryResidualDense(4, residuals=-1)
    with pytest.raises(ValueError, match="block_size"):
        TernaryResidualConv2D(4, 3, block_size=0)
    with pytest.raises(ValueError, match="active_residuals"):
        TernaryResidualDense(4, residuals=1, active_residuals=2)
    layer = TernaryResidualDense(4, residuals=1)
    with pytest.raises(ValueError, match="active_residuals"):
        layer.active_residuals = 5
    with pytest.raises(ValueError, match="precision"):
        DFP16Dense(4, precision=24)
    with pytest.raises(ValueError, match="accumulator_overflow"):
        DFP16Conv2D(4, 3, accumulator_overflow="ignore")
    with pytest.raises(ValueError, match="accumulation_chunk"):
        DFP16Dense(4, accumulation_chunk=0)
    with pytest.raises(ValueError, match="units"):
        BinaryDense(0)
    with pytest.raises(ValueError, match="padding"):
        BinaryConv2D(4, 3, padding="causal")
    with pytest.raises(ValueError, match="clip_value"):
        BinaryDense(4, clip_value=-1.0)


# --------------------------------------------------------------------------- saving


def small_model(cls, arguments, shape, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(shape), cls(**arguments, activation="relu", name="quantized")]
    layers += [keras.layers.Flatten(), keras.layers.Dense(3, name="head")]
    return keras.Sequential(layers)


@pytest.mark.parametrize("cls, arguments, shape", CASES, ids=IDS)
def test_save_load_identical_and_config_round_trip(cls, arguments, shape, tmp_path):
    model = small_model(cls, arguments, shape)
    layer = model.get_layer("quantized")
    if isinstance(layer, (TernaryResidualDense, TernaryResidualConv2D, TernaryResidualConv1D)):
        layer.active_residuals = 0  # a changed knob must survive saving
    x = sample(shape, batch=4)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    restored_layer = loaded.get_layer("quantized")
    assert type(restored_layer) is cls
    np.testing.assert_array_equal(restored_layer.quantized_kernel(), layer.quantized_kernel())
    config = layer.get_config()
    assert cls.from_config(config).get_config() == config
    if hasattr(layer, "active_residuals"):
        assert restored_layer.active_residuals == 0


# --------------------------------------------------------------------------- bfloat16


@pytest.mark.parametrize("cls, arguments, shape", CASES, ids=IDS)
def test_mixed_bfloat16_policy(cls, arguments, shape):
    float_layer = make_layer(cls, arguments, shape)
    layer = make_layer(cls, arguments, shape, dtype="mixed_bfloat16")
    assert layer.kernel.dtype == "float32"  # latent weights stay float32
    x = sample(shape)
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    reference = float_layer(x).numpy()
    np.testing.assert_allclose(np.asarray(y, np.float32), reference, atol=0.08, rtol=0.05)


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("cls, arguments, shape", CASES, ids=IDS)
def test_training_steps_lower_the_loss(cls, arguments, shape):
    model = small_model(cls, arguments, shape, seed=2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, *shape)).astype(np.float32)
    teacher = rng.normal(size=(int(np.prod(shape)), 3)).astype(np.float32)
    y = np.argmax(x.reshape(64, -1) @ teacher, axis=1)
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(True))
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=16, epochs=6, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert after < before


def test_registry_lists_all_layers():
    # Five families (binary, ternary-residual, DFP-16, integer, float16) x (Dense, Conv2D, Conv1D), the
    # depthwise / einsum / embedding / attention / separable shapes of tests/layers/test_new_shapes.py (22),
    # and KerasHub's TransformerEncoder for the four weight-only schemes (tests/layers/test_hub_encoder.py).
    from .test_hub_encoder import HUB_LAYERS
    from .test_new_shapes import NEW_LAYERS

    assert set(QUANTIZED_LAYERS) == {case[0] for case in CASES} | set(NEW_LAYERS) | set(HUB_LAYERS)
    assert len(QUANTIZED_LAYERS) == 15 + len(NEW_LAYERS) + len(HUB_LAYERS) == 41
    for cls in QUANTIZED_LAYERS:
        assert keras.saving.get_registered_name(cls) == f"keras_hessian>{cls.__name__}"
