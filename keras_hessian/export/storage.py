"""Sub-8-bit weight storage of `"dynamic_int8"` files, through Google's `ai-edge-quantizer`.

`to_tflite` converts the inference copy to a float32 file and hands it to `ai-edge-quantizer`
(0.10) with one dynamic-range recipe entry per FullyConnected / Conv2D op: the narrowest of int2
(FullyConnected only: LiteRT's int2 hybrid kernel), int4 or int8 that holds the op's weights
EXACTLY, else int8 by the library's per-channel min/max. `"auto"` files of quantized models are
stored layer by layer by `planned_storage.py`, which reuses the pieces here.

What stays ours, and why:

- Choosing the bits. The library quantizes by the bits a recipe names; it does not look for the
  narrowest exact storage. We read the levels with the library's own recovery of a symmetric
  per-channel grid (`dequantized_weight_recovery`: scale = smallest non-zero gap of |w|) and pick
  the bits; the library then stores them with that algorithm. Its min/max scale `max|w| / qmax`
  would also reproduce a binary kernel (+-alpha_c is +-qmax at alpha_c / qmax, for int2 +-1 at
  alpha_c), but not a ternary-residual kernel's levels `{0, +-a0, +-a1, +-a0 +- a1}`, which
  recovery keeps whenever they share a grid.
- The exactness check: each narrowed file is run in LiteRT against the same file with int8
  weights on a probe batch, and the int8 file is kept if the outputs differ, unless the narrow
  file is no farther from the float32 file than the int8 file is (`keeps_narrow`).
- `narrow_integer_weights`, for a file that is already int8: the library quantizes float models
  only, so an int8 filter whose levels fit is dequantized back to float32 here, then re-stored by
  the library.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

__all__ = ["DYNAMIC_RANGE_MIN_ELEMENTS", "narrow_integer_weights", "store_dynamic_range_weights"]

# Weight tensors below this size stay float32, as the TFLite converter's dynamic-range mode leaves
# them: their per-channel scales and the hybrid kernel's activation quantization cost more than
# they save.
DYNAMIC_RANGE_MIN_ELEMENTS = 1024
# Ops whose filter (input 1) LiteRT runs in int4 hybrid kernels; int2 only for FullyConnected
# (measured with ai-edge-litert 2.3: outputs identical to the int8 file).
_INT4_FILTER_OPS = ("FULLY_CONNECTED", "CONV_2D")
_INT2_FILTER_OPS = ("FULLY_CONNECTED",)


def _library():
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer
    from ai_edge_quantizer.algorithms.uniform_quantize import dequantized_weight_recovery
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    return algorithm_manager, qtyping, quantizer, dequantized_weight_recovery, tfl_flatbuffer_utils


def _filter_ops(model, utils, ops: tuple[str, ...] = _INT4_FILTER_OPS):
    """(scope, op name, filter tensor, buffer) of constant filters read by one op of `ops` (FC/Conv2D)."""
    for subgraph in model.subgraphs:
        readers: dict[int, int] = {}
        for operator in subgraph.operators:
            for tensor_index in operator.inputs:
                readers[int(tensor_index)] = readers.get(int(tensor_index), 0) + 1
        buffer_users: dict[int, int] = {}
        for tensor in subgraph.tensors:
            buffer_users[tensor.buffer] = buffer_users.get(tensor.buffer, 0) + 1
        for operator in subgraph.operators:
            code = model.operatorCodes[operator.opcodeIndex]
            name = utils.TFL_OP_CODE_TO_NAME.get(max(code.builtinCode, code.deprecatedBuiltinCode))
            if name is None or name.value not in ops or len(operator.inputs) < 2:
                continue
            index = int(operator.inputs[1])
            tensor = subgraph.tensors[index]
            buffer = model.buffers[tensor.buffer]
            if readers.get(index) == 1 and buffer_users.get(tensor.buffer) == 1 and buffer.data is not None:
                yield utils.get_op_scope(operator, subgraph.tensors), name, tensor, buffer


def exact_bits(weights: np.ndarray, op_name: str) -> int | None:
    """The fewest bits (2, 4 or 8) whose symmetric per-channel grid holds `weights` exactly.

    `weights` in TFLite layout (output channels first). The grid's scale per channel is the
    smallest non-zero gap of |w| and 0, as `ai-edge-quantizer`'s dequantized-weight recovery
    computes it; None when the weights are not on such a grid with at most 127 levels.
    """
    *_, recovery, _ = _library()
    weights = np.asarray(weights, dtype=np.float32)
    _, scales = recovery.get_zp_scale_from_dequantized_symmetric_weights(weights, quantized_dimension=0)
    levels = weights / scales.astype(np.float32)
    if not np.all(np.isfinite(levels)) or not np.allclose(levels, np.round(levels), rtol=0, atol=1e-4):
        return None
    largest = int(np.abs(np.round(levels)).max())
    for bits in (2, 4, 8):
        if bits == 2 and op_name not in _INT2_FILTER_OPS:
            continue
        if largest <= 2 ** (bits - 1) - 1:
            return bits
    return None


def _add_integer_entry(
    run: Any, *, regex: str, op_name: Any, bits: int, algorithm_key: Any, weight_only: bool
) -> None:
    """One integer recipe entry: dynamic range (hybrid kernels) or weight-only (float compute).

    Weight-only filters are stored as integers and dequantized to float32 by a DEQUANTIZE op,
    which LiteRT evaluates once when it prepares the file; the op then computes in float32, so
    the file computes what the Keras model computes wherever the stored levels are exact. The
    library has no weight-only int2 (LiteRT has no int2 DEQUANTIZE): int2 filters go to int4,
    which holds their levels too.
    """
    if weight_only:
        run.add_weight_only_config(
            regex=regex, operation_name=op_name, num_bits=max(bits, 4), algorithm_key=algorithm_key
        )
    else:
        run.add_dynamic_config(regex=regex, operation_name=op_name, num_bits=bits, algorithm_key=algorithm_key)


def _quantize(flatbuffer: bytes, plan: dict[str, tuple], exact: bool, weight_only: bool = False) -> bytes:
    """Run the library with one integer entry per op scope in `plan`."""
    algorithm_manager, _, quantizer, _, _ = _library()
    run = quantizer.Quantizer(bytearray(flatbuffer))
    for scope, (op_name, bits) in plan.items():
        use_recovery = exact and bits is not None
        _add_integer_entry(
            run,
            regex=f"^{re.escape(scope)}$",
            op_name=op_name,
            bits=bits if use_recovery else 8,
            algorithm_key=(
                algorithm_manager.AlgorithmName.DEQUANTIZED_WEIGHT_RECOVERY
                if use_recovery
                else algorithm_manager.AlgorithmName.MIN_MAX_UNIFORM_QUANT
            ),
            weight_only=weight_only,
        )
    return bytes(run.quantize(enable_progress_report=False).quantized_model)


def _tflite_layouts(kernel: np.ndarray, shape: tuple) -> tuple[np.ndarray, ...]:
    """A Keras kernel (..., in, out) in TFLite's filter layouts of `shape` (output first)."""
    if kernel.size != math.prod(shape):
        return ()
    return (np.moveaxis(kernel, -1, 0).reshape(shape), kernel.reshape(shape))


