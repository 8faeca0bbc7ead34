"""Callbacks for `model.fit` that measure and use the Hessian spectrum."""

from keras_hessian.callbacks.adaptive_batch_size import AdaptiveBatchSize
from keras_hessian.callbacks.adversarial_augmentation import AdversarialAugmentation
from keras_hessian.callbacks.batch_increase_schedule import BatchIncreaseSchedule
from keras_hessian.callbacks.batch_size_controller import LR_SCALING_RULES, BatchSizeController
from keras_hessian.callbacks.fixed_batch_size import FixedBatchSize
from keras_hessian.callbacks.hessian_spectrum import HessianSpectrum
from keras_hessian.callbacks.linear_scaling_warmup import LinearScalingWarmup
from keras_hessian.callbacks.multi_worker import prepare_multi_worker
from keras_hessian.callbacks.pruning import SCHEDULES, PruneDuringTraining, pruning_schedule
from keras_hessian.callbacks.recipes import METHODS, training_callbacks
from keras_hessian.callbacks.schedules import step_decay
from keras_hessian.callbacks.timer_batch_size import TimerBatchSize
from keras_hessian.ops.fgsm import fgsm  # an operation, not a callback: kept here for existing imports

__all__ = [
    "LR_SCALING_RULES",
    "METHODS",
    "SCHEDULES",
    "AdaptiveBatchSize",
    "AdversarialAugmentation",
    "BatchIncreaseSchedule",
    "BatchSizeController",
    "FixedBatchSize",
    "HessianSpectrum",
    "LinearScalingWarmup",
    "PruneDuringTraining",
    "TimerBatchSize",
    "fgsm",
    "prepare_multi_worker",
    "pruning_schedule",
    "step_decay",
    "training_callbacks",
]
