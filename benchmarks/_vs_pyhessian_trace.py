"""The trace's accuracy over many seeds in `benchmarks/vs_pyhessian.py`: PyHessian's default run
against the engine's Hutch++ at fixed budgets.

The alternated rounds give each side three errors per task, too few to tell two estimators
apart (Hutchinson's samples z^T H z of a Hessian with a few large outlier eigenvalues are
heavy-tailed, so one run's error says little). Here each side runs `seeds` times, alternated seed
by seed, and the errors are summarized by their root mean square (what "equal or better
accuracy" means below), median, 90th percentile and mean (the bias); the cost by the mean time
and products (PyHessian stops adaptively, so its cost varies from seed to seed, and its mean is
the expected cost). The RMS ratio of each engine budget to PyHessian's comes with a bootstrap 90%
interval (both sides' seeds resampled independently); the matched budget is the fewest products,
of those tried, whose interval lies at or below 1, so "at least as accurate" is not a lucky draw.
"""

from __future__ import annotations

import time

import numpy as np

FIRST_SEED = 50_000
BOOTSTRAP = 4000


def trace_spread(op, torch_side, exact: float, seeds: int, budgets: list[int]) -> dict:
    """Run both sides `seeds` times (engine: every budget, tiny tol so it spends all of it)."""
    from keras_hessian.hessian.algorithms import hutchinson_trace

    runs: dict = {"pyhessian": [], **{f"engine {b}": [] for b in budgets}}
    for s in range(seeds):
        seed = FIRST_SEED + s
        peer = torch_side.run({"name": "trace", "seed": seed})
        runs["pyhessian"].append(
            {"error": (peer["value"] - exact) / exact, "seconds": peer["seconds"], "products": peer["products"]}
        )
        for budget in budgets:
            start, count0 = time.perf_counter(), op.hvp_count
            result = hutchinson_trace(op, max_iter=budget, tol=1e-9, seed=seed)
            runs[f"engine {budget}"].append(
                {
                    "error": (float(result.trace) - exact) / exact,
                    "seconds": time.perf_counter() - start,
                    "products": op.hvp_count - count0,
                }
            )
    return summarize(runs, budgets)


def summarize(runs: dict, budgets: list[int]) -> dict:
    """Rows, bootstrap RMS ratios and the matched budget from the per-seed runs (also used to
    rebuild the table from a stored json)."""
    rng = np.random.default_rng(0)
    peer = np.array([e["error"] for e in runs["pyhessian"]])
    peer_boot = _bootstrap_rms(peer, rng)
    rows = {}
    for name, entries in runs.items():
        errors = np.array([e["error"] for e in entries])
        rows[name] = {
            "products": float(np.mean([e["products"] for e in entries])),
            "mean_s": float(np.mean([e["seconds"] for e in entries])),
            "median_s": float(np.median([e["seconds"] for e in entries])),
            "rms_error": float(np.sqrt(np.mean(errors**2))),
            "median_abs_error": float(np.median(np.abs(errors))),
            "p90_abs_error": float(np.quantile(np.abs(errors), 0.9)),
            "bias": float(np.mean(errors)),
        }
        if name != "pyhessian":
            ratios = _bootstrap_rms(errors, rng) / peer_boot
            rows[name]["rms_ratio"] = rows[name]["rms_error"] / rows["pyhessian"]["rms_error"]
            rows[name]["rms_ratio_90"] = [float(np.quantile(ratios, 0.05)), float(np.quantile(ratios, 0.95))]
    out = {"seeds": len(peer), "budgets": list(budgets), "rows": rows, "runs": runs}
    matched = [b for b in sorted(budgets) if rows[f"engine {b}"]["rms_ratio_90"][1] <= 1.0]
    if matched:
        out["matched_budget"] = matched[0]
        out["matched_ratio"] = rows[f"engine {matched[0]}"]["mean_s"] / rows["pyhessian"]["mean_s"]
    return out


def _bootstrap_rms(errors: np.ndarray, rng) -> np.ndarray:
    picks = rng.integers(0, len(errors), size=(BOOTSTRAP, len(errors)))
    return np.sqrt(np.mean(errors[picks] ** 2, axis=1))


def spread_markdown(spread: dict) -> list[str]:
    lines = [
        "",
        (
            f"## Trace accuracy over {spread['seeds']} seeds (each side alternated seed by seed; errors relative to "
            "the exact trace)"
        ),
        "",
        (
            "| estimator | mean products | mean s | s / PyHessian's | RMS error | RMS / PyHessian's (90% bootstrap) "
            "| median error | 90th pct. error | bias |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    py = spread["rows"]["pyhessian"]
    for name, row in spread["rows"].items():
        label = "PyHessian defaults (Hutchinson)" if name == "pyhessian" else f"engine Hutch++, {name.split()[1]} products"
        ratio = "1" if name == "pyhessian" else "{:.2f} ({:.2f}-{:.2f})".format(row["rms_ratio"], *row["rms_ratio_90"])
        lines.append(
            f"| {label} | {row['products']:.1f} | {row['mean_s']:.2f} | {row['mean_s'] / py['mean_s']:.2f}x "
            f"| {row['rms_error']:.3f} | {ratio} | {row['median_abs_error']:.3f} | {row['p90_abs_error']:.3f} "
            f"| {row['bias']:+.3f} |"
        )
    lines.append("")
    if "matched_budget" in spread:
        lines.append(
            f"The fewest engine products tried whose RMS error is at most PyHessian's default one (RMS "
            f"{py['rms_error']:.3f}) with the bootstrap interval's upper end at or below 1: "
            f"{spread['matched_budget']}, in {spread['matched_ratio']:.2f}x PyHessian's mean time. The engine's "
            "budgets are fixed; PyHessian's products vary from seed to seed (its mean is its expected cost)."
        )
    else:
        lines.append("No engine budget tried is at least as accurate as PyHessian's defaults beyond the bootstrap's doubt.")
    return lines
