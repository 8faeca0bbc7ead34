"""keras-hessian: Hessian spectra, adaptive batch size, quantized layers and TFLite export for Keras 3.

The public names below are imported on first use (PEP 562), so `import keras_hessian` (and the
`keras-hessian` command's `--help`) does not import TensorFlow. `from keras_hessian import
HessianOperator` works as before. The quantized layers are still registered with Keras for
`keras.models.load_model` after `import keras_hessian`: at once if Keras is already imported,
else as soon as it is (`_registration.py`).
"""

from __future__ import annotations

import importlib
from typing import Any

from keras_hessian import _registration
from keras_hessian._version import __version__ as __version__

_registration.install()

# public name -> the module that defines it
_LAZY_NAMES = {
    "AdaptiveBatchSize": "keras_hessian.callbacks",
    "AdversarialAugmentation": "keras_hessian.callbacks",
    "BatchIncreaseSchedule": "keras_hessian.callbacks",
    "BinaryConv1D": "keras_hessian.layers",
    "BinaryConv2D": "keras_hessian.layers",
    "BinaryDense": "keras_hessian.layers",
    "DFP16Conv1D": "keras_hessian.layers",
    "DFP16Conv2D": "keras_hessian.layers",
    "DFP16Dense": "keras_hessian.layers",
    "DensityResult": "keras_hessian.hessian",
    "DiagonalResult": "keras_hessian.hessian",
    "LandscapeResult": "keras_hessian.hessian",
    "LayerTable": "keras_hessian.hessian",
    "EigenResult": "keras_hessian.hessian",
    "EmpiricalFisherOperator": "keras_hessian.hessian",
    "FixedBatchSize": "keras_hessian.callbacks",
    "GaussNewtonOperator": "keras_hessian.hessian",
    "HessianOperator": "keras_hessian.hessian",
    "HessianSpectrum": "keras_hessian.callbacks",
    "LinearScalingWarmup": "keras_hessian.callbacks",
    "PruneDuringTraining": "keras_hessian.callbacks",
    "TernaryResidualConv1D": "keras_hessian.layers",
    "TernaryResidualConv2D": "keras_hessian.layers",
    "TernaryResidualDense": "keras_hessian.layers",
    "TraceResult": "keras_hessian.hessian",
    "adaptive_dataset": "keras_hessian.data",
    "evaluate_tflite": "keras_hessian.export",
    "fold_batch_norm": "keras_hessian.quantize",
    "hessian_diagonal": "keras_hessian.hessian",
    "layer_table": "keras_hessian.hessian",
    "loss_landscape": "keras_hessian.hessian",
    "hutchinson_trace": "keras_hessian.hessian",
    "load_digits": "keras_hessian.data",
    "load_mnist1d": "keras_hessian.data",
    "parity_report": "keras_hessian.export",
    "quantization_summary": "keras_hessian.quantize",
    "quantize_model": "keras_hessian.quantize",
    "sparsity_summary": "keras_hessian.pruning",
    "spectral_density": "keras_hessian.hessian",
    "strip_pruning": "keras_hessian.pruning",
    "to_tflite": "keras_hessian.export",
    "top_eigenvalues": "keras_hessian.hessian",
}
_SUBMODULES = ("callbacks", "data", "export", "hessian", "layers", "models", "plots", "pruning", "quantize")

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
    "DiagonalResult",
    "EigenResult",
    "EmpiricalFisherOperator",
    "FixedBatchSize",
    "GaussNewtonOperator",
    "HessianOperator",
    "HessianSpectrum",
    "LandscapeResult",
    "LayerTable",
    "LinearScalingWarmup",
    "PruneDuringTraining",
    "TernaryResidualConv1D",
    "TernaryResidualConv2D",
    "TernaryResidualDense",
    "TraceResult",
    "adaptive_dataset",
    "evaluate_tflite",
    "fold_batch_norm",
    "hessian_diagonal",
    "hutchinson_trace",
    "layer_table",
    "load_digits",
    "load_mnist1d",
    "loss_landscape",
    "parity_report",
    "quantization_summary",
    "quantize_model",
    "sparsity_summary",
    "spectral_density",
    "strip_pruning",
    "to_tflite",
    "top_eigenvalues",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
