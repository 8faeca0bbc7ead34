"""Per-layer spectrum tables: top eigenvalues, trace and trace per weight of every block, as rows and markdown.

What PyHessian users build by hand from per-layer runs, as one call on a `blocks="layer"` (or any
multi-block) operator; plain dicts, no pandas.
"""

from __future__ import annotations

from dataclasses import dataclass

from keras_hessian._validation import check_int
from keras_hessian.hessian.algorithms.eigen import top_eigenvalues
from keras_hessian.hessian.algorithms.trace import hutchinson_trace

__all__ = ["LayerTable", "layer_table"]


@dataclass(frozen=True)
class LayerTable:
    """One row per block: `{"block", "parameters", "eigenvalues", "trace", "trace_standard_error", "trace_per_weight"}`."""

    rows: list

    def markdown(self) -> str:
        k = max((len(r["eigenvalues"]) for r in self.rows), default=0)
        header = ["block", "parameters"] + [f"lambda_{i + 1}" for i in range(k)] + ["trace", "trace / n"]
        lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        for r in self.rows:
            eigen = [f"{v:.6g}" for v in r["eigenvalues"]] + [""] * (k - len(r["eigenvalues"]))
            trace = "" if r["trace"] is None else f"{r['trace']:.6g} +- {r['trace_standard_error']:.2g}"
            per_weight = "" if r["trace_per_weight"] is None else f"{r['trace_per_weight']:.6g}"
            lines.append("| " + " | ".join([r["block"], f"{r['parameters']:,}", *eigen, trace, per_weight]) + " |")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.markdown()


def layer_table(operator, top_k: int = 1, trace: bool = True, seed: int | None = None) -> LayerTable:
    """Top-`top_k` eigenvalues and (Hutch++) trace of every block of `operator`.

    Example:

    ```python
    table = layer_table(HessianOperator(model, (x, y), blocks="layer"), top_k=2, seed=0)
    print(table.markdown())
    ```

    Args:
        operator: an operator with blocks (`blocks="layer"` or groups); one block gives one row.
        top_k: eigenvalues per block (capped at the block's parameter count).
        trace: also estimate each block's trace and trace per weight.
        seed: seed of the start vectors and probes.

    Returns:
        A `LayerTable`.
    """
    top_k = check_int("top_k", top_k, 1)
    rows = []
    for name in operator.blocks:
        block = operator.block(name)
        n = int(block.num_parameters)
        eigen = top_eigenvalues(block, k=min(top_k, n), seed=seed)
        row = {"block": name, "parameters": n, "eigenvalues": [float(v) for v in eigen.eigenvalues],
               "trace": None, "trace_standard_error": None, "trace_per_weight": None}
        if trace:
            estimate = hutchinson_trace(block, seed=seed)
            row.update(trace=float(estimate.trace), trace_standard_error=float(estimate.standard_error),
                       trace_per_weight=float(estimate.trace) / n)
        rows.append(row)
    return LayerTable(rows)
