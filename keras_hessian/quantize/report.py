"""QuantizeReport: what `quantize_model` did to each layer, and why a layer stayed float.

Keras' own `model.quantize` (master branch) returns such a record (`QuantizationReport`:
quantized paths, skipped paths with a reason) and prints it unless `verbose=False`. Ours
follows that design with a different name, since `quantize_model` returns the new model: the
report is the new model's `quantize_report` attribute, and `quantize_model(..., verbose=True)`
prints its summary (one line per kind of layer kept float, with the reason). Nothing here
decides anything: `quantize_model` fills in one `LayerOutcome` per layer from the same
decision that builds the new layer.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from keras_hessian.quantize._lines import PrintsLines

__all__ = ["LayerOutcome", "QuantizeReport"]

# Reasons a layer with weights stays float32 (the `reason` of a `LayerOutcome`).
NO_QUANTIZED_FORM = "no quantized form"
FIRST_OR_LAST = "first or last quantizable layer (skip_first_last=True)"
SOFTMAX = "softmax classifier, kept float32 (its probabilities are the output)"
NORMALIZATION = "normalization, kept float32"
NOT_IN_PLAN = "not named by the plan"
FLOAT32 = "scheme float32"
ALREADY_QUANTIZED = "already quantized"
IN_SUBCLASSED_MODEL = "inside a subclassed model, copied as it is"
NO_WEIGHTS = "no weights"
FOLDED = "folded into"
GROUPED = "grouped convolution (quantized convolutions support groups=1 only)"

_HINTS = {"BatchNormalization": "fold them into the layer before: quantize_model(..., fold_batch_norm=True)"}


@dataclasses.dataclass(frozen=True)
class LayerOutcome:
    """One layer of the original model, and what it became in the new one.

    Attributes:
        path: the layer's path below the model (nested models' names joined by "/").
        layer_type: its Keras class name in the original model.
        parameters: its number of weights (trainable and not).
        quantized: whether its weights or compute changed precision.
        precision: what it is in the new model: the quantized class and scheme
            (`"TernaryResidualConv2D (ternary_residual)"`), `"mixed_bfloat16"`, or `"float32"`.
        reason: why it stays float32 (`""` when quantized), e.g. `"no quantized form under
            'binary'"`, `"first or last quantizable layer (skip_first_last=True)"`, `"no weights"`,
            `"folded into conv_1"`.
        new_type: its Keras class name in the new model (`""` for a folded layer).
    """

    path: str
    layer_type: str
    parameters: int
    quantized: bool
    precision: str
    reason: str = ""
    new_type: str = ""


class QuantizeReport(PrintsLines):
    """The record of one `quantize_model` call: per layer path, quantized with what, or kept float and why.

    `quantize_model` prints its `summary()` (unless `verbose=False`) and attaches it to the new
    model as `quantized.quantize_report`; `print(report)` shows every layer.

    Example:
        >>> quantized = quantize_model(model, "ternary_residual", verbose=False)
        >>> report = quantized.quantize_report
        >>> report.counts()                 # {"quantized": 34, "kept_float": 69, "no_weights": 52, ...}
        >>> [row.path for row in report.kept_float]
        >>> print(report)                   # the full table

    Args:
        model_name: the original model's name.
        scheme: the scheme given to `quantize_model` (`"per-layer plan"` for a plan).
        layers: one `LayerOutcome` per layer, in the model's order.
    """

    def __init__(self, model_name: str, scheme: str, layers: list[LayerOutcome]):
        self.model_name = model_name
        self.scheme = scheme
        self.layers = list(layers)

    @property
    def quantized(self) -> list[LayerOutcome]:
        """The layers whose weights (or compute, for bfloat16) changed precision."""
        return [row for row in self.layers if row.quantized and row.parameters]

    @property
    def kept_float(self) -> list[LayerOutcome]:
        """The layers with weights that stay float32, each with its reason."""
        return [row for row in self.layers if not row.quantized and row.parameters and not _is_folded(row)]

    @property
    def folded(self) -> list[LayerOutcome]:
        """The BatchNormalization layers folded into the layer before them (`fold_batch_norm=True`)."""
        return [row for row in self.layers if _is_folded(row)]

    def counts(self) -> dict[str, int]:
        """`{"quantized", "kept_float", "folded", "no_weights", "layers"}` counts."""
        return {
            "quantized": len(self.quantized),
            "kept_float": len(self.kept_float),
            "folded": len(self.folded),
            "no_weights": sum(1 for row in self.layers if not row.parameters),
            "layers": len(self.layers),
        }

    def summary(self) -> list[str]:
        """The lines `quantize_model` prints: the counts, then one line per kind of layer kept float."""
        counts = self.counts()
        schemes = Counter(row.precision for row in self.quantized)
        how = ", ".join(f"{n} {precision}" for precision, n in schemes.most_common())
        head = f'quantize_model "{self.model_name}" ({self.scheme}): quantized {_plural(counts["quantized"], "layer")}'
        head += f" ({how})" if how else ""
        head += f", kept {counts['kept_float']} in float"
        if counts["folded"]:
            head += f", folded {counts['folded']} BatchNormalization"
        lines = [head + (":" if counts["kept_float"] else ".")]
        groups = Counter((row.layer_type, row.reason) for row in self.kept_float)
        for (layer_type, reason), n in groups.most_common():
            hint = _HINTS.get(layer_type) if reason.startswith(NO_QUANTIZED_FORM) else None
            lines.append(f"  {n} {layer_type}: {reason}" + (f"; {hint}" if hint else ""))
        lines.append(f"  ({_plural(counts['no_weights'], 'layer')} without weights; `.quantize_report` lists every layer)")
        return lines

    def lines(self) -> list[str]:
        """Every layer, one line each: path (type), parameters, what it became or why not."""
        cells = [
            (f"{row.path} ({row.layer_type})", f"{row.parameters:,}", row.precision, row.reason) for row in self.layers
        ]
        header = ("Layer (type)", "Params", "Precision", "Kept float because")
        widths = [max(len(header[i]), *(len(cell[i]) for cell in cells)) if cells else len(header[i]) for i in range(4)]

        def render(cell: tuple) -> str:
            return "  ".join(value.ljust(width) for value, width in zip(cell, widths)).rstrip()

        rule = "=" * (sum(widths) + 6)
        return [f'Quantize report: "{self.model_name}" ({self.scheme})', rule, render(header), rule,
                *(render(cell) for cell in cells), rule, *self.summary()]


def _is_folded(row: LayerOutcome) -> bool:
    return row.reason.startswith(FOLDED)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")
