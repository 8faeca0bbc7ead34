"""TFLite export for edge devices: conversion, LiteRT evaluation, parity with the Keras model.

- `convert.py`: `to_tflite`, its `MODES` and `auto_mode`, the converter set-up, conversion errors;
- `inference_copy.py`: the float32 copy that is converted (quantized layers folded, bfloat16
  rebuilt), with `ternary_split.py` (a ternary-residual Dense as int2 pieces) and
  `keras_quantized.py` (Dense layers quantized by Keras' own `model.quantize`);
- `storage.py`: sub-8-bit weight storage of `"dynamic_int8"` files through `ai-edge-quantizer`;
- `planned_storage.py`: `"auto"` files of quantized models, each layer at its own precision;
- `representative_data.py`: calibration data for the int8 / int16x8 modes;
- `litert.py`: `predict_tflite`, `evaluate_tflite`, `parity_report`, `format_parity_report`;
- `_files.py`: output-path checks and atomic writes.
"""

from keras_hessian._files import check_output_path
from keras_hessian.export.convert import MODES, auto_mode, to_tflite
from keras_hessian.export.inference_copy import inference_copy
from keras_hessian.export.litert import evaluate_tflite, format_parity_report, parity_report, predict_tflite
from keras_hessian.export.storage import narrow_integer_weights

__all__ = [
    "MODES",
    "auto_mode",
    "check_output_path",
    "evaluate_tflite",
    "format_parity_report",
    "inference_copy",
    "narrow_integer_weights",
    "parity_report",
    "predict_tflite",
    "to_tflite",
]
