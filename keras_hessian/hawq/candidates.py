"""The precisions HAWQ chooses among: a named, registrable set of candidates.

A candidate says how a layer's kernel is stored and computed: its bits per weight, the
`quantize_model` spec that applies it (hence its quantizer, forward rule and straight-through
gradient, and the Keras layer types it applies to, through the one registry of quantized
layers), and how `to_tflite` stores it. Its perturbation `||Q(W) - W||^2` is computed with the
very quantizer object the quantized layer would carry; its bytes are those of the layer's
tensors in the TFLite file `to_tflite(mode="auto")` writes, so a budget is a budget on the file
a device loads, not on a representation no runtime stores (LiteRT has no 1-bit tensor, runs
2-bit weights only in FullyConnected, and keeps a float32 scale and an int64 zero point per
output channel of an integer tensor).

Every kernel is seen as the quantizers see it (`keras_hessian.layers.kernel_matrix_shape`: the
reduction by the output channels), so a depthwise filter's scales are per (input channel,
multiplier), an Embedding's per row, an EinsumDense's per output feature. Composite layers
(MultiHeadAttention, SeparableConv2D, KerasHub's TransformerEncoder) are their parts: each
projection / the depthwise and pointwise kernels / the feed-forward Dense kernels, quantized by the
part classes their quantized twin builds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_hessian import _compat
from keras_hessian.hawq.sensitivity import kernel_of
from keras_hessian.layers import kernel_matrix_shape, registry
from keras_hessian.layers._shapes import einsum_axes

__all__ = ["CANDIDATES", "Candidate", "get_candidate", "kernel_parts", "kernel_size", "register_candidate"]

_FLOAT_CASTS = {"float32": None, "bfloat16": tf.bfloat16}
_STORAGE_BITS = {"float32": 32, "float16": 16, "int8": 8, "int4": 4, "int2": 2}
_PER_CHANNEL = "channel"  # block_size placeholder: one block per output channel (the whole reduction)


@dataclass(frozen=True)
class _Part:
    """One kernel of a layer: its variable, its matrix view and the float layer its quantizer is made for."""

    kernel: Any
    matrix_shape: tuple[int, int]
    source: keras.layers.Layer  # the layer (or MHA projection) whose own layout `kernel` has
    role: str  # "kernel", "projection", "depthwise" or "pointwise"
    bias: Any = None

    def matrix(self, kernel: Any) -> tf.Tensor:
        """`kernel` (this part's layout) as the quantizers' `(reduction, outputs)` matrix."""
        kernel = tf.cast(tf.convert_to_tensor(kernel), tf.float32)
        if isinstance(self.source, keras.layers.Embedding) and self.role == "kernel":
            return tf.transpose(kernel)
        if isinstance(self.source, keras.layers.EinsumDense):
            reduction, outputs = einsum_axes(self.source.equation)
            return tf.reshape(tf.transpose(kernel, reduction + outputs), self.matrix_shape)
        return tf.reshape(kernel, self.matrix_shape)


def kernel_parts(layer: keras.layers.Layer) -> list[_Part]:
    """The kernels of a built float layer that its quantized twin quantizes, each with its matrix view."""
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return [
            _Part(p.kernel, kernel_matrix_shape(p), p, "projection", getattr(p, "bias", None))
            for p in _compat.attention_projections(layer).values()
        ]
    encoder = _compat.encoder_kernel_layers(layer)
    if encoder is not None:  # KerasHub TransformerEncoder: its attention's projections, its feed-forward Dense
        return [
            _Part(p.kernel, kernel_matrix_shape(p), p, "dense" if isinstance(p, keras.layers.Dense) else "projection", p.bias)
            for p in encoder
        ]
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw, channels, multiplier = (int(d) for d in layer.depthwise_kernel.shape)
        inner = channels * multiplier
        return [
            _Part(layer.depthwise_kernel, (kh * kw, inner), layer, "depthwise"),
            _Part(layer.pointwise_kernel, (inner, layer.filters), layer, "pointwise", getattr(layer, "bias", None)),
        ]
    return [_Part(kernel_of(layer), kernel_matrix_shape(layer), layer, "kernel", getattr(layer, "bias", None))]


def kernel_size(layer: keras.layers.Layer) -> int:
    """The number of kernel weights a plan quantizes in `layer` (all parts of a composite layer)."""
    return sum(math.prod(part.matrix_shape) for part in kernel_parts(layer))


@dataclass(frozen=True)
class Candidate:
    """One precision a layer can get.

    Attributes:
        name: the candidate's name in plans (`"int4"`).
        spec: the `quantize_model` spec (`"binary"`, `{"scheme": "integer", "bits": 4}`).
        bits: nominal storage bits per kernel weight (scales and exponents are counted by
            `weight_bytes`).
        storage: the kernel's TFLite storage (`"float32"`, `"float16"`, `"int8"`, `"int4"`,
            `"int2"`).
        description: one line for tables.
    """

    name: str
    spec: Any
    bits: float
    storage: str
    description: str = ""

    @property
    def scheme(self) -> str:
        return self.spec if isinstance(self.spec, str) else self.spec["scheme"]

    def spec_for(self, layer: keras.layers.Layer) -> Any:
        """The `quantize_model` spec for `layer` (`block_size="channel"` resolved to its reduction size)."""
        if isinstance(self.spec, str) or self.spec.get("block_size") != _PER_CHANNEL:
            return self.spec
        parts = kernel_parts(layer)
        if len(parts) != 1:  # one block size for parts of different reductions: no per-channel grid
            raise ValueError(
                f"precision {self.name!r} (one block per output channel) has no single block size for "
                f"{type(layer).__name__} {layer.name!r}, whose kernels reduce over {[p.matrix_shape[0] for p in parts]}."
            )
        return {**self.spec, "block_size": parts[0].matrix_shape[0]}

    def _quantizers(self, layer: keras.layers.Layer) -> list:
        """The kernel quantizer of each part of `layer`'s quantized twin (the objects its layers would carry)."""
        cls = registry.quantized_layer_class(self.scheme, layer)
        spec = self.spec_for(layer)
        options = {} if isinstance(spec, str) else {k: v for k, v in spec.items() if k != "scheme"}
        twin = cls.from_float_layer(layer, **options)
        if not hasattr(twin, "quantizer_options"):
            return [twin.kernel_quantizer]
        found = []
        for part in kernel_parts(layer):  # the part classes the composite twin builds in its `build`
            if part.role == "projection":  # of MultiHeadAttention, or of a KerasHub encoder's attention
                projection = cls.PROJECTION if hasattr(cls, "PROJECTION") else cls.ATTENTION.PROJECTION
                options = {k: v for k, v in twin.quantizer_options.items() if k in projection.option_names()}
                found.append(projection.from_float_layer(part.source, **options).kernel_quantizer)
            elif part.role == "dense":
                found.append(cls.DENSE.from_float_layer(part.source, **twin.quantizer_options).kernel_quantizer)
            elif part.role == "depthwise":
                found.append(cls.DEPTHWISE(1, **twin.quantizer_options).kernel_quantizer)
            else:
                found.append(cls.POINTWISE(1, 1, **twin.quantizer_options).kernel_quantizer)
        return found

    def applies_to(self, layer: keras.layers.Layer) -> bool:
        """Whether this precision exists for `layer`'s type."""
        if self.scheme in _FLOAT_CASTS:
            return type(layer) in registry.quantizable_types()
        if getattr(layer, "groups", 1) != 1:  # quantized convolutions support groups=1 only
            return False
        per_channel = not isinstance(self.spec, str) and self.spec.get("block_size") == _PER_CHANNEL
        if per_channel and len(kernel_parts(layer)) != 1:
            return False
        return registry.quantized_layer_class(self.scheme, layer) is not None

    def _quantize_parts(self, layer: keras.layers.Layer, kernels: list) -> list[tf.Tensor]:
        """`Q(W)` of each part, in the quantizers' matrix view."""
        parts = kernel_parts(layer)
        matrices = [part.matrix(kernel) for part, kernel in zip(parts, kernels)]
        if self.scheme in _FLOAT_CASTS:
            dtype = _FLOAT_CASTS[self.scheme]
            return matrices if dtype is None else [tf.cast(tf.cast(m, dtype), tf.float32) for m in matrices]
        quantizers = self._quantizers(layer)
        return [tf.cast(q(m, training=False), tf.float32) for q, m in zip(quantizers, matrices)]

    def quantize(self, layer: keras.layers.Layer, kernel: Any) -> tf.Tensor:
        """`Q(W)`: the kernel as the inference forward pass at this precision would apply it.

        For a one-kernel layer, in the kernel's own layout; a composite layer's parts are
        returned concatenated, flattened, in `kernel_parts` order (`kernel` is then ignored).
        """
        parts = kernel_parts(layer)
        if len(parts) == 1:
            quantized = self._quantize_parts(layer, [kernel])[0]
            if isinstance(layer, keras.layers.Embedding):
                return tf.transpose(quantized)
            if isinstance(layer, keras.layers.EinsumDense):
                reduction, outputs = einsum_axes(layer.equation)
                order = reduction + outputs
                shape = tuple(int(d) for d in parts[0].kernel.shape)
                permuted = tf.reshape(quantized, [shape[i] for i in order])
                return tf.transpose(permuted, sorted(range(len(order)), key=order.__getitem__))
            return tf.reshape(quantized, tf.shape(tf.convert_to_tensor(kernel)))
        quantized = self._quantize_parts(layer, [p.kernel for p in parts])
        return tf.concat([tf.reshape(q, (-1,)) for q in quantized], axis=0)

    def perturbation(self, layer: keras.layers.Layer, kernel: Any = None) -> float:
        """`||Q(W) - W||^2` (squared Frobenius norm, in float64), summed over a composite layer's parts.

        `kernel` (default: the layer's own) replaces the kernel of a one-kernel layer.
        """
        parts = kernel_parts(layer)
        kernels = [p.kernel for p in parts] if kernel is None or len(parts) != 1 else [kernel]
        total = 0.0
        for part, w, q in zip(parts, kernels, self._quantize_parts(layer, kernels)):
            reference = np.asarray(part.matrix(w), dtype=np.float64)
            total += float(np.sum((np.asarray(q, dtype=np.float64) - reference) ** 2))
        return total

    def storage_bits(self, layer: keras.layers.Layer) -> int:
        """Bits per kernel weight in the TFLite file: 2-bit tensors only for Dense (FullyConnected)."""
        bits = _STORAGE_BITS[self.storage]
        return 4 if bits == 2 and not isinstance(layer, keras.layers.Dense) else bits

    def weight_bytes(self, layer: keras.layers.Layer) -> int:
        """Bytes of the layer's kernels (each with its per-channel scale and zero point) and biases in the file.

        Output channels are the quantizers' (`kernel_matrix_shape`): `C * M` for a depthwise
        filter, one per row of an Embedding table, the output features of an EinsumDense.
        """
        bits = self.storage_bits(layer)
        total = 0
        for part in kernel_parts(layer):
            rows, channels = part.matrix_shape
            per_channel = 12 * channels if self.storage.startswith("int") else 0  # float32 scale + int64 zero point
            bias_bytes = 0 if part.bias is None else 4 * int(np.prod(part.bias.shape))  # biases stay float32
            total += math.ceil(bits * rows * channels / 8) + per_channel + bias_bytes
        return total


