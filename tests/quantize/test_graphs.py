"""quantize_model on real graphs: keras.applications MobileNetV2, a functional transformer written with
operator syntax and keras.ops, a KerasHub BERT classifier (nested backbone, dict inputs), shared layers,
several inputs and outputs, subclassed models; and its report, checked against the models' own layers."""

from collections import Counter

import keras
import numpy as np
import pytest

from keras_hessian import architectures
from keras_hessian.data import load_digits_tokens
from keras_hessian.layers import registry
from keras_hessian.quantize import SCHEMES, QuantizeReport, quantize_model, recalibrate_batch_norm


def weights_of(model):
    return [np.array(w.numpy(), copy=True) for w in model.weights]


def assert_same_weights(model, before):
    after = weights_of(model)
    assert len(after) == len(before)
    assert all(np.array_equal(a, b) for a, b in zip(after, before))


def call(model, x):
    return keras.tree.map_structure(np.asarray, model(x, training=False))


@pytest.fixture(scope="module")
def transformer():
    keras.utils.set_random_seed(1)
    return architectures.transformer_classifier()


@pytest.fixture(scope="module")
def tokens():
    return load_digits_tokens()[1][0][:8]


@pytest.fixture(scope="module")
def bert():
    pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(2)
    return architectures.keras_hub_bert_classifier()


def check_quantized_copy(model, scheme, x, tmp_path, skip_first_last=True, save=True):
    """Builds, leaves the original bit-identical, carries the float weights, saves and reloads to the same outputs."""
    before = weights_of(model)
    reference = call(model, x)
    quantized = quantize_model(model, scheme, skip_first_last=skip_first_last, verbose=False)
    assert_same_weights(model, before)
    keras.tree.map_structure(np.testing.assert_array_equal, call(model, x), reference)
    report = quantized.quantize_report
    originals = {row.path: row for row in report.layers}
    for row in report.layers:
        new = _layer_at(quantized, row.path)
        old = _layer_at(model, row.path)
        assert new is not old
        if row.quantized and scheme not in ("bfloat16",):
            assert type(new) is registry.quantized_layer_class(scheme, old)
        elif not row.quantized:
            assert type(new) is type(old)
            if old.weights:  # carried: BatchNorm statistics, LayerNorm, Embedding, attention, custom layers
                for a, b in zip(new.get_weights(), old.get_weights()):
                    np.testing.assert_array_equal(a, b)
    assert len(originals) == len(report.layers)
    outputs = call(quantized, x)
    if save:
        path = tmp_path / f"{scheme}.keras"
        quantized.save(path)
        loaded = keras.models.load_model(path)
        keras.tree.map_structure(np.testing.assert_array_equal, call(loaded, x), outputs)
    return quantized, reference, outputs


def _layer_at(model, path):
    layer = model
    for name in path.split("/"):
        layer = layer.get_layer(name)
    return layer


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_on_the_transformer_with_operator_syntax(transformer, tokens, tmp_path, scheme):
    quantized, reference, outputs = check_quantized_copy(transformer, scheme, tokens, tmp_path)
    assert any(not isinstance(op, keras.layers.Layer) for op in quantized.operations)  # the `+` nodes
    if scheme == "float32":
        np.testing.assert_array_equal(outputs, reference)
    if scheme in registry.schemes():  # today 4 Dense + logits, first and last kept: 3
        quantizable = [layer for layer in transformer.layers if registry.quantized_layer_class(scheme, layer)]
        assert quantized.quantize_report.counts()["quantized"] == len(quantizable) - 2 >= 3


@pytest.mark.parametrize("scheme", ["ternary_residual", "integer", "bfloat16"])
def test_mobilenet_v2_schemes(mobilenet, images, tmp_path, scheme):
    # Saving is checked once here (the transformer saves under every scheme).
    quantized, reference, outputs = check_quantized_copy(mobilenet, scheme, images, tmp_path, save=scheme == "ternary_residual")
    if scheme == "integer":
        # Independent of the rebuild: int8 per-channel kernels hardly move the argmax.
        assert np.mean(outputs.argmax(-1) == reference.argmax(-1)) >= 0.75
    if scheme == "bfloat16":  # the precision rule: BatchNorm stays float32, depthwise convolutions compute in bf16
        policies = {type(layer).__name__: layer.dtype_policy.name for layer in quantized.layers}
        assert policies["BatchNormalization"] == "float32" and policies["DepthwiseConv2D"] == "mixed_bfloat16"


