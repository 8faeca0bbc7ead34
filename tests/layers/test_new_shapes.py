"""Quantized DepthwiseConv2D, EinsumDense, Embedding and MultiHeadAttention: numpy forward rules, STE, saving, export.

Truths: each scheme's rule written out in numpy on each shape's output channels (depthwise: one
channel per (input channel, multiplier); einsum: per output feature; embedding: per row), the
operations themselves in numpy (depthwise loops, `np.einsum`, row lookups), the closed-form
straight-through gradients, and the LiteRT interpreter running the real exported files.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian import layers as L
from keras_hessian.export import predict_tflite, to_tflite
from keras_hessian.layers import registry

from .test_quantized_layers import numpy_dfp

RNG = np.random.default_rng(0)

# (class, constructor arguments, input shape without batch, integer inputs)
DEPTHWISE = [
    (L.BinaryDepthwiseConv2D, {"kernel_size": 3, "depth_multiplier": 2, "per_channel_scale": True}),
    (L.TernaryResidualDepthwiseConv2D, {"kernel_size": 3, "depth_multiplier": 2, "block_size": 4, "residuals": 1}),
    (L.DFP16DepthwiseConv2D, {"kernel_size": 3, "depth_multiplier": 2, "accumulation_chunk": 4}),
    (L.IntegerDepthwiseConv2D, {"kernel_size": 3, "depth_multiplier": 2, "bits": 4}),
    (L.Float16DepthwiseConv2D, {"kernel_size": 3, "depth_multiplier": 2}),
]
EINSUM = {"equation": "abc,cde->abde", "output_shape": (4, 2, 3), "bias_axes": "de"}
EINSUMS = [
    (L.BinaryEinsumDense, {**EINSUM, "per_channel_scale": True}),
    (L.TernaryResidualEinsumDense, {**EINSUM, "block_size": 3, "residuals": 2}),
    (L.DFP16EinsumDense, {**EINSUM, "accumulation_chunk": 2}),
    (L.IntegerEinsumDense, {**EINSUM, "bits": 3}),
    (L.Float16EinsumDense, EINSUM),
]
EMBEDDINGS = [
    (L.BinaryEmbedding, {"input_dim": 11, "output_dim": 6, "per_channel_scale": True}),
    (L.TernaryResidualEmbedding, {"input_dim": 11, "output_dim": 6, "block_size": 4, "residuals": 1}),
    (L.IntegerEmbedding, {"input_dim": 11, "output_dim": 6, "bits": 4}),
    (L.Float16Embedding, {"input_dim": 11, "output_dim": 6}),
]
ATTENTION = {"num_heads": 2, "key_dim": 3}
ATTENTIONS = [
    (L.BinaryMultiHeadAttention, {**ATTENTION, "quantizer_options": {"per_channel_scale": True}}),
    (L.TernaryResidualMultiHeadAttention, {**ATTENTION, "quantizer_options": {"block_size": 2, "residuals": 1}}),
    (L.IntegerMultiHeadAttention, {**ATTENTION, "quantizer_options": {"bits": 4}}),
    (L.Float16MultiHeadAttention, ATTENTION),
]
SEPARABLE = {"filters": 4, "kernel_size": 3, "depth_multiplier": 2}
SEPARABLES = [
    (L.BinarySeparableConv2D, {**SEPARABLE, "quantizer_options": {"per_channel_scale": True}}),
    (L.TernaryResidualSeparableConv2D, {**SEPARABLE, "quantizer_options": {"block_size": 4, "residuals": 1}}),
    (L.IntegerSeparableConv2D, {**SEPARABLE, "quantizer_options": {"bits": 4}}),
    (L.Float16SeparableConv2D, SEPARABLE),
]
NEW_LAYERS = [case[0] for case in DEPTHWISE + EINSUMS + EMBEDDINGS + ATTENTIONS + SEPARABLES]
SHAPES = {"depthwise": (5, 5, 3), "einsum": (4, 5), "embedding": (7,), "attention": (4, 5), "separable": (5, 5, 3)}


def kind(cls):
    cases_of = (("depthwise", DEPTHWISE), ("einsum", EINSUMS), ("embedding", EMBEDDINGS), ("separable", SEPARABLES))
    for name, cases in cases_of:
        if cls in [case[0] for case in cases]:
            return name
    return "attention"


def inputs(cls, batch=3, seed=1):
    rng = np.random.default_rng(seed)
    shape = SHAPES[kind(cls)]
    if kind(cls) == "embedding":
        return rng.integers(0, 11, size=(batch, *shape)).astype(np.int32)
    return rng.normal(size=(batch, *shape)).astype(np.float32)


def built(cls, arguments, seed=0, **extra):
    keras.utils.set_random_seed(seed)
    if kind(cls) == "embedding":
        layer = cls(**arguments, embeddings_initializer="random_normal", **extra)
    elif kind(cls) == "attention":
        layer = cls(**arguments, bias_initializer="random_normal", **extra)
    else:
        layer = cls(**arguments, activation="tanh", bias_initializer="random_normal", **extra)
    x = inputs(cls)
    layer(x, x) if kind(cls) == "attention" else layer(x)
    return layer


# ------------------------------------------------------------------ the rules in numpy, per column


def np_binary(m, scaled):
    signs = np.where(m >= 0, 1.0, -1.0)
    return signs * np.abs(m).mean(axis=0) if scaled else signs


def np_integer(m, bits):
    step = np.abs(m).max(axis=0) / (2 ** (bits - 1) - 1)
    return np.round(m / step) * step


def np_ternary_block(w):
    """Best `alpha * sign(w) * 1{|w| > T}` by brute force over every threshold."""
    best, best_error = np.zeros_like(w), np.sum(w**2)
    for threshold in np.abs(w):
        kept = np.abs(w) >= threshold
        alpha = np.abs(w[kept]).mean()
        term = alpha * np.sign(w) * kept
        error = np.sum((w - term) ** 2)
        if error < best_error - 1e-12:
            best, best_error = term, error
    return best


def np_ternary_residual(m, block_size, residuals):
    out = np.zeros_like(m)
    for column in range(m.shape[1]):
        for start in range(0, m.shape[0], block_size):
            remainder = m[start : start + block_size, column].copy()
            for _ in range(residuals + 1):
                term = np_ternary_block(remainder)
                out[start : start + block_size, column] += term
                remainder -= term
    return out


def np_rule(layer, m):
    """The layer's scheme applied to the (reduction x output channels) matrix `m` in numpy."""
    m = m.astype(np.float64)
    if isinstance(layer.kernel_quantizer, L.Binarize):
        return np_binary(m, layer.per_channel_scale)
    if isinstance(layer.kernel_quantizer, L.Integer):
        return np_integer(m, layer.bits)
    if isinstance(layer.kernel_quantizer, L.TernaryResidual):
        return np_ternary_residual(m, layer.block_size, layer.residuals)
    if isinstance(layer.kernel_quantizer, L.Float16):
        return m.astype(np.float16).astype(np.float64)
    mantissa, exponent = numpy_dfp(m)  # DFP-16: one exponent for the tensor, no channels
    return mantissa * 2.0**exponent


