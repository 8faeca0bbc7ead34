"""HessianOperator against the exact Hessian and central finite differences."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.hessian import HessianOperator
from tests.conftest import exact_hessian, flat


def random_vector(variables, seed=0):
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.standard_normal(v.shape), dtype=v.dtype) for v in variables]


def relative_error(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("method", ["forward_over_reverse", "reverse_over_reverse"])
@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_hvp_matches_exact_hessian(request, method, model_name):
    model = request.getfixturevalue(model_name)
    data = request.getfixturevalue("hessian_batch_flat" if model_name == "mlp" else "hessian_batch_image")
    hessian = request.getfixturevalue(f"{model_name}_hessian")
    op = HessianOperator(model, data, method=method)
    v = random_vector(op.variables)
    assert relative_error(flat(op.hvp(v)), hessian @ flat(v)) < 1e-5


def test_methods_agree_with_each_other_and_with_finite_differences(digits_flat):
    """In float64 the central difference (g(w + eps v) - g(w - eps v)) / 2 eps is accurate to
    O(eps^2), an independent check of both automatic-differentiation routes."""
    keras.utils.set_random_seed(3)
    (x, y), _ = digits_flat
    x, y = x[:200].astype("float64"), y[:200]
    model = keras.Sequential(
        [keras.Input((64,), dtype="float64"), keras.layers.Dense(12, activation="tanh", dtype="float64"),
         keras.layers.Dense(10, dtype="float64")]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    forward = HessianOperator(model, (x, y), method="forward_over_reverse")
    reverse = HessianOperator(model, (x, y), method="reverse_over_reverse")
    v = random_vector(forward.variables, seed=5)
    hv_forward, hv_reverse = flat(forward.hvp(v)), flat(reverse.hvp(v))

    eps = 1e-4
    original = [w.numpy() for w in model.trainable_variables]

    def gradient_at(sign):
        for w, w0, d in zip(model.trainable_variables, original, v):
            w.assign(w0 + sign * eps * d.numpy())
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True))
        return flat(tape.gradient(loss, model.trainable_variables))

    finite_difference = (gradient_at(+1) - gradient_at(-1)) / (2 * eps)
    for w, w0 in zip(model.trainable_variables, original):
        w.assign(w0)
    assert relative_error(hv_forward, hv_reverse) < 1e-7
    assert relative_error(hv_forward, finite_difference) < 1e-6


def test_uneven_batches_equal_one_batch(mlp, hessian_batch_flat):
    x, y = hessian_batch_flat
    one = HessianOperator(mlp, (x, y), batch_size=len(x))
    v = random_vector(one.variables, seed=1)
    reference = flat(one.hvp(v))
    numpy_uneven = HessianOperator(mlp, (x, y), batch_size=77)  # 77+77+77+69
    dataset_uneven = HessianOperator(mlp, tf.data.Dataset.from_tensor_slices((x, y)).batch(128))
    unbatched = HessianOperator(mlp, tf.data.Dataset.from_tensor_slices((x, y)), batch_size=41)
    weighted = HessianOperator(mlp, tf.data.Dataset.from_tensor_slices((x, y, np.ones(len(x), "float32"))).batch(50))
    streamed = HessianOperator(mlp, tf.data.Dataset.from_tensor_slices((x, y)).batch(64), cache=False)
    for op in (numpy_uneven, dataset_uneven, unbatched, weighted, streamed):
        assert relative_error(flat(op.hvp(v)), reference) < 1e-5


def test_sample_weights_weight_the_examples(mlp, hessian_batch_flat):
    """Weights (2, 0) on two halves give twice the first half's Hessian over the whole size."""
    x, y = hessian_batch_flat
    half = len(x) // 2
    weights = np.concatenate([np.full(half, 2.0), np.zeros(len(x) - half)]).astype("float32")
    weighted = HessianOperator(mlp, (x, y, weights))
    exact_first_half = exact_hessian(mlp, x[:half], y[:half])
    v = random_vector(weighted.variables, seed=2)
    expected = 2.0 * half / len(x) * (exact_first_half @ flat(v))
    assert relative_error(flat(weighted.hvp(v)), expected) < 1e-5