@pytest.mark.parametrize("scheme", ["integer", "bfloat16"])
def test_keras_hub_bert_nested_backbone_and_dict_inputs(bert, tokens, tmp_path, scheme):
    x = architectures.bert_inputs(tokens)
    quantized, _, _ = check_quantized_copy(bert, scheme, x, tmp_path, skip_first_last=False)
    backbone = quantized.get_layer("bert_backbone")
    assert isinstance(backbone, keras.Model) and backbone is not bert.get_layer("bert_backbone")
    report = quantized.quantize_report
    paths = {row.path for row in report.quantized}
    assert {"bert_backbone/pooled_dense", "logits"} <= paths
    if scheme == "integer":  # KerasHub's encoder blocks are quantized inside (hub_encoder.py)
        assert {"bert_backbone/transformer_layer_0", "bert_backbone/transformer_layer_1"} <= paths
        block = quantized.get_layer("bert_backbone").get_layer("transformer_layer_0")
        assert type(block).__name__ == "IntegerTransformerEncoder"
        assert type(block._feedforward_output_dense).__name__ == "IntegerDense"
        # What stays float says why: KerasHub's ReversibleEmbedding is an Embedding subclass.
        reasons = {row.path: row.reason for row in report.kept_float}
        assert "subclass of Embedding" in reasons["bert_backbone/token_embedding"]


def test_shared_layer_with_two_inputs_and_two_outputs_against_numpy():
    keras.utils.set_random_seed(3)
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    shared = keras.layers.Dense(5, name="shared")
    head = keras.layers.Dense(3, name="head")
    left, right = shared(a), shared(b)
    model = keras.Model([a, b], [head(left + right), keras.ops.tanh(right)])
    before = weights_of(model)
    quantized = quantize_model(model, "integer", skip_first_last=False, verbose=False)
    assert_same_weights(model, before)
    assert [layer.name for layer in quantized.layers] == [layer.name for layer in model.layers]
    new_shared = quantized.get_layer("shared")
    assert type(new_shared).__name__ == "IntegerDense" and len(quantized.weights) == len(model.weights)
    # Independent truth: symmetric per-output-channel int8, s_c = max|W[:, c]| / 127, in numpy.
    def int8(kernel):
        scale = np.abs(kernel).max(axis=0) / 127
        return np.clip(np.round(kernel / scale), -127, 127) * scale

    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(4, 6)).astype("float32"), rng.normal(size=(4, 6)).astype("float32")
    w, c = (v.numpy().astype(np.float64) for v in (shared.kernel, shared.bias))
    wh, ch = (v.numpy().astype(np.float64) for v in (head.kernel, head.bias))
    hidden_a, hidden_b = xa @ int8(w) + c, xb @ int8(w) + c
    expected = [(hidden_a + hidden_b) @ int8(wh) + ch, np.tanh(hidden_b)]
    for got, want in zip(quantized([xa, xb]), expected):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_nested_sequential_keeps_structure_and_plan_paths():
    keras.utils.set_random_seed(4)
    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="d"),
                              keras.layers.LayerNormalization(name="ln")], name="inner")
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(inner(inputs) * 2.0))
    quantized = quantize_model(model, {"inner/d": "binary"}, verbose=False)
    assert isinstance(quantized.get_layer("inner"), keras.Sequential)
    assert type(quantized.get_layer("inner").get_layer("d")).__name__ == "BinaryDense"
    rows = {row.path: row for row in quantized.quantize_report.layers}
    assert rows["inner/d"].quantized and rows["out"].reason.startswith("not named by the plan")
    assert rows["inner/ln"].reason.startswith("no quantized form")


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(x)


def test_subclassed_model_gets_an_error_that_says_what_to_do():
    model = Subclassed()
    model(np.zeros((1, 4), "float32"))
    before = weights_of(model)
    with pytest.raises(TypeError, match="subclassed.*functionally"):
        quantize_model(model, "binary")
    assert_same_weights(model, before)


