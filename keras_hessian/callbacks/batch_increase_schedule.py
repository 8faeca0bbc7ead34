"""BatchIncreaseSchedule: grow the batch where a step schedule would decay the rate (GG, Smith et al.)."""

from __future__ import annotations

from collections.abc import Sequence

from keras_hessian._validation import check_float
from keras_hessian.callbacks.batch_size_controller import BatchSizeController

__all__ = ['BatchIncreaseSchedule']


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
        factor = check_float("factor", factor, minimum=1.0, exclusive_minimum=True)
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
