"""The precisions HAWQ chooses among: a named, registrable set of candidates.

A candidate says how a layer's kernel is stored and computed: its bits per weight, the
`quantize_model` spec that applies it (hence its quantizer, forward rule and straight-through
gradient, and the Keras layer types it applies to, through the one registry of quantized
layers), and how `to_tflite` stores it. Its perturbation `||Q(W) - W||^2` and its bytes are
computed with the very quantizer object the quantized layer would carry, so the plan's
predictions and `quantization_summary` of the applied model agree.
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

_FLOAT_CASTS = {"float32": None, "bfloat16": tf.bfloat16, "float16": tf.float16}


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

    @property
    def options(self) -> dict:
        return {} if isinstance(self.spec, str) else {k: v for k, v in self.spec.items() if k != "scheme"}

    def _quantized(self, layer: keras.layers.Layer):
        """An unbuilt quantized twin of `layer` (it carries the kernel quantizer), or None for float casts."""
        cls = registry.quantized_layer_class(self.scheme, layer)
        return None if cls is None else cls.from_float_layer(layer, **self.options)

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

    def weight_bytes(self, layer: keras.layers.Layer, outputs: int | None = None) -> int:
        """Deployed bytes of the layer's kernel (with its scales) and bias at this precision."""
        kernel = layer.kernel
        bias = getattr(layer, "bias", None)
        bias_size = 0 if bias is None else int(np.prod(bias.shape))
        if self.scheme in _FLOAT_CASTS:
            bits_each = 32 if self.scheme == "float32" else 16
            return math.ceil(bits_each * (int(np.prod(kernel.shape)) + bias_size) / 8)
        cost = self._quantized(layer).kernel_quantizer.kernel_cost(kernel.shape, outputs)
        return math.ceil(cost.storage_bits / 8) + 4 * bias_size  # quantized layers keep a float32 bias


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
    register(Candidate("float16", "float16", 16, "float16", "float16 weights"))
    register(Candidate("dfp16", "dfp16", 16, "float16", "dynamic fixed point, 16 bits, shared exponent"))
    register(Candidate("int8", {"scheme": "integer", "bits": 8}, 8, "int8", "int8, symmetric per channel"))
    register(Candidate("int4", {"scheme": "integer", "bits": 4}, 4, "int4", "int4, symmetric per channel"))
    register(
        Candidate(
            "ternary_residual",
            {"scheme": "ternary_residual", "residuals": 1},
            4,
            "int2",
            "ternary + one residual term, blocks of 64",
        )
    )
    register(
        Candidate("ternary", {"scheme": "ternary_residual", "residuals": 0}, 2, "int2", "ternary, blocks of 64")
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
