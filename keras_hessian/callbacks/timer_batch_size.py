"""TimerBatchSize: the batch doubles every k epochs, no Hessian (the timer-only control of ABS)."""

from __future__ import annotations

from keras_hessian._validation import check_choice, check_int
from keras_hessian.callbacks.batch_size_controller import LR_SCALING_RULES, BatchSizeController, lr_scale

__all__ = ["TimerBatchSize"]


class TimerBatchSize(BatchSizeController):
    """Multiplies the batch size by `factor` every `every` epochs, with ABS's learning-rate rule.

    The control that tells whether the Hessian drives `AdaptiveBatchSize`: the same growth
    (`factor`, cap, accumulation) and the same learning-rate rule (`lr_scaling` applied to the
    actual growth), but on a timer. In epoch `e` the batch is
    `min(initial_batch_size * factor ** (e // every), max_batch_size)` and the learning rate the
    base rate times `lr_scale(lr_scaling, batch / initial_batch_size)` (for the linear and none
    rules; the sqrt rule compounds per growth step, as ABS does). `AdaptiveBatchSize` with
    `patience=every` and no eigenvalue trigger follows the same schedule. `BatchIncreaseSchedule`
    is a different baseline (Smith et al.: the batch grows INSTEAD of a learning-rate decay, so
    the rate stays put).

    Example:

    ```python
    model.fit(keras_hessian.data.adaptive_dataset(x, y), epochs=30,
              callbacks=[keras_hessian.callbacks.TimerBatchSize(every=2, initial_batch_size=128)])
    ```

    Args:
        every: epochs between two increases (>= 1); the first increase is at the start of
            epoch `every`.
        factor: batch multiplier (>= 2), as `AdaptiveBatchSize`'s.
        lr_scaling: `"linear"`, `"sqrt"` or `"none"`.
        initial_batch_size: batch size of the first epoch.
        max_batch_size: cap.
        max_physical_batch_size: largest batch computed at once (accumulation above it).
        backup_dir: `backup_dir` of the fit's `keras.callbacks.BackupAndRestore`, or `None`.
    """

    def __init__(
        self,
        every: int,
        factor: int = 2,
        lr_scaling: str = "linear",
        initial_batch_size: int = 128,
        max_batch_size: int = 16384,
        *,
        max_physical_batch_size: int | None = None,
        backup_dir: str | None = None,
    ):
        every = check_int("every", every, minimum=1)
        factor = check_int("factor", factor, minimum=2)
        check_choice("lr_scaling", lr_scaling, LR_SCALING_RULES)
        super().__init__(
            initial_batch_size, max_batch_size, max_physical_batch_size=max_physical_batch_size, backup_dir=backup_dir
        )
        self.every = int(every)
        self.factor = int(factor)
        self.lr_scaling = lr_scaling
        self.increases = 0

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(every=self.every, factor=self.factor, lr_scaling=self.lr_scaling)
        return config

    def _reset(self) -> None:
        self.increases = 0

    def _state(self) -> dict:
        return {"increases": self.increases}

    def _load_state(self, state: dict) -> None:
        self.increases = int(state["increases"])

    def _on_epoch_start(self, epoch: int) -> None:
        wanted = min(self.initial_batch_size * self.factor ** (epoch // self.every), self.max_batch_size)
        while self.batch_size < wanted:  # one growth step at a time, as AdaptiveBatchSize grows
            grown = min(self.batch_size * self.factor, self.max_batch_size)
            self._set_learning_rate(self.learning_rate * lr_scale(self.lr_scaling, grown / self.batch_size))
            self.batch_size = grown
            self.increases += 1
