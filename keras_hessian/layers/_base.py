"""Shared plumbing of the quantized layers, and the Dense / Conv shapes (no quantization math here).

A quantized layer keeps a float32 latent kernel (`autocast=False`, so it stays float32 under
`mixed_bfloat16`), quantizes it with its `kernel_quantizer` in every forward pass
(straight-through gradients reach the latent weights: quantization-aware training), applies
its optional `input_quantizer` to the inputs, and runs the ordinary matmul / convolution in
the layer's compute dtype.

Export protocol (relied on by `keras_hessian.export`): for every layer here,

    layer(x, training=False)
        == activation(dense_or_conv(input_quantizer(x), quantized_kernel()) + bias)

up to float rounding, where `quantized_kernel()` is the float32 kernel exactly as the
inference forward pass applies it and `input_quantizer` is `None` or a quantizer object.
(Under a `mixed_bfloat16` policy the forward pass multiplies by that kernel cast to
bfloat16; DFP-16 layers compute in float32/float64 whatever the policy.)

Layout of a family: one mixin (`_Binary`, `_TernaryResidual`, `_DFP16`) takes the family's
keyword-only options, builds its quantizers and extends `build`/`get_config` once; the public
classes combine it with a shape, `QuantizedDense` or `QuantizedConv` here or the depthwise,
einsum and embedding shapes of `_shapes.py` (shape, `_linear`, their config keys, the
quantizers' `(reduction, output channels)` view of the kernel), and register themselves with
`@register_quantized_layer(scheme, keras.layers.X)`. `from_float_layer` and
`load_float_weights` turn a float Keras layer into one.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_hessian._backend import require_tensorflow_backend
from keras_hessian._validation import check_choice, check_int, is_integer
from keras_hessian.quantizers.base import BaseQuantizer, KernelCost

# Config keys every quantized layer takes over from the float layer it replaces.
COMMON_FLOAT_KEYS = (
    "name",
    "dtype",
    "trainable",
    "activation",
    "use_bias",
    "kernel_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "bias_constraint",
)


def _int_tuple(name: str, value: Any, rank: int) -> tuple[int, ...]:
    """An int or a sequence of `rank` ints, each >= 1, as a tuple (numpy integers accepted)."""
    if is_integer(value):
        values = (value,) * rank
    elif isinstance(value, (tuple, list)) and len(value) == rank:
        values = tuple(value)
    else:
        raise ValueError(
            f"{name} must be a positive integer or a tuple of {rank} positive integers. "
            f"Received {name}={value!r}."
        )
    return tuple(check_int(name, v, 1) for v in values)


def conv_output_shape(layer: Any, input_shape: tuple, channels: int | None) -> tuple:
    """Output shape of a convolution `layer` (kernel_size, strides, ... attributes) with `channels` outputs."""
    spatial_in = input_shape[1:-1] if layer.data_format == "channels_last" else input_shape[2:]
    spatial = []
    for size, k, s, d in zip(spatial_in, layer.kernel_size, layer.strides, layer.dilation_rate):
        if size is None:
            spatial.append(None)
        elif layer.padding == "same":
            spatial.append(-(-size // s))
        else:
            spatial.append((size - d * (k - 1) - 1) // s + 1)
    if layer.data_format == "channels_last":
        return (input_shape[0], *spatial, channels)
    return (input_shape[0], channels, *spatial)


class QuantizedLayer(keras.layers.Layer):
    """Base of the quantized layers: latent float32 kernel, quantizers, bias, activation.

    Subclasses set `kernel_quantizer` (and optionally `input_quantizer`) and define
    `_kernel_shape` and `_linear`. Not meant to be used directly. `from_float_layer` builds
    one from a float layer's config; `kernel_cost` and `precision_label` say what it costs
    deployed (read by `quantization_summary`).

    Args:
        activation: activation function or name.
        use_bias: whether to add a bias.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
        kernel_constraint, bias_constraint: as in `keras.layers.Dense`.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).
    """

    def __init__(
        self,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs,
    ):
        require_tensorflow_backend()
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.kernel_quantizer: BaseQuantizer | None = None
        self.input_quantizer: BaseQuantizer | None = None
        self.supports_masking = False

    # Config keys of the float layer this shape of layer replaces (besides COMMON_FLOAT_KEYS).
    FLOAT_KEYS: tuple[str, ...] = ()
    # Float config keys under another name here (`depthwise_initializer` -> `kernel_initializer`).
    RENAMED_FLOAT_KEYS: ClassVar[dict[str, str]] = {}
    # The float layer's attribute holding the weight that becomes the latent kernel.
    FLOAT_KERNEL = "kernel"
    # Options a family needs when it starts from trained float weights (post-training).
    POST_TRAINING_OPTIONS: ClassVar[dict[str, Any]] = {}

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The quantization options of this class: the keyword-only arguments of its family."""
        parameters = inspect.signature(cls.__init__).parameters.values()
        return tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)

    @classmethod
    def from_float_layer(cls, layer: keras.layers.Layer, **options: Any) -> QuantizedLayer:
        """A new, unbuilt layer of this class configured like the float `layer`, plus `options`.

        `POST_TRAINING_OPTIONS` apply unless `options` say otherwise. The float layer's weights
        are not copied (`quantize_model` does that after cloning).
        """
        config = layer.get_config()
        arguments = {key: config[key] for key in COMMON_FLOAT_KEYS + cls.FLOAT_KEYS if key in config}
        arguments.update({ours: config[key] for key, ours in cls.RENAMED_FLOAT_KEYS.items() if key in config})
        return cls(**arguments, **{**cls.POST_TRAINING_OPTIONS, **options})

    def load_float_weights(self, layer: keras.layers.Layer) -> None:
        """Set the latent kernel (and bias) of this built layer from the float `layer` it replaces."""
        self.kernel.assign(getattr(layer, self.FLOAT_KERNEL))
        if self.bias is not None:
            self.bias.assign(layer.bias)

    # ---------------------------------------------------------------- what it costs
    @property
    def precision_label(self) -> str:
        """Short name of the deployed precision, for summaries (e.g. `"binary w"`)."""
        return type(self.kernel_quantizer).__name__

    def kernel_cost(self, outputs: int | None) -> KernelCost:
        """Deployed memory and multiplications of the kernel, `outputs` values per example."""
        return self._lookup_cost(self.kernel_quantizer.kernel_cost(self._matrix_shape(), outputs))

    def _lookup_cost(self, cost: KernelCost) -> KernelCost:
        return cost  # the embedding shape: a lookup multiplies nothing

    # ---------------------------------------------------------------- subclass hooks
    def _kernel_shape(self, input_shape: tuple) -> tuple:
        raise NotImplementedError

    def _output_channels(self) -> int:
        raise NotImplementedError

    def _linear(self, x: Any, kernel: Any) -> Any:
        """The float matmul / convolution of the layer."""
        raise NotImplementedError

    # The quantizers' view of the kernel: output channels on the last axis, the reduction (the
    # dot-product direction) on the others. Dense and Conv kernels are laid out so already; the
    # depthwise, einsum and embedding shapes reshape or transpose theirs, so per-channel scales and
    # ternary blocks follow their output channels (`(in, multiplier)` pairs, output features, rows).
    def _to_matrix(self, kernel: tf.Tensor) -> tf.Tensor:
        return kernel

    def _from_matrix(self, matrix: tf.Tensor) -> tf.Tensor:
        return matrix

    def _matrix_shape(self) -> tuple:
        return tuple(self.kernel.shape)

    def _quantize_kernel(self, kernel: tf.Tensor, training: Any) -> tf.Tensor:
        return self._from_matrix(self.kernel_quantizer(self._to_matrix(kernel), training=training))

    # ---------------------------------------------------------------- Keras API
    def build(self, input_shape: tuple) -> None:
        self.kernel = self.add_weight(
            name="kernel",
            shape=self._kernel_shape(tuple(input_shape)),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            autocast=False,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self._output_channels(),),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None

    def _latent_kernel(self) -> tf.Tensor:
        return tf.cast(ops.convert_to_tensor(self.kernel), tf.float32)

    def quantized_kernel(self) -> tf.Tensor:
        """The float32 kernel exactly as the inference forward pass applies it now."""
        if not self.built:
            raise ValueError(f"Layer {self.name!r} is not built yet; call it on data first.")
        return tf.cast(self._quantize_kernel(self._latent_kernel(), training=False), tf.float32)

    def kernel_matrix(self) -> tf.Tensor:
        """`quantized_kernel()` in the quantizers' view: the reduction by the output channels.

        Identical to the kernel for Dense and Conv; what per-channel storage (one scale per output
        channel) sees of a depthwise, einsum or embedding kernel.
        """
        return self._to_matrix(self.quantized_kernel())

    def float_weights(self) -> list:
        """The weights of the plain float twin (`float_layer`, where defined): quantized kernel, bias."""
        weights = [np.asarray(self.quantized_kernel(), dtype=np.float32)]
        if self.bias is not None:
            weights.append(np.asarray(ops.convert_to_numpy(self.bias), dtype=np.float32))
        return weights

    def _finish(self, y: Any) -> Any:
        if self.bias is not None:
            y = self._add_bias(y)
        if self.activation is not None:
            y = self.activation(y)
        return y

    def _add_bias(self, y: Any) -> Any:
        return ops.add(y, ops.cast(self.bias, y.dtype))

    def call(self, inputs: Any, training: Any = None) -> Any:
        x = inputs
        if self.input_quantizer is not None:
            x = ops.cast(self.input_quantizer(x, training=training), inputs.dtype)
        kernel = self._quantize_kernel(self._latent_kernel(), training=training)
        y = self._linear(x, ops.cast(kernel, x.dtype))
        return self._finish(y)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            }
        )
        return config