def store_dynamic_range_weights(
    flatbuffer: bytes,
    quantized_kernels: list[np.ndarray],
    *,
    float_layers: bool,
    narrow: bool = True,
    weight_only: bool = False,
) -> bytes:
    """Dynamic-range weight storage of a float32 file: sub-8-bit where exact, else int8.

    Args:
        flatbuffer: a float32 `.tflite` file.
        quantized_kernels: float32 kernels (Keras layout) of the model's quantized layers.
        float_layers: whether the other FC/Conv2D filters are stored in int8 too (`"dynamic_int8"`)
            or kept float32 (`"auto"`).
        narrow: store a filter in int2/int4 where its levels fit exactly; else int8 throughout.
        weight_only: dequantize the filters to float32 in the file (float compute) instead of
            running LiteRT's hybrid kernels (`_add_integer_entry`).

    Returns:
        The bytes of the quantized file (the float file if no filter qualifies).
    """
    *_, utils = _library()
    model = utils.read_model(bytearray(flatbuffer))
    plan: dict[str, tuple] = {}
    for scope, op_name, tensor, buffer in _filter_ops(model, utils):
        shape = tuple(int(d) for d in tensor.shape)
        if tensor.type != 0 or math.prod(shape) < DYNAMIC_RANGE_MIN_ELEMENTS:  # 0: FLOAT32
            continue
        values = np.frombuffer(bytes(bytearray(buffer.data)), dtype="<f4").reshape(shape)
        quantized = any(
            np.array_equal(layout, values)
            for kernel in quantized_kernels
            for layout in _tflite_layouts(kernel, shape)
        )
        if quantized or float_layers:
            plan[scope] = (op_name, exact_bits(values, op_name.value) if narrow else None)
    if not plan:
        return flatbuffer
    int8 = _quantize(flatbuffer, plan, exact=False, weight_only=weight_only)
    if not any(bits is not None and bits < 8 for _, bits in plan.values()):
        return int8
    narrowed = _quantize(flatbuffer, plan, exact=True, weight_only=weight_only)
    return narrowed if keeps_narrow(flatbuffer, int8, narrowed) else int8


