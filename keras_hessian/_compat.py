"""Every private Keras / TensorFlow symbol keras-hessian touches, in one place.

Tested with TensorFlow 2.21.0, Keras 3.15.1 and ai-edge-quantizer 0.10.0 (`TESTED_VERSIONS`;
setup.cfg allows exactly these minor releases). A Keras release that moves one of these breaks this module only, and its tests say
which. Nothing else in the package may import `keras.src` or use a private attribute of a Keras
object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

# The versions CI installs (setup.cfg pins each to this minor release); ai-edge-quantizer's
# modules used by export/storage.py are not a stable API either.
TESTED_VERSIONS = {"tensorflow": "2.21.0", "keras": "3.15.1", "ai-edge-quantizer": "0.10.0"}


def flatten_layers(model: Any) -> list:
    """All layers below `model`, nested models' layers included (`Layer._flatten_layers`)."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def default_train_step() -> Callable:
    """Keras' own TensorFlow `train_step` (`keras.src.backend.tensorflow.trainer`)."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    return TensorFlowTrainer.train_step


def unscale_loss_for_distribution(loss: Any) -> Any:
    """Undo Keras' division of the loss by the number of replicas (`keras.src.losses.loss`)."""
    from keras.src.losses import loss as loss_module

    return loss_module.unscale_loss_for_distribution(loss)


def compute_loss_for_training(model: Any, x: Any, y: Any, y_pred: Any, sample_weight: Any) -> Any:
    """The training step's own loss (`Trainer._compute_loss`, which updates the loss metrics)."""
    return model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)


def loss_tracker(model: Any) -> Any:
    """The `loss` metric `fit` reports (`Trainer._loss_tracker`)."""
    return model._loss_tracker


def compiled_loss(model: Any) -> Any:
    """The model's `CompileLoss` (`Trainer._compile_loss`), or None if it has no compiled loss."""
    return getattr(model, "_compile_loss", None)


def detached_compiled_loss(model: Any) -> Callable[[Any, Any, Any], Any] | None:
    """A copy of the model's compiled loss whose per-output metrics are its own.

    `model.compute_loss` on a multi-output model updates the per-output loss metrics that `fit`
    reports; a measurement (a Hessian product, an FGSM step) must not. The copy is built from the
    same `loss`, `loss_weights` and output names (`keras.src.trainers.compile_utils.CompileLoss`).
    Returns `loss(y_true, y_pred, sample_weight)` (without `model.losses`), or None if the model
    is not compiled with a loss.
    """
    original = compiled_loss(model)
    if original is None:
        return None
    from keras.src.trainers.compile_utils import CompileLoss

    copy = CompileLoss(
        original._user_loss,
        original._user_loss_weights,
        reduction=original.reduction,
        output_names=original.output_names,
    )
    return copy


def is_graph_network(model: Any) -> bool:
    """Whether `model` is a graph of layers Keras can clone (`Functional._is_graph_network`)."""
    return bool(getattr(model, "_is_graph_network", False))


def is_keras_variable(value: Any) -> bool:
    """True for a Keras 3 variable (public: `keras.Variable`)."""
    return isinstance(value, keras.Variable)
