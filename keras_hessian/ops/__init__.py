"""Tensor operations on models that are not callbacks (FGSM)."""

from keras_hessian.ops.fgsm import fgsm

__all__ = ["fgsm"]
