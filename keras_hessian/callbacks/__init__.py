"""Callbacks for `model.fit` that measure and use the Hessian spectrum."""

from keras_hessian.callbacks.adaptive_batch import AdaptiveBatchSize, BatchSizeController
from keras_hessian.callbacks.adversarial import AdversarialAugmentation, fgsm
from keras_hessian.callbacks.baselines import (
    BatchIncreaseSchedule,
    FixedBatchSize,
    LinearScalingWarmup,
    step_decay,
    training_callbacks,
)
from keras_hessian.callbacks.spectrum import HessianSpectrum

__all__ = [
    "AdaptiveBatchSize",
    "AdversarialAugmentation",
    "BatchIncreaseSchedule",
    "BatchSizeController",
    "FixedBatchSize",
    "HessianSpectrum",
    "LinearScalingWarmup",
    "fgsm",
    "step_decay",
    "training_callbacks",
]
