"""What every quantizer shares: float32 casting, the pseudo-gradient helper, the base class, `get`.

The base class is `BaseQuantizer` (larq's name), deliberately NOT `Quantizer` and not a subclass
of `keras.quantizers.Quantizer`: Keras' class is the int8/int4/float8 machinery of
`model.quantize()` (it returns `(values, scale)` pairs and has an `output_dtype`), whereas ours
are straight-through functions `x -> quantized x` carrying their storage bits. Subclassing it
would promise an interface we do not follow; sharing its name would make
`from keras.quantizers import *` and ours shadow each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "BaseQuantizer",
    "KernelCost",
    "as_float32",
    "get",
    "kernel_layout",
    "quantize_gradient",
    "register_quantizer",
    "with_pseudo_gradient",
]

# name -> class, for `get("dfp16")`; filled by `register_quantizer`.
_BY_NAME: dict[str, type] = {}


def as_float32(x: Any) -> tf.Tensor:
    """`x` as a float32 tensor; a TypeError for integer or bool tensors."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(f"Quantizers need a float tensor. Received a tensor of dtype {x.dtype.name}.")
    return tf.cast(x, tf.float32)


def with_pseudo_gradient(x: tf.Tensor, forward: Callable, backward: Callable) -> tf.Tensor:
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


def quantize_gradient(x: Any, quantizer: Callable) -> tf.Tensor:
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
    return with_pseudo_gradient(
        x, tf.identity, lambda v, g: tf.cast(quantizer(tf.cast(g, tf.float32)), g.dtype)
    )


def kernel_layout(shape: Any) -> tuple[int, int, int]:
    """`(weights, outputs, reduction)` of a kernel whose last axis indexes outputs."""
    shape = tuple(int(d) for d in shape)
    weights = int(np.prod(shape))
    outputs = shape[-1] if shape else 1
    return weights, outputs, weights // max(outputs, 1)


@dataclasses.dataclass(frozen=True)
class KernelCost:
    """What a quantized kernel costs when deployed, per example.

    Attributes:
        bits_per_weight: storage bits of one kernel weight.
        storage_bits: bits of the whole kernel, scales and shared exponents included.
        multiplications: real multiplications left per example (None: output size unknown).
        replaced_multiplications: multiply-accumulates turned into sign flips and adds.
    """

    bits_per_weight: float
    storage_bits: int
    multiplications: int | None
    replaced_multiplications: int | None


class BaseQuantizer:
    """Base of the serializable quantizer objects: a callable with `precision` in bits.

    `precision` is the storage bits per element; `kernel_cost` turns it into the memory and
    multiplications `quantization_summary` reports for a kernel quantized by this object.
    """

    precision: int = 32

    def __call__(self, x: Any, training: bool | None = None) -> tf.Tensor:
        raise NotImplementedError

    def kernel_cost(self, kernel_shape: Any, outputs: int | None) -> KernelCost:
        """Cost of a kernel of `kernel_shape` (last axis = outputs) producing `outputs` values per example.

        Default: `precision` bits per weight, every multiply-accumulate kept (fixed-point rules).
        """
        weights, _, reduction = kernel_layout(kernel_shape)
        macs = None if outputs is None else outputs * reduction
        return KernelCost(float(self.precision), self.precision * weights, macs, None if macs is None else 0)

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> BaseQuantizer:
        return cls(**config)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


def register_quantizer(name: str) -> Callable[[type], type]:
    """Class decorator: Keras-serializable as `keras_hessian>Class`, and `get(name)` builds it."""

    def register(cls: type) -> type:
        if name in _BY_NAME and _BY_NAME[name] is not cls:
            raise ValueError(f"A quantizer is already registered as {name!r}: {_BY_NAME[name].__name__}.")
        _BY_NAME[name] = cls
        return keras.saving.register_keras_serializable(package="keras_hessian")(cls)

    return register


def get(identifier: Any) -> BaseQuantizer | None:
    """Resolve a quantizer from `None`, a name, a serialized dict or an instance.

    Example:
        >>> get("dfp16")
        DFP16(precision=16, rounding='nearest')

    Args:
        identifier: `None`, one of `"binarize"`, `"ternarize"`, `"ternary_residual"`,
            `"dfp16"`, a dict from `keras.saving.serialize_keras_object`, or a quantizer.
    """
    if identifier is None or isinstance(identifier, BaseQuantizer):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(
                f"quantizer must be one of {sorted(_BY_NAME)} or a quantizer object. "
                f"Received quantizer={identifier!r}."
            )
        return _BY_NAME[identifier]()
    if isinstance(identifier, dict):
        quantizer = keras.saving.deserialize_keras_object(identifier)
        if isinstance(quantizer, BaseQuantizer):
            return quantizer
    raise TypeError(
        "quantizer must be None, a name, a serialized quantizer or a quantizer object. "
        f"Received quantizer={identifier!r}."
    )
