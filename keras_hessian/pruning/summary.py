"""`sparsity_summary(model)`: per prunable layer, its sparsity, non-zeros and bytes dense vs sparse.

Bytes sparse counts a bitmap encoding: the non-zero values at their dtype's width plus one bit
per position (ceil(n / 8) bytes). It is the simplest honest bound, smaller than CSR with int32
indices above ~3% density; TFLite's own sparse format (`EXPERIMENTAL_SPARSITY`, block CSR with
int8/int16/int32 index arrays) is measured by exporting, not estimated here.
"""

from __future__ import annotations

import math

import numpy as np

from keras_hessian.pruning._layers import prunable_layers

__all__ = ["SparsitySummary", "sparsity_summary"]


class SparsitySummary(dict):
    """`{"layers": [row, ...], "total": row}`; its repr is the table."""

    def __repr__(self) -> str:
        header = f"{'layer':<24}{'parameters':>12}{'nonzeros':>12}{'sparsity':>10}{'bytes dense':>13}{'bytes sparse':>14}"
        lines = [header, "-" * len(header)]
        for row in [*self["layers"], self["total"]]:
            lines.append(
                f"{row['layer']:<24}{row['parameters']:>12}{row['nonzeros']:>12}{row['sparsity']:>10.3f}"
                f"{row['bytes_dense']:>13}{row['bytes_sparse']:>14}"
            )
        return "\n".join(lines)

    __str__ = __repr__


def sparsity_summary(model, layers: list[str] | None = None) -> SparsitySummary:
    """Sparsity of each Dense / Conv kernel of `model` (or of the named `layers`), and the total.

    Example:

    ```python
    print(sparsity_summary(model))
    sparsity_summary(model)["total"]["sparsity"]
    ```
    """
    rows = []
    for layer in prunable_layers(model, layers):
        kernel = np.asarray(layer.kernel.numpy())
        size, nonzeros = int(kernel.size), int(np.count_nonzero(kernel))
        rows.append(
            {
                "layer": layer.name,
                "parameters": size,
                "nonzeros": nonzeros,
                "sparsity": 1.0 - nonzeros / size,
                "bytes_dense": size * kernel.itemsize,
                "bytes_sparse": nonzeros * kernel.itemsize + math.ceil(size / 8),
            }
        )
    total = {key: sum(row[key] for row in rows) for key in ("parameters", "nonzeros", "bytes_dense", "bytes_sparse")}
    total.update(layer="total", sparsity=1.0 - total["nonzeros"] / total["parameters"])
    return SparsitySummary(layers=rows, total=total)
