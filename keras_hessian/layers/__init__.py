"""Quantized layers (binary, ternary-residual, DFP-16, integer, float16), their quantizers, bfloat16 helpers.

Shapes: Dense, Conv2D, Conv1D, DepthwiseConv2D, EinsumDense, Embedding (not DFP-16) and
MultiHeadAttention and SeparableConv2D (weight-only schemes: not DFP-16), and KerasHub's
TransformerEncoder where `keras-hub` is installed (`hub_encoder.py`).

The quantizers live in `keras_hessian.quantizers`; their former path `keras_hessian.layers.quantizers`
is the same module (`from keras_hessian.layers import quantizers` and `import
keras_hessian.layers.quantizers` both work).
"""

import importlib.util
import sys

from keras_hessian import quantizers
from keras_hessian.layers import registry
from keras_hessian.layers._shapes import kernel_matrix_shape
from keras_hessian.layers.attention import (
    BinaryMultiHeadAttention,
    Float16MultiHeadAttention,
    IntegerMultiHeadAttention,
    TernaryResidualMultiHeadAttention,
)
from keras_hessian.layers.binary import (
    BinaryConv1D,
    BinaryConv2D,
    BinaryDense,
    BinaryDepthwiseConv2D,
    BinaryEinsumDense,
    BinaryEmbedding,
)
from keras_hessian.layers.dfp16 import DFP16Conv1D, DFP16Conv2D, DFP16Dense, DFP16DepthwiseConv2D, DFP16EinsumDense
from keras_hessian.layers.float16 import (
    Float16Conv1D,
    Float16Conv2D,
    Float16Dense,
    Float16DepthwiseConv2D,
    Float16EinsumDense,
    Float16Embedding,
)
from keras_hessian.layers.integer import (
    IntegerConv1D,
    IntegerConv2D,
    IntegerDense,
    IntegerDepthwiseConv2D,
    IntegerEinsumDense,
    IntegerEmbedding,
)
from keras_hessian.layers.precision import (
    bfloat16_layer_policy,
    keeps_float32,
    mixed_bfloat16_scope,
)
from keras_hessian.layers.separable import (
    BinarySeparableConv2D,
    Float16SeparableConv2D,
    IntegerSeparableConv2D,
    TernaryResidualSeparableConv2D,
)
from keras_hessian.layers.ternary_residual import (
    TernaryResidualConv1D,
    TernaryResidualConv2D,
    TernaryResidualDense,
    TernaryResidualDepthwiseConv2D,
    TernaryResidualEinsumDense,
    TernaryResidualEmbedding,
)
from keras_hessian.quantizers import DFP16, Binarize, Float16, Integer, Ternarize, TernaryResidual

sys.modules[f"{__name__}.quantizers"] = quantizers  # the former module path, without a shim file

# KerasHub's layers: registered when KerasHub is installed (a saved quantized BERT loads after
# `import keras_hessian`); about 0.5 s of import time, none without it. This can run while
# `import keras_hub` itself is half way (it imports keras, whose import hook imports this package):
# hub_encoder.py imports KerasHub's module, not its partly initialized `keras_hub.layers`.
_HUB_LAYERS: tuple[str, ...] = ()
if importlib.util.find_spec("keras_hub") is not None:
    try:
        from keras_hessian.layers.hub_encoder import BinaryTransformerEncoder as BinaryTransformerEncoder
        from keras_hessian.layers.hub_encoder import Float16TransformerEncoder as Float16TransformerEncoder
        from keras_hessian.layers.hub_encoder import IntegerTransformerEncoder as IntegerTransformerEncoder
        from keras_hessian.layers.hub_encoder import (
            TernaryResidualTransformerEncoder as TernaryResidualTransformerEncoder,
        )

        _HUB_LAYERS = (
            "BinaryTransformerEncoder",
            "Float16TransformerEncoder",
            "IntegerTransformerEncoder",
            "TernaryResidualTransformerEncoder",
        )
    except ImportError as error:  # a KerasHub release that moved its encoder: the rest still works
        import warnings

        warnings.warn(
            f"keras_hessian: KerasHub is installed but its TransformerEncoder could not be imported ({error}); "
            "quantize_model copies KerasHub encoder blocks in float32.",
            stacklevel=2,
        )

# Read from the one registry: a new quantized layer class registers itself and appears here.
QUANTIZED_LAYERS = registry.quantized_layer_classes()

__all__ = [
    "DFP16",
    "QUANTIZED_LAYERS",
    "Binarize",
    "BinaryConv1D",
    "BinaryConv2D",
    "BinaryDense",
    "BinaryDepthwiseConv2D",
    "BinaryEinsumDense",
    "BinaryEmbedding",
    "BinaryMultiHeadAttention",
    "BinarySeparableConv2D",
    "DFP16Conv1D",
    "DFP16Conv2D",
    "DFP16Dense",
    "DFP16DepthwiseConv2D",
    "DFP16EinsumDense",
    "Float16",
    "Float16Conv1D",
    "Float16Conv2D",
    "Float16Dense",
    "Float16DepthwiseConv2D",
    "Float16EinsumDense",
    "Float16Embedding",
    "Float16MultiHeadAttention",
    "Float16SeparableConv2D",
    "Integer",
    "IntegerConv1D",
    "IntegerConv2D",
    "IntegerDense",
    "IntegerDepthwiseConv2D",
    "IntegerEinsumDense",
    "IntegerEmbedding",
    "IntegerMultiHeadAttention",
    "IntegerSeparableConv2D",
    "Ternarize",
    "TernaryResidual",
    "TernaryResidualConv1D",
    "TernaryResidualConv2D",
    "TernaryResidualDense",
    "TernaryResidualDepthwiseConv2D",
    "TernaryResidualEinsumDense",
    "TernaryResidualEmbedding",
    "TernaryResidualMultiHeadAttention",
    "TernaryResidualSeparableConv2D",
    "bfloat16_layer_policy",
    "keeps_float32",
    "kernel_matrix_shape",
    "mixed_bfloat16_scope",
    "quantizers",
    "registry",
]
__all__ += list(_HUB_LAYERS)