CANDIDATES: dict[str, Candidate] = {}


def register_candidate(candidate: Candidate) -> Candidate:
    """Add a precision to the set `assign_precision` can choose from (by `candidate.name`)."""
    if not isinstance(candidate, Candidate):
        raise TypeError(f"candidate must be a Candidate. Received candidate={candidate!r}.")
    existing = CANDIDATES.get(candidate.name)
    if existing is not None and existing != candidate:
        raise ValueError(f"A different candidate is already registered as {candidate.name!r}: {existing}.")
    CANDIDATES[candidate.name] = candidate
    return candidate


def get_candidate(identifier: str | Candidate) -> Candidate:
    """A registered candidate by name (or the candidate itself)."""
    if isinstance(identifier, Candidate):
        return identifier
    if isinstance(identifier, str) and identifier in CANDIDATES:
        return CANDIDATES[identifier]
    raise ValueError(f"precision must be one of {sorted(CANDIDATES)} or a Candidate. Received {identifier!r}.")


def _defaults(register: Callable[[Candidate], Candidate]) -> None:
    register(Candidate("float32", "float32", 32, "float32", "float32, unchanged"))
    register(Candidate("bfloat16", "bfloat16", 16, "float16", "bfloat16 weights and compute"))
    register(Candidate("float16", "float16", 16, "float16", "float16 weights (IEEE half)"))
    register(Candidate("dfp16", "dfp16", 16, "float16", "dynamic fixed point, 16 bits, shared exponent"))
    register(Candidate("int8", {"scheme": "integer", "bits": 8}, 8, "int8", "int8, symmetric per channel"))
    register(Candidate("int4", {"scheme": "integer", "bits": 4}, 4, "int4", "int4, symmetric per channel"))
    # Two ternary terms with block-wise scales lie on no per-channel grid: the file keeps the folded
    # kernel in int8 (export/storage.py), and that is what the plan must count.
    register(
        Candidate(
            "ternary_residual",
            {"scheme": "ternary_residual", "residuals": 1},
            4,
            "int8",
            "ternary + one residual term, blocks of 64 (stored folded in int8)",
        )
    )
    register(
        Candidate(
            "ternary",
            {"scheme": "ternary_residual", "residuals": 0, "block_size": _PER_CHANNEL},
            2,
            "int2",
            "ternary, one scale per output channel (int2 in Dense, int4 in Conv)",
        )
    )
    register(Candidate("binary", "binary", 1, "int2", "sign times a per-channel scale"))


_defaults(register_candidate)


def resolve(candidates: Any) -> list[Candidate]:
    """A list of candidates from names / Candidate objects / a comma-separated string."""
    if isinstance(candidates, str):
        candidates = [c.strip() for c in candidates.split(",") if c.strip()]
    if isinstance(candidates, Mapping) or not hasattr(candidates, "__iter__"):
        raise TypeError(f"candidates must be a list of precision names. Received candidates={candidates!r}.")
    chosen = [get_candidate(c) for c in candidates]
    if not chosen:
        raise ValueError("candidates must name at least one precision. Received an empty list.")
    names = [c.name for c in chosen]
    if len(set(names)) != len(names):
        raise ValueError(f"candidates must not repeat a precision. Received {names}.")
    return chosen
