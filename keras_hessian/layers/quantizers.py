"""Quantizers: the math of binarization, ternarization, ternary residuals and DFP-16.

Each quantizer is a small function whose docstring states its forward rule and its
pseudo-gradient (straight-through estimator, STE), plus a thin serializable class around it
that carries its precision in bits, as in larq (`ste_sign` / `SteSign`). Layers in
`keras_hessian.layers` compose these objects; they contain no quantization math themselves.

All quantizers compute in float32 whatever the input dtype (bfloat16 has too few mantissa
bits for DFP-16 and for exact ternary thresholds) and return the input's dtype.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "DFP16",
    "Binarize",
    "Ternarize",
    "TernaryResidual",
    "binarize",
    "dfp16",
    "dfp16_dequantize",
    "dfp16_quantize",
    "get",
    "quantize_gradient",
    "ternarize",
    "ternary_fit",
    "ternary_residual",
]

TERNARY_METHODS = ("exact", "twn")
DFP_ROUNDINGS = ("nearest", "stochastic")
DFP_MIN_PRECISION = 2
DFP_MAX_PRECISION = 16


# --------------------------------------------------------------------------- helpers


def _as_float32(x: Any) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(f"Quantizers need a float tensor. Received a tensor of dtype {x.dtype.name}.")
    return tf.cast(x, tf.float32)


def _with_pseudo_gradient(x: tf.Tensor, forward, backward) -> tf.Tensor:
    """Return `forward(x)` whose gradient is `backward(x, upstream)` instead of autodiff's.

    Used for every STE here: the forward value is exact (no `x + stop_gradient(q - x)`
    rounding), the backward rule is the documented pseudo-gradient.
    """

    @tf.custom_gradient
    def op(x_):
        def grad(upstream):
            return backward(x_, upstream)

        return forward(x_), grad

    return op(x)


def _validate_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}. Received {name}={value!r}.")


def _validate_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer. Received {name}={value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bound}. Received {name}={value!r}.")
    return int(value)


# --------------------------------------------------------------------------- binarize


def binarize(
    x: Any,
    stochastic: bool = False,
    clip_value: float | None = 1.0,
    seed: int | None = None,
) -> tf.Tensor:
    """Binarize a tensor to {-1, +1} with the straight-through estimator of BNNs.

    Forward (Courbariaux, Hubara et al., "Binarized Neural Networks", 2016):

    - deterministic: `x_b = sign(x)`, with `sign(0) = +1`;
    - stochastic: `x_b = +1` with probability `p = hard_sigmoid(x) = clip((x + 1) / 2, 0, 1)`,
      `-1` with probability `1 - p`.

    Pseudo-gradient (STE with gradient cancelling, Hubara et al. 2016, eq. 4):
    `dL/dx = dL/dx_b * 1{|x| <= clip_value}`; with `clip_value=None` the gradient passes
    unchanged everywhere.

    Example:
        >>> binarize([-0.3, 0.0, 2.0]).numpy()
        array([-1.,  1.,  1.], dtype=float32)

    Args:
        x: float tensor.
        stochastic: draw the hard-sigmoid Bernoulli instead of taking the sign.
        clip_value: the gradient is zero where `|x| > clip_value`; `None` never cancels.
        seed: op seed of the stochastic draw (the global seed applies as usual).

    Returns:
        A tensor of `x`'s dtype holding -1 and +1.
    """
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    x32 = _as_float32(x)

    def forward(v):
        if stochastic:
            probability = tf.clip_by_value((v + 1.0) / 2.0, 0.0, 1.0)
            draw = tf.random.uniform(tf.shape(v), dtype=tf.float32, seed=seed)
            return tf.where(draw < probability, 1.0, -1.0)
        return tf.where(v >= 0.0, 1.0, -1.0)

    def backward(v, upstream):
        if clip_value is None:
            return upstream
        return upstream * tf.cast(tf.abs(v) <= clip_value, upstream.dtype)

    return tf.cast(_with_pseudo_gradient(x32, forward, backward), dtype)


# --------------------------------------------------------------------------- ternarize


def _fit_rows(rows: tf.Tensor, counts: tf.Tensor, method: str) -> tuple[tf.Tensor, tf.Tensor]:
    """Alpha and threshold of each row of `rows` (shape `[B, N]`, zero-padded).

    `counts[b]` is the number of real (non-padding) entries of row b; only TWN needs it.
    Returns `(alpha, threshold)`, each `[B, 1]`; the ternary row is
    `alpha * sign(w) * 1{|w| > threshold}`.
    """
    magnitude = tf.abs(rows)
    if method == "twn":
        # TWN (Li, Zhang & Liu, "Ternary Weight Networks", 2016): delta = 0.7 * E|W|, and
        # alpha = mean of the kept magnitudes.
        mean = tf.reduce_sum(magnitude, axis=-1, keepdims=True) / tf.maximum(counts, 1.0)
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
    k = tf.range(1, size + 1, dtype=tf.float32)
    score = tf.square(cumulative) / k
    expressible = tf.concat(
        [ordered[:, :-1] > ordered[:, 1:], tf.ones_like(ordered[:, :1], dtype=tf.bool)], axis=-1
    )
    score = tf.where(expressible, score, -1.0)
    best = tf.argmax(score, axis=-1, output_type=tf.int32)[:, None]
    alpha = tf.gather(cumulative, best, batch_dims=1) / tf.cast(best + 1, tf.float32)
    padded = tf.concat([ordered, tf.zeros_like(ordered[:, :1])], axis=-1)
    threshold = tf.gather(padded, best + 1, batch_dims=1)
    return alpha, threshold


def _apply_rows(rows: tf.Tensor, alpha: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
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
    _validate_choice("method", method, TERNARY_METHODS)
    rows = tf.reshape(_as_float32(x), (1, -1))
    counts = tf.fill((1, 1), tf.cast(tf.shape(rows)[1], tf.float32))
    alpha, threshold = _fit_rows(rows, counts, method)
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
    _validate_choice("method", method, TERNARY_METHODS)
    x = tf.convert_to_tensor(x)
    x32 = _as_float32(x)

    def forward(v):
        alpha, threshold = ternary_fit(v, method)
        return _apply_rows(v, alpha, threshold)

    return tf.cast(_with_pseudo_gradient(x32, forward, lambda v, g: g), x.dtype)


def _to_blocks(x: tf.Tensor, block_size: int) -> tuple[tf.Tensor, tf.Tensor, Any]:
    """Reshape to `[outputs * blocks, block_size]` rows along the reduction axes.

    The last axis indexes outputs (Dense units, Conv filters); blocks run along the other
    axes flattened (the dot-product direction), so one block's scale multiplies one partial
    sum: that is what makes a block cost one multiplication. Rows are zero-padded when
    `block_size` does not divide the reduction length.
    """
    if x.shape.rank == 1:
        matrix = x[None, :]
    else:
        outputs = x.shape[-1]
        matrix = tf.transpose(tf.reshape(x, (-1, outputs)))
    reduction = matrix.shape[1]
    blocks = -(-reduction // block_size)
    padding = blocks * block_size - reduction
    rows = tf.reshape(tf.pad(matrix, [[0, 0], [0, padding]]), (-1, block_size))
    real = np.full((matrix.shape[0], blocks), block_size, dtype="float32")
    real[:, -1] = block_size - padding
    counts = tf.constant(real.reshape(-1, 1))
    return rows, counts, (matrix.shape, padding)


def _from_blocks(rows: tf.Tensor, layout: Any, shape: tf.TensorShape) -> tf.Tensor:
    matrix_shape, _ = layout
    matrix = tf.reshape(rows, (matrix_shape[0], -1))[:, : matrix_shape[1]]
    if shape.rank == 1:
        return tf.reshape(matrix, shape)
    return tf.reshape(tf.transpose(matrix), shape)


def ternary_residual(
    x: Any,
    block_size: int = 64,
    residuals: int = 1,
    method: str = "exact",
    active_residuals: Any = None,
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Block-wise ternary residual decomposition `W ~ sum_{j=0..r} alpha_j,b * T_j,b`.

    Forward (Kundu, Banerjee et al., "Ternary Residual Networks", SysML 2018): split the
    weights into disjoint blocks of `block_size` elements along the reduction axes (all axes
    but the last, which indexes outputs; zero-padded when `block_size` does not divide),
    ternarize each block (`ternarize`, one alpha and threshold per block), then ternarize
    what is left, `W - sum of earlier terms`, again block-wise, `residuals` more times.

    Convention: `residuals = r` counts the terms ADDED to the base ternary term, so there are
    `r + 1` ternary terms and `r = 0` is plain block-wise ternarization. Each term is the
    optimal ternary fit of the remainder (or the TWN fit), so the reconstruction error never
    increases with r. `active_residuals = k <= r` sums only the first `k + 1` terms, which is
    exactly the decomposition with `residuals = k` (terms are computed greedily): the deck's
    accuracy/compute knob.

    Pseudo-gradient: straight-through, `dL/dW = dL/dW_q` (identity), whatever `k`.

    Example:
        >>> w = tf.random.normal((64, 10))
        >>> approx, parts = ternary_residual(w, block_size=16, residuals=2)
        >>> len(parts)
        3

    Args:
        x: float tensor, last axis = outputs.
        block_size: N, elements per block (>= 1).
        residuals: r, residual terms on top of the base ternary term (>= 0).
        method: `"exact"` or `"twn"` fit of each block.
        active_residuals: k, how many residual terms the returned sum includes (an int or a
            scalar integer tensor, read at run time); `None` means all r.

    Returns:
        `(approximation, parts)`: the sum of the first `k + 1` terms in `x`'s dtype (with the
        STE gradient), and the list of all `r + 1` terms (float32, no gradient).
    """
    block_size = _validate_int("block_size", block_size, 1)
    residuals = _validate_int("residuals", residuals, 0)
    _validate_choice("method", method, TERNARY_METHODS)
    x = tf.convert_to_tensor(x)
    x32 = _as_float32(x)
    if x32.shape.rank is None or x32.shape.rank == 0:
        raise ValueError(f"ternary_residual needs a tensor of rank >= 1. Received shape {x32.shape}.")
    shape = x32.shape
    rows, counts, layout = _to_blocks(tf.stop_gradient(x32), block_size)
    remainder = rows
    parts = []
    for _ in range(residuals + 1):
        alpha, threshold = _fit_rows(remainder, counts, method)
        term = _apply_rows(remainder, alpha, threshold)
        parts.append(_from_blocks(term, layout, shape))
        remainder = remainder - term
    stacked = tf.stack(parts)
    if active_residuals is None:
        active = tf.constant(residuals, tf.int32)
    else:
        active = tf.cast(tf.convert_to_tensor(active_residuals), tf.int32)
    selector = tf.cast(tf.range(residuals + 1) <= active, tf.float32)
    total = tf.tensordot(selector, stacked, axes=1)
    approximation = _with_pseudo_gradient(x32, lambda v: total, lambda v, g: g)
    return tf.cast(approximation, x.dtype), parts


