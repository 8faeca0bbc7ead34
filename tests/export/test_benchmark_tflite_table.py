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


def test_litert_kernels_quick_mode(tmp_path):
    # benchmarks/litert_kernels.py --quick: the transformer, binary and int4 (the grid's plan); the weight-only file computes the
    # Keras model's logits (float compute of exact levels), the hybrid file only approximately.
    import importlib.util
    import json
    import pathlib

    script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "litert_kernels.py"
    spec = importlib.util.spec_from_file_location("litert_kernels", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.run(quick=True, out=str(tmp_path))
    rows = json.loads((tmp_path / "litert_kernels.json").read_text())["architectures"]["transformer_classifier"]
    storages = ("hybrid", "weight_only")
    assert set(rows) == {"float32"} | {f"{s} {t}" for s in ("binary", "integer int4") for t in storages}
    for scheme in ("binary", "integer int4"):  # exact levels: the weight-only file computes Keras' logits
        exact = rows[f"{scheme} weight_only"]
        assert exact["litert_agreement"] == 1.0 and exact["max_abs_logit_diff"] < 1e-4
        assert rows[f"{scheme} hybrid"]["max_abs_logit_diff"] > 10 * exact["max_abs_logit_diff"]
        assert exact["size_ratio"] < 1.0
    assert "| transformer_classifier | binary weight_only |" in (tmp_path / "litert_kernels.md").read_text()