def narrow_integer_weights(flatbuffer: bytes) -> bytes:
    """Re-store int8 filter tensors in int4 or int2 where that loses nothing.

    Use it on a `"dynamic_int8"` file written by other tools (`to_tflite` stores the narrow
    weights itself). For a filter with int8 levels `q[..., c]` and scale `s_c` per output channel
    `c`, whose levels divided by `g_c = gcd(|q[..., c]|)` fit in int2 (FullyConnected only) or
    int4, the weights `q * s_c` are dequantized to float32 and stored again by `ai-edge-quantizer`
    on the grid `s_c * g_c`: the same weights up to one float32 rounding of the scale. If LiteRT
    cannot run the narrowed file, or its outputs differ from the int8 file on a probe batch while
    being farther from the float32 weights' outputs than the int8 file (`keeps_narrow`), the int8
    file is returned unchanged.

    Example:

    ```python
    small = narrow_integer_weights(pathlib.Path("binary.tflite").read_bytes())
    ```

    Args:
        flatbuffer: the bytes of a `.tflite` file.

    Returns:
        The bytes of the narrowed file (or `flatbuffer` itself when nothing narrows).
    """
    from tensorflow.lite.tools import flatbuffer_utils

    *_, utils = _library()
    model = utils.read_model(bytearray(flatbuffer))
    plan: dict[str, tuple] = {}
    for scope, op_name, tensor, buffer in _filter_ops(model, utils):
        quantization = tensor.quantization
        if tensor.type != 9 or quantization is None or quantization.scale is None:  # 9: INT8
            continue
        shape = tuple(int(d) for d in tensor.shape)
        scales = np.asarray(quantization.scale, dtype=np.float32)
        step = scales.reshape([-1] + [1] * (len(shape) - 1)) if len(scales) > 1 else scales
        if len(scales) > 1 and int(quantization.quantizedDimension) != 0:
            continue
        values = np.frombuffer(bytes(bytearray(buffer.data)), dtype=np.int8).reshape(shape)
        dequantized = (values.astype(np.float32) * step).astype("<f4")
        bits = exact_bits(dequantized, op_name.value)
        if bits is None or bits == 8:
            continue
        buffer.data = np.frombuffer(dequantized.tobytes(), dtype=np.uint8)
        tensor.type, tensor.quantization = 0, None
        plan[scope] = (op_name, bits)
    if not plan:
        return flatbuffer
    floated = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    try:
        narrowed = _quantize(floated, plan, exact=True)
    except (RuntimeError, ValueError):
        return flatbuffer
    return narrowed if keeps_narrow(floated, flatbuffer, narrowed) else flatbuffer