def np_depthwise(x, kernel):
    """'valid', stride 1: out[b, i, j, c * M + m] = sum x[b, i + di, j + dj, c] * k[di, dj, c, m]."""
    kh, kw, channels, multiplier = kernel.shape
    rows, cols = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], rows, cols, channels, multiplier))
    for di in range(kh):
        for dj in range(kw):
            out += x[:, di : di + rows, dj : dj + cols, :, None] * kernel[di, dj]
    return out.reshape(x.shape[0], rows, cols, channels * multiplier)


def expected_kernel(layer):
    w = layer.kernel.numpy().astype(np.float64)
    if kind(type(layer)) == "depthwise":
        kh, kw, c, m = w.shape
        return np_rule(layer, w.reshape(kh * kw, c * m)).reshape(w.shape)
    if kind(type(layer)) == "embedding":
        return np_rule(layer, w.T).T  # one column per token: per-row scales
    # einsum "abc,cde->abde": kernel (c, d, e), output features (d, e)
    c, d, e = w.shape
    return np_rule(layer, w.reshape(c, d * e)).reshape(w.shape)


def expected_output(layer, x, kernel):
    if kind(type(layer)) == "embedding":
        return kernel[x]
    x = x.astype(np.float64)
    if layer.input_quantizer is not None:
        mantissa, exponent = numpy_dfp(x)
        x = mantissa * 2.0**exponent
    if kind(type(layer)) == "depthwise":
        y = np_depthwise(x, kernel)
    else:
        y = np.einsum("abc,cde->abde", x, kernel)
    return np.tanh(y + layer.bias.numpy())


