"""quantization_summary: per-layer precision, weight memory and multiplications, as a table object.

Follows Keras' `summary` convention of printing only when asked: the returned
`QuantizationSummary` is a dict (`report["total"]["weight_bytes"]`, `report["layers"]`) whose
`repr`/`str` is the table, so a notebook shows it once. Each quantized layer reports its own
cost (`layer.kernel_cost(outputs)`, from its kernel quantizer, and `layer.precision_label`);
nothing here knows the schemes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_hessian import _compat
from keras_hessian.layers import kernel_matrix_shape, registry
from keras_hessian.quantize._lines import PrintsLines
from keras_hessian.quantize._plan import is_quantizable, walk_layers

__all__ = ["QuantizationSummary", "kernel_multiplications", "quantization_summary"]

_TOTAL_KEYS = ("parameters", "weight_bits", "weight_bytes", "multiplications", "replaced_multiplications")


def _output_shape(layer: keras.layers.Layer) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return None


def _size(shape: tuple | None) -> int | None:
    return None if shape is None or None in shape[1:] else int(np.prod(shape[1:]))


def _parts(layer: keras.layers.Layer) -> list[keras.layers.Layer] | None:
    """The kernel-holding sublayers of a composite layer (attention projections), or None."""
    encoder = _compat.encoder_kernel_layers(layer)  # KerasHub TransformerEncoder, float or quantized
    if encoder is not None:
        return encoder
    if hasattr(layer, "projections") and layer.built:  # quantized MultiHeadAttention / SeparableConv2D
        return list(layer.projections())
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return list(_compat.attention_projections(layer).values())
    return None


def _projection_outputs(layer: keras.layers.Layer) -> list[int] | None:
    """Output values per example of each attention projection (they are no graph nodes of their own).

    Query and output projections produce one vector per query position, key and value projections
    one per key / value position; each vector has the projection's output channels. In a KerasHub
    TransformerEncoder (self-attention) every part produces one vector per position.
    """
    try:
        inputs = layer.input
    except (AttributeError, ValueError, RuntimeError):
        return None
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    query, value = inputs[0], inputs[1] if len(inputs) > 1 else inputs[0]
    positions = [_size((None, *tuple(t.shape)[1:-1], 1)) for t in (query, value)]
    if None in positions:
        return None
    if _compat.is_hub_transformer_encoder(layer):  # self-attention and feed-forward: one vector per position
        return [positions[0] * kernel_matrix_shape(p)[1] for p in _parts(layer)]
    names = list(_compat.attention_projections(layer))
    return [
        positions[1 if any(k in name for k in ("key", "value")) else 0] * kernel_matrix_shape(p)[1]
        for name, p in zip(names, _parts(layer))
    ]



def kernel_multiplications(layer: keras.layers.Layer) -> int | None:
    """Multiply-accumulates per example of a float kernel layer's kernels (None: shapes unknown).

    Each output value costs one reduction as the quantizers see it (`kernel_matrix_shape`): `kh * kw`
    for a depthwise filter, the contracted axes of an EinsumDense; a lookup costs none; a
    SeparableConv2D adds its depthwise step; attention counts its projections (the score and mixing
    products have no weights).
    """
    return _float_multiplications(layer, _size(_output_shape(layer)))


def _float_multiplications(layer: keras.layers.Layer, outputs: int | None) -> int | None:
    """Multiply-accumulates per example of a float kernel layer: outputs x the quantizers' reduction."""
    if isinstance(layer, keras.layers.Embedding):
        return 0  # a lookup multiplies nothing
    parts = _parts(layer)
    if parts is not None:
        sizes = _projection_outputs(layer)
        return None if sizes is None else sum(n * kernel_matrix_shape(p)[0] for n, p in zip(sizes, parts))
    if outputs is None:
        return None
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw, channels, multiplier = (int(d) for d in layer.depthwise_kernel.shape)
        positions = outputs // int(layer.filters)
        return positions * channels * multiplier * kh * kw + outputs * channels * multiplier
    return outputs * kernel_matrix_shape(layer)[0]


def _kernel_weights(layer: keras.layers.Layer) -> int | None:
    """The number of kernel weights (all parts of a composite layer), or None without a kernel."""
    parts = _parts(layer)
    if parts is not None:
        return sum(int(np.prod(p.kernel.shape)) for p in parts)
    if isinstance(layer, keras.layers.SeparableConv2D) and getattr(layer, "pointwise_kernel", None) is not None:
        return int(np.prod(layer.depthwise_kernel.shape)) + int(np.prod(layer.pointwise_kernel.shape))
    for name in ("kernel", "embeddings"):
        kernel = getattr(layer, name, None)
        if kernel is not None:
            return int(np.prod(kernel.shape))
    return None


