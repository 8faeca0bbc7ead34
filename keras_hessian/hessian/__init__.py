"""The Hessian engine: pure TensorFlow math over Keras models. Imports no callback, layer or CLI.

`operators/` say how to multiply by a curvature matrix (`HessianOperator`, `GaussNewtonOperator`,
`EmpiricalFisherOperator`, `DeflatedOperator`);
`algorithms/` say what to do with the products (`top_eigenvalues`, `hutchinson_trace`,
`hessian_diagonal`, `spectral_density`, `loss_landscape`, `layer_table`); `results.py` holds what they return, `vectors.py` the
parameter-vector algebra.
"""

from keras_hessian.hessian.algorithms import (
    LayerTable,
    hessian_diagonal,
    hutchinson_trace,
    layer_table,
    loss_landscape,
    per_block,
    spectral_density,
    top_eigenvalues,
)
from keras_hessian.hessian.operators import EmpiricalFisherOperator, GaussNewtonOperator, HessianOperator
from keras_hessian.hessian.results import DensityResult, DiagonalResult, EigenResult, LandscapeResult, TraceResult

__all__ = [
    "DensityResult",
    "DiagonalResult",
    "EigenResult",
    "EmpiricalFisherOperator",
    "GaussNewtonOperator",
    "HessianOperator",
    "LandscapeResult",
    "LayerTable",
    "TraceResult",
    "hessian_diagonal",
    "hutchinson_trace",
    "layer_table",
    "loss_landscape",
    "per_block",
    "spectral_density",
    "top_eigenvalues",
]
