"""AdaptiveBatchSize (ABS): grow the batch inside one `fit` as the top Hessian eigenvalue falls."""

from __future__ import annotations

import math
import time
import weakref

import numpy as np
import tensorflow as tf

from keras_hessian._validation import check_choice, check_float, check_int
from keras_hessian.callbacks import step_transform
from keras_hessian.callbacks.batch_size_controller import LR_SCALING_RULES, BatchSizeController, lr_scale
from keras_hessian.data.adaptive import batch_size_control
from keras_hessian.hessian.algorithms import EIGEN_METHODS, compatible_vectors
from keras_hessian.hessian.operators import HVP_METHODS

__all__ = ["AdaptiveBatchSize"]


class AdaptiveBatchSize(BatchSizeController):
    """Grows the batch size inside one `model.fit` when the top Hessian eigenvalue has fallen.

    ABS of Yao, Gholami, Keutzer and Mahoney, "Large batch size training of neural networks
    with adversarial training and second-order information" (arXiv 1810.01021): a flatter loss
    landscape (smaller top eigenvalue of the Hessian) tolerates a larger batch. Every
    `check_every` epochs the callback measures the top eigenvalue `lambda` of the loss Hessian
    on the fixed subset `hessian_data`, in inference mode, with `max_iter` / `tol` (authors:
    power iteration, 10 iterations, tolerance 1e-2, one batch of 128 examples). With
    `lambda_ref` the eigenvalue at the last increase (the first measurement at the start):

    * if `|lambda| <= |lambda_ref| / drop_ratio` (authors: 2), the batch is multiplied by `factor`
      (authors: 2), capped at `max_batch_size` (authors: 16,384), the learning rate is scaled
      by `lr_scaling` for the actual growth, and `lambda_ref = lambda`;
    * if `patience` epochs (authors: 10) pass without an increase, the batch grows anyway
      (same rule, `lambda_ref` becomes the current eigenvalue);
    * at the cap, eigenvalue computations stop (authors).

    Use it with `keras_hessian.data.adaptive_dataset` as the training data (it reads the batch
    size at each epoch start; the train function is not retraced) and, for ABSA, together with
    `AdversarialAugmentation`. Compose a step learning-rate decay with a
    `keras.callbacks.LearningRateScheduler` that multiplies the current rate (the authors keep a
    step decay on top); do not use a `LearningRateSchedule` object (the rate is written here).

    Under `tf.distribute` (build and compile the model in `strategy.scope()`): `batch_size` is
    the GLOBAL batch, which tf.distribute splits across the replicas; the learning rate is scaled
    on the global batch; `max_physical_batch_size` bounds what each replica computes at once; the
    eigenvalue is measured with `hessian_data` split across the replicas and the products
    all-reduced, so every replica and worker takes the same decision. With several workers, call
    `prepare_multi_worker(model)` (Keras 3.15's `fit` fails there without it) and give every
    worker's `adaptive_dataset` the same `seed`: each worker takes its part of the global batches
    of its own permutation.

    Deviations from the authors' code, and why: the subset defaults to the caller's
    `hessian_data` (PyHessian's users report that 128 examples give unstable eigenvalues); the
    change decided at the end of an epoch is applied at the start of the next (so the state
    `BackupAndRestore` saves is consistent); the first reference is the first measurement.

    `logs` gets, every epoch: `batch_size` and `learning_rate` (used in that epoch) and
    `hessian/top_eigenvalue` (the latest measurement: NaN before the first one, constant once
    measuring stops at the cap), `hessian/hvp_count` (the products of this epoch's check, NaN
    without one), and the counts `eigenvalue_increases` / `patience_increases` of the increases
    each rule triggered so far (also attributes). From the second measurement on, the solver
    starts from the last measurement's eigenvector (`eigenvectors`, kept across fits of the same
    model while its trainable weights keep their shapes; a fit of another model starts afresh), which cuts the products per check. A deviation
    from the authors' random start: when two eigenvalues cross between checks, power iteration
    from the old direction may stop (at `tol`) on the old direction's now smaller eigenvalue and
    read a fall; Lanczos (`method="lanczos"`) or a tighter `tol` guards against that.
    `hessian_seconds` accumulates the time spent on Hessian work;
    `history` holds one dict per epoch (measured eigenvalue or None, and what triggered an
    increase: `"eigenvalue"` or `"patience"`).

    Example:

    ```python
    train = keras_hessian.data.adaptive_dataset(x_train, y_train)
    abs_callback = keras_hessian.callbacks.AdaptiveBatchSize(
        (x_train[:1024], y_train[:1024]), initial_batch_size=128, max_batch_size=4096,
        max_physical_batch_size=1024,
    )
    model.fit(train, epochs=30, callbacks=[abs_callback])
    ```

    Args:
        hessian_data: the fixed subset, `(x, y)` / `(x, y, sample_weight)` arrays or a batched
            `tf.data.Dataset` yielding labels.
        initial_batch_size: batch size of the first epoch (authors: 128).
        max_batch_size: cap (authors: 16,384); must be >= `initial_batch_size`.
        factor: batch multiplier at an increase, > 1 (authors: 2).
        drop_ratio: an increase needs `|lambda| <= |lambda_ref| / drop_ratio`, > 1 (authors: 2).
        lr_scaling: `"linear"`, `"sqrt"` or `"none"`.
        patience: epochs without increase after which the batch grows anyway; `None`: never.
        check_every: measure every this many epochs.
        max_physical_batch_size: largest batch computed at once (gradient accumulation above).
        max_iter: eigen-solver iterations (HVPs), passed to `top_eigenvalues`.
        tol: eigen-solver relative tolerance.
        method: `"power"` (authors), `"lanczos"` or `"arpack"`.
        hessian_batch_size: batch size of the Hessian operator over `hessian_data`.
        hvp_method: the operator's Hessian-vector product, `None` (the engine's default),
            `"forward_over_reverse"` or `"reverse_over_reverse"`.
        seed: seed of the solver's start vector (epoch-dependent, reproducible).
        backup_dir: `backup_dir` of the fit's `keras.callbacks.BackupAndRestore`, or `None`.
    """

    def __init__(
        self,
        hessian_data,
        initial_batch_size: int = 128,
        max_batch_size: int = 16384,
        *,
        factor: int = 2,
        drop_ratio: float = 2.0,
        lr_scaling: str = "linear",
        patience: int | None = 10,
        check_every: int = 1,
        max_physical_batch_size: int | None = None,
        max_iter: int = 10,
        tol: float = 1e-2,
        method: str = "power",
        hessian_batch_size: int | None = None,
        hvp_method: str | None = None,
        seed: int = 0,
        backup_dir: str | None = None,
    ):
        _check_hessian_data(hessian_data)
        factor = check_int("factor", factor, minimum=2)
        drop_ratio = check_float("drop_ratio", drop_ratio, minimum=1.0, exclusive_minimum=True)
        check_choice("lr_scaling", lr_scaling, LR_SCALING_RULES)
        super().__init__(
            initial_batch_size,
            max_batch_size,
            max_physical_batch_size=max_physical_batch_size,
            backup_dir=backup_dir,
        )
        self.hessian_data = hessian_data
        self.factor = int(factor)
        self.drop_ratio = float(drop_ratio)
        self.lr_scaling = lr_scaling
        self.patience = check_int("patience", patience, allow_none=True)
        self.check_every = check_int("check_every", check_every)
        self.max_iter = check_int("max_iter", max_iter)
        self.tol = check_float("tol", tol, minimum=0.0, exclusive_minimum=True)
        self.method = check_choice("method", method, EIGEN_METHODS)
        self.hessian_batch_size = check_int("hessian_batch_size", hessian_batch_size, allow_none=True)
        self.hvp_method = check_choice("hvp_method", hvp_method, (None, *HVP_METHODS))
        self.seed = check_int("seed", seed, minimum=0)
        self._operator = None
        self.eigenvectors: list | None = None  # the last measurement's, the next one's start
        self._vectors_of = None  # weakref to the model they belong to
        self._reset()
        self.hessian_seconds = 0.0
        self.history: list[dict] = []

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            factor=self.factor,
            drop_ratio=self.drop_ratio,
            lr_scaling=self.lr_scaling,
            patience=self.patience,
            check_every=self.check_every,
            max_iter=self.max_iter,
            tol=self.tol,
            method=self.method,
            hessian_batch_size=self.hessian_batch_size,
            hvp_method=self.hvp_method,
            seed=self.seed,
        )
        return config

    def _reset(self) -> None:
        self.reference: float | None = None
        self.eigenvalue: float = float("nan")
        self.epochs_since_increase = 0
        self.increases = 0
        self.eigenvalue_increases = 0
        self.patience_increases = 0
        self.last_hvp_count = 0

    def _state(self) -> dict:
        return {
            "reference": self.reference,
            "eigenvalue": self.eigenvalue,
            "epochs_since_increase": self.epochs_since_increase,
            "increases": self.increases,
            "eigenvalue_increases": self.eigenvalue_increases,
            "patience_increases": self.patience_increases,
        }

    def _load_state(self, state: dict) -> None:
        self.reference = state["reference"]
        self.eigenvalue = float(state["eigenvalue"])
        self.epochs_since_increase = int(state["epochs_since_increase"])
        self.increases = int(state["increases"])
        self.eigenvalue_increases = int(state.get("eigenvalue_increases", 0))
        self.patience_increases = int(state.get("patience_increases", 0))

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._operator = None
        self.hessian_seconds = 0.0
        self.history = []
        # Build the operator (it validates hessian_data, the loss and the label shapes) before
        # any step, so bad hessian_data fails here with the weights untouched, not after an epoch.
        start = time.perf_counter()
        try:
            self._build_operator()
        except Exception:
            step_transform.restore(self.model)
            batch_size_control().release(self)
            raise
        self.hessian_seconds += time.perf_counter() - start

    def _build_operator(self) -> None:
        from keras_hessian.hessian import HessianOperator

        self._operator = HessianOperator(
            self.model, self.hessian_data, training=False, method=self.hvp_method,
            batch_size=self.hessian_batch_size,
        )
        if self._vectors_of is not None and self._vectors_of() is not self.model:  # another model's: no warm start
            self.eigenvectors = None
        self._vectors_of = weakref.ref(self.model)
        self.eigenvectors = compatible_vectors(self.eigenvectors, self._operator.variables)

    def measure(self) -> float:
        """Measure the top eigenvalue on `hessian_data` now (the model's current weights)."""
        from keras_hessian.hessian import top_eigenvalues

        start = time.perf_counter()
        if self._operator is None:  # measure() called outside a fit
            self._build_operator()
        result = top_eigenvalues(
            self._operator, k=1, max_iter=self.max_iter, tol=self.tol,
            seed=self.seed + len(self.history), method=self.method, initial=self.eigenvectors,
        )
        self.eigenvectors = result.eigenvectors
        self.last_hvp_count = int(result.hvp_count)
        self.hessian_seconds += time.perf_counter() - start
        return float(result.eigenvalues[0])

    def _decide(self, epoch: int, logs: dict) -> None:
        at_cap = self.batch_size >= self.max_batch_size
        measured = False
        seconds = self.hessian_seconds
        if not at_cap and (epoch + 1) % self.check_every == 0:
            self.eigenvalue = self.measure()
            measured = True
        seconds = self.hessian_seconds - seconds
        logs["hessian/top_eigenvalue"] = self.eigenvalue
        logs["hessian/hvp_count"] = float(self.last_hvp_count) if measured else float("nan")
        self.epochs_since_increase += 1
        increase, trigger = False, None
        if measured:
            if self.reference is None:
                self.reference = self.eigenvalue
            # The top eigenvalue BY MAGNITUDE is the sharpness (authors: power iteration, which
            # converges to it whatever its sign): compare magnitudes, so a growing |lambda| with
            # lambda < 0 is not taken for a fall.
            elif abs(self.eigenvalue) <= abs(self.reference) / self.drop_ratio:
                increase, trigger = True, "eigenvalue"
        if not increase and not at_cap and self.patience is not None and self.epochs_since_increase >= self.patience:
            increase, trigger = True, "patience"
        if increase and not at_cap:
            new_batch = min(self.batch_size * self.factor, self.max_batch_size)
            self._schedule(new_batch, lr_scale(self.lr_scaling, new_batch / self.batch_size))
            if not math.isnan(self.eigenvalue):
                self.reference = self.eigenvalue
            self.epochs_since_increase = 0
            self.increases += 1
            if trigger == "eigenvalue":
                self.eigenvalue_increases += 1
            else:
                self.patience_increases += 1
        logs["eigenvalue_increases"] = float(self.eigenvalue_increases)
        logs["patience_increases"] = float(self.patience_increases)
        self.history.append(
            {
                "epoch": epoch,
                "batch_size": self.batch_size,
                "learning_rate": logs["learning_rate"],
                "eigenvalue": self.eigenvalue if measured else None,
                "hessian_seconds": seconds,
                "hvp_count": self.last_hvp_count if measured else None,
                "increase": bool(increase and not at_cap),
                "trigger": trigger if increase and not at_cap else None,
            }
        )


def _check_hessian_data(data) -> None:
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError(
                "hessian_data must yield (x, y) or (x, y, sample_weight): the Hessian of the loss "
                f"needs labels. Received a dataset with element_spec={spec!r}."
            )
        return
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3) or data[1] is None:
        raise ValueError(
            "hessian_data must be (x, y) or (x, y, sample_weight) with labels, or a batched "
            f"tf.data.Dataset of such tuples. Received {type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
            + (" with y=None" if isinstance(data, (tuple, list)) and len(data) > 1 and data[1] is None else "")
            + "."
        )
    # x and y may be dicts / tuples of arrays (multi-input models): compare the examples of
    # every array, not the length of the containers.
    sizes = {
        int(np.shape(leaf)[0])
        for part in data
        if part is not None
        for leaf in (tf.nest.flatten(part) if isinstance(part, (dict, tuple)) else [part])
        if np.ndim(leaf) > 0
    }
    if len(sizes) != 1:
        raise ValueError(
            "hessian_data: x, y (and sample_weight) must have the same number of examples. "
            f"Received sizes {sorted(sizes)}."
        )
