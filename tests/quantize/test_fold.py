"""fold_batch_norm: the folded model computes what the unfolded one computes in inference mode (1e-5),
on MobileNetV2 and on small models; what must not fold stays; quantize_model and to_tflite fold on request."""

import keras
import numpy as np
import pytest

from keras_hessian.export import predict_tflite, to_tflite
from keras_hessian.quantize import fold_batch_norm, quantize_model
from tests.quantize.conftest import with_random_batch_norm_statistics


def weights_of(model):
    return [np.array(w.numpy(), copy=True) for w in model.weights]


def assert_same_weights(model, before):
    assert all(np.array_equal(a, b) for a, b in zip(weights_of(model), before))


def norms(model):
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def assert_close(folded, reference):
    scale = max(1.0, float(np.abs(reference).max()))
    np.testing.assert_allclose(np.asarray(folded), np.asarray(reference), rtol=0, atol=1e-5 * scale)


def test_mobilenet_v2_folds_every_batch_norm_and_computes_the_same(mobilenet, images):
    before = weights_of(mobilenet)
    reference = np.asarray(mobilenet(images, training=False))
    folded = fold_batch_norm(mobilenet)
    assert_same_weights(mobilenet, before)
    assert len(norms(mobilenet)) == 52 and norms(folded) == []
    assert len(folded.layers) == len(mobilenet.layers) - 52
    assert_close(folded(images, training=False), reference)
    assert np.abs(reference).max() > 1e-2  # the random statistics make the fold visible


def conv_bn_relu_sequential():
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(4, 3, use_bias=False, name="conv"),
            keras.layers.BatchNormalization(name="bn_conv"),
            keras.layers.ReLU(6.0),
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise"),
            keras.layers.BatchNormalization(name="bn_depthwise", center=False),
            keras.layers.Flatten(),
            keras.layers.Dense(6, name="dense"),
            keras.layers.BatchNormalization(name="bn_dense", scale=False, epsilon=0.1),
            keras.layers.Dense(3, name="out"),
        ]
    )
    return with_random_batch_norm_statistics(model, seed=1)


def test_small_conv_bn_relu_model_folds_exactly():
    model = conv_bn_relu_sequential()
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 2)).astype("float32")
    before = weights_of(model)
    folded = fold_batch_norm(model)
    assert_same_weights(model, before)
    assert isinstance(folded, keras.Sequential) and norms(folded) == []
    assert folded.get_layer("conv").use_bias and folded.get_layer("depthwise").use_bias
    assert_close(folded(x), model(x, training=False))
    # In training mode the BatchNorms would use batch statistics: the fold is for inference only.
    assert not np.allclose(np.asarray(model(x, training=True)), np.asarray(folded(x)), atol=1e-3)


def test_what_must_not_fold_stays_and_nested_models_fold():
    keras.utils.set_random_seed(6)
    inner = keras.Sequential(
        [keras.Input((6, 6, 4)), keras.layers.Conv2D(4, 1, name="inner_conv"),
         keras.layers.BatchNormalization(name="inner_bn")], name="inner")
    inputs = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(4, 1, activation="relu", name="relu_conv")(inputs)
    a = keras.layers.BatchNormalization(name="after_relu")(a)               # nonlinear in between
    b = keras.layers.Conv2D(4, 1, name="two_consumers")(inputs)
    c = keras.layers.BatchNormalization(name="after_two")(b) + b             # conv output used twice
    d = keras.layers.Conv2D(6, 1, name="wrong_axis_conv")(inputs)
    d = keras.layers.BatchNormalization(axis=1, name="wrong_axis")(d)        # normalizes a spatial axis
    e = keras.layers.Conv2D(4, 1, name="train_conv")(inputs)
    e = keras.layers.BatchNormalization(name="always_training")(e, training=True)
    f = inner(keras.layers.Conv2D(4, 1, name="folded_conv")(inputs))
    model = keras.Model(inputs, [a, c, d, e, keras.layers.BatchNormalization(name="outer_bn")(f)])
    with_random_batch_norm_statistics(model, seed=2)
    with_random_batch_norm_statistics(inner, seed=3)
    x = np.random.default_rng(1).normal(size=(8, 6, 6, 3)).astype("float32")
    folded = fold_batch_norm(model)
    assert sorted(norms(folded)) == ["after_relu", "after_two", "always_training", "outer_bn", "wrong_axis"]
    assert norms(folded.get_layer("inner")) == []
    for got, want in zip(folded(x, training=False), model(x, training=False)):
        assert_close(got, want)


def test_quantize_model_folds_first_and_reports_it(mobilenet, images, capsys):
    folded_float = quantize_model(mobilenet, "float32", fold_batch_norm=True, verbose=False)
    assert_close(folded_float(images, training=False), mobilenet(images, training=False))
    quantized = quantize_model(mobilenet, "ternary_residual", fold_batch_norm=True)
    printed = capsys.readouterr().out
    report = quantized.quantize_report
    assert len(report.folded) == 52 and norms(quantized) == []
    assert "folded 52 BatchNormalization" in printed.splitlines()[0]
    assert "BatchNormalization" not in {row.layer_type for row in report.kept_float}
    rows = {row.path: row for row in report.layers}
    assert rows["bn_Conv1"].reason == "folded into Conv1" and rows["bn_Conv1"].parameters == 4 * 16
    # The latent kernel of a quantized layer is the folded kernel.
    reference = fold_batch_norm(mobilenet)
    np.testing.assert_array_equal(quantized.get_layer("Conv_1").kernel.numpy(), reference.get_layer("Conv_1").kernel.numpy())


