"""DFP-16 layers: Dense, Conv2D / Conv1D, DepthwiseConv2D and EinsumDense with exact int32 accumulation.

No DFP-16 Embedding: a lookup has no products to accumulate, so DFP-16 would only store the table
at 16 bits, which the `float16` scheme's `Float16Embedding` does with no shared exponent.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_hessian._validation import check_choice, check_int
from keras_hessian.layers._base import QuantizedConv, QuantizedDense
from keras_hessian.layers._shapes import QuantizedDepthwiseConv2D, QuantizedEinsumDense
from keras_hessian.layers.registry import register_quantized_layer
from keras_hessian.quantizers.dfp16 import DFP16, power_of_two

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "DFP16Conv1D",
    "DFP16Conv2D",
    "DFP16Dense",
    "DFP16DepthwiseConv2D",
    "DFP16EinsumDense",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
OVERFLOW_MODES = ("saturate", "wrap")


class _DFP16:
    """Options, quantizers, config and the integer-accumulation forward pass (shared by Dense and Conv).

    Forward pass (Das et al., ICLR 2018): inputs and kernel are each quantized to DFP with
    one shared exponent (`E_x`, `E_w`), the int16 x int16 products `i_x * i_w` are summed
    in int32 accumulators, each accumulator is converted to float32 and scaled by
    `2^(E_x + E_w)`, and the accumulators of the chunks are summed in float32.

    Why chunks: with `E_s = E(max) - (P - 2)` the largest mantissas are 2^14..2^15, so one
    product reaches 2^30 and a single int32 accumulator over a whole reduction overflows
    routinely (measured: a digits CNN trained from scratch with one accumulator per output
    reached 28% accuracy instead of 91%). `accumulation_chunk` bounds the products summed in
    one int32 accumulator (default 16; for convolutions, groups of input channels times the
    kernel window); `None` gives one accumulator for the whole reduction.

    Exactness: products (< 2^30) and their partial sums are integers; a float64
    matmul/convolution of the integer mantissas represents every one of them exactly while
    |partial sum| < 2^53, so it yields each accumulator's exact mathematical value whatever
    the summation order. Overflow of an int32 accumulator (`accumulator_overflow`):

    - `"saturate"` (default): the exact chunk sum is clamped to [-2^31, 2^31 - 1] (a wide
      accumulator clamped when written out as int32; clamping every partial sum instead
      would depend on the summation order);
    - `"wrap"`: two's complement wrap-around modulo 2^32, which equals what an int32
      register gives whatever the order.

    Only when an accumulator leaves the int32 range does the export identity
    `layer(x) == matmul(input_quantizer(x), quantized_kernel()) + bias` break (beyond
    float32 rounding); that needs a chunk whose products sum past 2^31, e.g. 2 or more
    same-sign products with both operands at full scale. `accumulator_overflows(x)` counts
    the accumulators that left the range.

    Backward pass: the upstream gradient is quantized to DFP-16 (`gradient_rounding`) and
    multiplied with the DFP-quantized operands (in float32); the quantizers' gradient is
    straight-through to the latent float32 kernel and to the input.
    """

    def __init__(
        self,
        *args: Any,
        precision: int = 16,
        rounding: str = "nearest",
        gradient_rounding: str = "nearest",
        accumulator_overflow: str = "saturate",
        quantize_gradients: bool = True,
        accumulation_chunk: int | None = 16,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.accumulation_chunk = check_int("accumulation_chunk", accumulation_chunk, 1, allow_none=True)
        self.kernel_quantizer = DFP16(precision, rounding)
        self.input_quantizer = DFP16(precision, rounding)
        self.precision = self.kernel_quantizer.precision
        self.rounding = rounding
        self.accumulator_overflow = check_choice("accumulator_overflow", accumulator_overflow, OVERFLOW_MODES)
        self.gradient_quantizer = DFP16(16, gradient_rounding)
        self.gradient_rounding = gradient_rounding
        self.quantize_gradients = bool(quantize_gradients)

    @property
    def precision_label(self) -> str:
        return f"DFP-{self.precision}"

    def _accumulate(self, x: tf.Tensor, kernel: tf.Tensor, training: Any):
        """Partial int32 sums (float64, exact, chunk axis first), scale, dequantized operands."""
        x_mantissa, x_exponent = self.input_quantizer.quantize(x, training=training)
        w_mantissa, w_exponent = self.kernel_quantizer.quantize(kernel, training=training)
        partials = self._partial_sums(
            tf.cast(x_mantissa, tf.float64), tf.cast(w_mantissa, tf.float64)
        )
        scale = power_of_two(x_exponent) * power_of_two(w_exponent)
        x_dequantized = tf.cast(x_mantissa, tf.float32) * power_of_two(x_exponent)
        w_dequantized = tf.cast(w_mantissa, tf.float32) * power_of_two(w_exponent)
        return partials, scale, x_dequantized, w_dequantized

    def _overflow(self, accumulator: tf.Tensor) -> tf.Tensor:
        if self.accumulator_overflow == "saturate":
            return tf.clip_by_value(accumulator, float(INT32_MIN), float(INT32_MAX))
        return tf.math.floormod(accumulator - INT32_MIN, 2.0**32) + INT32_MIN

    def _integer_output(self, partials: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
        # Each int32 partial sum is converted to float32 (as hardware converts the
        # accumulator), scaled by the exact power of two, and the chunks are summed in FP32.
        return tf.reduce_sum(tf.cast(self._overflow(partials), tf.float32) * scale, axis=0)

    def accumulator_overflows(self, x: Any) -> int:
        """How many int32 partial sums of `self(x, training=False)` left the int32 range."""
        x = tf.cast(ops.convert_to_tensor(x), tf.float32)
        partials = self._accumulate(x, self._latent_kernel(), training=False)[0]
        outside = (partials < INT32_MIN) | (partials > INT32_MAX)
        return int(tf.reduce_sum(tf.cast(outside, tf.int64)))

    def call(self, inputs: Any, training: Any = None) -> Any:
        compute_dtype = inputs.dtype
        x = tf.cast(inputs, tf.float32)
        kernel = self._latent_kernel()

        @tf.custom_gradient
        def integer_linear(x_, kernel_):
            partials, scale, x_q, w_q = self._accumulate(x_, kernel_, training)
            y = self._integer_output(partials, scale)

            def grad(upstream):
                if self.quantize_gradients:
                    upstream = self.gradient_quantizer(upstream, training=True)
                with tf.GradientTape() as tape:
                    tape.watch([x_q, w_q])
                    y_float = self._linear(x_q, w_q)
                return tape.gradient(y_float, [x_q, w_q], output_gradients=upstream)

            return y, grad

        y = ops.cast(integer_linear(x, kernel), compute_dtype)
        return self._finish(y)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "precision": self.precision,
            "rounding": self.rounding,
            "gradient_rounding": self.gradient_rounding,
            "accumulator_overflow": self.accumulator_overflow,
            "quantize_gradients": self.quantize_gradients,
            "accumulation_chunk": self.accumulation_chunk,
        }


@register_quantized_layer("dfp16", keras.layers.Dense)
@keras.saving.register_keras_serializable(package="keras_hessian")
class DFP16Dense(_DFP16, QuantizedDense):
    """Dense layer computing in dynamic fixed point: int16 x int16 -> int32, DFP-16 gradients.

    Inputs and the latent float32 kernel are quantized to DFP-16 (one shared exponent per
    tensor, `keras_hessian.quantizers.dfp16`; Das et al., "Mixed Precision Training
    of Convolutional Neural Networks using Integer Operations", ICLR 2018), the integer
    products are accumulated exactly as int32 would (see the module notes on overflow), and
    the gradient entering the layer is quantized to DFP-16 in the backward pass. The bias,
    activation and any BatchNormalization stay in floating point, as in the paper. Under a
    `mixed_bfloat16` policy the DFP arithmetic still runs in float32/float64 internally
    and the output is cast to the compute dtype. The shared input exponent is taken over
    the whole batch, so an example's output depends (at the last DFP bit) on its batch.

    Example:
        >>> model = keras.Sequential([
        ...     keras.Input((64,)),
        ...     DFP16Dense(128, activation="relu"),
        ...     DFP16Dense(10, activation="softmax"),
        ... ])
        >>> model.compile("adam", "sparse_categorical_crossentropy")

    Args:
        units: output size.
        precision: P, mantissa bits of inputs and weights (2..16, default 16).
        rounding: `"nearest"` or `"stochastic"` rounding of inputs and weights while
            training; inference always rounds to nearest.
        gradient_rounding: rounding of the DFP-16 gradient (`"nearest"` or `"stochastic"`).
        accumulator_overflow: `"saturate"` (default) or `"wrap"` when a sum leaves int32.
        quantize_gradients: quantize the backward pass's gradient to DFP-16 (default True).
        accumulation_chunk: products summed in one int32 accumulator before it is converted
            to float32 (default 16; `None`: one int32 accumulator for the whole reduction).
        **kwargs: `keras.layers.Dense` arguments (activation, use_bias, initializers, ...).
    """

    def _partial_sums(self, x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
        reduction = int(w.shape[0])
        chunk = reduction if self.accumulation_chunk is None else self.accumulation_chunk
        chunks = -(-reduction // chunk)
        padding = chunks * chunk - reduction
        leading = tf.shape(x)[:-1]
        x = tf.pad(tf.reshape(x, (-1, reduction)), [[0, 0], [0, padding]])
        w = tf.pad(w, [[0, padding], [0, 0]])
        partials = tf.einsum(
            "bnc,nco->nbo",
            tf.reshape(x, (-1, chunks, chunk)),
            tf.reshape(w, (chunks, chunk, self.units)),
        )
        return tf.reshape(partials, tf.concat([[chunks], leading, [self.units]], axis=0))


class _DFP16Conv(_DFP16, QuantizedConv):
    """Convolution partial sums, by groups of input channels (Conv1D and Conv2D)."""

    def _partial_sums(self, x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
        # Chunks are groups of input channels: kernel-window x channels products each.
        window = int(np.prod(self.kernel_size))
        channels = int(w.shape[-2])
        if self.accumulation_chunk is None:
            group = channels
        else:
            group = max(1, self.accumulation_chunk // window)
        sizes = [min(group, channels - start) for start in range(0, channels, group)]
        axis = -1 if self.data_format == "channels_last" else 1
        x_parts = tf.split(x, sizes, axis=axis)
        w_parts = tf.split(w, sizes, axis=-2)
        return tf.stack([self._linear(a, b) for a, b in zip(x_parts, w_parts)])


@register_quantized_layer("dfp16", keras.layers.Conv2D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class DFP16Conv2D(_DFP16Conv):
    """2D convolution computing in dynamic fixed point (int16 x int16 -> int32); see Dense.

    Same arguments as `keras.layers.Conv2D` (no groups) plus the DFP options of
    `DFP16Dense`.

    Example:
        >>> y = DFP16Conv2D(16, 3, activation="relu")(keras.ops.ones((1, 8, 8, 1)))

    Args:
        filters: output channels.
        kernel_size: int or pair.
        precision: P, mantissa bits (2..16).
        rounding: training-time rounding of inputs and weights.
        gradient_rounding: rounding of the DFP-16 gradient.
        accumulator_overflow: `"saturate"` or `"wrap"`.
        quantize_gradients: quantize the backward pass's gradient to DFP-16.
        accumulation_chunk: products per int32 accumulator (`None`: whole reduction).
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """

    rank = 2


@register_quantized_layer("dfp16", keras.layers.Conv1D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class DFP16Conv1D(_DFP16Conv):
    """1D convolution computing in dynamic fixed point; see `DFP16Conv2D`.

    Example:
        >>> y = DFP16Conv1D(8, 5)(keras.ops.ones((1, 40, 1)))

    Args:
        filters: output channels.
        kernel_size: int.
        precision: P, mantissa bits (2..16).
        rounding: training-time rounding of inputs and weights.
        gradient_rounding: rounding of the DFP-16 gradient.
        accumulator_overflow: `"saturate"` or `"wrap"`.
        quantize_gradients: quantize the backward pass's gradient to DFP-16.
        accumulation_chunk: products per int32 accumulator (`None`: whole reduction).
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """

    rank = 1


class _DFP16Masked(_DFP16):
    """Partial sums of any kernel shape: chunk `c` is the layer's own operation on the kernel with
    only the reduction entries of `c` kept (the rows of the quantizers' matrix view).

    Exact as the Dense and Conv partial sums are (integer mantissas in float64), at the price of
    one operation per chunk: `accumulation_chunk` consecutive reduction entries (kernel-window
    positions of a depthwise filter; contracted entries of an einsum) per int32 accumulator.
    """

    def _partial_sums(self, x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
        matrix = self._to_matrix(w)
        rows = int(matrix.shape[0])
        chunk = rows if self.accumulation_chunk is None else self.accumulation_chunk
        parts = []
        for start in range(0, rows, chunk):
            keep = np.zeros((rows, 1), np.float64)
            keep[start : start + chunk] = 1.0
            parts.append(self._linear(x, self._from_matrix(matrix * keep)))
        return tf.stack(parts)


@register_quantized_layer("dfp16", keras.layers.DepthwiseConv2D)
@keras.saving.register_keras_serializable(package="keras_hessian")
class DFP16DepthwiseConv2D(_DFP16Masked, QuantizedDepthwiseConv2D):
    """Depthwise 2D convolution computing in dynamic fixed point (int16 x int16 -> int32); see `DFP16Dense`.

    Each output channel sums `kh * kw` products; with the default `accumulation_chunk=16` a 3x3
    filter is one int32 accumulator, a 5x5 filter two.

    Example:
        >>> y = DFP16DepthwiseConv2D(3, padding="same")(keras.ops.ones((1, 8, 8, 4)))

    Args:
        kernel_size: int or pair.
        depth_multiplier: filters per input channel.
        precision, rounding, gradient_rounding, accumulator_overflow, quantize_gradients,
        accumulation_chunk: as in `DFP16Dense`.
        **kwargs: strides, padding, data_format, dilation_rate, activation, use_bias, ...
    """


@register_quantized_layer("dfp16", keras.layers.EinsumDense)
@keras.saving.register_keras_serializable(package="keras_hessian")
class DFP16EinsumDense(_DFP16Masked, QuantizedEinsumDense):
    """EinsumDense computing in dynamic fixed point (int16 x int16 -> int32); see `DFP16Dense`.

    Example:
        >>> y = DFP16EinsumDense("ab,bc->ac", 8, bias_axes="c")(keras.ops.ones((2, 16)))

    Args:
        equation, output_shape, bias_axes: as in `keras.layers.EinsumDense`.
        precision, rounding, gradient_rounding, accumulator_overflow, quantize_gradients,
        accumulation_chunk: as in `DFP16Dense`.
        **kwargs: activation, initializers, regularizers, constraints, ...
    """
