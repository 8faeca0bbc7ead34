"""Quantizers: the math of binarization, ternarization, ternary residuals, DFP-16 and integers.

One family per module (`binary`, `ternary`, `ternary_residual`, `dfp16`, `integer`, `float16`) over a small shared
`base`. Each quantizer is a small function whose docstring states its forward rule and its
pseudo-gradient (straight-through estimator, STE), plus a thin serializable class around it
that carries its precision in bits, as in larq (`ste_sign` / `SteSign`). Layers in
`keras_hessian.layers` compose these objects; they contain no quantization math themselves.

All quantizers compute in float32 whatever the input dtype (bfloat16 has too few mantissa
bits for DFP-16 and for exact ternary thresholds) and return the input's dtype.
"""

from keras_hessian.quantizers.base import (
    BaseQuantizer,
    KernelCost,
    get,
    quantize_gradient,
    register_quantizer,
)
from keras_hessian.quantizers.binary import Binarize, binarize
from keras_hessian.quantizers.dfp16 import (
    DFP16,
    DFP_MAX_PRECISION,
    DFP_MIN_PRECISION,
    DFP_ROUNDINGS,
    dfp16,
    dfp16_dequantize,
    dfp16_quantize,
    power_of_two,
)
from keras_hessian.quantizers.float16 import Float16, round_to_float16
from keras_hessian.quantizers.integer import INTEGER_BITS, Integer, integer_scale, quantize_integer
from keras_hessian.quantizers.ternary import TERNARY_METHODS, Ternarize, ternarize, ternary_fit
from keras_hessian.quantizers.ternary_residual import GRID_BITS, TernaryResidual, ternary_residual

__all__ = [
    "DFP16",
    "DFP_MAX_PRECISION",
    "DFP_MIN_PRECISION",
    "DFP_ROUNDINGS",
    "GRID_BITS",
    "INTEGER_BITS",
    "TERNARY_METHODS",
    "BaseQuantizer",
    "Binarize",
    "Float16",
    "Integer",
    "KernelCost",
    "Ternarize",
    "TernaryResidual",
    "binarize",
    "dfp16",
    "dfp16_dequantize",
    "dfp16_quantize",
    "get",
    "integer_scale",
    "power_of_two",
    "quantize_gradient",
    "quantize_integer",
    "register_quantizer",
    "round_to_float16",
    "ternarize",
    "ternary_fit",
    "ternary_residual",
]
