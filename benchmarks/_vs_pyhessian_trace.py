"""The trace's accuracy over many seeds in `benchmarks/vs_pyhessian.py`: PyHessian's default run
against the engine's Hutch++ at PyHessian's products and at fewer.

The alternated rounds give each side three errors per task, too few to tell two estimators
apart: one round's error is one draw of a heavy-tailed distribution (Hutchinson's samples
z^T H z of a Hessian with a few large outlier eigenvalues are skewed: most runs fall short of
the trace, a few overshoot far). Here each side runs `seeds` times, alternated seed by seed, and
the errors are summarized by their root mean square (what "equal or better accuracy" means
below), median, 90th percentile and mean (the bias). The engine's matched budget is the fewest
products, of those tried, whose RMS error is at most PyHessian's.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

FIRST_SEED = 50_000


def trace_spread(op, torch_side, exact: float, seeds: int, budgets: list[int]) -> dict:
    from keras_hessian.hessian.algorithms import hutchinson_trace

    runs: dict = {"pyhessian": [], **{f"engine {b}": [] for b in budgets}}
    for s in range(seeds):
        seed = FIRST_SEED + s
        peer = torch_side.run({"name": "trace", "seed": seed})
        runs["pyhessian"].append({"error": (peer["value"] - exact) / exact, "seconds": peer["seconds"], "products": peer["products"]})
        for budget in budgets:
            start, count0 = time.perf_counter(), op.hvp_count
            result = hutchinson_trace(op, max_iter=budget, tol=1e-9, seed=seed)  # tiny tol: the whole budget
            runs[f"engine {budget}"].append(
                {
                    "error": (float(result.trace) - exact) / exact,
                    "seconds": time.perf_counter() - start,
                    "products": op.hvp_count - count0,
                }
            )
    rows = {name: _stats(entries) for name, entries in runs.items()}
    reference = rows["pyhessian"]["rms_error"]
    matched = [b for b in sorted(budgets) if rows[f"engine {b}"]["rms_error"] <= reference]
    out = {"seeds": seeds, "budgets": list(budgets), "rows": rows, "runs": runs}
    if matched:
        out["matched_budget"] = matched[0]
        out["matched_ratio"] = rows[f"engine {matched[0]}"]["median_s"] / rows["pyhessian"]["median_s"]
    return out


def _stats(entries: list[dict]) -> dict:
    errors = np.array([e["error"] for e in entries])
    return {
        "products": statistics.median(e["products"] for e in entries),
        "median_s": statistics.median(e["seconds"] for e in entries),
        "rms_error": float(np.sqrt(np.mean(errors**2))),
        "median_abs_error": float(np.median(np.abs(errors))),
        "p90_abs_error": float(np.quantile(np.abs(errors), 0.9)),
        "bias": float(np.mean(errors)),
    }


def spread_markdown(spread: dict) -> list[str]:
    lines = [
        "",
        f"## Trace accuracy over {spread['seeds']} seeds (each side alternated seed by seed; errors relative to the exact trace)",
        "",
        "| estimator | products | median s | s / PyHessian's | RMS error | median error | 90th pct. error | bias |",
        "|---|---|---|---|---|---|---|---|",
    ]
    py = spread["rows"]["pyhessian"]
    for name, row in spread["rows"].items():
        label = "PyHessian defaults (Hutchinson)" if name == "pyhessian" else f"engine Hutch++, {name.split()[1]} products"
        lines.append(
            f"| {label} | {row['products']:.0f} | {row['median_s']:.2f} | {row['median_s'] / py['median_s']:.2f}x "
            f"| {row['rms_error']:.1e} | {row['median_abs_error']:.1e} | {row['p90_abs_error']:.1e} | {row['bias']:+.1e} |"
        )
    lines.append("")
    if "matched_budget" in spread:
        lines.append(
            f"At PyHessian's default accuracy (RMS error {py['rms_error']:.1e}) the engine needs "
            f"{spread['matched_budget']} products of those tried: {spread['matched_ratio']:.2f}x PyHessian's time."
        )
    else:
        lines.append("No engine budget tried reaches PyHessian's default RMS error.")
    return lines
