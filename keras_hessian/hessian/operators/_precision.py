"""The float32 view of a mixed-precision model that the operators differentiate.

Under `mixed_bfloat16` (or `mixed_float16`) Keras keeps the variables in float32 and casts them,
and the activations, to the 16-bit compute dtype inside each layer. A Hessian taken through
that computation carries bfloat16's rounding (8 significant bits, unit roundoff 2^-8) into every
product, and the second-order terms, differences of nearly equal first-order ones, lose most of
their digits: a Hessian-vector product computed in bfloat16 is off by about 1% on a small MLP
(tests/hessian/operators/test_mixed_precision.py), ten times the tolerance of the eigen-solvers.

So while the operator traces its functions, every layer under a mixed policy is switched to
`float32` (variables and computation): the products are those of the model's float32 twin at
the same float32 weights, i.e. the Hessian of the function the mixed model approximates. The
policies are put back when the call returns, also on error; nothing else of the model changes.
Layers under a full 16-bit policy (`"bfloat16"`: 16-bit variables) and quantized policies are
left as they are, and so are tf_keras models (their policies are not Keras 3's): their loss is
still differentiated in float32, from their own 16-bit computation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

from keras_hessian import _compat

HALF_DTYPES = ("bfloat16", "float16")
FLOAT32 = keras.DTypePolicy("float32")


def mixed_layers(model) -> list:
    """The model and its layers that compute in a 16-bit dtype over float32 variables."""
    if not isinstance(model, keras.layers.Layer):
        return []  # a tf_keras model: see the module docstring
    layers = [model, *_compat.flatten_layers(model)]
    return [
        layer
        for layer in layers
        if getattr(layer, "quantization_mode", None) is None
        and layer.compute_dtype in HALF_DTYPES
        and layer.variable_dtype == "float32"
    ]


@contextlib.contextmanager
def float32_view(layers: list) -> Iterator[None]:
    """Within the block, `layers` (from `mixed_layers`) compute in float32."""
    saved = []
    try:
        for layer in layers:
            saved.append((layer, _compat.swap_dtype_policy(layer, FLOAT32)))
        yield
    finally:
        for layer, policy in reversed(saved):
            _compat.swap_dtype_policy(layer, policy)
