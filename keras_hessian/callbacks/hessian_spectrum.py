"""HessianSpectrum: measure the Hessian's top eigenvalues (and trace) during `model.fit`."""

from __future__ import annotations

import time
import weakref

import keras

from keras_hessian._validation import check_bool, check_choice, check_float, check_int
from keras_hessian.hessian import HessianOperator, hutchinson_trace, top_eigenvalues
from keras_hessian.hessian.algorithms import compatible_vectors
from keras_hessian.hessian.algorithms.eigen import EIGEN_METHODS

TOP_EIGENVALUE = "hessian/top_eigenvalue"
TRACE = "hessian/trace"
HVP_COUNT = "hessian/hvp_count"


def eigenvalue_key(index: int) -> str:
    """The `logs` key of the `index`-th (1-based) eigenvalue."""
    return TOP_EIGENVALUE if index == 1 else f"hessian/eigenvalue_{index}"


class HessianSpectrum(keras.callbacks.Callback):
    """Measures the top Hessian eigenvalues (and optionally the trace) every N epochs.

    The values go into `logs` under `hessian/top_eigenvalue`, `hessian/eigenvalue_2` ...
    `hessian/eigenvalue_k` and `hessian/trace`, so they appear in `History`, `CSVLogger`,
    TensorBoard and the progress bar. Epochs between measurements log NaN, which keeps every
    column the same length. `hessian/hvp_count` logs the products each measurement spent (NaN
    between measurements): from the second measurement on the solver starts from the last
    eigenvectors (`eigenvectors`, kept across fits of the same model while its trainable
    weights keep their shapes; a fit of another model starts afresh), which the Hessian's slow drift between epochs makes a close start. Use it to watch sharpness while training, e.g. to compare batch
    sizes or learning rates. The measurement reads the weights and changes nothing: weights,
    optimizer state, metrics and the random stream of training stay what they would be without
    it (the probes are drawn with stateless seeds). Under `tf.distribute` the products are split
    across the replicas and all-reduced (`HessianOperator`): every worker logs the same values.

    Example:

    ```python
    spectrum = HessianSpectrum((x_val[:512], y_val[:512]), top_k=3, trace=True)
    history = model.fit(x, y, epochs=5, callbacks=[spectrum])
    history.history["hessian/top_eigenvalue"]
    ```

    Args:
        data: the data the Hessian is taken over: numpy `(x, y)` or a batched
            `tf.data.Dataset` (see `HessianOperator`). A fixed subset of a few thousand
            examples gives stable values.
        every_n_epochs: measure at epochs 0, N, 2N, ... (and log NaN in between).
        top_k: number of top eigenvalues.
        trace: also estimate the trace (Hutch++).
        max_iter: product budget of each estimate.
        tol: relative tolerance of the eigenvalues and of the trace's standard error.
        seed: seed of the random start vectors and probes.
        training: Hessian in training mode (see `HessianOperator`); default inference mode.
        method: the eigenvalue solver (`"lanczos"`, `"power"`, `"arpack"`; default Lanczos).
        verbose: print each measurement.
    """

    def __init__(
        self,
        data,
        every_n_epochs: int = 1,
        top_k: int = 1,
        trace: bool = False,
        max_iter: int = 100,
        tol: float = 1e-3,
        seed: int | None = 0,
        training: bool = False,
        method: str | None = None,
        verbose: int = 0,
    ):
        super().__init__()
        self.data = data
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs)
        self.top_k = check_int("top_k", top_k)
        self.trace = check_bool("trace", trace)
        self.max_iter = check_int("max_iter", max_iter)
        self.tol = check_float("tol", tol, minimum=0.0, exclusive_minimum=True)
        self.seed = check_int("seed", seed, minimum=0, allow_none=True)
        self.training = check_bool("training", training)
        self.method = None if method is None else check_choice("method", method, EIGEN_METHODS)
        self.verbose = verbose
        self.seconds = 0.0  # time spent on Hessian work, for cost accounting
        self.history: dict[str, list[float]] = {}
        self._operator = None
        self.eigenvectors: list | None = None  # the last measurement's, the next one's start
        self._vectors_of = None  # weakref to the model they belong to

    def get_config(self) -> dict:
        return {
            "every_n_epochs": self.every_n_epochs,
            "top_k": self.top_k,
            "trace": self.trace,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "seed": self.seed,
            "training": self.training,
            "method": self.method,
            "verbose": self.verbose,
        }

    @property
    def keys(self) -> list[str]:
        """The `logs` keys this callback writes."""
        return [eigenvalue_key(i) for i in range(1, self.top_k + 1)] + ([TRACE] if self.trace else []) + [HVP_COUNT]

    def on_train_begin(self, logs=None):
        self._operator = HessianOperator(self.model, self.data, training=self.training)
        if self._vectors_of is not None and self._vectors_of() is not self.model:  # another model's: no warm start
            self.eigenvectors = None
        self._vectors_of = weakref.ref(self.model)
        self.eigenvectors = compatible_vectors(self.eigenvectors, self._operator.variables)
        if self.top_k > self._operator.num_parameters:
            raise ValueError(
                f"top_k must not exceed the model's trainable parameter count "
                f"({self._operator.num_parameters}). Received top_k={self.top_k}."
            )

    def measure(self, epoch: int = 0) -> dict[str, float]:
        """Measure now and return `{key: value}` (also usable outside `fit`)."""
        if self._operator is None:
            self._operator = HessianOperator(self.model, self.data, training=self.training)
            self.eigenvectors = compatible_vectors(self.eigenvectors, self._operator.variables)
        start = time.perf_counter()
        seed = None if self.seed is None else self.seed + epoch
        values: dict[str, float] = {}
        eigen = top_eigenvalues(
            self._operator, k=self.top_k, max_iter=self.max_iter, tol=self.tol, seed=seed, method=self.method,
            initial=self.eigenvectors,
        )
        self.eigenvectors = eigen.eigenvectors
        hvps = eigen.hvp_count
        for i, value in enumerate(eigen.eigenvalues, start=1):
            values[eigenvalue_key(i)] = float(value)
        if self.trace:
            trace = hutchinson_trace(self._operator, max_iter=max(self.max_iter, 64), tol=self.tol, seed=seed)
            values[TRACE] = float(trace.trace)
            hvps += trace.hvp_count
        values[HVP_COUNT] = float(hvps)
        self.seconds += time.perf_counter() - start
        return values

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if epoch % self.every_n_epochs == 0:
            values = self.measure(epoch)
            if self.verbose:
                print(" - ".join(f"{k}: {v:.6g}" for k, v in values.items()))
        else:
            values = {key: float("nan") for key in self.keys}
        for key in self.keys:
            value = values.get(key, float("nan"))
            logs[key] = value
            self.history.setdefault(key, []).append(value)
