"""`keras-hessian demo`: one --quick run (a session fixture) checked against independent truths.

The report's numbers are checked against demo.json, and demo.json against what can be
recomputed without the demo: the bytes of each .tflite file, its LiteRT accuracy from the
interpreter itself, the SGD iterations from the batch sizes (ceil(n / batch) per epoch), the
pruned model's zeros counted in its LiteRT tensors' weights. Bad input costs no training.
"""

from __future__ import annotations

import json
import math
import pathlib
import struct

import numpy as np
import pytest

from keras_hessian.cli import main

FILES = ("report.md", "demo.json", "history.png", "density.png", "sensitivity.png", "accuracy_vs_size.png",
         "fixed_batch.tflite", "absa.tflite", "hawq.tflite", "pruned.tflite", "pruned_quantized.tflite")


@pytest.fixture(scope="module")
def demo(quick_demo):
    out, printed = quick_demo
    return out, printed, json.loads((out / "demo.json").read_text())


def _litert_accuracy(path, x, y) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [len(x), *x.shape[1:]])
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x.astype(detail["dtype"]))
    interpreter.invoke()
    logits = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def test_writes_every_file_and_a_progress_line_per_stage(demo):
    out, printed, _ = demo
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # no staging directory left
    assert not list(out.parent.glob(".keras-hessian-demo-*"))
    for n, stage in enumerate("abcde", start=1):
        assert f"[{n}/6] ({stage}) " in printed and f"({stage}) done in " in printed
    assert "[6/6] report.md" in printed
    assert "Epoch 3/3" in printed  # Keras' own per-epoch lines


def test_every_png_is_a_valid_image(demo):
    from PIL import Image

    out, _, _ = demo
    for name in FILES:
        if name.endswith(".png"):
            data = (out / name).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", name
            width, height = struct.unpack(">II", data[16:24])
            with Image.open(out / name) as image:
                image.verify()
                assert image.size == (width, height) and width > 100 and height > 100


def _check_table(report_md: str, report: dict) -> None:
    lines = report_md.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| model |")))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[start + 2:] if line.startswith("|")]
    assert [r[0] for r in rows] == [row["label"] for row in report["table"].values()]
    for cells, row in zip(rows, report["table"].values()):
        keras_acc, litert_acc, iterations, size, ratio, latency = cells[1:]
        assert abs(float(keras_acc) - row["keras_accuracy"]) <= 5e-5
        assert abs(float(litert_acc) - row["litert_accuracy"]) <= 5e-5
        assert int(iterations.replace(",", "")) == row["iterations"]
        assert int(size.replace(",", "")) == row["file_bytes"]
        assert abs(float(ratio) - row["size_ratio"]) <= 5e-4
        assert abs(float(latency) - row["latency_ms"]) <= 5e-4 and row["latency_ms"] > 0


def test_the_committed_default_run_is_consistent():
    # benchmarks/results/demo/: the report of a default run, as the README shows it.
    results = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "demo"
    report = json.loads((results / "demo.json").read_text())
    assert not report["settings"]["quick"] and report["data"]["name"] == "digits"
    _check_table((results / "report.md").read_text(), report)


def test_report_table_is_demo_json(demo):
    out, _, report = demo
    _check_table((out / "report.md").read_text(), report)
    text = (out / "report.md").read_text()
    training = report["training"]
    assert f"the fixed batch of 32 took {training['baseline']['iterations']:,} SGD iterations" in text
    assert f"ABSA took {training['absa']['iterations']:,}" in text
    assert f"reached {report['pruning']['sparsity']:.3f} at {report['pruning']['accuracy']:.4f} accuracy" in text
    for name in ("history.png", "density.png", "sensitivity.png", "accuracy_vs_size.png"):
        assert f"]({name})" in text


