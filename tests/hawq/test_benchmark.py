"""Smoke run of benchmarks/hawq_vs_uniform.py in its quick mode (the full run is not a test)."""

from __future__ import annotations

import importlib.util
import json
import pathlib

BENCHMARK = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "hawq_vs_uniform.py"


def test_quick_mode_writes_every_plan_row(tmp_path):
    spec = importlib.util.spec_from_file_location("hawq_vs_uniform", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--quick", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "hawq_vs_uniform.json").read_text())["rows"]
    assert {r["plan"] for r in rows} == {"float32", *module.PLANS}
    keys = {"plan", "budget", "dataset", "size_bytes", "tflite_bytes", "accuracy_mean", "accuracy_std", "litert_accuracy"}
    assert all(keys <= set(r) for r in rows)
    # Every plan stays within its weight budget (a fraction of the float32 weight bytes).
    assert all(r["size_bytes"] <= r["budget"] * r["float32_bytes"] for r in rows if r["plan"] != "float32")
    assert (tmp_path / "hawq_vs_uniform.md").exists()
    assert (tmp_path / "hawq_vs_uniform.png").read_bytes()[:4] == b"\x89PNG"
