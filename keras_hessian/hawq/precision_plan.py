"""PrecisionPlan: which precision each layer gets, and every number the choice was made from.

A plan is a read-only mapping `layer path -> quantize_model spec`, so `quantize_model(model,
plan)` applies it directly; it also keeps, for every layer and candidate, the objective term and
the bytes the solver saw, the sensitivities, and the predicted totals, and saves to / loads from
JSON so a plan made once (the Hessian is the expensive part) can be applied again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from keras_hessian._files import check_output_path, write_atomically

__all__ = ["LayerChoice", "PrecisionPlan"]

_FORMAT = "keras-hessian/precision-plan/1"


@dataclass(frozen=True)
class LayerChoice:
    """One layer's row of the plan.

    Attributes:
        name: the layer's path in the model.
        parameters: weights in its kernel.
        sensitivity: the (average-trace or eigenvalue) sensitivity the objective used; None for a
            pinned layer (kept in float32, not planned).
        precision: the chosen candidate's name.
        spec: the `quantize_model` spec of that candidate (a scheme name or a dict).
        options: `{candidate: {"objective", "perturbation", "bytes", "bops"}}` for every candidate
            allowed for this layer.
    """

    name: str
    parameters: int
    sensitivity: float | None
    precision: str
    spec: Any
    options: dict = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return int(self.options[self.precision]["bytes"])


@dataclass(frozen=True)
class PrecisionPlan(Mapping):
    """A per-layer precision assignment, as `assign_precision` returns it.

    Use `plan[layer]` (the `quantize_model` spec), `plan.precisions` (`{layer: candidate name}`),
    `plan.layers` (the full rows), `plan.save(path)` / `PrecisionPlan.load(path)`.

    Attributes:
        layers: `{layer path: LayerChoice}` in model order.
        budget_bytes: the weight-byte budget the plan was solved under.
        bops_budget: the bit-operation budget, if any.
        float32_bytes: the float32 weight bytes of the planned layers.
        metric: the sensitivity metric (`"trace"`, `"top_eigenvalue"`, or `"none"` for the
            Hessian-free ablation where every sensitivity is 1).
    """

    layers: dict
    budget_bytes: float
    float32_bytes: int
    metric: str
    bops_budget: float | None = None

    # ------------------------------------------------------------------ mapping: layer -> spec
    def __getitem__(self, name: str) -> Any:
        return self.layers[name].spec

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    # ------------------------------------------------------------------ totals
    @property
    def precisions(self) -> dict[str, str]:
        """`{layer path: chosen candidate name}`."""
        return {name: row.precision for name, row in self.layers.items()}

    @property
    def predicted_bytes(self) -> int:
        """The planned layers' weight bytes (kernels, scales and biases) at the chosen precisions."""
        return int(sum(row.bytes for row in self.layers.values()))

    @property
    def predicted_perturbation(self) -> float:
        """sum_i s_i * ||Q(W_i) - W_i||^2 at the chosen precisions: the objective's value."""
        return float(sum(row.options[row.precision]["objective"] for row in self.layers.values()))

    @property
    def size_ratio(self) -> float:
        """Predicted bytes over the float32 bytes of the same layers."""
        return self.predicted_bytes / self.float32_bytes

    # ------------------------------------------------------------------ display
    def table(self) -> str:
        """A markdown table: layer, parameters, sensitivity, precision, bytes."""
        lines = ["| layer | parameters | sensitivity | precision | bytes |", "|---|---:|---:|---|---:|"]
        for row in self.layers.values():
            sensitivity = "pinned" if row.sensitivity is None else f"{row.sensitivity:.4g}"
            lines.append(f"| {row.name} | {row.parameters:,} | {sensitivity} | {row.precision} | {row.bytes:,} |")
        lines.append(
            f"| total | {sum(r.parameters for r in self.layers.values()):,} | | "
            f"{self.size_ratio:.3f} x float32 | {self.predicted_bytes:,} |"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        chosen = ", ".join(f"{name}: {precision}" for name, precision in self.precisions.items())
        return (
            f"PrecisionPlan({chosen}; {self.predicted_bytes:,} bytes = {self.size_ratio:.3f} x float32, "
            f"budget {self.budget_bytes:,.0f}, metric={self.metric!r})"
        )

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        return {
            "format": _FORMAT,
            "budget_bytes": self.budget_bytes,
            "bops_budget": self.bops_budget,
            "float32_bytes": self.float32_bytes,
            "metric": self.metric,
            "predicted_bytes": self.predicted_bytes,
            "predicted_perturbation": self.predicted_perturbation,
            "layers": [asdict(row) for row in self.layers.values()],
        }

    @classmethod
    def from_json(cls, data: Mapping) -> PrecisionPlan:
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise ValueError(f"Not a precision plan: expected a JSON object with format={_FORMAT!r}.")
        rows = {row["name"]: LayerChoice(**row) for row in data["layers"]}
        return cls(
            layers=rows,
            budget_bytes=float(data["budget_bytes"]),
            float32_bytes=int(data["float32_bytes"]),
            metric=str(data["metric"]),
            bops_budget=data.get("bops_budget"),
        )

    def save(self, path: str | os.PathLike) -> str:
        """Write the plan as JSON, atomically (the target is the whole new file or untouched)."""
        target = check_output_path(path)
        write_atomically(target, (json.dumps(self.to_json(), indent=1) + "\n").encode())
        return str(target)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PrecisionPlan:
        """Read a plan written by `save`."""
        with open(os.fspath(path)) as f:
            return cls.from_json(json.load(f))
