"""`keras-hessian export` end to end."""

from __future__ import annotations

import numpy as np


def test_cli_export_prints_the_parity_report(float_model, tmp_path, capsys):
    from keras_hessian import cli

    model_path = tmp_path / "model.keras"
    float_model.save(model_path)
    out = tmp_path / "out.tflite"
    code = cli.main(["export", str(model_path), str(out), "--mode", "int8", "--data", "digits"])
    printed = capsys.readouterr().out
    assert code == 0
    assert out.is_file()
    agreement = float(next(line for line in printed.splitlines() if "top1_agreement" in line).split()[1])
    assert agreement >= 0.99
    assert "max_abs_logit_diff" in printed


def test_cli_export_reports_bad_input_without_a_file(float_model, tmp_path, capsys):
    from keras_hessian import cli

    model_path = tmp_path / "model.keras"
    float_model.save(model_path)
    out = tmp_path / "out.tflite"
    code = cli.main(["export", str(model_path), str(out), "--mode", "int8"])
    assert code == 2
    assert "--data" in capsys.readouterr().err
    assert not out.exists()


def test_cli_exports_a_saved_quantized_model(quantized_models, tmp_path, capsys):
    from keras_hessian import cli

    model_path = tmp_path / "binary.keras"
    quantized_models["binary"].save(model_path)
    out = tmp_path / "binary.tflite"
    assert cli.main(["export", str(model_path), str(out), "--data", "digits"]) == 0
    printed = capsys.readouterr().out
    agreement = float(next(line for line in printed.splitlines() if "top1_agreement" in line).split()[1])
    assert agreement >= 0.99


def test_cli_export_keeps_an_existing_file_when_the_parity_report_fails(float_model, tmp_path, capsys):
    from keras_hessian import cli

    model_path = tmp_path / "model.keras"
    float_model.save(model_path)
    out = tmp_path / "out.tflite"
    previous = b"previous export " * 1000
    out.write_bytes(previous)
    data = tmp_path / "wrong.npz"  # 7 features: cannot be shaped for the (8, 8, 1) input
    np.savez(data, x=np.zeros((20, 7), "float32"), y=np.zeros(20, "int64"))
    code = cli.main(["export", str(model_path), str(out), "--mode", "float32", "--data", str(data)])
    assert code == 2
    assert "(20, 7)" in capsys.readouterr().err
    assert out.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "out.tflite", "wrong.npz"]
