"""Learning-rate schedules that compose with the batch-size callbacks (step decay)."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_hessian._validation import check_float

__all__ = ['step_decay']


def step_decay(milestones: Sequence[int], decay: float = 0.2) -> keras.callbacks.LearningRateScheduler:
    """A `LearningRateScheduler` multiplying the current rate by `decay` at each milestone epoch.

    It multiplies the rate it finds (rather than setting a value), so it composes with the
    callbacks here that scale the rate, and resumes correctly after `BackupAndRestore`.

    Example:

    ```python
    model.fit(x, y, epochs=30, callbacks=[keras_hessian.callbacks.step_decay([10, 20], 0.2)])
    ```

    Args:
        milestones: 0-based epochs at whose start the rate is multiplied by `decay`.
        decay: the factor, in (0, 1].
    """
    marks = sorted(int(m) for m in milestones)
    decay = check_float("decay", decay, minimum=0.0, maximum=1.0, exclusive_minimum=True)

    def schedule(epoch, learning_rate):
        return float(learning_rate) * decay ** marks.count(epoch)

    return keras.callbacks.LearningRateScheduler(schedule)
