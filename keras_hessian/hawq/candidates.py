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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_hessian.layers import registry

__all__ = ["CANDIDATES", "Candidate", "get_candidate", "register_candidate"]

_FLOAT_CASTS = {"float32": None, "bfloat16": tf.bfloat16}
_STORAGE_BITS = {"float32": 32, "float16": 16, "int8": 8, "int4": 4, "int2": 2}
_PER_CHANNEL = "channel"  # block_size placeholder: one block per output channel (the whole reduction)


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
        kernel = layer.kernel.shape
        return {**self.spec, "block_size": int(np.prod(kernel)) // int(kernel[-1])}

    def _quantized(self, layer: keras.layers.Layer):
        """An unbuilt quantized twin of `layer` (it carries the kernel quantizer), or None for float casts."""
        cls = registry.quantized_layer_class(self.scheme, layer)
        spec = self.spec_for(layer)
        options = {} if isinstance(spec, str) else {k: v for k, v in spec.items() if k != "scheme"}
        return None if cls is None else cls.from_float_layer(layer, **options)

    def applies_to(self, layer: keras.layers.Layer) -> bool:
        """Whether this precision exists for `layer`'s type."""
        if self.scheme in _FLOAT_CASTS:
            return type(layer) in registry.quantizable_types()
        return registry.quantized_layer_class(self.scheme, layer) is not None

    def quantize(self, layer: keras.layers.Layer, kernel: Any) -> tf.Tensor:
        """`Q(W)`: the kernel as the inference forward pass at this precision would apply it."""
        kernel = tf.cast(tf.convert_to_tensor(kernel), tf.float32)
        if self.scheme in _FLOAT_CASTS:
            dtype = _FLOAT_CASTS[self.scheme]
            return kernel if dtype is None else tf.cast(tf.cast(kernel, dtype), tf.float32)
        return tf.cast(self._quantized(layer).kernel_quantizer(kernel, training=False), tf.float32)

    def perturbation(self, layer: keras.layers.Layer, kernel: Any) -> float:
        """`||Q(W) - W||^2` (squared Frobenius norm, in float64)."""
        w = np.asarray(kernel, dtype=np.float64)
        return float(np.sum((np.asarray(self.quantize(layer, kernel), dtype=np.float64) - w) ** 2))

    def storage_bits(self, layer: keras.layers.Layer) -> int:
        """Bits per kernel weight in the TFLite file: 2-bit tensors only for Dense (FullyConnected)."""
        bits = _STORAGE_BITS[self.storage]
        return 4 if bits == 2 and not isinstance(layer, keras.layers.Dense) else bits

    def weight_bytes(self, layer: keras.layers.Layer) -> int:
        """Bytes of the layer's kernel (with its per-channel scale and zero point) and bias in the file."""
        shape = layer.kernel.shape
        weights, channels = int(np.prod(shape)), int(shape[-1])
        bias = getattr(layer, "bias", None)
        bias_bytes = 0 if bias is None else 4 * int(np.prod(bias.shape))  # biases stay float32
        bits = self.storage_bits(layer)
        per_channel = 12 * channels if self.storage.startswith("int") else 0  # float32 scale + int64 zero point
        return math.ceil(bits * weights / 8) + per_channel + bias_bytes


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