def test_compiled_once_no_retracing(mlp, hessian_batch_flat):
    x, y = hessian_batch_flat
    op = HessianOperator(mlp, (x, y), batch_size=128)  # two full batches and one of 44
    for seed in range(4):
        op.hvp(random_vector(op.variables, seed))
    op.hvp_many([random_vector(op.variables, s) for s in range(3)])
    op.hvp_many([random_vector(op.variables, s) for s in range(3, 6)])
    # hvp and hvp_many of 3 vectors are each traced twice: once for the static shape of the
    # full batches (128), once shape-generic for the last batch of 44; never again per call.
    assert op.tracing_count() == 4
    op.hvp(random_vector(op.variables, 9))
    assert op.tracing_count() == 4
    assert op.hvp_count == 4 + 6 + 1


def test_hvp_many_equals_single_products(cnn, hessian_batch_image, cnn_hessian):
    op = HessianOperator(cnn, hessian_batch_image)
    vectors = [random_vector(op.variables, s) for s in range(3)]
    for v, hv in zip(vectors, op.hvp_many(vectors)):
        assert relative_error(flat(hv), cnn_hessian @ flat(v)) < 1e-5


def test_regularization_losses_are_included(digits_flat):
    keras.utils.set_random_seed(4)
    (x, y), _ = digits_flat
    x, y = x[:100], y[:100]
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(8, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.5)),
         keras.layers.Dense(10)]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    op = HessianOperator(model, (x, y))
    v = random_vector(op.variables, seed=3)
    assert relative_error(flat(op.hvp(v)), exact_hessian(model, x, y) @ flat(v)) < 1e-5
    # And the regularizer's share is really there: L2(0.5) adds 2 * 0.5 = 1 on the kernel's diagonal.
    difference = flat(op.hvp(v)) - exact_hessian(model, x, y, model_losses=False) @ flat(v)
    kernel_size = int(np.prod(model.layers[0].kernel.shape))
    np.testing.assert_allclose(difference[:kernel_size], flat(v)[:kernel_size], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(difference[kernel_size:], 0.0, atol=1e-5)


def bn_model(digits_flat):
    keras.utils.set_random_seed(5)
    (x, y), _ = digits_flat
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(16), keras.layers.BatchNormalization(),
         keras.layers.Activation("tanh"), keras.layers.Dropout(0.3), keras.layers.Dense(10)]
    )
    model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, verbose=0)
    return model, x[:200], y[:200]


def test_batchnorm_inference_mode_and_training_mode(digits_flat):
    model, x, y = bn_model(digits_flat)
    state_before = [w.numpy().copy() for w in model.weights]
    inference = HessianOperator(model, (x, y))
    training = HessianOperator(model, (x, y), training=True)
    v = random_vector(inference.variables, seed=6)
    hv_inference, hv_training = flat(inference.hvp(v)), flat(training.hvp(v))
    assert relative_error(hv_inference, exact_hessian(model, x, y, training=False) @ flat(v)) < 1e-5
    assert relative_error(hv_training, hv_inference) > 1e-2  # batch statistics and dropout differ
    assert relative_error(flat(training.hvp(v)), hv_training) < 1e-6  # same dropout mask every product
    for before, w in zip(state_before, model.weights):
        np.testing.assert_array_equal(before, w.numpy())  # moving statistics and seeds restored


