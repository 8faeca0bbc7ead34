"""Smoke runs of the engine's benchmarks in their quick mode (the full runs are not tests)."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hvp_cost_quick(tmp_path):
    out = tmp_path / "hvp_cost.json"
    load("hvp_cost").run(quick=True, out=str(tmp_path))
    results = json.loads(out.read_text())
    assert set(results["hvp_ms"]) >= {"reverse_over_reverse", "forward_over_reverse"}
    assert results["default_method"] in ("reverse_over_reverse", "forward_over_reverse")
    assert results["method_agreement_relative"] < 1e-4  # the two routes compute the same product


@pytest.mark.parametrize("name", ["eigen_speed"])
def test_eigen_speed_quick(tmp_path, name):
    out = tmp_path / f"{name}.json"
    load(name).run(quick=True, out=str(tmp_path))
    report = json.loads(out.read_text())
    for entry in report["models"].values():
        lanczos = entry["solvers"]["lanczos"]
        assert lanczos["converged"] and lanczos["relative_error_max"] < 1e-3
        assert entry["solvers"]["arpack"]["relative_error_max"] < 1e-3
