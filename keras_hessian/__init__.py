"""keras-hessian: Hessian spectra, adaptive batch size, quantized layers and TFLite export for Keras 3."""

from keras_hessian.callbacks import (
    AdaptiveBatchSize,
    AdversarialAugmentation,
    BatchIncreaseSchedule,
    FixedBatchSize,
    HessianSpectrum,
    LinearScalingWarmup,
)
from keras_hessian.data import adaptive_dataset, load_digits, load_mnist1d
from keras_hessian.export import evaluate_tflite, parity_report, to_tflite
from keras_hessian.hessian import (
    DensityResult,
    EigenResult,
    HessianOperator,
    TraceResult,
    hutchinson_trace,
    spectral_density,
    top_eigenvalues,
)
from keras_hessian.layers import (
    BinaryConv1D,
    BinaryConv2D,
    BinaryDense,
    DFP16Conv1D,
    DFP16Conv2D,
    DFP16Dense,
    TernaryResidualConv1D,
    TernaryResidualConv2D,
    TernaryResidualDense,
)
from keras_hessian.quantize import quantization_summary, quantize_model

__version__ = "0.1.0"

__all__ = [
    "AdaptiveBatchSize",
    "AdversarialAugmentation",
    "BatchIncreaseSchedule",
    "BinaryConv1D",
    "BinaryConv2D",
    "BinaryDense",
    "DFP16Conv1D",
    "DFP16Conv2D",
    "DFP16Dense",
    "DensityResult",
    "EigenResult",
    "FixedBatchSize",
    "HessianOperator",
    "HessianSpectrum",
    "LinearScalingWarmup",
    "TernaryResidualConv1D",
    "TernaryResidualConv2D",
    "TernaryResidualDense",
    "TraceResult",
    "adaptive_dataset",
    "evaluate_tflite",
    "hutchinson_trace",
    "load_digits",
    "load_mnist1d",
    "parity_report",
    "quantization_summary",
    "quantize_model",
    "spectral_density",
    "to_tflite",
    "top_eigenvalues",
]