@pytest.mark.parametrize("cls, arguments", DEPTHWISE + EINSUMS + EMBEDDINGS, ids=lambda v: getattr(v, "__name__", ""))
def test_forward_rule_matches_numpy(cls, arguments):
    layer = built(cls, arguments)
    kernel = expected_kernel(layer)
    np.testing.assert_allclose(layer.quantized_kernel().numpy(), kernel, rtol=1e-5, atol=1e-6)
    x = inputs(cls, seed=4)
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected_output(layer, x, kernel), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls, arguments", ATTENTIONS, ids=lambda v: getattr(v, "__name__", ""))
def test_attention_projections_follow_the_rule_and_the_float_layer(cls, arguments):
    layer = built(cls, arguments)
    assert [p.name for p in layer.projections()] == ["query", "key", "value", "attention_output"]
    for projection in layer.projections():
        w = projection.kernel.numpy().astype(np.float64)
        reduction, outputs = projection.reduction_axes, projection.output_axes
        # query/key/value (hidden, heads, size): one channel per (head, size); output (heads, size, hidden).
        matrix = np.transpose(w, reduction + outputs).reshape(int(np.prod([w.shape[i] for i in reduction])), -1)
        ruled = np_rule(projection, matrix).reshape([w.shape[i] for i in reduction + outputs])
        expected = np.transpose(ruled, np.argsort(reduction + outputs))
        np.testing.assert_allclose(projection.quantized_kernel().numpy(), expected, rtol=1e-5, atol=1e-6)
    # Keras' own attention over the quantized kernels computes the same.
    twin = layer.float_layer("twin")
    q, v = inputs(cls, seed=5), inputs(cls, seed=6)
    twin(q, v)
    twin.set_weights(layer.float_weights())
    np.testing.assert_allclose(layer(q, v).numpy(), twin(q, v).numpy(), rtol=1e-5, atol=1e-6)
    assert len(layer.trainable_weights) == 8  # the float projections are gone


@pytest.mark.parametrize("cls, arguments", SEPARABLES, ids=lambda v: getattr(v, "__name__", ""))
def test_separable_parts_follow_the_rule(cls, arguments):
    layer = built(cls, arguments)
    depthwise, pointwise = layer.projections()
    dw = expected_kernel(depthwise)  # per (input channel, multiplier) output channel
    pw_latent = pointwise.kernel.numpy()
    pw = np_rule(pointwise, pw_latent.reshape(-1, pw_latent.shape[-1])).reshape(pw_latent.shape)  # per filter
    np.testing.assert_allclose(depthwise.quantized_kernel().numpy(), dw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pointwise.quantized_kernel().numpy(), pw, rtol=1e-5, atol=1e-6)
    x = inputs(cls, seed=4)
    expected = np.tanh(np_depthwise(x.astype(np.float64), dw) @ pw[0, 0] + pointwise.bias.numpy())
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert len(layer.trainable_weights) == 3  # the float kernels are gone


# ------------------------------------------------------------------ straight-through gradients


def window_sums(x, kh, kw, multiplier):
    """d sum(depthwise(x, K)) / dK[di, dj, c, m] = sum over the window's inputs (numpy)."""
    rows, cols = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    sums = np.array([[x[:, di : di + rows, dj : dj + cols].sum(axis=(0, 1, 2)) for dj in range(kw)] for di in range(kh)])
    return np.repeat(sums[..., None], multiplier, axis=-1)