def test_report_counts_match_the_model_layers_and_are_printed(mobilenet, transformer, capsys):
    scheme = "ternary_residual"
    quantized = quantize_model(mobilenet, scheme)
    printed = capsys.readouterr().out
    report = quantized.quantize_report
    assert isinstance(report, QuantizeReport)
    layers = [layer for layer in mobilenet.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert [row.path for row in report.layers] == [layer.name for layer in layers]
    # Truth from the model's own layer list and the registry: which types have a quantized form.
    quantizable = [layer for layer in layers if registry.quantized_layer_class(scheme, layer) is not None]
    with_weights = [layer for layer in layers if layer.weights]
    kept = Counter(type(layer).__name__ for layer in with_weights if layer not in quantizable[1:-1])
    assert report.counts() == {
        "quantized": len(quantizable) - 2,
        "kept_float": len(with_weights) - len(quantizable) + 2,
        "folded": 0,
        "no_weights": len(layers) - len(with_weights),
        "layers": len(layers),
    }
    assert Counter(row.layer_type for row in report.kept_float) == kept
    assert kept["BatchNormalization"] == 52
    for row in report.kept_float:
        if row.layer_type == "BatchNormalization":
            assert row.reason == f"no quantized form under {scheme!r}"
    head = f"quantized {len(quantizable) - 2} layers ({len(quantizable) - 2} ternary_residual), kept {sum(kept.values())}"
    assert head in printed.splitlines()[0]
    assert "52 BatchNormalization: no quantized form under 'ternary_residual'; fold them" in printed
    depthwise = kept.get("DepthwiseConv2D", 0)
    if depthwise:  # until a quantized DepthwiseConv2D registers itself, it is named with its reason
        assert f"{depthwise} DepthwiseConv2D: no quantized form" in printed
    assert "first or last quantizable layer" in printed
    table = repr(report)
    assert all(layer.name in table for layer in layers)
    quantize_model(transformer, "binary", verbose=False)
    assert capsys.readouterr().out == ""


def test_original_is_untouched_when_the_rebuild_fails_half_way(transformer, tokens, monkeypatch):
    # Registry copies, so the failing class registered here does not outlive the test.
    monkeypatch.setattr(registry, "_REGISTRY", {k: dict(v) for k, v in registry._REGISTRY.items()})
    monkeypatch.setattr(registry, "_SCHEME_OF", dict(registry._SCHEME_OF))
    base = registry.quantized_layer_class("integer", keras.layers.Dense)

    @registry.register_quantized_layer("fails_at_build", keras.layers.Dense)
    class FailsAtBuild(base):
        def build(self, input_shape):
            raise RuntimeError("no kernel today")

    before, reference, operations = weights_of(transformer), call(transformer, tokens), list(transformer.operations)
    with pytest.raises(RuntimeError, match="no kernel today"):
        quantize_model(transformer, "fails_at_build", verbose=False)
    assert_same_weights(transformer, before)
    assert transformer.operations == operations
    np.testing.assert_array_equal(call(transformer, tokens), reference)


# ---------------------------------------------------------------- LiteRT on trained real architectures
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _short_fit(model, x, y, epochs, learning_rate, batch_size=64):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=LOSS)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    # MobileNetV2's momentum 0.999 leaves the moving statistics near their start after a short fit.
    recalibrate_batch_norm(model, x)
    return model


