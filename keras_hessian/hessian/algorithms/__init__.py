"""Algorithms: what to do with an operator's products (eigenvalues, trace, diagonal, spectral density),
and the loss landscape along the top eigenvectors or random directions.

Each is a function of an operator and runs on any of them (`keras_hessian.hessian.operators`).
"""

from keras_hessian.hessian.algorithms._per_block import per_block
from keras_hessian.hessian.algorithms.density import spectral_density
from keras_hessian.hessian.algorithms.diagonal import hessian_diagonal
from keras_hessian.hessian.algorithms.eigen import (
    DEFAULT_EIGEN_METHOD,
    EIGEN_METHODS,
    compatible_vectors,
    top_eigenvalues,
)
from keras_hessian.hessian.algorithms.landscape import loss_landscape
from keras_hessian.hessian.algorithms.layer_table import LayerTable, layer_table
from keras_hessian.hessian.algorithms.trace import hutchinson_trace

__all__ = [
    "DEFAULT_EIGEN_METHOD",
    "EIGEN_METHODS",
    "LayerTable",
    "compatible_vectors",
    "hessian_diagonal",
    "hutchinson_trace",
    "layer_table",
    "loss_landscape",
    "per_block",
    "spectral_density",
    "top_eigenvalues",
]