def same_outputs(reference: bytes, candidate: bytes) -> bool:
    """Whether LiteRT runs `candidate` and gives `reference`'s outputs on a probe batch."""
    outputs = _probe_outputs(reference, candidate, rows=None)
    return outputs is not None and all(
        np.allclose(a, b, rtol=1e-4, atol=1e-5 * (1.0 + float(np.abs(a).max())))
        for a, b in zip(*outputs)
    )


def keeps_narrow(float_file: bytes, wide: bytes, narrow: bytes) -> bool:
    """Whether the narrow file may replace the wide (int8) file holding the same weight values.

    Accepted when its outputs equal the wide file's on a probe batch (`same_outputs`), or else when
    it is about as far from the float32 file (the Keras model, to float rounding) as the wide file
    is: largest absolute output error at most 1.25x the wide file's, and top-1 agreement with the float
    file on the probe rows at least the wide file's. The narrow weights are the wide file's values
    on the same grid (`exact_bits`); LiteRT's int4 hybrid kernels only round activations
    differently, which the first test alone rejects though the int8 file errs as much. A storage
    fault (wrong scales or packing) moves outputs by the size of the weights and fails both.
    """
    if same_outputs(wide, narrow):
        return True
    outputs = _probe_outputs(float_file, wide, narrow, rows=_PROBE_ROWS)
    if outputs is None:
        return False
    for truth, wide_out, narrow_out in zip(*outputs):
        truth, wide_out, narrow_out = (np.asarray(o, dtype=np.float64) for o in (truth, wide_out, narrow_out))
        error, wide_error = np.abs(narrow_out - truth).max(), np.abs(wide_out - truth).max()
        if not np.all(np.isfinite(narrow_out)) or error > _ERROR_SLACK * wide_error:
            return False
        if truth.ndim >= 2:
            top1 = truth.argmax(-1)
            if np.mean(narrow_out.argmax(-1) == top1) < np.mean(wide_out.argmax(-1) == top1):
                return False
    return True


# How much larger than the wide file's largest error against the float file the narrow file's may
# be: both come from the same activation rounding of hybrid kernels (the weights are equal), so
# neither is smaller by rule; on MobileNetV2 (16 probe rows) the int4 file's was 1.07x the int8's.
_ERROR_SLACK = 1.25
# Rows of `keeps_narrow`'s probe batch where the file's batch axis is dynamic, for its top-1 test.
_PROBE_ROWS = 16


def _probe_outputs(*files: bytes, rows: int | None) -> list[list[np.ndarray]] | None:
    """Each file's outputs on the same random-normal probe batch in LiteRT; None if one cannot run.

    `rows`: the batch size where the batch axis is dynamic (None: the file's own input shape).
    """
    from ai_edge_litert.interpreter import Interpreter

    try:
        outputs = []
        for content in files:
            interpreter = Interpreter(model_content=content)
            details = interpreter.get_input_details()
            for detail in details:
                if rows is not None and len(detail["shape_signature"]) and detail["shape_signature"][0] == -1:
                    interpreter.resize_tensor_input(detail["index"], [rows, *detail["shape"][1:]])
            interpreter.allocate_tensors()
            rng = np.random.default_rng(0)
            for detail in interpreter.get_input_details():
                probe = rng.normal(size=detail["shape"])
                interpreter.set_tensor(detail["index"], probe.astype(detail["dtype"]))
            interpreter.invoke()
            outputs.append([interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()])
    except (RuntimeError, ValueError):
        return None
    return outputs
