"""`keras-hessian prune`: the saved model's zeros counted in its kernels, shrunk filters, the sparse TFLite file
read with the flatbuffer schema and run in LiteRT; every failure one line, exit 2, the user's files unchanged."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_hessian.cli import main

SPARSITY = 0.75


def _kernels(model) -> dict[str, np.ndarray]:
    return {layer.name: layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")}


def _sparse_tensors(path) -> list[str]:
    from tensorflow.lite.python import schema_py_generated as schema

    flatbuffer = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    return [t.name.decode() for t in flatbuffer.subgraphs[0].tensors if t.sparsity is not None]


def _litert(path, x) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # XNNPACK refuses sparse float32 FullyConnected weights: the builtin kernels run them.
    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("schedule", ["polynomial", "constant"])
def test_prune_saves_the_sparsity_and_a_sparse_tflite_file(mlp_keras, digits_npz, tmp_path, capsys, schedule):
    out, tflite = tmp_path / "pruned.keras", tmp_path / "pruned.tflite"
    before = mlp_keras.read_bytes()
    status = main(["prune", str(mlp_keras), "--data", str(digits_npz), "--sparsity", str(SPARSITY),
                   "--criterion", "magnitude", "--epochs", "2", "--schedule", schedule,
                   "--out", str(out), "--tflite", str(tflite)])
    printed = capsys.readouterr().out
    assert status == 0
    assert mlp_keras.read_bytes() == before  # the input model is untouched
    pruned = keras.models.load_model(out)
    original = keras.models.load_model(mlp_keras)
    for name, kernel in _kernels(pruned).items():
        # TFMOT's count: round(n * (1 - s)) weights kept per layer, the rest exactly zero.
        assert int(np.count_nonzero(kernel)) == round(kernel.size * (1 - SPARSITY)), name
        assert kernel.shape == _kernels(original)[name].shape
    assert "total" in printed and "0.750" in printed and "top1_agreement" in printed and "pruned model saved" in printed
    assert tflite.read_bytes()[4:8] == b"TFL3" and len(_sparse_tensors(tflite)) >= 1
    x = np.load(digits_npz)["x_test"].astype("float32")
    np.testing.assert_allclose(_litert(tflite, x), pruned.predict(x, verbose=0), atol=1e-5)


def test_filter_pruning_removes_units_and_keeps_the_classes(mlp_keras, digits_npz, tmp_path, capsys):
    out = tmp_path / "shrunk.keras"
    status = main(["prune", str(mlp_keras), "--data", str(digits_npz), "--sparsity", "0.5", "--granularity", "filter",
                   "--criterion", "obd", "--hessian-examples", "40", "--epochs", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0 and "shrink_filters" in printed
    shrunk = keras.models.load_model(out)
    assert [tuple(k.shape) for k in _kernels(shrunk).values()] == [(64, 16), (16, 8), (8, 10)]
    assert shrunk.count_params() == 64 * 16 + 16 + 16 * 8 + 8 + 8 * 10 + 10


def test_obd_once_without_fine_tuning_zeroes_half_and_keeps_the_rest_unchanged(mlp_keras, digits_npz, tmp_path, capsys):
    out = tmp_path / "once.keras"
    status = main(["prune", str(mlp_keras), "--data", str(digits_npz), "--sparsity", "0.5", "--epochs", "0",
                   "--allocation", "hessian", "--hessian-examples", "40", "--out", str(out)])
    assert status == 0 and "once, without fine-tuning" in capsys.readouterr().out
    pruned, original = keras.models.load_model(out), keras.models.load_model(mlp_keras)
    kept = sum(int(np.count_nonzero(k)) for k in _kernels(pruned).values())
    total = sum(k.size for k in _kernels(original).values())
    assert abs(kept - total / 2) <= len(_kernels(original))  # per-layer rounding
    for name, kernel in _kernels(pruned).items():  # no training: a kept weight is the original weight
        kept_mask = kernel != 0
        np.testing.assert_array_equal(kernel[kept_mask], _kernels(original)[name][kept_mask])


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-hessian prune: error: ") and err.count("\n") == 1, err
    return err


def test_bad_arguments_are_one_line_before_any_work(mlp_keras, digits_npz, tmp_path, capsys):
    base = ["prune", str(mlp_keras), "--data", str(digits_npz)]
    out = str(tmp_path / "p.keras")
    assert "--sparsity" in _error([*base, "--sparsity", "1.0", "--out", out], capsys)
    assert "--sparsity" in _error([*base, "--sparsity", "-0.1", "--out", out], capsys)
    assert "--epochs" in _error([*base, "--sparsity", "0.5", "--epochs", "-1", "--out", out], capsys)
    assert ".keras" in _error([*base, "--sparsity", "0.5", "--out", str(tmp_path / "p.h5")], capsys)
    assert "--out" in _error([*base, "--sparsity", "0.5", "--out", str(tmp_path / "nowhere" / "p.keras")], capsys)
    assert "same file" in _error([*base, "--sparsity", "0.5", "--out", out, "--tflite", out], capsys)
    before = mlp_keras.read_bytes()
    assert "input model" in _error([*base, "--sparsity", "0.5", "--out", str(mlp_keras)], capsys)
    assert mlp_keras.read_bytes() == before
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--sparsity", "0.5", "--criterion", "taylor", "--out", out])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_a_failure_leaves_existing_outputs_unchanged(mlp_keras, tmp_path, capsys):
    out, tflite = tmp_path / "keep.keras", tmp_path / "keep.tflite"
    out.write_bytes(b"old model")
    tflite.write_bytes(b"old file")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((8, 5), "float32"), y=np.zeros(8, "int64"))
    err = _error(["prune", str(mlp_keras), "--data", str(wrong), "--sparsity", "0.5", "--out", str(out),
                  "--tflite", str(tflite)], capsys)
    assert "do not fit the model's input" in err
    assert out.read_bytes() == b"old model" and tflite.read_bytes() == b"old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.keras", "keep.tflite", "wrong.npz"]
