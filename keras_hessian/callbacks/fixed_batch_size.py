"""FixedBatchSize: a fixed batch size on an adaptive dataset (the BL columns of the ABSA table)."""

from __future__ import annotations

from keras_hessian._validation import check_int
from keras_hessian.callbacks.batch_size_controller import BatchSizeController

__all__ = ['FixedBatchSize']


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
        batch_size = check_int("batch_size", batch_size)
        super().__init__(
            batch_size, batch_size, max_physical_batch_size=max_physical_batch_size, backup_dir=backup_dir
        )
