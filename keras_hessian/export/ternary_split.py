"""A ternary-residual Dense split into one matmul per (term, block), for int2 storage.

Each term of a ternary-residual kernel on one block of input rows holds `{-alpha, 0, +alpha}` with
one alpha per output column: exactly an int2 tensor with a per-channel scale. Stored that way the
file takes ~2 bits per weight and no weight error, where one int8 copy of the folded kernel rounds
block-wise alphas to the channel's grid. Used only inside the inference copy of
`"dynamic_int8"` exports, and only where the split makes the file smaller.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_hessian.export.storage import DYNAMIC_RANGE_MIN_ELEMENTS
from keras_hessian.layers.registry import is_quantized_layer

__all__ = ["TernaryTermsDense", "ternary_pieces"]

# Bytes of ops and tensor records one piece adds to the file (measured).
_PIECE_BYTES = 600


class TernaryTermsDense(keras.layers.Layer):
    """A ternary-residual Dense as a sum of per-(term, block) matmuls; inference copy only.

    `y = activation(sum_{t <= k} sum_b x[..., block b] @ T_{t,b} + bias)`, where each
    `T_{t,b}` holds one ternary term on one block of input rows: its entries are
    `{-alpha, 0, +alpha}` with one alpha per output column, i.e. exactly an int2 tensor with
    a per-channel scale once the converter and `narrow_integer_weights` have stored it.
    """

    def __init__(self, pieces, bias, activation, **kwargs):
        super().__init__(**kwargs)
        self.pieces = pieces  # [(start, stop, kernel)] as numpy, captured as constants
        self.bias_values = bias
        self.activation = activation

    def call(self, inputs):
        outputs = None
        for start, stop, kernel in self.pieces:
            part = keras.ops.matmul(inputs[..., start:stop], keras.ops.convert_to_tensor(kernel))
            outputs = part if outputs is None else outputs + part
        if self.bias_values is not None:
            outputs = outputs + keras.ops.convert_to_tensor(self.bias_values)
        return outputs if self.activation is None else self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.pieces[0][2].shape[-1])


def ternary_pieces(layer: keras.layers.Layer):
    """(pieces, bias, activation) of a ternary-residual Dense, or None if splitting won't pay.

    Needs `ternary_terms()`, `active_residuals` and `kernel_quantizer.block_size` (the
    layers in keras_hessian.layers.ternary_residual have them), a 2-D kernel, and blocks large
    enough that the converter quantizes every piece (>= 1,024 weights each).
    """
    block_size = getattr(getattr(layer, "kernel_quantizer", None), "block_size", None)
    if not (
        is_quantized_layer(layer)
        and hasattr(layer, "units")
        and callable(getattr(layer, "ternary_terms", None))
        and isinstance(block_size, int)
    ):
        return None
    if getattr(layer, "grid_bits", None) is not None:
        return None  # on a shared grid the folded kernel is already an exact int4 tensor: nothing to gain
    active = int(layer.active_residuals)
    terms = [np.asarray(t, dtype=np.float32) for t in layer.ternary_terms()][: active + 1]
    folded = np.asarray(layer.quantized_kernel(), dtype=np.float32)
    rows, units = folded.shape if folded.ndim == 2 else (0, 0)
    if folded.ndim != 2 or not np.allclose(sum(terms), folded, rtol=1e-6, atol=1e-7):
        return None  # not the decomposition we expect: use the folded kernel instead
    bounds = [(start, min(start + block_size, rows)) for start in range(0, rows, block_size)]
    if any((stop - start) * units < DYNAMIC_RANGE_MIN_ELEMENTS for start, stop in bounds):
        return None
    # Each piece costs its int2 weights, a float32 scale and an int64 zero point per output
    # channel, and about 600 bytes of ops and tensor records (measured). The split pays only
    # while that stays below one int8 copy of the folded kernel: with 64-row blocks, for
    # k = 0 (plain block-wise ternary) but not for k >= 1.
    piece_overhead = len(bounds) * (units * 12 + _PIECE_BYTES)
    pieces_bytes = len(terms) * (rows * units / 4 + piece_overhead)
    if pieces_bytes >= rows * units + units * 12:
        return None
    pieces = [(start, stop, term[start:stop]) for term in terms for start, stop in bounds]
    bias = np.asarray(layer.bias, dtype=np.float32) if layer.use_bias else None
    return pieces, bias, layer.activation
