"""Pruning criteria: how much each weight matters, one score per kernel entry (low = prune first).

* `magnitude`: |w| (Janowsky 1989; Han et al. 2015's "Deep Compression").
* `obd`: Optimal Brain Damage (LeCun, Denker & Solla, NIPS 1990), s_i = 1/2 H_ii w_i^2, the
  second-order increase in loss from setting w_i to zero at a minimum (the gradient term
  vanishes there and OBD drops the off-diagonal terms, which removing ONE weight does not
  involve: for a single weight the formula is exact on a quadratic loss). H_ii comes from the
  engine's `hessian_diagonal` (Hutchinson), per layer kernel so only in-layer off-diagonal
  curvature adds variance. A negative H_ii (negative curvature, or noise) ranks the weight first,
  as the formula says.
* `random`: uniform scores, the baseline that intelligent criteria must beat (Blalock et al. 2020).
"""

from __future__ import annotations

import numpy as np

from keras_hessian._validation import check_choice, check_int
from keras_hessian.hessian import HessianOperator, hessian_diagonal
from keras_hessian.pruning._layers import prunable_layers

CRITERIA = ("magnitude", "obd", "random")


def saliency(
    model,
    criterion: str = "magnitude",
    data=None,
    *,
    layers: list[str] | None = None,
    loss=None,
    seed: int | None = None,
    num_probes: int = 64,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """The score of every kernel entry of the prunable layers, `{layer name: array like the kernel}`.

    Example:

    ```python
    scores = saliency(model, "obd", (x_train[:512], y_train[:512]), seed=0)
    ```

    Args:
        model: a built Keras model (not changed).
        criterion: one of `CRITERIA`.
        data: `(x, y)` for the Hessian (required for `obd`), as `HessianOperator` takes it.
        layers: names of the layers to score (default: every Dense / Conv layer).
        loss: the loss for the Hessian (default: the model's compiled loss).
        seed: seed of the Hutchinson probes (`obd`) or of the random scores.
        num_probes: Hutchinson probes for H_ii (`obd`).
        batch_size: batch size of the Hessian's data (`obd`).
    """
    check_choice("criterion", criterion, CRITERIA)
    chosen = prunable_layers(model, layers)
    check_int("seed", seed, 0, allow_none=True)
    num_probes = check_int("num_probes", num_probes, 1)
    kernels = {layer.name: np.asarray(layer.kernel.numpy(), np.float64) for layer in chosen}
    if criterion == "magnitude":
        return {name: np.abs(w) for name, w in kernels.items()}
    if criterion == "random":
        rng = np.random.default_rng(seed)
        return {name: rng.random(w.shape) for name, w in kernels.items()}
    if data is None:
        raise ValueError(
            "criterion='obd' needs data=(x, y) to take the Hessian's diagonal on. Received data=None; "
            "pass a few hundred training examples or use criterion='magnitude'."
        )
    operator = HessianOperator(
        model, data, loss, blocks={layer.name: [layer.kernel] for layer in chosen}, batch_size=batch_size
    )
    # tol: spend all the probes; the stopping rule is for when the mean, not the ranking, matters.
    result = hessian_diagonal(operator, num_probes=num_probes, tol=1e-12, seed=seed)
    if not isinstance(result, dict):  # one block: the estimator returns the result itself
        result = {chosen[0].name: result}
    return {name: 0.5 * result[name].diagonal[0] * kernels[name] ** 2 for name in kernels}