# --------------------------------------------------------------------------- DFP-16


def _power_of_two(exponent: tf.Tensor) -> tf.Tensor:
    """2**exponent as an exact float32, for integer exponents in [-126, 127].

    The biased exponent is multiplied into place rather than shifted: TFLite has no LEFT_SHIFT
    kernel, and exported models run this same code (`keras_hessian.export`).
    """
    return tf.bitcast((exponent + 127) * (1 << 23), tf.float32)


def dfp16_quantize(
    x: Any,
    precision: int = 16,
    rounding: str = "nearest",
    seed: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Dynamic fixed point: integer mantissas with ONE shared exponent per tensor.

    Forward (Das et al., "Mixed Precision Training of Convolutional Neural Networks using
    Integer Operations", ICLR 2018):

        E_fmax = E(max |f|),   E_s = E_fmax - (P - 2),   f_n ~ i_n * 2^E_s,

    where `E(v) = floor(log2 v)` and `i_n = round(f_n / 2^E_s)` is a P-bit signed integer.
    `max|f| / 2^E_s` lies in [2^(P-2), 2^(P-1)); when it exceeds `2^(P-1) - 1` (the top
    1/2^(P-2) of that range, where rounding could carry into bit P) E_s is raised by one, as
    a float's exponent is after a rounding carry, so mantissas always fit in
    `[-(2^(P-1) - 1), 2^(P-1) - 1]` and the round-to-nearest error is at most `2^(E_s - 1)`.
    E_s is kept >= -126 (2^E_s a normal float32): tensors whose maximum is below about
    2^(-126 + P - 2) use a coarser grid than the formula. Stochastic rounding rounds up
    with probability equal to the fractional part, so `E[i_n * 2^E_s] = f_n`.

    Example:
        >>> mantissa, exponent = dfp16_quantize([0.5, -0.25, 1.0])
        >>> (mantissa.numpy(), int(exponent))
        (array([ 8192, -4096, 16384], dtype=int32), -14)

    Args:
        x: float tensor.
        precision: P, bits of the signed mantissa, 2..16 (16 gives int16 mantissas).
        rounding: `"nearest"` (ties to even) or `"stochastic"`.
        seed: op seed of the stochastic rounding draw.

    Returns:
        `(mantissa, shared_exponent)`: int32 tensor of `x`'s shape, int32 scalar.
    """
    precision = _validate_int("precision", precision, DFP_MIN_PRECISION, DFP_MAX_PRECISION)
    _validate_choice("rounding", rounding, DFP_ROUNDINGS)
    x32 = _as_float32(x)
    largest = tf.reduce_max(tf.abs(x32)) if x32.shape.rank else tf.abs(x32)
    # Exponent bits of a positive float32 give floor(log2) exactly (no log2 rounding issue).
    exponent_of_max = tf.bitwise.right_shift(tf.bitcast(largest, tf.int32), 23) - 127
    shared = tf.maximum(exponent_of_max - (precision - 2), -126)
    limit = float(2 ** (precision - 1) - 1)
    shared = shared + tf.cast(largest > limit * _power_of_two(shared), tf.int32)
    scaled = x32 * _power_of_two(-shared)
    if rounding == "nearest":
        integers = tf.round(scaled)
    else:
        floor = tf.floor(scaled)
        draw = tf.random.uniform(tf.shape(scaled), dtype=tf.float32, seed=seed)
        integers = floor + tf.cast(draw < scaled - floor, tf.float32)
    integers = tf.clip_by_value(integers, -limit, limit)
    return tf.cast(integers, tf.int32), shared


def dfp16_dequantize(mantissa: Any, shared_exponent: Any, dtype: str = "float32") -> tf.Tensor:
    """Float value `i_n * 2^E_s` of a DFP tensor (exact in float32 for P <= 24).

    Example:
        >>> dfp16_dequantize(*dfp16_quantize([0.3])).numpy()
        array([0.30000305], dtype=float32)

    Args:
        mantissa: integer tensor from `dfp16_quantize`.
        shared_exponent: integer scalar E_s.
        dtype: float dtype of the result.
    """
    shared_exponent = tf.cast(shared_exponent, tf.int32)
    value = tf.cast(mantissa, tf.float32) * _power_of_two(shared_exponent)
    return tf.cast(value, dtype)


def dfp16(
    x: Any,
    precision: int = 16,
    rounding: str = "nearest",
    seed: int | None = None,
) -> tf.Tensor:
    """Round a tensor to dynamic fixed point (DFP-16) and back to float.

    Forward: `dfp16_dequantize(*dfp16_quantize(x))`; see `dfp16_quantize` for the rule
    (Das et al., ICLR 2018). The round-trip error of each element is at most `2^(E_s - 1)`
    with round to nearest and below `2^E_s` with stochastic rounding.

    Pseudo-gradient: straight-through, `dL/dx = dL/dx_q` (identity).

    Example:
        >>> float(dfp16(tf.constant([0.3, 1.0]))[0])
        0.29998779296875

    Args:
        x: float tensor.
        precision: P, mantissa bits (2..16).
        rounding: `"nearest"` or `"stochastic"`.
        seed: op seed of the stochastic draw.

    Returns:
        The DFP value of `x` in `x`'s dtype.
    """
    x = tf.convert_to_tensor(x)
    x32 = _as_float32(x)

    def forward(v):
        return dfp16_dequantize(*dfp16_quantize(v, precision, rounding, seed))

    return tf.cast(_with_pseudo_gradient(x32, forward, lambda v, g: g), x.dtype)


def quantize_gradient(x: Any, quantizer) -> tf.Tensor:
    """Identity in the forward pass; the backward pass sends `quantizer(upstream)` instead.

    This is how DFP-16 layers quantize the gradient flowing into them (Das et al., ICLR
    2018: the backward GEMMs take DFP-16 operands).

    Example:
        >>> y = quantize_gradient(tf.constant([1.0]), DFP16())

    Args:
        x: tensor.
        quantizer: a callable applied to the upstream gradient.
    """
    x = tf.convert_to_tensor(x)
    return _with_pseudo_gradient(
        x, tf.identity, lambda v, g: tf.cast(quantizer(tf.cast(g, tf.float32)), g.dtype)
    )


# --------------------------------------------------------------------------- classes


class Quantizer:
    """Base of the serializable quantizer objects: a callable with `precision` in bits.

    `precision` is the storage bits per element used by `quantization_summary`.
    """

    precision: int = 32

    def __call__(self, x: Any, training: bool | None = None) -> tf.Tensor:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> Quantizer:
        return cls(**config)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


@keras.saving.register_keras_serializable(package="keras_hessian")
class Binarize(Quantizer):
    """Serializable `binarize`: weights or activations in {-1, +1} (1 bit).

    Use as a layer's kernel or input quantizer for binarized networks. Stochastic
    binarization applies only when called with `training=True`; inference is the sign.

    Example:
        >>> Binarize(per_channel_scale=True)(tf.constant([[0.5, -2.0], [-0.5, 1.0]])).numpy()
        array([[ 0.5, -1.5],
               [-0.5,  1.5]], dtype=float32)

    Args:
        stochastic: hard-sigmoid stochastic binarization during training.
        clip_value: gradient cancelled where `|x| > clip_value` (`None`: never).
        per_channel_scale: multiply by `alpha_c = mean|x[..., c]|` per last-axis channel
            (XNOR-Net, Rastegari et al. 2016); the gradient flows through alpha too.
    """

    precision = 1

    def __init__(
        self, stochastic: bool = False, clip_value: float | None = 1.0, per_channel_scale: bool = False
    ):
        if clip_value is not None and not clip_value > 0:
            raise ValueError(f"clip_value must be positive or None. Received clip_value={clip_value!r}.")
        self.stochastic = bool(stochastic)
        self.clip_value = None if clip_value is None else float(clip_value)
        self.per_channel_scale = bool(per_channel_scale)

    def __call__(self, x: Any, training: bool | None = None) -> tf.Tensor:
        signs = binarize(x, stochastic=self.stochastic and bool(training), clip_value=self.clip_value)
        if not self.per_channel_scale:
            return signs
        x = tf.convert_to_tensor(x)
        axes = list(range(x.shape.rank - 1))
        scale = tf.reduce_mean(tf.abs(x), axis=axes, keepdims=True)
        return signs * scale

    def get_config(self) -> dict:
        return {
            "stochastic": self.stochastic,
            "clip_value": self.clip_value,
            "per_channel_scale": self.per_channel_scale,
        }


@keras.saving.register_keras_serializable(package="keras_hessian")
class Ternarize(Quantizer):
    """Serializable `ternarize`: `alpha * T(W)`, T in {-1, 0, +1}, one alpha per tensor.

    Use for ternary weights without residual terms; see `TernaryResidual` for blocks.

    Example:
        >>> Ternarize(method="twn")(tf.constant([0.1, -1.0, 0.9]))

    Args:
        method: `"exact"` (optimal alpha and threshold) or `"twn"` (0.7 * mean|W|).
    """

    precision = 2

    def __init__(self, method: str = "exact"):
        _validate_choice("method", method, TERNARY_METHODS)
        self.method = method

    def __call__(self, x: Any, training: bool | None = None) -> tf.Tensor:
        return ternarize(x, self.method)

    def get_config(self) -> dict:
        return {"method": self.method}


@keras.saving.register_keras_serializable(package="keras_hessian")
class TernaryResidual(Quantizer):
    """Serializable `ternary_residual`: r + 1 block-wise ternary terms, 2 bits each.

    Use as the kernel quantizer of ternary-residual layers. `precision` is
    `2 * (residuals + 1)` bits per weight, plus one float32 alpha per block and term.

    Example:
        >>> quantizer = TernaryResidual(block_size=16, residuals=2)
        >>> approximation = quantizer(tf.random.normal((64, 8)), active_residuals=1)

    Args:
        block_size: N, elements per block along the reduction axes.
        residuals: r, residual terms on top of the base ternary term.
        method: `"exact"` or `"twn"` fit of each block.
    """

    def __init__(self, block_size: int = 64, residuals: int = 1, method: str = "exact"):
        self.block_size = _validate_int("block_size", block_size, 1)
        self.residuals = _validate_int("residuals", residuals, 0)
        _validate_choice("method", method, TERNARY_METHODS)
        self.method = method

    @property
    def precision(self) -> int:  # type: ignore[override]
        return 2 * (self.residuals + 1)

    def __call__(
        self, x: Any, training: bool | None = None, active_residuals: Any = None
    ) -> tf.Tensor:
        approximation, _ = ternary_residual(
            x, self.block_size, self.residuals, self.method, active_residuals
        )
        return approximation

    def decompose(self, x: Any) -> list[tf.Tensor]:
        """The r + 1 ternary terms of `x` (float32)."""
        return ternary_residual(x, self.block_size, self.residuals, self.method)[1]

    def get_config(self) -> dict:
        return {"block_size": self.block_size, "residuals": self.residuals, "method": self.method}


@keras.saving.register_keras_serializable(package="keras_hessian")
class DFP16(Quantizer):
    """Serializable `dfp16`: P-bit integer mantissas with one shared exponent per tensor.

    Use as a kernel/input quantizer, or through `DFP16Dense` / `DFP16Conv2D`. Stochastic
    rounding applies only when called with `training=True`; inference rounds to nearest.

    Example:
        >>> DFP16(precision=8)(tf.constant([0.3, 1.0]))

    Args:
        precision: P, mantissa bits, 2..16.
        rounding: `"nearest"` or `"stochastic"`.
    """

    def __init__(self, precision: int = 16, rounding: str = "nearest"):
        self.precision = _validate_int("precision", precision, DFP_MIN_PRECISION, DFP_MAX_PRECISION)
        _validate_choice("rounding", rounding, DFP_ROUNDINGS)
        self.rounding = rounding

    def _rounding(self, training: bool | None) -> str:
        return self.rounding if training else "nearest"

    def __call__(self, x: Any, training: bool | None = None) -> tf.Tensor:
        return dfp16(x, self.precision, self._rounding(training))

    def quantize(self, x: Any, training: bool | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """`(mantissa, shared_exponent)` of `x`."""
        return dfp16_quantize(x, self.precision, self._rounding(training))

    def get_config(self) -> dict:
        return {"precision": self.precision, "rounding": self.rounding}


_BY_NAME = {
    "binarize": Binarize,
    "ternarize": Ternarize,
    "ternary_residual": TernaryResidual,
    "dfp16": DFP16,
}


def get(identifier: Any) -> Quantizer | None:
    """Resolve a quantizer from `None`, a name, a serialized dict or an instance.

    Example:
        >>> get("dfp16")
        DFP16(precision=16, rounding='nearest')

    Args:
        identifier: `None`, one of `"binarize"`, `"ternarize"`, `"ternary_residual"`,
            `"dfp16"`, a dict from `keras.saving.serialize_keras_object`, or a `Quantizer`.
    """
    if identifier is None or isinstance(identifier, Quantizer):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(
                f"quantizer must be one of {sorted(_BY_NAME)} or a Quantizer. "
                f"Received quantizer={identifier!r}."
            )
        return _BY_NAME[identifier]()
    if isinstance(identifier, dict):
        quantizer = keras.saving.deserialize_keras_object(identifier)
        if isinstance(quantizer, Quantizer):
            return quantizer
    raise TypeError(
        "quantizer must be None, a name, a serialized quantizer or a Quantizer. "
        f"Received quantizer={identifier!r}."
    )
