"""Former home of the quantizers, kept as an import path: everything lives in `keras_hessian.quantizers`.

`from keras_hessian.layers import quantizers as q` and
`from keras_hessian.layers.quantizers import DFP16, _power_of_two, _validate_choice` keep working.
"""

from keras_hessian._validation import check_choice as _validate_choice
from keras_hessian.quantizers import (
    DFP16,
    DFP_MAX_PRECISION,
    DFP_MIN_PRECISION,
    DFP_ROUNDINGS,
    TERNARY_METHODS,
    BaseQuantizer,
    Binarize,
    KernelCost,
    Ternarize,
    TernaryResidual,
    binarize,
    dfp16,
    dfp16_dequantize,
    dfp16_quantize,
    get,
    power_of_two,
    quantize_gradient,
    register_quantizer,
    ternarize,
    ternary_fit,
    ternary_residual,
)
from keras_hessian.quantizers import power_of_two as _power_of_two

__all__ = [
    "DFP16",
    "DFP_MAX_PRECISION",
    "DFP_MIN_PRECISION",
    "DFP_ROUNDINGS",
    "TERNARY_METHODS",
    "BaseQuantizer",
    "Binarize",
    "KernelCost",
    "Ternarize",
    "TernaryResidual",
    "_power_of_two",
    "_validate_choice",
    "binarize",
    "dfp16",
    "dfp16_dequantize",
    "dfp16_quantize",
    "get",
    "power_of_two",
    "quantize_gradient",
    "register_quantizer",
    "ternarize",
    "ternary_fit",
    "ternary_residual",
]