def litert_logits(path, x):
    """Run the file's serving signature in the LiteRT interpreter (dict inputs by name)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    names = list(runner.get_input_details())
    inputs = x if isinstance(x, dict) else {names[0]: x}
    outputs = []
    for i in range(len(next(iter(inputs.values())))):
        feed = {}
        for name in names:
            key = next(k for k in inputs if name.endswith(k)) if name not in inputs else name
            feed[name] = inputs[key][i : i + 1]
        outputs.append(next(iter(runner(**feed).values())))
    return np.concatenate(outputs)


@pytest.fixture(scope="module")
def trained():
    """MobileNetV2 and the transformer after a short fit on their real data, with test inputs (built once)."""
    from keras_hessian.data import load_digits_rgb

    keras.utils.set_random_seed(11)
    (x, y), (xt, yt) = load_digits_rgb(32)
    mobilenet = _short_fit(architectures.mobilenet_v2(), x[:512], y[:512], epochs=2, learning_rate=3e-3)
    (s, sy), (st, sty) = load_digits_tokens()
    transformer = _short_fit(architectures.transformer_classifier(), s, sy, epochs=4, learning_rate=2e-3)
    return {"mobilenet_v2": (mobilenet, xt[:128], yt[:128]), "transformer": (transformer, st[:128], sty[:128])}


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """Per architecture: Keras logits, the float file, the ternary-residual model and file (fold for MobileNetV2)."""
    from keras_hessian.export import to_tflite

    found = {}
    for name, (model, x, y) in trained.items():
        fold = name == "mobilenet_v2"
        folder = tmp_path_factory.mktemp(name)
        float_file = to_tflite(model, folder / "float.tflite", mode="float32", fold_batch_norm=fold)
        quantized = quantize_model(model, "ternary_residual", fold_batch_norm=fold, verbose=False)
        ternary_file = to_tflite(quantized, folder / "ternary_residual.tflite")
        found[name] = (np.asarray(model(x, training=False)), float_file, quantized, ternary_file, x, y)
    return found


@pytest.mark.parametrize("name", ["mobilenet_v2", "transformer"])
def test_float_export_agrees_with_keras_in_litert(exported, name):
    reference, float_file, _, _, x, y = exported[name]
    assert np.mean(reference.argmax(-1) == y) >= 0.2  # trained: twice chance (0.1) or more
    assert np.mean(litert_logits(float_file, x).argmax(-1) == reference.argmax(-1)) >= 0.99


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            "mobilenet_v2",
            marks=pytest.mark.xfail(
                strict=True,
                reason="the deck's free alphas: the folded ternary-residual MobileNetV2 file agrees with Keras on "
                "89-93% of top-1 (0.36x of float; weight_only=True 93%: its block-wise alphas are rounded to one "
                "int8 grid per channel); the goal is met with grid_bits=4 (test below); "
                "benchmarks/results/litert_kernels.md",
            ),
        ),
        "transformer",
    ],
)
def test_ternary_residual_export_agrees_with_keras_in_litert(exported, name):
    _, float_file, quantized, ternary_file, x, _ = exported[name]
    keras_top1 = np.asarray(quantized(x, training=False)).argmax(-1)
    assert ternary_file.stat().st_size < float_file.stat().st_size
    assert np.mean(litert_logits(ternary_file, x).argmax(-1) == keras_top1) >= 0.99


def test_weight_only_integer_mobilenet_v2_computes_the_keras_logits(trained, tmp_path):
    # Integer levels are exact on the file's grid: with float compute LiteRT gives Keras' logits, where the
    # hybrid kernels' int8 activations move them (benchmarks/results/litert_kernels.md: 92% agreement).
    from keras_hessian.export import to_tflite

    model, x, _ = trained["mobilenet_v2"]
    quantized = quantize_model(model, "integer", fold_batch_norm=True, verbose=False)
    reference = np.asarray(quantized(x, training=False))
    path = to_tflite(quantized, tmp_path / "integer.tflite", weight_only=True)
    float_bytes = to_tflite(quantized, tmp_path / "float.tflite", mode="float32").stat().st_size
    logits = litert_logits(path, x)
    np.testing.assert_allclose(logits, reference, rtol=1e-3, atol=1e-4 * float(np.abs(reference).max()))
    assert np.mean(logits.argmax(-1) == reference.argmax(-1)) == 1.0
    assert path.stat().st_size < 0.4 * float_bytes


def test_weight_only_grid_ternary_residual_mobilenet_v2_meets_the_issue_goal(trained, exported, tmp_path):
    # Issue 13's goal (<= 0.25x of float at >= 99% top-1 agreement) with the alphas on one int4 grid per
    # channel (`grid_bits=4`; depthwise int8): the weight-only file holds them exactly, so LiteRT computes
    # Keras' logits. (With the last Dense float, as by default, the file is 0.251x: benchmarks/results.)
    from keras_hessian.export import to_tflite

    model, x, _ = trained["mobilenet_v2"]
    float_file = exported["mobilenet_v2"][1]
    spec = {"scheme": "ternary_residual", "grid_bits": 4}  # with the first and last layers quantized too
    quantized = quantize_model(model, spec, fold_batch_norm=True, skip_first_last=False, verbose=False)
    reference = np.asarray(quantized(x, training=False))
    path = to_tflite(quantized, tmp_path / "grid.tflite", weight_only=True)
    logits = litert_logits(path, x)
    np.testing.assert_allclose(logits, reference, rtol=1e-3, atol=1e-4 * float(np.abs(reference).max()))
    assert np.mean(logits.argmax(-1) == reference.argmax(-1)) >= 0.99
    assert path.stat().st_size <= 0.25 * float_file.stat().st_size


def test_keras_hub_bert_float_export_runs_in_litert(bert, tokens, tmp_path):
    from keras_hessian.export import to_tflite

    x = architectures.bert_inputs(tokens)
    float_file = to_tflite(bert, tmp_path / "bert.tflite", mode="float32")
    reference = np.asarray(bert(x, training=False)).argmax(-1)
    assert np.mean(litert_logits(float_file, x).argmax(-1) == reference) >= 0.99


@pytest.fixture(scope="module")
def bert_files(bert, tmp_path_factory):
    """32 digit-token rows, the BERT classifier's float file, and per scheme its quantized copy and "auto" file."""
    from keras_hessian.export import to_tflite

    folder = tmp_path_factory.mktemp("bert")
    x = architectures.bert_inputs(load_digits_tokens()[1][0][:32])
    quantized = {}
    for scheme in ("integer", "ternary_residual"):
        model = quantize_model(bert, scheme, skip_first_last=False, verbose=False)
        quantized[scheme] = (model, to_tflite(model, folder / f"{scheme}.tflite"))
    return x, to_tflite(bert, folder / "float.tflite", mode="float32"), quantized