def test_to_tflite_folds_on_request(tmp_path):
    model = conv_bn_relu_sequential()
    x = np.random.default_rng(2).normal(size=(16, 8, 8, 2)).astype("float32")
    before = weights_of(model)
    path = to_tflite(model, tmp_path / "folded.tflite", mode="float32", fold_batch_norm=True)
    assert_same_weights(model, before)
    assert_close(predict_tflite(path, x), model(x, training=False))
    with pytest.raises(ValueError, match="fold_batch_norm"):
        to_tflite(model, tmp_path / "x.tflite", fold_batch_norm="yes")


def test_subclassed_and_unbuilt_models_are_refused():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(TypeError, match="subclassed"):
        fold_batch_norm(model)
    with pytest.raises(ValueError, match="built"):
        fold_batch_norm(keras.Sequential([keras.layers.Dense(2)]))


def test_recalibrate_batch_norm_sets_the_statistics_of_the_inputs_and_keeps_the_rest():
    from keras_hessian.quantize import recalibrate_batch_norm

    keras.utils.set_random_seed(5)
    inputs = keras.Input((6, 6, 2))
    hidden = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.999, name="bn")(hidden))
    x = np.random.default_rng(0).normal(2.0, 3.0, (40, 6, 6, 2)).astype("float32")
    kernel = model.get_layer("conv").kernel.numpy().copy()
    recalibrate_batch_norm(model, x)
    features = keras.Model(inputs, hidden)(x).numpy().reshape(-1, 3)  # what the BatchNorm saw, computed apart
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), features.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), features.var(axis=0), rtol=1e-3)
    assert bn.momentum == 0.999 and np.array_equal(model.get_layer("conv").kernel.numpy(), kernel)
    with pytest.raises(ValueError, match="x must be"):
        recalibrate_batch_norm(model, np.zeros((0, 6, 6, 2), "float32"))


def test_recalibrate_reaches_a_frozen_batch_norm_and_leaves_it_frozen():
    from keras_hessian.quantize import recalibrate_batch_norm

    keras.utils.set_random_seed(6)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(4, name="dense")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(hidden))
    model.get_layer("bn").trainable = False  # a frozen base model, as in fine-tuning
    x = np.random.default_rng(1).normal(1.0, 2.0, (64, 5)).astype("float32")
    recalibrate_batch_norm(model, x)
    features = keras.Model(inputs, hidden)(x).numpy()
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), features.mean(axis=0), rtol=1e-4, atol=1e-5)
    assert bn.trainable is False


def test_a_layer_shared_with_a_nested_model_is_not_folded():
    # The conv and its BatchNorm are called inside `inner` and again in the parent graph: folding the
    # BatchNorm into the shared conv's kernel would change the parent's second call.
    keras.utils.set_random_seed(7)
    conv = keras.layers.Conv2D(3, 3, padding="same", name="shared_conv")
    norm = keras.layers.BatchNormalization(name="shared_bn")
    inner_in = keras.Input((6, 6, 2))
    inner = keras.Model(inner_in, norm(conv(inner_in)), name="inner")
    outer_in = keras.Input((6, 6, 2))
    model = keras.Model(outer_in, keras.layers.Add()([inner(outer_in), conv(outer_in)]))
    with_random_batch_norm_statistics(inner)
    x = np.random.default_rng(2).normal(size=(4, 6, 6, 2)).astype("float32")
    folded = fold_batch_norm(model)
    assert_close(folded(x, training=False), model(x, training=False))
    assert "shared_bn" in norms(folded.get_layer("inner"))


def test_a_lora_dense_is_not_folded():
    keras.utils.set_random_seed(8)
    inputs = keras.Input((5,))
    dense = keras.layers.Dense(4, name="dense")
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(dense(inputs)))
    dense.enable_lora(2)
    with_random_batch_norm_statistics(model)
    x = np.random.default_rng(3).normal(size=(8, 5)).astype("float32")
    folded = fold_batch_norm(model)
    assert "bn" in norms(folded)
    assert_close(folded(x, training=False), model(x, training=False))


def test_auto_export_says_when_the_converter_fused_a_batch_norm_into_a_quantized_kernel(tmp_path):
    # Unfolded, the converter multiplies the BatchNorm into the quantized conv's kernel: no filter of the
    # file holds the planned levels, so that kernel stays float32. The export says so; folded, it is stored.
    import warnings

    from tests.export.test_per_layer_storage import FLOAT32, INT8, stored_tensors

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, name="c1")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(16, 3, name="c2")(h))
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(keras.layers.Flatten()(keras.layers.ReLU()(h))))
    with_random_batch_norm_statistics(model)
    unfolded = quantize_model(model, "integer", skip_first_last=False, verbose=False)
    with pytest.warns(UserWarning, match=r"\['c2'\].*fold_batch_norm=True"):
        path = to_tflite(unfolded, tmp_path / "unfolded.tflite")
    assert FLOAT32 in [entry[0] for entry in stored_tensors(path)[(16, 3, 3, 8)]]
    folded = quantize_model(model, "integer", skip_first_last=False, verbose=False, fold_batch_norm=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = to_tflite(folded, tmp_path / "folded.tflite")
    assert not [w for w in caught if "fold_batch_norm" in str(w.message)]
    assert INT8 in [entry[0] for entry in stored_tensors(path)[(16, 3, 3, 8)]]
