"""Fixed-schedule baselines of the ABSA table: fixed batch, FB (Goyal et al.), GG (Smith et al.).

Each is a `BatchSizeController`, like `AdaptiveBatchSize`, so every column of the table of
Yao et al. (arXiv 1810.01021) runs side by side on the same adaptive dataset, with the same
gradient accumulation, logs and `BackupAndRestore` support. `training_callbacks(method, ...)`
gives the callbacks of one column.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from keras_hessian.callbacks.adaptive_batch import (
    AdaptiveBatchSize,
    BatchSizeController,
    _positive_int,
)
from keras_hessian.callbacks.adversarial import AdversarialAugmentation

__all__ = [
    "METHODS",
    "BatchIncreaseSchedule",
    "FixedBatchSize",
    "LinearScalingWarmup",
    "step_decay",
    "training_callbacks",
]

METHODS = ("baseline", "large", "fb", "gg", "abs", "absa")


class FixedBatchSize(BatchSizeController):
    """Keeps the batch size of an adaptive dataset fixed for the whole `fit` (the "BL" columns).

    Use it for the fixed small-batch and fixed large-batch baselines of the ABSA table
    (Yao et al., arXiv 1810.01021), when the batch exceeds memory (`max_physical_batch_size`
    accumulates gradients), or to get `batch_size` / `learning_rate` in `logs`.

    Example:

    ```python
    model.fit(keras_hessian.data.adaptive_dataset(x, y), epochs=10,
              callbacks=[keras_hessian.callbacks.FixedBatchSize(4096, max_physical_batch_size=1024)])
    ```

    Args:
        batch_size: the batch size.
        max_physical_batch_size: largest batch computed at once (accumulation above it).
        backup_dir: `backup_dir` of the fit's `keras.callbacks.BackupAndRestore`, or `None`.
    """

    def __init__(self, batch_size: int, *, max_physical_batch_size: int | None = None, backup_dir: str | None = None):
        batch_size = _positive_int(batch_size, "batch_size")
        super().__init__(
            batch_size, batch_size, max_physical_batch_size=max_physical_batch_size, backup_dir=backup_dir
        )


class LinearScalingWarmup(BatchSizeController):
    """FB: a fixed large batch with the learning rate scaled linearly and warmed up gradually.

    Goyal et al., "Accurate, large minibatch SGD" (arXiv 1706.02677), the FB column of
    Yao et al. (arXiv 1810.01021): with a batch `k` times `base_batch_size`, the learning
    rate goes from the optimizer's rate `eta` (at the start of the fit) linearly to `k * eta`
    over `warmup_epochs` epochs and stays there (compose a step decay with
    `keras.callbacks.LearningRateScheduler`). Deviation: Goyal et al. raise the rate every
    iteration; here it is raised at each epoch start, because a pipeline whose batch size
    changes does not tell a callback the number of steps of an epoch before it ends.
    Epoch `e` uses `eta + (k*eta - eta) * min(1, e / warmup_epochs)`.

    Example:

    ```python
    model.fit(keras_hessian.data.adaptive_dataset(x, y), epochs=30,
              callbacks=[keras_hessian.callbacks.LinearScalingWarmup(4096, base_batch_size=128)])
    ```

    Args:
        batch_size: the large batch size.
        base_batch_size: the batch size the optimizer's learning rate was tuned for.
        warmup_epochs: epochs of the ramp (Goyal et al.: 5); 0 jumps to `k * eta`.
        max_physical_batch_size: largest batch computed at once (accumulation above it).
        backup_dir: `backup_dir` of the fit's `keras.callbacks.BackupAndRestore`, or `None`.
    """

    def __init__(
        self,
        batch_size: int,
        base_batch_size: int = 128,
        *,
        warmup_epochs: int = 5,
        max_physical_batch_size: int | None = None,
        backup_dir: str | None = None,
    ):
        batch_size = _positive_int(batch_size, "batch_size")
        self.base_batch_size = _positive_int(base_batch_size, "base_batch_size")
        self.warmup_epochs = _positive_int(warmup_epochs, "warmup_epochs", minimum=0)
        super().__init__(
            batch_size, batch_size, max_physical_batch_size=max_physical_batch_size, backup_dir=backup_dir
        )
        self.base_learning_rate: float | None = None

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(base_batch_size=self.base_batch_size, warmup_epochs=self.warmup_epochs)
        return config

    def _reset(self) -> None:
        self.base_learning_rate = None

    def _state(self) -> dict:
        return {"base_learning_rate": self.base_learning_rate}

    def _load_state(self, state: dict) -> None:
        self.base_learning_rate = state["base_learning_rate"]

    def target_learning_rate(self, epoch: int) -> float:
        """The learning rate of `epoch` (needs `base_learning_rate`)."""
        k = self.batch_size / self.base_batch_size
        eta = self.base_learning_rate
        progress = 1.0 if self.warmup_epochs == 0 else min(1.0, epoch / self.warmup_epochs)
        return eta + (k * eta - eta) * progress

    def _on_epoch_start(self, epoch: int) -> None:
        if self.base_learning_rate is None:
            self.base_learning_rate = self.learning_rate
        if epoch <= self.warmup_epochs:
            self._set_learning_rate(self.target_learning_rate(epoch))


class BatchIncreaseSchedule(BatchSizeController):
    """GG: multiplies the batch size where a step schedule would decay the learning rate.

    Smith, Kindermans, Ying and Le, "Don't decay the learning rate, increase the batch size"
    (arXiv 1711.00489), the GG column of Yao et al. (arXiv 1810.01021): at each epoch in
    `milestones` the batch is multiplied by `factor` (the inverse of the decay the schedule
    would apply); once `max_batch_size` is reached, the rest of the factor decays the learning
    rate instead (as Smith et al. do at their maximum batch).

    Example:

    ```python
    model.fit(keras_hessian.data.adaptive_dataset(x, y), epochs=30,
              callbacks=[keras_hessian.callbacks.BatchIncreaseSchedule([10, 20], factor=5)])
    ```

    Args:
        milestones: 0-based epochs at whose start the batch grows.
        factor: batch multiplier at a milestone (> 1), e.g. 5 for a decay of 0.2.
        initial_batch_size: batch size of the first epoch.
        max_batch_size: cap; beyond it the learning rate decays by the remaining factor.
        max_physical_batch_size: largest batch computed at once (accumulation above it).
        backup_dir: `backup_dir` of the fit's `keras.callbacks.BackupAndRestore`, or `None`.
    """

    def __init__(
        self,
        milestones: Sequence[int],
        factor: float = 5.0,
        initial_batch_size: int = 128,
        max_batch_size: int = 16384,
        *,
        max_physical_batch_size: int | None = None,
        backup_dir: str | None = None,
    ):
        try:
            milestones = sorted(int(m) for m in milestones)
        except (TypeError, ValueError) as error:
            raise TypeError(f"milestones must be a sequence of epochs. Received milestones={milestones!r}.") from error
        if any(m < 0 for m in milestones):
            raise ValueError(f"milestones must be >= 0. Received milestones={milestones!r}.")
        if isinstance(factor, bool) or not isinstance(factor, (int, float, np.number)) or not factor > 1:
            raise ValueError(f"factor must be a number > 1. Received factor={factor!r}.")
        super().__init__(
            initial_batch_size, max_batch_size, max_physical_batch_size=max_physical_batch_size, backup_dir=backup_dir
        )
        self.milestones = milestones
        self.factor = float(factor)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(milestones=list(self.milestones), factor=self.factor)
        return config

    def _on_epoch_start(self, epoch: int) -> None:
        for _ in range(self.milestones.count(epoch)):
            wanted = self.batch_size * self.factor
            grown = int(min(round(wanted), self.max_batch_size))
            if wanted > grown:
                self._set_learning_rate(self.learning_rate * grown / wanted)
            self.batch_size = grown


def step_decay(milestones: Sequence[int], decay: float = 0.2) -> keras.callbacks.LearningRateScheduler:
    """A `LearningRateScheduler` multiplying the current rate by `decay` at each milestone epoch.

    It multiplies the rate it finds (rather than setting a value), so it composes with the
    callbacks here that scale the rate, and resumes correctly after `BackupAndRestore`.
    """
    marks = sorted(int(m) for m in milestones)
    if not 0 < decay <= 1:
        raise ValueError(f"decay must lie in (0, 1]. Received decay={decay!r}.")

    def schedule(epoch, learning_rate):
        return float(learning_rate) * decay ** marks.count(epoch)

    return keras.callbacks.LearningRateScheduler(schedule)


def training_callbacks(
    method: str,
    *,
    hessian_data=None,
    base_batch_size: int = 128,
    large_batch_size: int = 4096,
    max_physical_batch_size: int | None = None,
    lr_milestones: Sequence[int] = (),
    lr_decay: float = 0.2,
    warmup_epochs: int = 5,
    epsilon: float = 0.005,
    adversarial_ratio: float = 0.2,
    backup_dir: str | None = None,
    **abs_options,
) -> list[keras.callbacks.Callback]:
    """The callbacks of one column of the ABSA table (Yao et al., arXiv 1810.01021).

    `baseline`: fixed `base_batch_size`; `large`: fixed `large_batch_size`, same rate;
    `fb`: `LinearScalingWarmup`; `gg`: `BatchIncreaseSchedule` at the decay milestones;
    `abs`: `AdaptiveBatchSize` up to `large_batch_size`; `absa`: ABS + `AdversarialAugmentation`.
    All but `gg` keep the step decay (`lr_decay` at `lr_milestones`) on top, as the authors do.

    Example:

    ```python
    callbacks = keras_hessian.callbacks.training_callbacks("absa", hessian_data=(x[:1024], y[:1024]))
    model.fit(keras_hessian.data.adaptive_dataset(x, y), epochs=30, callbacks=callbacks)
    ```

    Args:
        method: one of `METHODS`.
        hessian_data: the fixed subset for `abs` / `absa`.
        base_batch_size, large_batch_size: the small batch and the large batch (or cap).
        max_physical_batch_size: accumulation above this size.
        lr_milestones, lr_decay: the step decay.
        warmup_epochs: FB's warm-up.
        epsilon, adversarial_ratio: ABSA's FGSM step and ratio.
        backup_dir: `backup_dir` of the fit's `keras.callbacks.BackupAndRestore`, or `None`.
        **abs_options: more arguments of `AdaptiveBatchSize`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}. Received method={method!r}.")
    common = {"max_physical_batch_size": max_physical_batch_size, "backup_dir": backup_dir}
    decay = [step_decay(lr_milestones, lr_decay)] if lr_milestones else []
    if method == "baseline":
        return [FixedBatchSize(base_batch_size, **common), *decay]
    if method == "large":
        return [FixedBatchSize(large_batch_size, **common), *decay]
    if method == "fb":
        return [LinearScalingWarmup(large_batch_size, base_batch_size, warmup_epochs=warmup_epochs, **common), *decay]
    if method == "gg":
        return [BatchIncreaseSchedule(lr_milestones, 1.0 / lr_decay, base_batch_size, large_batch_size, **common)]
    if hessian_data is None:
        raise ValueError(f"method={method!r} needs hessian_data (a labelled subset). Received hessian_data=None.")
    callbacks = [AdaptiveBatchSize(hessian_data, base_batch_size, large_batch_size, **common, **abs_options), *decay]
    if method == "absa":
        callbacks.append(AdversarialAugmentation(epsilon, adversarial_ratio))
    return callbacks
