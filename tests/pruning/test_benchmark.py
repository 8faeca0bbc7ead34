"""The smoke run of benchmarks/pruning_table.py: every row of the grid, with the issue's fields."""

from __future__ import annotations

import importlib.util
import itertools
import json
import pathlib

FIELDS = {"dataset", "criterion", "allocation", "schedule", "granularity", "sparsity",
          "accuracy_mean", "accuracy_std", "tflite_bytes", "litert_ms"}


def test_quick_run_writes_every_row(tmp_path):
    script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "pruning_table.py"
    spec = importlib.util.spec_from_file_location("pruning_table", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.run(quick=True, results_dir=tmp_path)
    rows = json.loads((tmp_path / "pruning_table.json").read_text())["rows"]
    assert all(set(row) == FIELDS for row in rows)
    got = {(r["criterion"], r["allocation"], r["schedule"], r["granularity"], round(r["sparsity"], 2)) for r in rows}
    # The grid, spelled out: the sweep, allocation and schedule at 90%, filter at 50%, dense.
    expected = {(c, "uniform", "polynomial", "element", s)
                for c, s in itertools.product(("magnitude", "obd", "random"), (0.5, 0.8, 0.9, 0.95))}
    expected |= {(c, "hessian", "polynomial", "element", 0.9) for c in ("magnitude", "obd")}
    expected |= {(c, "uniform", "constant", "element", 0.9) for c in ("magnitude", "obd")}
    expected |= {(c, "uniform", "polynomial", "filter", 0.5) for c in ("magnitude", "obd")}
    expected |= {("none", "-", "-", "-", 0.0)}
    assert got == expected and len(rows) == len(expected)
    assert {r["dataset"] for r in rows} == {"digits"}
    for row in rows:
        assert 0.0 <= row["accuracy_mean"] <= 1.0 and row["accuracy_std"] >= 0.0
    measured = {(r["criterion"], r["granularity"], r["sparsity"]): r for r in rows if r["tflite_bytes"] is not None}
    dense, sparse = measured[("none", "-", 0.0)], measured[("magnitude", "element", 0.9)]
    shrunk = measured[("magnitude", "filter", 0.5)]
    assert sparse["tflite_bytes"] < dense["tflite_bytes"] and shrunk["tflite_bytes"] < dense["tflite_bytes"]
    assert all(r["litert_ms"] > 0 for r in measured.values())
    assert (tmp_path / "pruning_table.png").read_bytes()[:4] == b"\x89PNG"
    assert "| digits | obd | hessian |" in (tmp_path / "pruning_table.md").read_text()
