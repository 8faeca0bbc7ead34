"""Keras' own quantized Dense layers (`model.quantize("int8" | "int4")`) as float32 kernels for export.

Keras 3.15 cannot ship these models itself: an int8 model fails in the TFLite converter
(BatchMatMul on int8 operands) and an int4 model converts to a file larger than the float one,
because the int4 kernel is unpacked and dequantized by ops inside the graph. So the inference copy
rebuilds each such layer as a plain float32 `Dense` holding the kernel its forward pass applies, and
`planned_storage.py` stores that kernel back at int8 / int4 with `ai-edge-quantizer`:

- int8 (and int4 with `block_size=-1`, per channel): symmetric per output channel,
  `W = q / kernel_scale`, which is TFLite's per-channel grid, so storage is exact;
- int4 with sub-channel groups (Keras' default, `block_size=128`): asymmetric per group,
  `W = (q - kernel_zero[g]) * kernel_scale[g]`; TFLite has no asymmetric weight grid, so the
  dequantized kernel is stored again as symmetric per-channel int4 (one more rounding, at most half
  a step of that grid per weight).

Only public attributes are read (`quantization_mode`, `kernel`, which Keras returns unpacked,
`kernel_scale`, `kernel_zero`, `g_idx`).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

__all__ = ["KERAS_QUANTIZATION_MODES", "float_dense_config", "is_keras_quantized", "keras_dense_kernel"]

KERAS_QUANTIZATION_MODES = ("int8", "int4")


def is_keras_quantized(layer: Any) -> bool:
    """Whether `layer` was quantized by Keras' `quantize()` (any mode)."""
    return isinstance(layer, keras.layers.Layer) and getattr(layer, "quantization_mode", None) is not None


def keras_dense_kernel(layer: keras.layers.Layer) -> tuple[np.ndarray, int, bool]:
    """`(float32 kernel, bits, exact)` of a Dense quantized by Keras' `quantize("int8" | "int4")`.

    `exact`: the kernel lies on a symmetric per-output-channel grid of `bits` bits (int8, or
    per-channel int4), so TFLite stores it without error.

    Raises:
        ValueError: another layer type (EinsumDense, Embedding) or another mode (float8, GPTQ,
            AWQ), naming the layer.
    """
    mode = layer.quantization_mode
    if type(layer) is not keras.layers.Dense or mode not in KERAS_QUANTIZATION_MODES:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}, quantization_mode={mode!r}) cannot be "
            f"exported: to_tflite supports Keras-quantized Dense layers in modes "
            f"{list(KERAS_QUANTIZATION_MODES)} only; quantize that layer with "
            "keras_hessian.quantize_model instead."
        )
    levels = np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float32)
    scale = np.asarray(keras.ops.convert_to_numpy(layer.kernel_scale), dtype=np.float32)
    bits = 8 if mode == "int8" else 4
    if scale.ndim <= 1:  # one scale per output unit: Keras divides by it
        return (levels / scale).astype(np.float32), bits, True
    zero = np.asarray(keras.ops.convert_to_numpy(layer.kernel_zero), dtype=np.float32)
    groups = np.asarray(keras.ops.convert_to_numpy(layer.g_idx)).astype(np.int64)
    return ((levels - zero[groups]) * scale[groups]).astype(np.float32), bits, False


def float_dense_config(layer: keras.layers.Layer) -> dict:
    """The config of a float32 Dense like the Keras-quantized `layer` (quantization dropped)."""
    config = dict(layer.get_config())
    config.pop("quantization_config", None)
    config["dtype"] = "float32"
    return config
