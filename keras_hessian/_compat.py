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


def sublayers(layer: Any) -> list:
    """The layers `layer` holds directly (`Layer._flatten_layers`): MultiHeadAttention's query / key /
    value / output `EinsumDense`, a KerasHub block's attention and feed-forward layers."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


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


def running_fit() -> tuple[Any, Any] | None:
    """`(epoch_iterator, callback_list)` of the `model.fit` running on this thread, or None.

    Keras fixes an epoch's number of steps when `fit` starts (`EpochIterator._num_batches`, from
    the dataset's cardinality) and the progress bar's target with it; a dataset whose epoch
    length changes inside one fit (an adaptive dataset) has no static cardinality to give. The
    batch-size callbacks therefore tell the running fit the length of each epoch, through the
    two objects `TensorFlowTrainer.fit` holds as locals, found by walking up the caller frames.
    """
    import inspect
    import sys

    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    code = inspect.unwrap(TensorFlowTrainer.fit).__code__
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            iterator, callbacks = frame.f_locals.get("epoch_iterator"), frame.f_locals.get("callbacks")
            return (iterator, callbacks) if iterator is not None and callbacks is not None else None
        frame = frame.f_back
    return None


def fit_dataset(epoch_iterator: Any) -> Any:
    """The dataset a fit's epoch iterator reads (`EpochIterator.data_adapter._dataset`), or None."""
    return getattr(getattr(epoch_iterator, "data_adapter", None), "_dataset", None)


def set_epoch_steps(epoch_iterator: Any, callbacks: Any, steps: int) -> None:
    """Make the running fit take `steps` batches in the epoch about to start, and show them.

    Sets `EpochIterator._num_batches` (read when the epoch's loop starts, after
    `on_epoch_begin`), the callbacks' `params["steps"]` and the progress bar's target (a
    `ProgbarLogger` reads `params["steps"]` once, in `set_params`).
    """
    epoch_iterator._num_batches = int(steps)
    params = getattr(callbacks, "params", None)
    if isinstance(params, dict):
        params["steps"] = int(steps)
    for callback in getattr(callbacks, "callbacks", []):
        if isinstance(callback, keras.callbacks.ProgbarLogger):
            callback.target = int(steps)
            if callback.progbar is not None:
                callback.progbar.target = int(steps)
