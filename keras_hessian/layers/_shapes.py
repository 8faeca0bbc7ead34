"""Depthwise, einsum and embedding shapes of the quantized layers (no quantization math here).

Like `QuantizedDense` / `QuantizedConv` in `_base.py`, each shape says how its kernel is laid out
and what its float operation is; the families (binary, ternary residual, DFP-16, integer, float16)
combine with it. Each also names its plain Keras twin (`float_layer`) and the weights the twin
takes (`float_weights`), which is what `keras_hessian.export` converts.

Per-channel scales and ternary blocks follow each shape's output channels through the
quantizers' view of the kernel (`_to_matrix`: reduction rows, one column per output channel):

- depthwise `(kh, kw, C, M)` -> `(kh * kw, C * M)`: one column per output channel `c * M + m`
  (the order Keras and TFLite give the output channels), reduced over the kernel window;
- einsum: the kernel axes that appear in the output are the columns (e.g. heads x head size of
  an attention projection), the others the rows (the contracted axes);
- embedding `(V, D)` -> `(D, V)`: one column per token, so each row of the table has its own
  scale (a lookup has no reduction; a row is what one token costs).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from keras_hessian import _compat
from keras_hessian._validation import check_bool, check_int
from keras_hessian.layers._base import QuantizedConv, QuantizedLayer, conv_output_shape

__all__ = ["QuantizedDepthwiseConv2D", "QuantizedEinsumDense", "QuantizedEmbedding", "kernel_matrix_shape"]


class QuantizedDepthwiseConv2D(QuantizedConv):
    """Depthwise 2D convolution-shaped quantized layer: each input channel has `depth_multiplier` filters.

    Args:
        kernel_size: int or pair.
        strides, padding, data_format, dilation_rate: as in `keras.layers.DepthwiseConv2D`.
        depth_multiplier: output channels per input channel.
        **kwargs: see `QuantizedLayer`.
    """

    rank = 2
    FLOAT_KEYS = ("kernel_size", "strides", "padding", "data_format", "dilation_rate", "depth_multiplier")
    RENAMED_FLOAT_KEYS = {  # noqa: RUF012 - read only
        "depthwise_initializer": "kernel_initializer",
        "depthwise_regularizer": "kernel_regularizer",
        "depthwise_constraint": "kernel_constraint",
    }

    def __init__(self, kernel_size: Any, depth_multiplier: int = 1, **kwargs):
        kwargs.pop("filters", None)  # not an argument: the output channels follow the input's
        super().__init__(1, kernel_size, **kwargs)
        self.depth_multiplier = check_int("depth_multiplier", depth_multiplier, 1)
        self.filters = None  # input channels x depth_multiplier, known once built

    def _kernel_shape(self, input_shape: tuple) -> tuple:
        channels = input_shape[self._channel_axis()]
        if channels is None:
            raise ValueError(
                f"{type(self).__name__} needs a known channel dimension. Received input_shape={input_shape}."
            )
        self.filters = int(channels) * self.depth_multiplier
        return self.kernel_size + (int(channels), self.depth_multiplier)

    def _to_matrix(self, kernel: tf.Tensor) -> tf.Tensor:
        return tf.reshape(kernel, (-1, self.filters))

    def _from_matrix(self, matrix: tf.Tensor) -> tf.Tensor:
        return tf.reshape(matrix, self.kernel.shape)

    def _matrix_shape(self) -> tuple:
        return (math.prod(self.kernel_size), self.filters)

    def _linear(self, x: Any, kernel: Any) -> Any:
        return ops.depthwise_conv(
            x,
            kernel,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        channels = input_shape[-1 if self.data_format == "channels_last" else 1]
        return conv_output_shape(self, input_shape, None if channels is None else channels * self.depth_multiplier)

    def float_layer(self, name: str) -> keras.layers.Layer:
        """The plain `DepthwiseConv2D` (float32) that computes what this layer computes in inference."""
        return keras.layers.DepthwiseConv2D(
            self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            depth_multiplier=self.depth_multiplier,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
            activation=self.activation,
            use_bias=self.use_bias,
            name=name,
            dtype="float32",
        )

    def get_config(self) -> dict:
        config = super().get_config()
        del config["filters"]
        return {**config, "depth_multiplier": self.depth_multiplier}


def einsum_axes(equation: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """`(reduction_axes, output_axes)` of the kernel of `EinsumDense(equation)`.

    A kernel axis whose letter appears in the output indexes output features; the others are
    contracted with the input.
    """
    match = re.fullmatch(r"([a-zA-Z.]+),([a-zA-Z]+)->([a-zA-Z.]+)", equation.replace(" ", ""))
    if match is None:
        raise ValueError(
            f"equation must read 'input,kernel->output' (Keras' EinsumDense form). Received equation={equation!r}."
        )
    _, kernel, output = match.groups()
    reduction = tuple(i for i, letter in enumerate(kernel) if letter not in output)
    outputs = tuple(i for i, letter in enumerate(kernel) if letter in output)
    return reduction, outputs


class QuantizedEinsumDense(QuantizedLayer):
    """EinsumDense-shaped quantized layer: `activation(einsum(equation, input_q, kernel_q) + bias)`.

    Args:
        equation: as in `keras.layers.EinsumDense`, e.g. `"abc,cde->abde"`.
        output_shape: the output shape without the batch axis (None where inferred).
        bias_axes: output letters that get a bias (None: no bias).
        **kwargs: see `QuantizedLayer` (activation, initializers, ...; `use_bias` follows `bias_axes`).
    """

    FLOAT_KEYS = ("equation", "output_shape", "bias_axes")

    def __init__(self, equation: str, output_shape: Any, bias_axes: str | None = None, **kwargs):
        if not isinstance(equation, str):
            raise TypeError(f"equation must be a str. Received equation={equation!r}.")
        if bias_axes is not None and not isinstance(bias_axes, str):
            raise TypeError(f"bias_axes must be a str or None. Received bias_axes={bias_axes!r}.")
        kwargs.pop("use_bias", None)  # what bias_axes says
        super().__init__(use_bias=bias_axes is not None, **kwargs)
        self.reduction_axes, self.output_axes = einsum_axes(equation)
        self.equation = equation
        self.bias_axes = bias_axes
        if isinstance(output_shape, (list, tuple)):
            self.partial_output_shape = tuple(output_shape)
        else:
            self.partial_output_shape = (output_shape,)

    def _shapes(self, input_shape: tuple) -> tuple:
        return _compat.einsum_dense_shapes(self.equation, self.bias_axes, tuple(input_shape), self.partial_output_shape)

    def build(self, input_shape: tuple) -> None:
        kernel_shape, bias_shape, _ = self._shapes(input_shape)
        self.kernel = self.add_weight(
            name="kernel",
            shape=kernel_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            autocast=False,
        )
        self.bias = None
        if bias_shape is not None:
            self.bias = self.add_weight(
                name="bias",
                shape=bias_shape,
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def _matrix_shape(self) -> tuple:
        shape = tuple(self.kernel.shape)
        rows = math.prod(shape[i] for i in self.reduction_axes)
        return (rows, math.prod(shape[i] for i in self.output_axes))

    def _to_matrix(self, kernel: tf.Tensor) -> tf.Tensor:
        return tf.reshape(tf.transpose(kernel, self.reduction_axes + self.output_axes), self._matrix_shape())

    def _from_matrix(self, matrix: tf.Tensor) -> tf.Tensor:
        order = self.reduction_axes + self.output_axes
        shape = tuple(self.kernel.shape)
        permuted = tf.reshape(matrix, [shape[i] for i in order])
        inverse = sorted(range(len(order)), key=order.__getitem__)
        return tf.transpose(permuted, inverse)

    def _linear(self, x: Any, kernel: Any) -> Any:
        return ops.einsum(self.equation, x, kernel)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return self._shapes(input_shape)[2]

    def float_layer(self, name: str) -> keras.layers.Layer:
        """The plain `EinsumDense` (float32) that computes what this layer computes in inference."""
        return keras.layers.EinsumDense(
            self.equation,
            self.partial_output_shape,
            bias_axes=self.bias_axes,
            activation=self.activation,
            name=name,
            dtype="float32",
        )

    def get_config(self) -> dict:
        config = super().get_config()
        del config["use_bias"]
        return {
            **config,
            "equation": self.equation,
            "output_shape": self.partial_output_shape,
            "bias_axes": self.bias_axes,
        }


class QuantizedEmbedding(QuantizedLayer):
    """Embedding-shaped quantized layer: looks token ids up in the quantized table, one scale per row.

    The table is `(input_dim, output_dim)`, as in `keras.layers.Embedding` (weight name
    `embeddings`, also reachable as `kernel`); token ids are never quantized, so there is no
    input quantizer, bias or activation.

    Args:
        input_dim: vocabulary size.
        output_dim: embedding size.
        embeddings_initializer, embeddings_regularizer, embeddings_constraint: as in Keras.
        mask_zero: token 0 is padding (the output carries a mask).
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).
    """

    FLOAT_KEYS = (
        "input_dim",
        "output_dim",
        "embeddings_initializer",
        "embeddings_regularizer",
        "embeddings_constraint",
        "mask_zero",
    )
    FLOAT_KERNEL = "embeddings"
    _NOT_EMBEDDING_KEYS = (
        "activation",
        "use_bias",
        "kernel_initializer",
        "bias_initializer",
        "kernel_regularizer",
        "bias_regularizer",
        "kernel_constraint",
        "bias_constraint",
    )

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        embeddings_initializer: Any = "uniform",
        embeddings_regularizer: Any = None,
        embeddings_constraint: Any = None,
        mask_zero: bool = False,
        **kwargs,
    ):
        for key in self._NOT_EMBEDDING_KEYS:
            if key in kwargs:
                raise TypeError(f"{type(self).__name__} takes no {key} (an embedding lookup). Received {key}={kwargs[key]!r}.")
        super().__init__(
            kernel_initializer=embeddings_initializer,
            kernel_regularizer=embeddings_regularizer,
            kernel_constraint=embeddings_constraint,
            use_bias=False,
            **kwargs,
        )
        self.input_dim = check_int("input_dim", input_dim, 1)
        self.output_dim = check_int("output_dim", output_dim, 1)
        self.mask_zero = check_bool("mask_zero", mask_zero)
        self.supports_masking = self.mask_zero

    @property
    def input_quantizer(self) -> None:
        return None

    @input_quantizer.setter
    def input_quantizer(self, value: Any) -> None:
        if value is not None:
            raise ValueError(
                f"{type(self).__name__} looks up integer token ids, which are not quantized: "
                f"binary_activations / input_quantizer do not apply. Received input_quantizer={value!r}."
            )

    @property
    def embeddings(self) -> Any:
        """The latent float32 table (the same variable as `kernel`)."""
        return self.kernel

    def build(self, input_shape: tuple | None = None) -> None:
        self.kernel = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            autocast=False,
        )
        self.bias = None

    def _to_matrix(self, kernel: tf.Tensor) -> tf.Tensor:
        return tf.transpose(kernel)

    def _from_matrix(self, matrix: tf.Tensor) -> tf.Tensor:
        return tf.transpose(matrix)

    def _matrix_shape(self) -> tuple:
        return (self.output_dim, self.input_dim)

    def _lookup_cost(self, cost: Any) -> Any:
        """The table's storage; a lookup multiplies nothing (a scaled row's products are not counted)."""
        none_or_zero = None if cost.multiplications is None else 0
        return dataclasses.replace(cost, multiplications=none_or_zero, replaced_multiplications=none_or_zero)

    def call(self, inputs: Any, training: Any = None) -> Any:
        if not keras.backend.is_int_dtype(keras.backend.standardize_dtype(inputs.dtype)):
            inputs = ops.cast(inputs, "int32")
        table = self._quantize_kernel(self._latent_kernel(), training=training)
        return ops.take(ops.cast(table, self.compute_dtype), inputs, axis=0)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return ops.not_equal(inputs, 0) if self.mask_zero else None

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape, self.output_dim)

    def float_layer(self, name: str) -> keras.layers.Layer:
        """The plain `Embedding` (float32) that looks up what this layer looks up in inference."""
        return keras.layers.Embedding(self.input_dim, self.output_dim, mask_zero=self.mask_zero, name=name, dtype="float32")

    def get_config(self) -> dict:
        config = super().get_config()
        for key in self._NOT_EMBEDDING_KEYS:
            config.pop(key, None)
        return {
            **config,
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": keras.initializers.serialize(self.kernel_initializer),
            "embeddings_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "embeddings_constraint": keras.constraints.serialize(self.kernel_constraint),
            "mask_zero": self.mask_zero,
        }


def kernel_matrix_shape(layer: keras.layers.Layer) -> tuple[int, int]:
    """`(reduction, output channels)` of a built layer's kernel as the quantizers see it.

    For float layers (Dense, Conv, DepthwiseConv2D, EinsumDense, Embedding) and quantized ones
    alike, e.g. for per-channel block sizes and multiply counts: a depthwise `(3, 3, C, M)` kernel
    is `(9, C * M)`, an Embedding `(V, D)` table `(D, V)`, an EinsumDense kernel its contracted
    axes by its output axes; any other kernel `(prod(shape[:-1]), shape[-1])`.
    """
    if isinstance(layer, QuantizedLayer):
        return tuple(int(d) for d in layer.kernel_matrix().shape)
    if isinstance(layer, keras.layers.Embedding):
        rows, width = (int(d) for d in layer.embeddings.shape)
        return (width, rows)
    shape = tuple(int(d) for d in layer.kernel.shape)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return (shape[0] * shape[1], shape[2] * shape[3])
    if isinstance(layer, keras.layers.EinsumDense):
        reduction, outputs = einsum_axes(layer.equation)
        return (math.prod(shape[i] for i in reduction), math.prod(shape[i] for i in outputs))
    return (math.prod(shape[:-1]), shape[-1])
