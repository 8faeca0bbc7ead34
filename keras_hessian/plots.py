"""Figures of what keras-hessian measures, written as PNG with matplotlib.

Figures are built with matplotlib's object-oriented API (`matplotlib.figure.Figure`, saved through
its own Agg canvas), never through pyplot: drawing a figure neither switches the user's backend
(a notebook's inline one, say) nor leaves a figure open in pyplot's registry, and it works
without a display.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np


def _figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"path: the directory {directory!r} does not exist. Received path={path!r}.")
    fig.savefig(path, dpi=120, bbox_inches="tight")  # a bare Figure saves through the Agg canvas
    return path


def plot_density(result, path: str | os.PathLike, *, log_scale: bool = True, title: str | None = None) -> str:
    """Draw a `DensityResult` (eigenvalue density, log scale by default as in PyHessian) to PNG.

    Example:

    ```python
    plot_density(spectral_density(op, seed=0), "density.png")
    ```

    Args:
        result: a `DensityResult`, or a `{block_name: DensityResult}` dict (one curve each).
        path: the PNG file to write.
        log_scale: logarithmic density axis (the bulk near zero dwarfs the outliers otherwise).
        title: the figure's title.

    Returns:
        The path written.
    """
    fig = _figure(figsize=(6, 4))
    ax = fig.subplots()
    results = result if isinstance(result, Mapping) else {"model": result}
    for name, res in results.items():
        density = np.maximum(res.density, 1e-12) if log_scale else res.density
        ax.plot(res.grid, density, label=name)
    if log_scale:
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-6)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(title or "Hessian spectral density (SLQ)")
    if len(results) > 1:
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_history(series: Mapping[str, Sequence[float]], path: str | os.PathLike, *, title: str | None = None) -> str:
    """Draw per-epoch series (e.g. `history.history` keys) as stacked panels, to PNG.

    Args:
        series: `{name: values per epoch}`; NaN values (epochs not measured) are skipped.
        path: the PNG file to write.
        title: the figure's title.

    Returns:
        The path written.
    """
    if not series:
        raise ValueError("series must hold at least one named sequence. Received an empty mapping.")
    fig = _figure(figsize=(6, 2.2 * len(series)))
    axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)
    for ax, (name, values) in zip(axes[:, 0], series.items()):
        values = np.asarray(values, dtype=float)
        epochs = np.arange(len(values))
        keep = np.isfinite(values)
        ax.plot(epochs[keep], values[keep], marker="o")
        ax.set_ylabel(name, fontsize="small")
    axes[-1, 0].set_xlabel("epoch")
    if title:
        axes[0, 0].set_title(title)
    return _save(fig, path)
