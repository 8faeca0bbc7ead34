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


def test_vs_pyhessian_references_without_torch():
    """The two references vs_pyhessian.py computes itself, against independent ones (torch is not needed)."""
    import keras
    import numpy as np
    import scipy.stats

    from tests.conftest import exact_hessian

    module = load("vs_pyhessian")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(7), rng.standard_normal(5) + 1
    wa, wb = rng.random(7), rng.random(5)
    expected = scipy.stats.wasserstein_distance(a, b, wa, wb)
    np.testing.assert_allclose(module.wasserstein(a, wa, b, wb), expected, rtol=1e-10)

    # tr H = tr of the Gauss-Newton matrix for a ReLU / max-pool network: against the exact Hessian.
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(4),
    ])
    x = rng.standard_normal((40, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 4, 40)
    np.testing.assert_allclose(module.exact_trace(model, (x, y), chunk=16), np.trace(exact_hessian(model, x, y)), rtol=1e-4)
