"""Per-layer weight storage of `"auto"` files: each layer's filter at its own planned precision.

A model quantized with a per-layer mapping (a HAWQ plan: `quantize_model(model, {path: spec})`)
mixes schemes, so the file cannot have ONE storage. The inference copy says, for each folded kernel,
how it wants to be stored (`KernelStorage`); here each FullyConnected / Conv2D / DepthwiseConv2D filter
of the float32 file is matched to its kernel by value and gets one `ai-edge-quantizer` recipe entry:

- `"exact"` (binary, ternary pieces, integer layers, Keras int8 / per-channel int4): the narrowest
  of int2 (FullyConnected only), int4 or int8 holding the levels exactly (`storage.exact_bits`);
  where the library's grid recovery cannot see the grid (a channel missing the small levels), an
  integer layer's own width by the library's min/max, which is the integer quantizer's grid
  (`max|w| / (2^(b-1) - 1)` per channel); else int8 min/max;
- ternary residuals on a shared grid (`grid_bits`): min/max at the grid's width, which is their grid
  (each channel's largest level is the grid's top), where `minmax_exact` confirms it; a warning names
  any such filter stored otherwise;
- `"int"`: min/max at the given width (Keras' sub-channel int4, re-stored per channel);
- `"float16"`: IEEE half precision, dequantized when the file is loaded (`FLOAT_CASTING`),
  for DFP-16, float16 and bfloat16 layers;
- filters of float32 layers get no entry and stay float32.

Int2 / int4 entries are dynamic-range (hybrid) ops, as int8 ones; with `weight_only` every
integer entry is weight-only instead (dequantized in the file, float compute; int2 as int4). The exactness check of
`storage.py` stays: the file is run in LiteRT against the same plan with every grid-recovered
narrow filter at int8 on the same grid, and that int8 file is kept if the outputs differ and the
narrow file is farther from the float32 file than it (`storage.keeps_narrow`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings

import numpy as np

from keras_hessian.export.storage import (
    _add_integer_entry,
    _filter_ops,
    _library,
    _tflite_layouts,
    exact_bits,
    keeps_narrow,
)

__all__ = ["STORAGE_KINDS", "KernelStorage", "store_planned_weights"]

STORAGE_KINDS = ("exact", "int", "float16")
# Widths LiteRT's hybrid kernels take, per op (measured with ai-edge-litert 2.3, see storage.py).
# Depthwise filters (TFLite layout `(1, kh, kw, channels)`, channels LAST) are stored int8 by the
# library's per-channel min/max, which is the integer quantizer's grid (`max|w| / 127` per channel)
# and holds a binary filter's `+-alpha` exactly; grid recovery reads channels first, so not here.
_WIDTHS = {"FULLY_CONNECTED": (2, 4, 8), "CONV_2D": (4, 8), "DEPTHWISE_CONV_2D": (8,)}


@dataclasses.dataclass(frozen=True)
class KernelStorage:
    """How one folded kernel of the inference copy is stored in an `"auto"` file.

    Attributes:
        kernel: the float32 kernel, Keras layout (output channels last).
        kind: one of `STORAGE_KINDS` (see the module docstring).
        bits: the layer's planned width: integer bits for `"exact"` (None: levels decide, as for
            binary and ternary), the min/max width for `"int"`, 16 for `"float16"`.
        layer: the user's layer name (for reports).
        grid_bits: the integer grid the layer's levels promise (ternary residuals with
            `grid_bits`): a filter stored otherwise is reported.
    """

    kernel: np.ndarray
    kind: str
    bits: int | None = None
    layer: str = ""
    grid_bits: int | None = None


def minmax_exact(values: np.ndarray, bits: int, op_name: str) -> bool:
    """Whether the library's symmetric per-channel min/max grid (`max|w_c| / (2^(b-1) - 1)`) holds
    the filter `values` (TFLite layout) exactly: every weight an integer number of its channel's steps."""
    channels = np.moveaxis(np.asarray(values, np.float64), -1 if op_name == "DEPTHWISE_CONV_2D" else 0, 0)
    channels = channels.reshape(len(channels), -1)
    largest = np.abs(channels).max(axis=1, keepdims=True)
    levels = channels / np.where(largest > 0, largest / (2 ** (bits - 1) - 1), 1.0)
    return bool(np.allclose(levels, np.round(levels), rtol=0, atol=1e-4))


def _entry(storage: KernelStorage, values: np.ndarray, op_name: str, narrow: bool) -> tuple[str, int]:
    """(algorithm, bits) of one filter: "recovery", "minmax" or "float16"."""
    widths = _WIDTHS[op_name]
    if storage.kind == "float16":
        return "float16", 16
    if storage.grid_bits:  # a ternary-residual grid anchored at the channel's largest level
        bits = storage.grid_bits if narrow and storage.grid_bits in widths else 8
        if minmax_exact(values, bits, op_name):
            return "minmax", bits
    if op_name == "DEPTHWISE_CONV_2D":
        return "minmax", 8
    if storage.kind == "int":
        return "minmax", min(w for w in widths if w >= min(storage.bits, 8))
    bits = exact_bits(values, op_name)
    if bits is not None:
        return "recovery", bits if narrow else 8
    if narrow and storage.bits in widths:
        return "minmax", storage.bits
    return "minmax", 8