def test_demo_json_against_the_files_and_closed_forms(demo):
    from keras_hessian.data import load_digits

    out, _, report = demo
    (x, _), (x_test, y_test) = load_digits()
    settings, table = report["settings"], report["table"]
    assert settings["quick"] and settings["epochs"] == 3 and report["data"]["train"] == len(x)
    for row in table.values():
        assert row["file_bytes"] == (out / row["file"]).stat().st_size
        assert row["litert_accuracy"] == _litert_accuracy(out / row["file"], x_test, y_test)
        assert row["size_ratio"] == row["file_bytes"] / table["absa"]["file_bytes"]
        assert row["top1_agreement"] >= 0.99
    # SGD iterations: ceil(n / batch) per epoch, at each epoch's batch size.
    absa = report["training"]["absa"]
    fixed = report["training"]["baseline"]
    assert fixed["iterations"] == 3 * math.ceil(len(x) / 32) == table["fixed_batch"]["iterations"]
    assert absa["iterations"] == sum(math.ceil(len(x) / b) for b in absa["history"]["batch_size"])
    fine_tune = math.ceil(len(x) / 64) * settings["fine_tune_epochs"]
    assert table["hawq"]["iterations"] == absa["iterations"] + fine_tune
    prune_steps = math.ceil(len(x) / 64) * settings["prune_epochs"]
    assert table["pruned"]["iterations"] == absa["iterations"] + prune_steps
    assert table["pruned_quantized"]["iterations"] == absa["iterations"] + prune_steps + fine_tune
    for method in ("baseline", "absa"):
        history = report["training"][method]["history"]
        assert all(len(history[k]) == 3 for k in ("batch_size", "learning_rate", "hessian/top_eigenvalue"))
    assert fixed["history"]["batch_size"] == [32.0] * 3
    # The spectrum has one row per layer with weights; HAWQ stays in its budget.
    assert [r["block"] for r in report["spectrum"]["layers"]] == ["conv_1", "conv_2", "dense", "logits"]
    hawq = report["hawq"]
    assert hawq["predicted_bytes"] <= settings["budget"] * hawq["float32_bytes"]
    assert set(hawq["precisions"]) == {"conv_1", "conv_2", "dense", "logits"}
    assert set(hawq["precisions"].values()) <= {"float32", *settings["candidates"]}
    assert table["hawq"]["file_bytes"] < table["absa"]["file_bytes"] / 4
    pruning = report["pruning"]
    assert abs(pruning["sparsity"] - settings["sparsity"]) < 0.01
    assert pruning["pruned_quantized"]["sparsity"] >= settings["sparsity"] - 0.01
    assert "binary" not in pruning["pruned_quantized"]["precisions"].values()
    assert set(report["seconds"]) == {"a", "b", "c", "d", "e", "total"}


def test_dataset_names_spelled_out_for_the_parser_match_the_library():
    from keras_hessian import demo
    from keras_hessian.cli import demo as demo_command

    assert demo_command.DATASETS == demo.DATASETS


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-hessian demo: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bad_arguments_are_one_line_before_any_work(tmp_path, capsys):
    assert "--data" in _error(["demo", "--data", "imagenet", "--out", str(tmp_path / "d")], capsys)
    assert "--epochs" in _error(["demo", "--epochs", "0", "--out", str(tmp_path / "d")], capsys)
    (tmp_path / "file").write_text("x")
    assert "not a directory" in _error(["demo", "--out", str(tmp_path / "file")], capsys)
    assert "not a directory" in _error(["demo", "--out", str(tmp_path / "file" / "d")], capsys)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if not os.access(locked, os.W_OK):  # root writes anywhere
            assert "not writable" in _error(["demo", "--out", str(locked / "d")], capsys)
    finally:
        locked.chmod(0o700)
    assert not (tmp_path / "d").exists() and not (locked / "d").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--sparsity", "0.5"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "unrecognized arguments: --sparsity" in err


def test_a_failing_stage_leaves_nothing_half_written(tmp_path, monkeypatch, capsys):
    import keras_hessian.demo.training

    def fail(*args, **kwargs):
        raise RuntimeError("stage (a) broke")

    monkeypatch.setattr(keras_hessian.demo.training, "train", fail)
    fresh = tmp_path / "new" / "out"
    assert "stage (a) broke" in _error(["demo", "--quick", "--out", str(fresh)], capsys)
    assert list(tmp_path.iterdir()) == []  # neither new/ nor new/out/ nor a staging directory
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "report.md").write_text("an earlier report")
    assert "stage (a) broke" in _error(["demo", "--quick", "--out", str(kept)], capsys)
    assert [p.name for p in kept.iterdir()] == ["report.md"] and (kept / "report.md").read_text() == "an earlier report"


@pytest.mark.parametrize("command", ["spectrum", "quantize", "prune", "export"])
def test_missing_or_corrupt_model_file(command, tmp_path, capsys):
    extra = {"spectrum": [], "quantize": ["--budget", "0.2", "--out", str(tmp_path / "q.tflite")],
             "prune": ["--sparsity", "0.5", "--out", str(tmp_path / "p.keras")],
             "export": [str(tmp_path / "e.tflite")]}[command]
    data = [] if command == "export" else ["--data", "digits"]
    (tmp_path / "corrupt.keras").write_bytes(b"PK\x03\x04 not a zip archive")
    for name, expected in (("missing.keras", "no such file"), ("corrupt.keras", "not a valid .keras file")):
        assert main([command, str(tmp_path / name), *data, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"keras-hessian {command}: error: ") and err.count("\n") == 1, err
        assert expected in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.keras"]


def test_other_sub_commands_refuse_unknown_flags_in_one_line(capsys):
    for argv in (["spectrum", "m.keras", "--data", "digits", "--quick"], ["train", "--budget", "0.1"],
                 ["export", "m.keras", "m.tflite", "--sparsity", "0.5"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1 and "unrecognized arguments" in err, err
