"""LinearScalingWarmup: a fixed large batch with a linearly scaled, warmed-up learning rate (FB, Goyal et al.)."""

from __future__ import annotations

from keras_hessian._validation import check_int
from keras_hessian.callbacks.batch_size_controller import BatchSizeController

__all__ = ['LinearScalingWarmup']


class LinearScalingWarmup(BatchSizeController):
    """FB: a fixed large batch with the learning rate scaled linearly and warmed up gradually.

    Goyal et al., "Accurate, large minibatch SGD" (arXiv 1706.02677), the FB column of
    Yao et al. (arXiv 1810.01021): with a batch `k` times `base_batch_size`, the learning
    rate goes from the optimizer's rate `eta` (at the start of the fit) linearly to `k * eta`
    over `warmup_epochs` epochs and stays there (compose a step decay with
    `keras.callbacks.LearningRateScheduler`). Deviation: Goyal et al. raise the rate every
    iteration; here it is raised at each epoch start, because a pipeline whose batch size
    changes does not tell a callback the number of steps of an epoch before it ends.
    Epoch `e` uses `eta + (k*eta - eta) * min(1, e / warmup_epochs)`, computed from the base
    rate `eta` the callback keeps (`base_learning_rate`), so reusing the callback for another
    fit repeats the same schedule.

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
        batch_size = check_int("batch_size", batch_size)
        self.base_batch_size = check_int("base_batch_size", base_batch_size)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, minimum=0)
        super().__init__(
            batch_size, batch_size, max_physical_batch_size=max_physical_batch_size, backup_dir=backup_dir
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(base_batch_size=self.base_batch_size, warmup_epochs=self.warmup_epochs)
        return config

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
        # Set from the base (kept by BatchSizeController across fits), never from the rate
        # found: a reused callback gives the same schedule in its next fit.
        if epoch <= self.warmup_epochs:
            self._set_learning_rate(self.target_learning_rate(epoch))