@pytest.mark.parametrize(
    "cls, arguments, cancels",
    [
        (L.BinaryDepthwiseConv2D, {"clip_value": 0.3}, True),
        (L.TernaryResidualDepthwiseConv2D, {"residuals": 1}, False),
        (L.IntegerDepthwiseConv2D, {"bits": 4}, False),
        (L.Float16DepthwiseConv2D, {}, False),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_depthwise_straight_through_gradient(cls, arguments, cancels):
    layer = cls(3, depth_multiplier=2, use_bias=False, **arguments)
    x = inputs(cls, batch=4)
    layer.build(x.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True))
    grad = tape.gradient(loss, layer.kernel).numpy()
    expected = window_sums(x.astype(np.float64), 3, 3, 2)
    if cancels:  # BNN: the gradient is cancelled where |W| > clip_value
        expected = expected * (np.abs(layer.kernel.numpy()) <= 0.3)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)


def test_dfp_depthwise_gradient_takes_the_dfp_inputs():
    layer = L.DFP16DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, quantize_gradients=False)
    x = inputs(L.DFP16DepthwiseConv2D, batch=4)
    layer.build(x.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True))
    mantissa, exponent = numpy_dfp(x)
    expected = window_sums(mantissa * 2.0**exponent, 3, 3, 2)
    np.testing.assert_allclose(tape.gradient(loss, layer.kernel).numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [L.BinaryEinsumDense, L.TernaryResidualEinsumDense, L.IntegerEinsumDense])
def test_einsum_straight_through_gradient(cls):
    layer = cls("abc,cde->abde", (None, 2, 3), clip_value=0.2) if cls is L.BinaryEinsumDense else cls(**EINSUM)
    x = inputs(cls, batch=4)
    layer.build(x.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True))
    expected = np.broadcast_to(x.sum(axis=(0, 1))[:, None, None], layer.kernel.shape)
    if cls is L.BinaryEinsumDense:
        expected = expected * (np.abs(layer.kernel.numpy()) <= 0.2)
    np.testing.assert_allclose(tape.gradient(loss, layer.kernel).numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [L.BinaryEmbedding, L.TernaryResidualEmbedding, L.IntegerEmbedding, L.Float16Embedding])
def test_embedding_straight_through_gradient_counts_each_token(cls):
    layer = cls(11, 6, embeddings_initializer="random_normal")
    ids = inputs(cls, batch=4)
    layer.build(ids.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(ids, training=True))
    grad = tf.convert_to_tensor(tape.gradient(loss, layer.embeddings)).numpy()
    counts = np.bincount(ids.ravel(), minlength=11).astype(np.float64)
    expected = np.repeat(counts[:, None], 6, axis=1)
    if cls is L.BinaryEmbedding:
        expected = expected * (np.abs(layer.embeddings.numpy()) <= 1.0)
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


# ------------------------------------------------------------------ from a float layer


