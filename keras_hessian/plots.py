"""Figures of what keras-hessian measures (density, histories, sensitivity, loss landscape), as PNG.

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
    import io
    import pathlib

    from keras_hessian._files import write_atomically

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")  # a bare Figure saves through the Agg canvas
    write_atomically(pathlib.Path(os.path.abspath(path)), buffer.getvalue())  # the whole PNG or the old file
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


def plot_sensitivity(plan, path: str | os.PathLike, *, title: str | None = None) -> str:
    """Draw per-layer sensitivity (log bars) labelled with each layer's chosen precision, to PNG.

    Example:

    ```python
    plot_sensitivity(assign_precision(model, (x, y), budget=0.15), "sensitivity.png")
    ```

    Args:
        plan: a `PrecisionPlan` (pinned layers are drawn hatched, without a sensitivity), or a
            `{layer: LayerSensitivity or number}` mapping (no precisions then).
        path: the PNG file to write.
        title: the figure's title.

    Returns:
        The path written.
    """
    rows = getattr(plan, "layers", None)
    if rows is not None:
        names = list(rows)
        values = [rows[n].sensitivity for n in names]
        labels = [rows[n].precision for n in names]
    else:
        names = list(plan)
        values = [getattr(plan[n], "sensitivity", plan[n]) for n in names]
        labels = [""] * len(names)
    if not names:
        raise ValueError("plan must hold at least one layer. Received an empty plan.")
    known = [v for v in values if v is not None and v > 0]
    floor = min(known) / 10 if known else 1e-12
    fig = _figure(figsize=(max(5.0, 0.8 * len(names) + 2), 4))
    ax = fig.subplots()
    palette = {}
    for i, (value, label) in enumerate(zip(values, labels)):
        color = palette.setdefault(label, f"C{len(palette) % 10}")
        pinned = value is None
        ax.bar(i, floor if pinned else max(value, floor), color="white" if pinned else color, edgecolor=color,
               hatch="//" if pinned else None)
        ax.annotate(label + (" (pinned)" if pinned else ""), (i, floor if pinned else max(value, floor)),
                    ha="center", va="bottom", fontsize="small", rotation=90 if len(names) > 6 else 0)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize="small")
    ax.set_ylabel(f"sensitivity ({getattr(plan, 'metric', 'trace')} per weight)")
    ax.set_title(title or "Per-layer Hessian sensitivity and chosen precision")
    return _save(fig, path)


def plot_landscape(result, path: str | os.PathLike, *, title: str | None = None) -> str:
    """Draw a `LandscapeResult` to PNG: a curve for one direction, filled contours for two.

    Example:

    ```python
    plot_landscape(loss_landscape(model, (x, y), directions="top_eigenvector"), "landscape.png")
    ```

    Args:
        result: a `LandscapeResult` (from `keras_hessian.hessian.loss_landscape`).
        path: the PNG file to write.
        title: the figure's title (default: what the directions are).

    Returns:
        The path written.
    """
    losses = np.asarray(result.losses, dtype=float)
    offsets = np.asarray(result.offsets, dtype=float)
    if losses.ndim not in (1, 2) or losses.shape[0] != len(offsets):
        raise ValueError(
            f"result must hold losses of shape (steps,) or (steps, steps) for its {len(offsets)} offsets. "
            f"Received losses of shape {losses.shape}."
        )
    names = {"top_eigenvector": "top Hessian eigenvector", "random": "random direction", "vectors": "direction"}
    name = names.get(result.kind, "direction")
    eigenvalues = getattr(result, "eigenvalues", None)

    def label(axis: int) -> str:
        suffix = f" (lambda = {eigenvalues[axis]:.4g})" if eigenvalues is not None else ""
        return f"offset along {name} {axis + 1}{suffix}"

    fig = _figure(figsize=(6, 4.5 if losses.ndim == 2 else 4))
    ax = fig.subplots()
    if losses.ndim == 1:
        ax.plot(offsets, losses, marker="o", markersize=3)
        ax.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel(label(0))
        ax.set_ylabel("loss")
    else:
        # losses[i, j]: offsets[i] along direction 1 (x axis), offsets[j] along direction 2 (y axis).
        filled = ax.contourf(offsets, offsets, losses.T, levels=30, cmap="viridis")
        ax.contour(offsets, offsets, losses.T, levels=10, colors="white", linewidths=0.5)
        fig.colorbar(filled, ax=ax, label="loss")
        ax.plot([0.0], [0.0], marker="+", color="red", markersize=10)
        ax.set_xlabel(label(0))
        ax.set_ylabel(label(1))
    plural = "s" if losses.ndim == 2 else ""
    ax.set_title(title or f"Loss landscape along the {name}{plural}")
    return _save(fig, path)
