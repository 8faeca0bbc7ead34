"""PruneDuringTraining: prune during `fit` following a TFMOT schedule, masks kept after every step.

tensorflow-model-optimization's pruning wrappers reject Keras 3 models, but its schedules are
plain objects (`schedule(step) -> (should_prune, sparsity)`) and run standalone: they decide
when and how much, this callback does the rest. It keeps no state in the model: masks are
variables of the callback, applied inside the train step after each optimizer update (through
`step_transform`), so a saved model, `strip_pruning` or `BackupAndRestore` see plain weights
with exact zeros. On resume the masks are read back from those zeros (a kept weight is exactly
zero with probability 0 in float arithmetic), so they are restored exactly.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_hessian._validation import ArgumentTypeError, check_choice, check_float, check_int
from keras_hessian.callbacks.step_transform import StepTransform, StepTransformCallback
from keras_hessian.pruning import ALLOCATIONS, CRITERIA, GRANULARITIES, apply_masks, compute_masks, saliency
from keras_hessian.pruning._layers import prunable_layers
from keras_hessian.pruning.masks import bias_mask

SCHEDULES = ("polynomial", "constant")


def pruning_schedule(schedule: str, sparsity: float, steps: int, *, updates: int = 10, prune_fraction: float = 2 / 3):
    """The TFMOT schedule of a fine-tune of `steps` optimizer steps: one-shot or iterative.

    * `constant`: one-shot, `ConstantSparsity(sparsity, begin_step=0)` pruning at step 0 only
      (its frequency is `steps`), then `steps` of fine-tuning at that sparsity.
    * `polynomial`: iterative (Deep Compression's prune / retrain), `PolynomialDecay(0,
      sparsity)` from step 0 to the last of `updates` evenly spaced mask updates within the first
      `prune_fraction` of the steps, then fine-tuning at `sparsity` for the rest. Its end step is
      a multiple of its frequency, so TFMOT's schedule prunes at the end step and the final
      sparsity is reached exactly. With fewer than 2 steps it is the one-shot schedule.

    Both give the same number of fine-tune steps, so they compare at equal training cost.

    Example:

    ```python
    schedule = pruning_schedule("polynomial", 0.9, steps=epochs * math.ceil(len(x) / 64))
    model.fit(x, y, epochs=epochs, batch_size=64, callbacks=[PruneDuringTraining(schedule)])
    ```
    """
    from tensorflow_model_optimization.sparsity.keras import ConstantSparsity, PolynomialDecay

    check_choice("schedule", schedule, SCHEDULES)
    sparsity = check_float("sparsity", sparsity, minimum=0.0, maximum=1.0, exclusive_maximum=True)
    steps = check_int("steps", steps, 1)
    updates = check_int("updates", updates, 1)
    prune_fraction = check_float("prune_fraction", prune_fraction, minimum=0.0, exclusive_minimum=True, maximum=1.0)
    # The last step that begins is steps - 1; pruning must end by then to reach `sparsity`.
    span = min(steps - 1, max(1, int(prune_fraction * steps)))
    if schedule == "constant" or span < 1:
        return ConstantSparsity(sparsity, begin_step=0, frequency=steps)
    frequency = max(1, span // min(updates, span))
    return PolynomialDecay(0.0, sparsity, begin_step=0, end_step=frequency * (span // frequency), frequency=frequency)


class PruneDuringTraining(StepTransformCallback):
    """Prune a model's Dense / Conv kernels during `fit`, following a TFMOT pruning schedule.

    At every step where `schedule(step)` says to prune (`step` = the optimizer's iterations),
    the masks are recomputed from the current weights for the schedule's sparsity (already
    pruned weights stay pruned); after every optimizer step the masks are applied, so pruned
    weights stay exactly zero. One-shot pruning is `ConstantSparsity(s, begin_step=0)`, iterative
    (Deep Compression's prune / retrain) is `PolynomialDecay`. Logs `pruning/sparsity` (all
    pruned kernels) and `pruning/sparsity/<layer>` into `logs` at each batch and epoch end.

    Example:

    ```python
    from tensorflow_model_optimization.sparsity.keras import PolynomialDecay

    schedule = PolynomialDecay(0.0, 0.9, begin_step=0, end_step=1000, frequency=100)
    model.fit(x, y, epochs=5, callbacks=[PruneDuringTraining(schedule, criterion="obd", data=(x[:512], y[:512]))])
    plain = keras_hessian.pruning.strip_pruning(model)
    ```

    Args:
        schedule: a `tensorflow_model_optimization.sparsity.keras` `PruningSchedule`
            (`PolynomialDecay`, `ConstantSparsity`), or any callable `step -> (bool, sparsity)`.
        criterion: `magnitude`, `obd` or `random` (`keras_hessian.pruning.CRITERIA`).
        allocation: `uniform`, `global` or `hessian` (`keras_hessian.pruning.ALLOCATIONS`).
        granularity: `element` or `filter`.
        data: `(x, y)` for the Hessian (`obd`, `hessian`): a few hundred training examples.
        layers: names of the layers to prune (default: every Dense / Conv layer).
        seed: seed of the probes / random scores.
        num_probes: Hutchinson probes per mask update for `obd`.
    """

    def __init__(
        self,
        schedule,
        criterion: str = "magnitude",
        allocation: str = "uniform",
        granularity: str = "element",
        data=None,
        layers: list[str] | None = None,
        seed: int | None = None,
        num_probes: int = 32,
    ):
        super().__init__()
        if not callable(schedule):
            raise ArgumentTypeError(
                f"schedule must be a TFMOT PruningSchedule (e.g. PolynomialDecay). Received {type(schedule).__name__}."
            )
        self.schedule = schedule
        self.criterion = check_choice("criterion", criterion, CRITERIA)
        self.allocation = check_choice("allocation", allocation, ALLOCATIONS)
        self.granularity = check_choice("granularity", granularity, GRANULARITIES)
        if data is None and (criterion == "obd" or allocation == "hessian"):
            what = "criterion='obd'" if criterion == "obd" else "allocation='hessian'"
            raise ValueError(f"{what} needs data=(x, y) for the Hessian. Received data=None.")
        self.data = data
        self.layers = None if layers is None else list(layers)
        self.seed = check_int("seed", seed, 0, allow_none=True)
        self.num_probes = check_int("num_probes", num_probes, 1)
        self.sparsities: dict[str, float] = {}
        self._variables: dict[str, tuple] = {}
        self._ready = False

    # ------------------------------------------------------------------ step
    def set_model(self, model):
        chosen = prunable_layers(model, self.layers)  # before anything is installed: a bad name changes nothing
        self._layers = {layer.name: layer for layer in chosen}
        if set(self._variables) != set(self._layers) or any(
            tuple(self._variables[n][0].shape) != tuple(self._layers[n].kernel.shape) for n in self._layers
        ):
            self._variables = {name: (_ones(layer.kernel), _ones(getattr(layer, "bias", None))) for name, layer in self._layers.items()}
        super().set_model(model)

    def step_transform(self) -> StepTransform:
        def after_step(model):
            for name, layer in self._layers.items():
                kernel_mask, bias_mask_variable = self._variables[name]
                layer.kernel.assign(layer.kernel * kernel_mask)
                if bias_mask_variable is not None:
                    layer.bias.assign(layer.bias * bias_mask_variable)

        return StepTransform(after_step=after_step)

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._ready = False  # masks are read at the first batch, after BackupAndRestore restored the weights

    def on_train_batch_begin(self, batch, logs=None):
        super().on_train_batch_begin(batch, logs)
        if not self._ready:
            self._set_masks({name: layer.kernel.numpy() != 0 for name, layer in self._layers.items()})
            self._ready = True
        step = int(self.model.optimizer.iterations.numpy())
        should_prune, sparsity = self.schedule(step)
        sparsity = float(sparsity)
        if bool(should_prune) and sparsity > 0:
            self._update_masks(sparsity)

    def on_train_batch_end(self, batch, logs=None):
        self._log(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._log(logs)

    # ------------------------------------------------------------------ masks
    def _update_masks(self, sparsity: float) -> None:
        names = list(self._layers)
        current = self.masks
        scores = saliency(self.model, self.criterion, self.data, layers=names, seed=self.seed, num_probes=self.num_probes)
        # A pruned weight stays pruned (for magnitude and OBD it scores 0 anyway; random would revive it).
        scores = {n: np.where(current[n], scores[n], -np.inf) for n in names}
        masks = compute_masks(
            self.model,
            sparsity,
            criterion=self.criterion,
            allocation=self.allocation,
            granularity=self.granularity,
            data=self.data,
            layers=names,
            seed=self.seed,
            scores=scores,
        )
        self._set_masks(masks)
        apply_masks(self.model, masks)

    def _set_masks(self, masks: dict) -> None:
        for name, mask in masks.items():
            kernel_mask, bias_variable = self._variables[name]
            kernel_mask.assign(mask.astype(kernel_mask.dtype.as_numpy_dtype))
            if bias_variable is not None:
                bias_variable.assign(bias_mask(mask).astype(bias_variable.dtype.as_numpy_dtype))
            self.sparsities[name] = float(1.0 - mask.mean())

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """The current masks, `{layer name: boolean array like its kernel}` (True = kept)."""
        return {name: variables[0].numpy() != 0 for name, variables in self._variables.items()}

    def _log(self, logs) -> None:
        if logs is None or not self.sparsities:
            return
        sizes = {name: int(np.prod(layer.kernel.shape)) for name, layer in self._layers.items()}
        total = sum(sizes.values())
        logs["pruning/sparsity"] = sum(self.sparsities[n] * sizes[n] for n in sizes) / total
        for name in sizes:
            logs[f"pruning/sparsity/{name}"] = self.sparsities[name]

    def get_config(self) -> dict:
        schedule = self.schedule.get_config() if hasattr(self.schedule, "get_config") else repr(self.schedule)
        return {
            "schedule": schedule,
            "criterion": self.criterion,
            "allocation": self.allocation,
            "granularity": self.granularity,
            "layers": self.layers,
            "seed": self.seed,
            "num_probes": self.num_probes,
        }


def _ones(variable) -> tf.Variable | None:
    return None if variable is None else tf.Variable(tf.ones(variable.shape, variable.dtype), trainable=False)