@pytest.mark.parametrize(
    "float_layer, cls, x",
    [
        (keras.layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu"), L.Float16DepthwiseConv2D, (5, 5, 3)),
        (keras.layers.EinsumDense("abc,cde->abde", (None, 2, 3), bias_axes="e"), L.Float16EinsumDense, (4, 5)),
        (keras.layers.Embedding(11, 6, mask_zero=True), L.Float16Embedding, "ids"),
        (keras.layers.MultiHeadAttention(2, 3, value_dim=4), L.Float16MultiHeadAttention, (4, 5)),
        (keras.layers.SeparableConv2D(4, 3, strides=2, padding="same", depth_multiplier=2), L.Float16SeparableConv2D, (6, 6, 3)),
    ],
    ids=["depthwise", "einsum", "embedding", "attention", "separable"],
)
def test_from_float_layer_and_its_weights(float_layer, cls, x):
    x = RNG.integers(0, 11, size=(3, 7)) if x == "ids" else RNG.normal(size=(3, *x)).astype(np.float32)
    call = (lambda layer: layer(x, x)) if cls is L.Float16MultiHeadAttention else (lambda layer: layer(x))
    reference = call(float_layer).numpy()
    quantized = cls.from_float_layer(float_layer)
    call(quantized)
    quantized.load_float_weights(float_layer)
    assert registry.quantized_layer_class("float16", float_layer) is cls
    # float16 kernels: the float layer's outputs to half-precision rounding.
    np.testing.assert_allclose(call(quantized).numpy(), reference, rtol=2e-3, atol=2e-3)
    if cls is L.Float16Embedding:
        assert quantized.mask_zero and quantized.compute_mask(x) is not None


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="binary_activations"):
        L.BinaryEmbedding(10, 4, binary_activations=True)
    with pytest.raises(ValueError, match="quantizer_options"):
        L.IntegerMultiHeadAttention(2, 4, quantizer_options={"residuals": 1})
    with pytest.raises(ValueError, match="input quantization"):
        L.BinaryMultiHeadAttention(2, 4, quantizer_options={"binary_activations": True})
    with pytest.raises(ValueError, match="bits"):
        L.IntegerMultiHeadAttention(2, 4, quantizer_options={"bits": 12})
    with pytest.raises(ValueError, match="depth_multiplier"):
        L.IntegerDepthwiseConv2D(3, depth_multiplier=0)
    with pytest.raises(ValueError, match="equation"):
        L.IntegerEinsumDense("ab->b", 3)
    with pytest.raises(TypeError, match="use_bias"):
        L.Float16Embedding(10, 4, use_bias=True)


# ------------------------------------------------------------------ saving, bfloat16


@pytest.mark.parametrize("cls, arguments", DEPTHWISE + EINSUMS + EMBEDDINGS + ATTENTIONS + SEPARABLES,
                         ids=lambda v: getattr(v, "__name__", ""))
def test_config_round_trip_and_bfloat16(cls, arguments):
    layer = built(cls, arguments)
    config = layer.get_config()
    assert cls.from_config(config).get_config() == config
    # mixed_bfloat16: latent weights stay float32, outputs are bfloat16 and close to float32's.
    half = built(cls, arguments, dtype="mixed_bfloat16")
    assert all(w.dtype == "float32" for w in half.trainable_weights)
    x = inputs(cls, batch=4)
    y = half(x, x) if kind(cls) == "attention" else half(x)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    reference = (layer(x, x) if kind(cls) == "attention" else layer(x)).numpy()
    np.testing.assert_allclose(np.asarray(y, np.float32), reference, atol=0.1, rtol=0.05)


def family_model(depthwise, embedding, attention, einsum, separable=None):
    """Images through the depthwise layer, tokens through embedding, attention and einsum: one file per family."""
    images = keras.Input((6, 6, 3))
    tokens = keras.Input((5,), dtype="int32")
    arguments = {cls: arguments for cls, arguments in DEPTHWISE + EMBEDDINGS + ATTENTIONS + EINSUMS + SEPARABLES}
    a = keras.layers.Flatten()(depthwise(**arguments[depthwise], name="depthwise")(images))
    if separable is not None:
        a = keras.layers.Concatenate()([a, keras.layers.Flatten()(separable(**arguments[separable], name="separable")(images))])
    h = embedding(**{**arguments[embedding], "output_dim": 5}, name="embedding")(tokens)
    h = h + attention(**arguments[attention], name="attention")(h, h)
    h = keras.layers.Flatten()(einsum(**{**arguments[einsum], "output_shape": (5, 2, 3)}, name="einsum")(h))
    return keras.Model([images, tokens], keras.layers.Dense(2)(keras.layers.Concatenate()([a, h])))


