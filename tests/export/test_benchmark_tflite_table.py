"""The smoke run of benchmarks/tflite_table.py."""

from __future__ import annotations


def test_benchmark_quick_mode_writes_its_table(tmp_path):
    import importlib.util
    import pathlib

    script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "tflite_table.py"
    spec = importlib.util.spec_from_file_location("tflite_table", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.run(quick=True, results_dir=tmp_path)
    import json

    written = json.loads((tmp_path / "tflite_table.json").read_text())["rows"]
    assert len(written) == len(rows) >= 3
    assert set(module.COLUMNS) <= set(written[0])
    assert written[0]["model"] == "float32" and written[0]["size_ratio"] == 1.0
