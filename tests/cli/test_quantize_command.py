"""`keras-hessian quantize`: plan table, plan JSON, picture, export with parity; errors in one line."""

from __future__ import annotations

import json

from keras_hessian.cli import main
from keras_hessian.hawq import PrecisionPlan


def test_quantize_plans_exports_and_writes_its_files(mlp_keras, digits_npz, tmp_path, capsys):
    out, plan_path, png = tmp_path / "q.tflite", tmp_path / "plan.json", tmp_path / "s.png"
    status = main(["quantize", str(mlp_keras), "--data", str(digits_npz), "--budget", "0.3", "--out", str(out),
                   "--plan-out", str(plan_path), "--plot", str(png), "--hessian-examples", "40",
                   "--fine-tune-epochs", "1", "--no-pin"])
    printed = capsys.readouterr().out
    assert status == 0
    plan = PrecisionPlan.load(plan_path)
    assert set(plan.precisions) == {"hidden", "middle", "logits"} and "float32" not in plan.precisions.values()
    assert plan.predicted_bytes <= 0.3 * plan.float32_bytes
    assert f"{plan.predicted_bytes:,} bytes" in printed and "top1_agreement" in printed
    assert out.read_bytes()[4:8] == b"TFL3" and png.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(plan_path.read_text())["format"].startswith("keras-hessian/precision-plan")
    # quantize_model's report: what the plan quantized (all three layers, --no-pin) and what stayed float.
    assert "(per-layer plan): quantized 3 layers" in printed


def test_a_budget_below_the_minimum_is_one_line_and_keeps_the_old_file(mlp_keras, digits_npz, tmp_path, capsys):
    out = tmp_path / "keep.tflite"
    out.write_bytes(b"old")
    status = main(["quantize", str(mlp_keras), "--data", str(digits_npz), "--budget", "0.001", "--out", str(out),
                   "--hessian-examples", "20"])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1 and "smallest reachable size" in error[0]
    assert out.read_bytes() == b"old"


def test_bad_candidates_and_output_paths_fail_before_any_work(mlp_keras, digits_npz, tmp_path, capsys):
    assert main(["quantize", str(mlp_keras), "--data", "digits", "--budget", "0.2", "--out", str(tmp_path / "x.tflite"),
                 "--candidates", "int8,int3"]) == 2
    assert "--candidates" in capsys.readouterr().err
    assert main(["quantize", str(mlp_keras), "--data", "digits", "--budget", "0.2",
                 "--out", str(tmp_path / "nowhere" / "x.tflite")]) == 2
    assert "--out" in capsys.readouterr().err
