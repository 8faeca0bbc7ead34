"""quantize_model (a quantized copy of a model by Keras cloning, with its QuantizeReport), fold_batch_norm
and quantization_summary.

`SCHEMES` and `QUANTIZABLE_LAYERS` are read from the one registry of quantized layers
(`keras_hessian.layers.registry`) when this package is imported, plus the float schemes
bfloat16 and float32; `quantize_model` itself reads the registry at each call.
"""

from keras_hessian.layers import registry
from keras_hessian.quantize._plan import scheme_names
from keras_hessian.quantize.fold import fold_batch_norm, recalibrate_batch_norm
from keras_hessian.quantize.quantize_model import quantize_model
from keras_hessian.quantize.report import LayerOutcome, QuantizeReport
from keras_hessian.quantize.summary import QuantizationSummary, quantization_summary

SCHEMES = scheme_names()
QUANTIZABLE_LAYERS = registry.quantizable_types()

__all__ = [
    "QUANTIZABLE_LAYERS",
    "SCHEMES",
    "LayerOutcome",
    "QuantizationSummary",
    "QuantizeReport",
    "fold_batch_norm",
    "quantization_summary",
    "quantize_model",
    "recalibrate_batch_norm",
]
