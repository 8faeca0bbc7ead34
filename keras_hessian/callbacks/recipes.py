"""The callbacks of one column of the ABSA table (Yao et al., arXiv 1810.01021).

Every column (fixed batch, FB, GG, ABS, ABSA) uses a `BatchSizeController`, so all run side by
side on the same adaptive dataset, with the same gradient accumulation, logs and
`BackupAndRestore` support.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_hessian._validation import check_choice
from keras_hessian.callbacks.adaptive_batch_size import AdaptiveBatchSize
from keras_hessian.callbacks.adversarial_augmentation import AdversarialAugmentation
from keras_hessian.callbacks.batch_increase_schedule import BatchIncreaseSchedule
from keras_hessian.callbacks.fixed_batch_size import FixedBatchSize
from keras_hessian.callbacks.linear_scaling_warmup import LinearScalingWarmup
from keras_hessian.callbacks.schedules import step_decay

__all__ = ['METHODS', 'training_callbacks']


METHODS = ("baseline", "large", "fb", "gg", "abs", "absa")


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
    check_choice("method", method, METHODS)
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