def test_functional_subclassed_and_tf_keras_models(digits_flat):
    (x, y), _ = digits_flat
    x, y = x[:120], y[:120]
    keras.utils.set_random_seed(6)
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    functional = keras.Model(inputs, keras.layers.Dense(10)(hidden))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(8, activation="tanh")
            self.out = keras.layers.Dense(10)

        def call(self, inputs, training=False):
            return self.out(self.hidden(inputs))

    subclassed = Subclassed()
    subclassed(x[:1])
    for model in (functional, subclassed):
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        op = HessianOperator(model, (x, y))
        v = random_vector(op.variables, seed=7)
        assert relative_error(flat(op.hvp(v)), exact_hessian(model, x, y) @ flat(v)) < 1e-5

    import tf_keras

    tf_keras.utils.set_random_seed(7)
    legacy = tf_keras.Sequential([tf_keras.layers.Dense(8, activation="tanh", input_shape=(64,)), tf_keras.layers.Dense(10)])
    legacy.compile(loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    op = HessianOperator(legacy, (x, y))
    v = random_vector(op.variables, seed=8)
    variables = legacy.trainable_variables
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, legacy(x), from_logits=True))
        g = tf.concat([tf.reshape(t, [-1]) for t in inner.gradient(loss, variables)], 0)
    exact = tf.concat([tf.reshape(j, [g.shape[0], -1]) for j in outer.jacobian(g, variables)], 1).numpy()
    assert relative_error(flat(op.hvp(v)), exact @ flat(v)) < 1e-5


# ------------------------------------------------------------------ bad input


@pytest.fixture()
def small_model():
    keras.utils.set_random_seed(8)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def weights_of(model):
    return [w.numpy().copy() for w in model.weights]


def assert_unchanged(model, before):
    for b, w in zip(before, model.weights):
        np.testing.assert_array_equal(b, w.numpy())


def test_model_not_built():
    model = keras.Sequential([keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="model must be built"):
        HessianOperator(model, (np.zeros((4, 3), "float32"), np.zeros(4, "int32")))


def test_no_trainable_weights(small_model, digits_flat):
    (x, y), _ = digits_flat
    small_model.trainable = False
    try:
        with pytest.raises(ValueError, match="no trainable weights"):
            HessianOperator(small_model, (x, y))
    finally:
        small_model.trainable = True


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "data is empty"),
        ("empty_dataset", "data is empty"),
        ("nan_x", "NaN or inf"),
        ("inf_y", "NaN or inf"),
        ("no_labels", "labels"),
        ("wrong_label_shape", "labels of shape"),
        ("label_count", "y has"),
        ("not_scalar", "loss must return a scalar"),
        ("nan_loss", "loss is"),
        ("unbatched", "batch_size"),
    ],
)
def test_bad_data_and_loss(small_model, digits_flat, case, message):
    (x, y), _ = digits_flat
    x, y = x[:32], y[:32]
    before = weights_of(small_model)
    loss = None
    if case == "empty":
        data = (x[:0], y[:0])
    elif case == "empty_dataset":
        data = tf.data.Dataset.from_tensor_slices((x[:0], y[:0])).batch(8)
    elif case == "nan_x":
        bad = x.copy()
        bad[3, 5] = np.nan
        data = (bad, y)
    elif case == "inf_y":
        data = (x, np.full((32, 10), np.inf, "float32"))
    elif case == "no_labels":
        data = tf.data.Dataset.from_tensor_slices(x).batch(8)
    elif case == "wrong_label_shape":
        data = (x, np.zeros((32, 3), "float32"))
        loss = "categorical_crossentropy"
    elif case == "label_count":
        data = (x, y[:20])
    elif case == "not_scalar":
        data = (x, y)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    elif case == "nan_loss":
        data = (x, y)

        def loss(y_true, y_pred):
            return tf.reduce_mean(y_pred) * np.nan
    elif case == "unbatched":
        data = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises((ValueError, TypeError), match=message):
        HessianOperator(small_model, data, loss=loss)
    assert_unchanged(small_model, before)


def test_bad_arguments(small_model, digits_flat):
    (x, y), _ = digits_flat
    with pytest.raises(ValueError, match="method must be one of"):
        HessianOperator(small_model, (x, y), method="finite_differences")
    with pytest.raises(ValueError, match="blocks must be"):
        HessianOperator(small_model, (x, y), blocks="neuron")
    with pytest.raises(ValueError, match="not a trainable variable"):
        HessianOperator(small_model, (x, y), blocks=[[keras.Variable(np.zeros(3))]])
    with pytest.raises(TypeError, match="model must be a Keras model"):
        HessianOperator("model.keras", (x, y))
    with pytest.raises(TypeError, match="data must be"):
        HessianOperator(small_model, x)
    op = HessianOperator(small_model, (x, y))
    with pytest.raises(ValueError, match="one tensor per variable"):
        op.hvp([tf.zeros((64, 10))])


