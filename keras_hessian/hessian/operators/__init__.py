"""Operators: how to multiply a parameter vector by a curvature matrix.

An operator (`HessianOperator`, `GaussNewtonOperator`, `EmpiricalFisherOperator`, `DeflatedOperator`)
offers `hvp(v)`, `hvp_many(vs)`, `variables`, `num_parameters`, `hvp_count` and
`blocks`; the algorithms (`keras_hessian.hessian.algorithms`) need nothing more.
"""

from keras_hessian.hessian.operators._products import (
    AUTODIFF_HVP_METHODS,
    DEFAULT_HVP_METHOD,
    FINITE_DIFFERENCE,
    FORWARD_OVER_REVERSE,
    HVP_METHODS,
    REVERSE_OVER_REVERSE,
    tf_variable,
)
from keras_hessian.hessian.operators.deflated import DeflatedOperator
from keras_hessian.hessian.operators.fisher import EmpiricalFisherOperator
from keras_hessian.hessian.operators.ggn import GaussNewtonOperator
from keras_hessian.hessian.operators.hessian import HessianOperator

__all__ = [
    "AUTODIFF_HVP_METHODS",
    "DEFAULT_HVP_METHOD",
    "FINITE_DIFFERENCE",
    "FORWARD_OVER_REVERSE",
    "HVP_METHODS",
    "REVERSE_OVER_REVERSE",
    "DeflatedOperator",
    "EmpiricalFisherOperator",
    "GaussNewtonOperator",
    "HessianOperator",
    "tf_variable",
]