def _quantize(flatbuffer: bytes, entries: dict[str, tuple], weight_only: bool) -> bytes:
    algorithm_manager, _, quantizer, _, _ = _library()
    names = algorithm_manager.AlgorithmName
    run = quantizer.Quantizer(bytearray(flatbuffer))
    for scope, (op_name, algorithm, bits) in entries.items():
        regex = f"^{re.escape(scope)}$"
        if algorithm == "float16":
            run.add_weight_only_config(
                regex=regex, operation_name=op_name, num_bits=16, algorithm_key=names.FLOAT_CASTING
            )
            continue
        key = names.DEQUANTIZED_WEIGHT_RECOVERY if algorithm == "recovery" else names.MIN_MAX_UNIFORM_QUANT
        _add_integer_entry(run, regex=regex, op_name=op_name, bits=bits, algorithm_key=key, weight_only=weight_only)
    return bytes(run.quantize(enable_progress_report=False).quantized_model)


def planned_entries(
    flatbuffer: bytes,
    kernels: list[KernelStorage],
    narrow: bool = True,
    matched: set | None = None,
    off_grid: set | None = None,
) -> dict[str, tuple]:
    """op scope -> (op name, algorithm, bits) for every filter that matches a planned kernel.

    `matched`, if given, receives the indices in `kernels` of the planned kernels found in the file;
    `off_grid` the `(layer, op name)` of grid kernels not stored on their grid.
    """
    *_, utils = _library()
    model = utils.read_model(bytearray(flatbuffer))
    entries: dict[str, tuple] = {}
    for scope, op_name, tensor, buffer in _filter_ops(model, utils, tuple(_WIDTHS)):
        shape = tuple(int(d) for d in tensor.shape)
        if tensor.type != 0 or op_name.value not in _WIDTHS:  # 0: FLOAT32
            continue
        values = np.frombuffer(bytes(bytearray(buffer.data)), dtype="<f4").reshape(shape)
        for index, storage in enumerate(kernels):
            if storage.kernel.size == math.prod(shape) and any(
                np.array_equal(layout, values) for layout in _tflite_layouts(storage.kernel, shape)
            ):
                entries[scope] = (op_name, *_entry(storage, values, op_name.value, narrow))
                if matched is not None:
                    matched.add(index)
                _, algorithm, bits = entries[scope]
                # Only grid kernels pay for the check (and, evaluated left to right).
                grid = off_grid is not None and storage.grid_bits and algorithm != "recovery"
                if grid and not minmax_exact(values, bits, op_name.value):
                    off_grid.add((storage.layer, op_name.value))
                break
    return entries


def store_planned_weights(
    flatbuffer: bytes, kernels: list[KernelStorage], *, narrow: bool = True, weight_only: bool = False
) -> bytes:
    """Store each planned kernel of a float32 file at its own precision; other filters stay float32.

    Args:
        flatbuffer: a float32 `.tflite` file of the inference copy.
        kernels: the copy's `KernelStorage` records.
        narrow: use int2 / int4 where the levels fit (else int8 for every integer kernel).
        weight_only: integer filters dequantized to float32 in the file (float compute) instead
            of LiteRT's hybrid kernels (`storage._add_integer_entry`).

    Returns:
        The bytes of the stored file (the float file if no filter matches a planned kernel).
    """
    matched: set = set()
    off_grid: set = set()
    entries = planned_entries(flatbuffer, kernels, narrow, matched, off_grid)
    if off_grid:
        warnings.warn(
            f"to_tflite: the filters of {sorted(layer for layer, _ in off_grid)} could not be stored on their "
            "integer grid (narrow_weights=False, or a channel whose largest level is not reached, e.g. with "
            "active_residuals < residuals, and whose levels hide the step): int8 on the library's min/max grid, "
            "close to Keras' weights but not equal.",
            stacklevel=3,
        )
    lost = sorted({storage.layer for index, storage in enumerate(kernels) if index not in matched and storage.layer})
    if lost:
        # The converter changed these kernels (by fusing a following BatchNormalization into them,
        # or folding a constant lookup such as fixed positions into a new constant), so no filter of
        # the file holds their planned levels: they stay float32.
        warnings.warn(
            f"to_tflite: the kernels of {lost} were changed by the TFLite converter and stay float32 in the "
            "file: a BatchNormalization after them fused in (quantize with fold_batch_norm=True so the folded "
            "kernels are the ones quantized), or a lookup of constant indices (fixed positions) folded into a "
            "constant.",
            stacklevel=3,
        )
    if not entries:
        return flatbuffer
    planned = _quantize(flatbuffer, entries, weight_only)
    # Grid-recovered narrow filters must compute what the same grid at int8 computes.
    reference_entries = {
        scope: (op, "recovery", 8) if algorithm == "recovery" and bits < 8 else (op, algorithm, bits)
        for scope, (op, algorithm, bits) in entries.items()
    }
    if reference_entries == entries:
        return planned
    reference = _quantize(flatbuffer, reference_entries, weight_only)
    return planned if keeps_narrow(flatbuffer, reference, planned) else reference