def test_model_without_compiled_loss(digits_flat):
    (x, y), _ = digits_flat
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="not compiled with a loss"):
        HessianOperator(model, (x, y))


def test_non_tensorflow_backend_is_refused(monkeypatch, small_model, digits_flat):
    """Another backend cannot be loaded beside TensorFlow in one process (Keras' numpy backend
    needs jax, which is not installed), so the backend name is what is replaced here."""
    (x, y), _ = digits_flat
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="KERAS_BACKEND=tensorflow.*'jax'"):
        HessianOperator(small_model, (x, y))


def test_numpy_data_with_cache_false_uses_all_batches(mlp, hessian_batch_flat, mlp_hessian):
    op = HessianOperator(mlp, hessian_batch_flat, batch_size=64, cache=False)
    v = random_vector(op.variables, seed=11)
    assert relative_error(flat(op.hvp(v)), mlp_hessian @ flat(v)) < 1e-5


@pytest.mark.parametrize("name", ["sparse_categorical_crossentropy", "mse"])
def test_loss_given_by_name(digits_flat, name):
    """A loss name means the batch mean of Keras' per-example function."""
    (x, y), _ = digits_flat
    x, y = x[:100], y[:100]
    keras.utils.set_random_seed(12)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(10), keras.layers.Softmax()]
    )
    targets = np.eye(10, dtype="float32")[y] if name == "mse" else y

    def reference(t, p):
        if name == "mse":
            return tf.reduce_mean(tf.square(t - p))
        return tf.reduce_mean(-tf.math.log(tf.gather(p, t, batch_dims=1)))

    op = HessianOperator(model, (x, targets), loss=name)
    v = random_vector(op.variables, seed=12)
    expected = exact_hessian(model, x, targets, loss_fn=reference) @ flat(v)
    assert relative_error(flat(op.hvp(v)), expected) < 1e-4


def test_multi_input_and_multi_output_lists(digits_flat):
    (x, y), _ = digits_flat
    x, y = x[:80], y[:80]
    keras.utils.set_random_seed(13)
    a, b = keras.Input((32,)), keras.Input((32,))
    hidden = keras.layers.Dense(6, activation="tanh")(keras.layers.Concatenate()([a, b]))
    classes, value = keras.layers.Dense(10)(hidden), keras.layers.Dense(1)(hidden)
    model = keras.Model([a, b], [classes, value])
    model.compile(loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.losses.MeanSquaredError()])
    targets = x.sum(axis=1, keepdims=True).astype("float32")
    op = HessianOperator(model, ([x[:, :32], x[:, 32:]], [y, targets]))

    def reference(t, p):
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(t[0], p[0], from_logits=True)) + tf.reduce_mean(
            tf.square(t[1] - p[1])
        )

    v = random_vector(op.variables, seed=13)
    expected = exact_hessian(model, (x[:, :32], x[:, 32:]), (y, targets), loss_fn=reference) @ flat(v)
    assert relative_error(flat(op.hvp(v)), expected) < 1e-5


def test_infinite_dataset_is_refused(small_model, digits_flat):
    (x, y), _ = digits_flat
    with pytest.raises(ValueError, match="infinite dataset"):
        HessianOperator(small_model, tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat())


def test_layer_blocks_of_nested_towers_with_equal_names(digits_flat):
    (x, y), _ = digits_flat
    keras.utils.set_random_seed(14)
    inputs = keras.Input((64,))

    def tower(name):
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(4, name="hidden")], name=name)

    merged = keras.layers.Concatenate()([tower("left")(inputs), tower("right")(inputs)])
    model = keras.Model(inputs, keras.layers.Dense(10, name="out")(merged))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    op = HessianOperator(model, (x[:60], y[:60]), blocks="layer")
    assert op.blocks == ["left/hidden", "right/hidden", "out"]