def test_keras_hub_bert_litert_helpers_feed_dict_inputs_by_name(bert, bert_files):
    from keras_hessian.export import evaluate_tflite, parity_report, predict_tflite

    x, float_file, _ = bert_files
    independent = litert_logits(float_file, x)  # the test's own signature runner, one row at a time
    shuffled = {key: x[key] for key in reversed(list(x))}  # key order must not matter
    np.testing.assert_allclose(predict_tflite(float_file, shuffled), independent, atol=1e-6)
    np.testing.assert_allclose(independent, np.asarray(bert(x, training=False)), atol=1e-5)
    labels = np.asarray(bert(x, training=False)).argmax(-1)
    report = parity_report(bert, float_file, (x, labels))
    assert report["top1_agreement"] == 1.0 and report["keras_accuracy"] == 1.0 and report["num_examples"] == 32
    assert evaluate_tflite(float_file, (x, labels), latency_examples=3)["accuracy"] == 1.0
    with pytest.raises(ValueError, match="token_ids"):
        predict_tflite(float_file, {"token_ids": x["token_ids"]})
    with pytest.raises(ValueError, match="dict"):
        predict_tflite(float_file, x["token_ids"])


@pytest.mark.parametrize("scheme", ["integer", "ternary_residual"])
def test_keras_hub_bert_quantized_export_agrees_in_litert(bert_files, scheme):
    x, float_file, quantized = bert_files
    quantized, int_file = quantized[scheme]
    keras_logits = np.asarray(quantized(x, training=False))
    litert = litert_logits(int_file, x)
    assert int_file.stat().st_size < float_file.stat().st_size
    assert np.mean(litert.argmax(-1) == keras_logits.argmax(-1)) >= 0.99
    # int8 hybrid kernels round activations per row: a small error against the Keras logits' own range.
    assert np.abs(litert - keras_logits).max() <= 0.05 * np.abs(keras_logits).max()


def test_a_grouped_convolution_stays_float_and_the_rest_is_quantized():
    # A whole-model scheme on a ResNeXt-style graph: the grouped convolution has no quantized form.
    keras.utils.set_random_seed(4)
    inputs = keras.Input((8, 8, 4))
    h = keras.layers.Conv2D(8, 3, name="plain")(inputs)
    h = keras.layers.Conv2D(8, 3, groups=2, name="grouped")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(keras.layers.Flatten()(h)))
    quantized = quantize_model(model, "integer", skip_first_last=False, verbose=False)
    report = quantized.quantize_report
    assert {row.path for row in report.quantized} == {"plain", "head"}
    assert {row.path: row.reason for row in report.kept_float}["grouped"].startswith("grouped convolution")
    assert type(quantized.get_layer("grouped")) is keras.layers.Conv2D
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    assert np.asarray(quantized(x)).shape == (2, 3)
