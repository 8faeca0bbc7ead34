"""to_tflite(sparse=True) of a pruned model: sparse tensors in the file (read with the flatbuffer
schema), a smaller file, the same outputs in the LiteRT interpreter."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_hessian.export import predict_tflite, to_tflite
from keras_hessian.pruning import apply_masks, compute_masks, shrink_filters, strip_pruning

X = np.random.default_rng(0).normal(size=(64, 64)).astype("float32")


def _pruned_mlp(sparsity: float = 0.9, granularity: str = "element") -> keras.Sequential:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(300, activation="relu"), keras.layers.Dense(100, activation="relu"), keras.layers.Dense(10)]
    )
    apply_masks(model, compute_masks(model, sparsity, granularity=granularity))
    return strip_pruning(model)


def _sparse_tensors(path) -> list[str]:
    from tensorflow.lite.python import schema_py_generated as schema

    buffer = path.read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buffer, 0))
    return [t.name.decode() for t in model.subgraphs[0].tensors if t.sparsity is not None]


def _run(path, x) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # XNNPACK (the default delegate) refuses sparse float32 FullyConnected weights.
    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_sparse_float32_file_is_smaller_with_the_same_outputs(tmp_path):
    model = _pruned_mlp()
    dense = to_tflite(model, tmp_path / "dense.tflite", mode="float32")
    sparse = to_tflite(model, tmp_path / "sparse.tflite", mode="float32", sparse=True)
    assert not _sparse_tensors(dense) and len(_sparse_tensors(sparse)) >= 2
    assert sparse.stat().st_size < 0.3 * dense.stat().st_size
    np.testing.assert_allclose(_run(sparse, X), model.predict(X, verbose=0), atol=1e-5)
    # The library's own LiteRT helpers run it too (XNNPACK refuses it; they fall back to builtins).
    np.testing.assert_allclose(predict_tflite(sparse, X), model.predict(X, verbose=0), atol=1e-5)


def test_sparse_int8_combines_pruning_and_quantization(tmp_path):
    model = _pruned_mlp()
    int8 = to_tflite(model, tmp_path / "int8.tflite", mode="int8", representative_data=X)
    both = to_tflite(model, tmp_path / "both.tflite", mode="int8", representative_data=X, sparse=True)
    assert len(_sparse_tensors(both)) >= 2 and both.stat().st_size < int8.stat().st_size
    np.testing.assert_allclose(_run(both, X), _run(int8, X), atol=1e-6)


def test_shrunk_model_converts_smaller(tmp_path):
    model = _pruned_mlp(0.5, "filter")
    shrunk = shrink_filters(model)
    full = to_tflite(model, tmp_path / "full.tflite", mode="float32")
    small = to_tflite(shrunk, tmp_path / "small.tflite", mode="float32")
    assert small.stat().st_size < 0.6 * full.stat().st_size
    np.testing.assert_allclose(_run(small, X), model.predict(X, verbose=0), atol=1e-5)


def test_sparse_needs_a_mode_that_supports_it(tmp_path):
    with pytest.raises(ValueError, match=r"sparse=True works with mode in \['float32', 'int8'\]. Received mode='float16'"):
        to_tflite(_pruned_mlp(), tmp_path / "x.tflite", mode="float16", sparse=True)
    assert not (tmp_path / "x.tflite").exists()