class QuantizedDense(QuantizedLayer):
    """Dense-shaped quantized layer: `activation(input_q @ kernel_q + bias)`.

    Args:
        units: output size.
        **kwargs: see `QuantizedLayer`.
    """

    FLOAT_KEYS = ("units",)

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = check_int("units", units, 1)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def _kernel_shape(self, input_shape: tuple) -> tuple:
        if input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} needs a known last input dimension. "
                f"Received input_shape={input_shape}."
            )
        return (int(input_shape[-1]), self.units)

    def _output_channels(self) -> int:
        return self.units

    def _linear(self, x: Any, kernel: Any) -> Any:
        return ops.matmul(x, kernel)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


class QuantizedConv(QuantizedLayer):
    """Convolution-shaped quantized layer of rank `rank` (1 or 2), no groups.

    Args:
        filters: output channels.
        kernel_size: int or tuple of `rank` ints.
        strides: int or tuple.
        padding: `"valid"` or `"same"`.
        data_format: `"channels_last"` or `"channels_first"` (default: Keras' setting).
        dilation_rate: int or tuple.
        **kwargs: see `QuantizedLayer`.
    """

    rank = 2
    FLOAT_KEYS = ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate")

    def __init__(
        self,
        filters: int,
        kernel_size: Any,
        strides: Any = 1,
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate: Any = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_int("filters", filters, 1)
        self.kernel_size = _int_tuple("kernel_size", kernel_size, self.rank)
        self.strides = _int_tuple("strides", strides, self.rank)
        self.dilation_rate = _int_tuple("dilation_rate", dilation_rate, self.rank)
        self.padding = check_choice("padding", padding.lower() if isinstance(padding, str) else padding, ("valid", "same"))
        self.data_format = check_choice(
            "data_format", data_format or keras.config.image_data_format(), ("channels_last", "channels_first")
        )
        self.input_spec = keras.layers.InputSpec(ndim=self.rank + 2)

    def _channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    def _kernel_shape(self, input_shape: tuple) -> tuple:
        channels = input_shape[self._channel_axis()]
        if channels is None:
            raise ValueError(
                f"{type(self).__name__} needs a known channel dimension. "
                f"Received input_shape={input_shape}."
            )
        return self.kernel_size + (int(channels), self.filters)

    def _output_channels(self) -> int:
        return self.filters

    def _linear(self, x: Any, kernel: Any) -> Any:
        return ops.conv(
            x,
            kernel,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )

    def _add_bias(self, y: Any) -> Any:
        bias = ops.cast(self.bias, y.dtype)
        if self.data_format == "channels_first":
            bias = ops.reshape(bias, (1, self.filters) + (1,) * self.rank)
        return ops.add(y, bias)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return conv_output_shape(self, input_shape, self.filters)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
        }
