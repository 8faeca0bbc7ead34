"""The table of `benchmarks/vs_pyhessian.py`: per task, both sides' warm / cold times, products and errors."""

from __future__ import annotations

import statistics

from benchmarks._vs_pyhessian_trace import spread_markdown

# PyHessian probes run for the matched-accuracy trace (the time of all it needs is projected).
MATCHED_PROBES_RUN = 40


def summary(runs: dict) -> list[dict]:
    rows = []
    for name in runs["engine"]:
        row = {"task": name}
        for side in ("engine", "pyhessian"):
            entries = runs[side][name]
            warm = entries[1:] or entries
            row[side] = {
                "cold_s": entries[0]["seconds"],
                "warm_s": statistics.median(e["seconds"] for e in warm),
                "products": statistics.median(e["products"] for e in warm),
                "error_median": statistics.median(e["error"] for e in entries),
                "error_max": max(e["error"] for e in entries),
                "ms_per_product": 1000 * statistics.median(e["seconds"] / max(e["products"], 1) for e in warm),
                "projected": any(e.get("projected") for e in entries),
            }
        row["warm_ratio"] = row["engine"]["warm_s"] / row["pyhessian"]["warm_s"]
        row["cold_ratio"] = row["engine"]["cold_s"] / row["pyhessian"]["cold_s"]
        rows.append(row)
    return rows


LABELS = {
    "top1": "top eigenvalue (tol 1e-3)",
    "top3": "top-3 eigenvalues (tol 1e-3)",
    "trace": "trace, each side's defaults",
    "trace_budget": "trace, engine given PyHessian's default products",
    "trace_matched": "trace, 1% standard error asked",
    "density": "density, 100 products (1 x 100 steps)",
    "density_batched": "density, 100 products (engine 4 x 25 batched)",
}


def markdown(report: dict) -> str:
    lines = [
        (
            f"# keras-hessian vs PyHessian 0.1 (torch CPU): {report['parameters']:,}-parameter CNN, "
            f"{report['examples']:,} digits, {report['rounds']} alternated rounds"
        ),
        "",
        (
            f"Loss on both sides: keras {report['loss']['engine']:.6f}, torch {report['loss']['torch']:.6f}. "
            "Warm: median of rounds 2 onwards; errors: median (max) over all rounds, against ARPACK / "
            "the exact trace / a deflated SLQ (density: W1 distance / spectral range)."
        ),
        "",
        (
            "| task | engine warm s | PyHessian warm s | warm ratio | engine cold s | PyHessian cold s | cold ratio "
            "| engine HVPs | PyHessian HVPs | ms/HVP engine, PyHessian | engine error | PyHessian error |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report.get("rows", []):
        e, p = row["engine"], row["pyhessian"]
        lines.append(
            f"| {LABELS[row['task']]} | {e['warm_s']:.2f} | {p['warm_s']:.2f} | {row['warm_ratio']:.2f}x "
            f"| {e['cold_s']:.2f} | {p['cold_s']:.2f} | {row['cold_ratio']:.2f}x | {e['products']:.0f} "
            f"| {p['products']:.0f} | {e['ms_per_product']:.0f}, {p['ms_per_product']:.0f} "
            f"| {e['error_median']:.1e} ({e['error_max']:.1e}) "
            f"| {p['error_median']:.1e} ({p['error_max']:.1e}){' (projected)' if p['projected'] else ''} |"
        )
    runs = report.get("runs", {})
    if runs:
        per_round = [
            f"{e['seconds'] / p['seconds']:.2f}x"
            for e, p in zip(runs["engine"]["top1"][1:], runs["pyhessian"]["top1"][1:])
        ]
        lines += ["", f"Top eigenvalue, engine / PyHessian time in each warm round: {', '.join(per_round)}."]
    lines += [
        "",
        (
            "Trace rows: at each side's defaults the two are not asked for the same accuracy (PyHessian stops "
            "when its running mean moves by < 1e-3, the engine at a 0.5% standard error or 400 products); given "
            "PyHessian's products (Hutch++: a quarter of them on the sketch, a quarter on its exact part) the row's "
            "errors are three draws each "
            "and its warm rounds may trace a vector count not met before (PyHessian's product count changes from "
            "round to round): the estimators are compared over many seeds, at fixed budgets, below; asked for the "
            "same 1% standard error, the engine needs an order of magnitude fewer products."
        ),
        "",
        (
            "Projected: PyHessian's Hutchinson needs n = (probe std / (1% of the trace))^2 probes for a 1% "
            f"standard error; {MATCHED_PROBES_RUN} are run and the time of n is projected from their per-probe time."
        ),
    ]
    if "trace_spread" in report:
        lines += spread_markdown(report["trace_spread"])
    return "\n".join(lines)