@pytest.mark.parametrize("family", ["binary", "ternary_residual", "dfp16", "integer", "float16"])
def test_save_load_identical_outputs(family, tmp_path):
    dfp = family == "dfp16"
    classes = [
        case[0]
        for case in DEPTHWISE + EMBEDDINGS + ATTENTIONS + EINSUMS
        if registry.scheme_of(case[0]) == (family if not dfp or case in DEPTHWISE + EINSUMS else "float16")
    ]
    depthwise, embedding, attention, einsum = [next(c for c in classes if kind(c) == k) for k in
                                               ("depthwise", "embedding", "attention", "einsum")]
    separable = next((c for c, _ in SEPARABLES if registry.scheme_of(c) == family), None)
    keras.utils.set_random_seed(0)
    model = family_model(depthwise, embedding, attention, einsum, separable)
    for layer in model.layers:
        if hasattr(layer, "active_residuals"):
            layer.active_residuals = 0  # a changed knob survives saving
    for layer in [p for a in model.layers if hasattr(a, "projections") for p in a.projections()]:  # attention, separable
        if hasattr(layer, "active_residuals"):
            layer.active_residuals = 0
    rng = np.random.default_rng(2)
    x = [rng.normal(size=(4, 6, 6, 3)).astype(np.float32), rng.integers(0, 11, size=(4, 5)).astype(np.int32)]
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    for name, cls in zip(("depthwise", "embedding", "attention", "einsum"), (depthwise, embedding, attention, einsum)):
        assert type(loaded.get_layer(name)) is cls
    if separable is not None:
        assert type(loaded.get_layer("separable")) is separable
    if family == "ternary_residual":
        assert loaded.get_layer("einsum").active_residuals == 0
        assert [p.active_residuals for p in loaded.get_layer("separable").projections()] == [0, 0]
        assert [p.active_residuals for p in loaded.get_layer("attention").projections()] == [0, 0, 0, 0]


def test_registry_holds_the_new_layers():
    for cls in NEW_LAYERS:
        assert cls in registry.quantized_layer_classes()
        assert keras.saving.get_registered_name(cls) == f"keras_hessian>{cls.__name__}"
    assert registry.quantized_layer_class("dfp16", keras.layers.Embedding) is None
    assert registry.quantized_layer_class("dfp16", keras.layers.MultiHeadAttention) is None


# ------------------------------------------------------------------ export: LiteRT against Keras


def image_model(cls, separable=None):
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", name="conv")(x)
    h = cls(3, depth_multiplier=2, padding="same", activation="relu", name="depthwise")(h)
    if separable is not None:
        h = separable(6, 3, padding="same", activation="relu", name="separable")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, keras.layers.Dense(4, name="head")(h))


