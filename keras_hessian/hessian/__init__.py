"""The Hessian engine: pure TensorFlow math over Keras models. Imports no callback, layer or CLI."""

from keras_hessian.hessian.density import spectral_density
from keras_hessian.hessian.eigen import top_eigenvalues
from keras_hessian.hessian.operator import HessianOperator
from keras_hessian.hessian.result import DensityResult, EigenResult, TraceResult
from keras_hessian.hessian.trace import hutchinson_trace

__all__ = [
    "DensityResult",
    "EigenResult",
    "HessianOperator",
    "TraceResult",
    "hutchinson_trace",
    "spectral_density",
    "top_eigenvalues",
]
