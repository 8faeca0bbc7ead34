"""plots: PNGs written without touching the user's matplotlib backend or pyplot state."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_hessian.plots import plot_history, plot_sensitivity


def test_plotting_leaves_the_matplotlib_backend_alone(tmp_path):
    # A notebook user has an interactive backend selected; drawing our figures must not switch it.
    script = textwrap.dedent(
        f"""
        import matplotlib
        matplotlib.use("svg")  # stands in for a notebook's inline backend: any non-Agg choice
        import matplotlib.pyplot as plt
        before = matplotlib.get_backend()
        from keras_hessian.plots import plot_history
        plot_history({{"loss": [1.0, 0.5, 0.25]}}, {str(tmp_path / "h.png")!r})
        print(before, matplotlib.get_backend(), len(plt.get_fignums()))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, after, open_figures = out.stdout.split()
    assert before == after == "svg"
    assert open_figures == "0"  # no figure left in pyplot's registry either


def test_history_png_is_a_png(tmp_path):
    path = plot_history({"loss": [1.0, np.nan, 0.25], "batch_size": [128, 256, 512]}, tmp_path / "h.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        plot_history({"loss": [1.0]}, tmp_path / "nowhere" / "h.png")


def test_sensitivity_png_from_a_plan(tmp_path):
    from keras_hessian.hawq.precision_plan import LayerChoice, PrecisionPlan

    rows = {
        "conv": LayerChoice("conv", 144, None, "float32", "float32", {"float32": {"bytes": 640}}),
        "dense": LayerChoice("dense", 4096, 0.02, "int4", {"scheme": "integer", "bits": 4}, {"int4": {"bytes": 2300}}),
        "logits": LayerChoice("logits", 320, 1.5, "int8", {"scheme": "integer", "bits": 8}, {"int8": {"bytes": 400}}),
    }
    plan = PrecisionPlan(layers=rows, budget_bytes=4000.0, float32_bytes=18240, metric="trace")
    path = plot_sensitivity(plan, tmp_path / "s.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="at least one layer"):
        plot_sensitivity({}, tmp_path / "e.png")


@pytest.mark.parametrize("dims", [1, 2])
def test_plot_landscape_writes_a_png(tmp_path, dims):
    from keras_hessian.hessian import LandscapeResult
    from keras_hessian.plots import plot_landscape

    offsets = np.linspace(-1, 1, 5)
    grid = offsets**2 if dims == 1 else offsets[:, None] ** 2 + 2 * offsets[None, :] ** 2
    result = LandscapeResult(offsets=offsets, losses=grid, directions=[], kind="random", normalize="filter")
    path = plot_landscape(result, tmp_path / f"landscape{dims}.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="losses"):
        bad = LandscapeResult(offsets=offsets, losses=np.zeros(3), directions=[], kind="random", normalize=None)
        plot_landscape(bad, tmp_path / "bad.png")