def _layer_cost(path: str, layer: keras.layers.Layer) -> dict:
    """Precision label, weight bits, real multiplications and replaced ones per example."""
    parameters = sum(int(np.prod(w.shape)) for w in layer.weights if keras.backend.is_float_dtype(w.dtype))
    compute_dtype = keras.backend.standardize_dtype(layer.compute_dtype)
    float_bits = 16 if compute_dtype in ("bfloat16", "float16") else 32
    row = {
        "name": layer.name,
        "path": path,
        "type": type(layer).__name__,
        "precision": compute_dtype,
        "bits_per_weight": float(float_bits),
        "parameters": parameters,
        "weight_bits": parameters * float_bits,
        "multiplications": 0,
        "replaced_multiplications": 0,
    }
    quantized = registry.is_quantized_layer(layer)
    weights = _kernel_weights(layer)
    if weights is None or not (quantized or is_quantizable(layer)):
        return row
    outputs = _size(_output_shape(layer))
    row["multiplications"] = _float_multiplications(layer, outputs)
    if quantized:
        # A composite layer's cost sums its parts' storage; its multiplications are its parts' own.
        parts = _parts(layer)
        cost = layer.kernel_cost(outputs)
        multiplications, replaced = cost.multiplications, cost.replaced_multiplications
        if parts is not None:
            sizes = _projection_outputs(layer) or [None] * len(parts)
            if isinstance(layer, keras.layers.SeparableConv2D) and outputs is not None:
                sizes = [outputs // int(layer.filters) * int(np.prod(parts[0].kernel.shape[2:])), outputs]
            costs = [p.kernel_cost(n) for p, n in zip(parts, sizes)]
            known = all(c.multiplications is not None for c in costs)
            multiplications = sum(c.multiplications for c in costs) if known else None
            replaced = sum(c.replaced_multiplications for c in costs) if known else None
        bias_bits = (parameters - weights) * float_bits
        row.update(
            precision=layer.precision_label,
            bits_per_weight=cost.bits_per_weight,
            weight_bits=cost.storage_bits + bias_bits,
            multiplications=multiplications,
            replaced_multiplications=replaced,
        )
    return row


class QuantizationSummary(PrintsLines, dict):
    """The report of `quantization_summary`: `{"layers": [row, ...], "total": {...}}`, shown as a table.

    Use it as the dict it is, print it (`print(report)`, `report.print()`), or read
    `report.lines()`.

    Example:
        >>> report = quantization_summary(quantized)
        >>> report["total"]["weight_bytes"]
        >>> report                      # in a notebook: the table, once

    Args:
        model_name: the name shown in the title.
        layers: one row per layer.
        total: the totals.
    """

    def __init__(self, model_name: str, layers: list[dict], total: dict):
        super().__init__(layers=layers, total=total)
        self.model_name = model_name

    def lines(self) -> list[str]:
        """The table, one string per line."""
        header = ("Layer (type)", "Precision", "Params", "Bytes", "Mults", "Mults -> sign/add")

        def count(value: int | None) -> str:
            return "?" if value is None else f"{value:,}"

        cells = [
            (
                f"{row['path']} ({row['type']})",
                row["precision"],
                f"{row['parameters']:,}",
                f"{row['weight_bytes']:,}",
                count(row["multiplications"]),
                count(row["replaced_multiplications"]),
            )
            for row in self["layers"]
        ]
        widths = [max(len(header[i]), *(len(line[i]) for line in cells)) for i in range(len(header))]
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        double = "=" * len(rule)

        def render(line: tuple) -> str:
            return "  ".join(cell.ljust(width) for cell, width in zip(line, widths))

        total = self["total"]
        ratio = total["float32_weight_bytes"] / max(total["weight_bytes"], 1)
        return [
            f'Quantization summary: "{self.model_name}"',
            double,
            render(header),
            double,
            *(render(line) for line in cells),
            rule,
            f"Total params: {total['parameters']:,}",
            (
                f"Weight memory: {total['weight_bytes']:,} bytes ({total['weight_bits']:,} bits), "
                f"{ratio:.1f}x smaller than float32 ({total['float32_weight_bytes']:,} bytes)"
            ),
            f"Multiplications per example: {count(total['multiplications'])}",
            f"Multiplications replaced by sign/add: {count(total['replaced_multiplications'])}",
            double,
        ]


def quantization_summary(
    model: keras.Model, print_fn: Callable[[str], Any] | None = None
) -> QuantizationSummary:
    """Per-layer precision, parameters, weight memory and multiplications, with totals.

    Multiplications are counted per example for Dense, Conv, DepthwiseConv2D (one `kh * kw`
    window per output value), EinsumDense, SeparableConv2D and MultiHeadAttention (their
    projections) layers; an Embedding lookup does none. A float or DFP layer does one per
    multiply-accumulate; a binary layer replaces all of them by sign flips and
    adds (XNOR/popcount with binary inputs) and keeps one multiplication per output when
    scaled; a ternary-residual layer replaces them by sign/add and keeps one multiplication
    per block and active term (Kundu, Banerjee et al. 2018). Memory counts the deployed
    representation: 32 (float32), 16 (bfloat16, DFP-16), 1 (binary) or 2 x terms (ternary)
    bits per kernel weight, plus float32 scales and biases. Each quantized layer reports its
    own numbers (`kernel_cost`, `precision_label`).

    Nothing is printed unless `print_fn` is given; the returned object's repr is the table
    (so a notebook cell ending in `quantization_summary(model)` shows it once).

    Example:
        >>> report = quantization_summary(quantize_model(model, "binary"))
        >>> report["total"]["weight_bytes"]
        >>> print(report)                                  # or report.print()

    Args:
        model: a built Keras model.
        print_fn: where the table's lines go (e.g. `print`); `None` (default): nowhere.

    Returns:
        A `QuantizationSummary`, the dict `{"layers": [row, ...], "total": {...}}`; each row
        has `name`, `path` (through nested models), `type`, `precision`, `bits_per_weight`,
        `parameters`, `weight_bits`, `weight_bytes`, `multiplications`,
        `replaced_multiplications` (None when an output shape is unknown).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model. Received model={model!r}.")
    rows = [_layer_cost(path, layer) for path, layer in walk_layers(model)]
    for row in rows:
        row["weight_bytes"] = math.ceil(row["weight_bits"] / 8)

    def total(key: str) -> int | None:
        values = [row[key] for row in rows]
        return None if any(v is None for v in values) else int(sum(values))

    totals = {key: total(key) for key in _TOTAL_KEYS}
    totals["float32_weight_bytes"] = 4 * totals["parameters"]
    report = QuantizationSummary(model.name, rows, totals)
    if print_fn is not None:
        report.print(print_fn)
    return report
