"""Ternarization `W ~ alpha * T(W)`, T in {-1, 0, +1}: the exact fit and TWN (`ternarize`, `Ternarize`).

The row-wise fit here (`fit_rows`, `apply_rows`) is also what `ternary_residual` applies to
each block.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from keras_hessian._validation import check_choice
from keras_hessian.quantizers.base import (
    BaseQuantizer,
    KernelCost,
    as_float32,
    kernel_layout,
    register_quantizer,
    with_pseudo_gradient,
)

__all__ = ["TERNARY_METHODS", "Ternarize", "apply_rows", "fit_rows", "ternarize", "ternary_fit"]

TERNARY_METHODS = ("exact", "twn")


def fit_rows(rows: tf.Tensor, counts: tf.Tensor, method: str) -> tuple[tf.Tensor, tf.Tensor]:
    """Alpha and threshold of each row of `rows` (shape `[B, N]`, zero-padded).

    `counts[b]` is the number of real (non-padding) entries of row b; only TWN needs it.
    Returns `(alpha, threshold)`, each `[B, 1]`; the ternary row is
    `alpha * sign(w) * 1{|w| > threshold}`.
    """
    magnitude = tf.abs(rows)
    if method == "twn":
        # TWN (Li, Zhang & Liu, "Ternary Weight Networks", 2016): delta = 0.7 * E|W|, and
        # alpha = mean of the kept magnitudes.
        # Times the reciprocal count (the same value eagerly and constant-folded; see below).
        mean = tf.reduce_sum(magnitude, axis=-1, keepdims=True) * tf.math.reciprocal(tf.maximum(counts, 1.0))
        threshold = 0.7 * mean
        kept = tf.cast(magnitude > threshold, tf.float32)
        alpha = tf.reduce_sum(magnitude * kept, axis=-1, keepdims=True) / tf.maximum(
            tf.reduce_sum(kept, axis=-1, keepdims=True), 1.0
        )
        return alpha, threshold

    # Exact: for a support S the best alpha is mean_{i in S} |w_i| and the error is
    # ||W||^2 - (sum_S |w_i|)^2 / |S|; for a given size k the best S is the k largest
    # magnitudes. So sort |W| descending and maximize cumsum_k^2 / k over k, keeping only
    # k that a threshold rule |w| > T can express (no tie split between kept and dropped).
    size = rows.shape[-1]
    ordered = tf.sort(magnitude, axis=-1, direction="DESCENDING")
    cumulative = tf.cumsum(ordered, axis=-1)
    # Multiplied by 1/k, not divided by k: in a tf.function Grappler turns a division by a constant
    # into that multiplication, and the last-bit difference flipped near-tied argmaxes, so the same
    # kernel quantized differently in `predict` and eagerly (e.g. in the exported copy).
    score = tf.square(cumulative) * tf.math.reciprocal(tf.range(1, size + 1, dtype=tf.float32))
    expressible = tf.concat(
        [ordered[:, :-1] > ordered[:, 1:], tf.ones_like(ordered[:, :1], dtype=tf.bool)], axis=-1
    )
    score = tf.where(expressible, score, -1.0)
    best = tf.argmax(score, axis=-1, output_type=tf.int32)[:, None]
    alpha = tf.gather(cumulative, best, batch_dims=1) / tf.cast(best + 1, tf.float32)
    padded = tf.concat([ordered, tf.zeros_like(ordered[:, :1])], axis=-1)
    threshold = tf.gather(padded, best + 1, batch_dims=1)
    return alpha, threshold


def apply_rows(rows: tf.Tensor, alpha: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
    """`alpha * sign(w) * 1{|w| > threshold}` row by row."""
    kept = tf.cast(tf.abs(rows) > threshold, tf.float32)
    return alpha * tf.sign(rows) * kept


def ternary_fit(x: Any, method: str = "exact") -> tuple[tf.Tensor, tf.Tensor]:
    """Scale `alpha` and threshold `T` of the ternary approximation `W ~ alpha * T(W)`.

    Use it to inspect the fit; `ternarize` applies it. See `ternarize` for the math.

    Example:
        >>> alpha, threshold = ternary_fit([0.1, -1.0, 0.9])

    Args:
        x: float tensor, fitted as one block.
        method: `"exact"` (minimizes the Frobenius error) or `"twn"` (0.7 * mean|W|).

    Returns:
        `(alpha, threshold)`, scalar float32 tensors.
    """
    check_choice("method", method, TERNARY_METHODS)
    rows = tf.reshape(as_float32(x), (1, -1))
    counts = tf.fill((1, 1), tf.cast(tf.shape(rows)[1], tf.float32))
    alpha, threshold = fit_rows(rows, counts, method)
    return alpha[0, 0], threshold[0, 0]


def ternarize(x: Any, method: str = "exact") -> tf.Tensor:
    """Ternarize a tensor: `W ~ alpha * T(W)` with `T(W)` in {-1, 0, +1}, one alpha per tensor.

    Forward: `T(W)_i = sign(W_i) * 1{|W_i| > threshold}`.

    - `method="exact"` minimizes `E(alpha, T) = ||W - alpha * T(W)||_F^2` over `alpha >= 0`
      and the threshold exactly (Kundu, Banerjee et al., "Ternary Residual Networks", 2018):
      for a support S the optimum is `alpha = mean_{i in S} |W_i|` with error
      `||W||^2 - (sum_S |W_i|)^2 / |S|`, and the best support of size k holds the k largest
      magnitudes, so one sort of `|W|` and a cumulative sum find the optimum over all
      thresholds in O(n log n).
    - `method="twn"`: threshold `0.7 * mean|W|`, alpha the mean of the kept magnitudes (Li,
      Zhang & Liu, "Ternary Weight Networks", 2016). Never better than `"exact"`.

    Pseudo-gradient: straight-through, `dL/dW = dL/dW_q` (identity).

    Example:
        >>> ternarize([0.1, -1.0, 0.9]).numpy()
        array([ 0.  , -0.95,  0.95], dtype=float32)

    Args:
        x: float tensor.
        method: `"exact"` or `"twn"`.

    Returns:
        `alpha * T(W)` in `x`'s dtype and shape.
    """
    check_choice("method", method, TERNARY_METHODS)
    x = tf.convert_to_tensor(x)
    x32 = as_float32(x)

    def forward(v):
        alpha, threshold = ternary_fit(v, method)
        return apply_rows(v, alpha, threshold)

    return tf.cast(with_pseudo_gradient(x32, forward, lambda v, g: g), x.dtype)


@register_quantizer("ternarize")
class Ternarize(BaseQuantizer):
    """Serializable `ternarize`: `alpha * T(W)`, T in {-1, 0, +1}, one alpha per tensor.

    Use for ternary weights without residual terms; see `TernaryResidual` for blocks.

    Example:
        >>> Ternarize(method="twn")(tf.constant([0.1, -1.0, 0.9]))

    Args:
        method: `"exact"` (optimal alpha and threshold) or `"twn"` (0.7 * mean|W|).
    """

    precision = 2

    def __init__(self, method: str = "exact"):
        self.method = check_choice("method", method, TERNARY_METHODS)

    def __call__(self, x: Any, training: bool | None = None) -> tf.Tensor:
        return ternarize(x, self.method)

    def kernel_cost(self, kernel_shape: Any, outputs: int | None) -> KernelCost:
        """2 bits per weight and one float32 alpha; products become sign/add, one scaling per output."""
        weights, _, reduction = kernel_layout(kernel_shape)
        if outputs is None:
            return KernelCost(2.0, 2 * weights + 32, None, None)
        return KernelCost(2.0, 2 * weights + 32, outputs, outputs * reduction)

    def get_config(self) -> dict:
        return {"method": self.method}