def token_model(embedding, attention, einsum):
    tokens = keras.Input((6,), dtype="int32")
    h = embedding(20, 8, name="embedding")(tokens)
    h = h + attention(2, 4, name="attention")(h, h)
    h = einsum("abc,cd->abd", (None, 8), bias_axes="d", activation="relu", name="einsum")(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(tokens, keras.layers.Dense(4, name="head")(h))


# The export path is the same for every family (each shape's plain twin); DFP-16 adds its input
# quantizer in front. Binary and integer files were checked the same way by hand (float32 and auto).
FAMILIES = {
    "ternary_residual": (L.TernaryResidualDepthwiseConv2D, L.TernaryResidualEmbedding, L.TernaryResidualMultiHeadAttention, L.TernaryResidualEinsumDense),
    "dfp16": (L.DFP16DepthwiseConv2D, L.Float16Embedding, L.Float16MultiHeadAttention, L.DFP16EinsumDense),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_runs_in_litert_like_keras(family, tmp_path):
    depthwise, embedding, attention, einsum = FAMILIES[family]
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    images = rng.normal(size=(32, 8, 8, 3)).astype(np.float32)
    tokens = rng.integers(0, 20, size=(32, 6)).astype(np.int32)
    ternary = family == "ternary_residual"
    # (The ternary-residual depthwise auto file is test_auto_file_stores_depthwise_filters_narrow's.)
    separable = L.TernaryResidualSeparableConv2D if ternary else None
    models = ((image_model(depthwise, separable), images, ("float32",)),
              (token_model(embedding, attention, einsum), tokens, ("float32", "auto") if ternary else ("float32",)))
    for model, x, modes in models:
        reference = model.predict(x, verbose=0)
        for mode in modes:
            path = to_tflite(model, tmp_path / f"{model.name}_{mode}.tflite", mode=mode)
            outputs = predict_tflite(path, x)
            assert np.mean(outputs.argmax(1) == reference.argmax(1)) >= 0.99
            # float32 files compute the Keras forward pass to float rounding; "auto" stores the
            # float layers' and the folded kernels' weights int8 with hybrid (int8-activation) kernels.
            tolerance = 1e-5 if mode == "float32" else 0.05 * np.abs(reference).max()
            np.testing.assert_allclose(outputs, reference, atol=tolerance)
    if ternary:
        # `path`: the token model's auto file, written last. Its four attention projections and the
        # einsum are FullyConnected filters stored as integers (int8 or narrower, read from the file).
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_path=str(path)).get_tensor_details()
        assert sum(1 for t in details if tuple(t["shape"]) == (8, 8) and t["dtype"] == np.int8) >= 5


# Integer depthwise filters take the same int8 min/max path as the ternary-residual ones.
@pytest.mark.parametrize("cls, dtype", [(L.TernaryResidualDepthwiseConv2D, np.int8), (L.Float16DepthwiseConv2D, np.float16)],
                         ids=["ternary_residual", "float16"])
def test_auto_file_stores_depthwise_filters_narrow(cls, dtype, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(4)
    images = keras.Input((6, 6, 64))
    h = cls(3, depth_multiplier=2, padding="same", name="depthwise")(images)
    model = keras.Model(images, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    x = np.random.default_rng(4).normal(size=(16, 6, 6, 64)).astype(np.float32)
    float_path = to_tflite(model, tmp_path / "float.tflite", mode="float32")
    path = to_tflite(model, tmp_path / "auto.tflite", mode="auto")
    filters = [t for t in Interpreter(model_path=str(path)).get_tensor_details() if tuple(t["shape"]) == (1, 3, 3, 128)]
    # The depthwise filter as the file holds it (float16: dequantized to float32 when loaded).
    assert dtype in [t["dtype"] for t in filters]
    assert path.stat().st_size < float_path.stat().st_size - 128 * 9  # at least a byte per weight saved
    reference = model.predict(x, verbose=0)
    np.testing.assert_allclose(predict_tflite(path, x), reference, atol=0.02 * np.abs(reference).max())


def test_kernel_matrix_shape_of_float_and_quantized_layers():
    depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
    depthwise.build((None, 5, 5, 4))
    einsum = keras.layers.EinsumDense("abcd,cde->abe", (None, 7))
    einsum.build((None, 3, 2, 4))
    embedding = keras.layers.Embedding(11, 6)
    embedding.build((None, 3))
    conv = keras.layers.Conv2D(8, 3)
    conv.build((None, 5, 5, 4))
    assert L.kernel_matrix_shape(depthwise) == (9, 8)
    assert L.kernel_matrix_shape(einsum) == (8, 7)  # contracted (heads, size) x output features
    assert L.kernel_matrix_shape(embedding) == (6, 11)
    assert L.kernel_matrix_shape(conv) == (36, 8)
    quantized = built(L.IntegerDepthwiseConv2D, DEPTHWISE[3][1])
    assert L.kernel_matrix_shape(quantized) == (9, 6)


def test_kernel_costs_of_a_lookup_and_of_an_attention_layer():
    table = built(L.TernaryResidualEmbedding, EMBEDDINGS[1][1])
    cost = table.kernel_cost(21)
    # 2 terms x 2 bits per weight, plus a float32 scale per block (2 blocks of a 6-wide row) and term.
    assert (cost.storage_bits, cost.multiplications, cost.replaced_multiplications) == (2 * 2 * 66 + 32 * 11 * 2 * 2, 0, 0)
    attention = built(L.IntegerMultiHeadAttention, ATTENTIONS[2][1])
    weights = sum(int(np.prod(p.kernel.shape)) for p in attention.projections())
    channels = sum(L.kernel_matrix_shape(p)[1] for p in attention.projections())
    assert attention.kernel_cost().storage_bits == 4 * weights + 32 * channels  # int4 + a scale per channel
