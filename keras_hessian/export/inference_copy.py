"""The float32 inference copy that `to_tflite` converts: quantized layers folded, bfloat16 rebuilt.

Quantized layers (binary, ternary-residual, DFP-16, integer, float16) become plain `Dense` / `Conv`
layers whose kernel is the layer's `quantized_kernel()` folded into a constant, preceded by the
layer's input quantizer (ordinary TFLite ops); the depthwise, einsum, embedding and attention
shapes name their plain twin themselves (`float_layer()` and `float_weights()`: a
`DepthwiseConv2D`, `EinsumDense`, `Embedding` or `MultiHeadAttention` holding the quantized
kernels). Dense layers quantized by Keras' own
`model.quantize("int8" | "int4")` become float32 Dense layers holding their dequantized kernel
(`keras_quantized.py`). Layers under a bfloat16 policy are rebuilt in float32 (TFLite has no
bfloat16 kernels). Each folded kernel carries how an `"auto"` file stores it (`KernelStorage`).
The user's model is never changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np

from keras_hessian import _compat
from keras_hessian._backend import require_tensorflow_backend
from keras_hessian._compat import flatten_layers
from keras_hessian.export._checks import check_model
from keras_hessian.export.keras_quantized import float_dense_config, is_keras_quantized, keras_dense_kernel
from keras_hessian.export.planned_storage import KernelStorage
from keras_hessian.export.ternary_split import TernaryTermsDense, ternary_pieces
from keras_hessian.layers.registry import is_quantized_layer
from keras_hessian.quantizers import DFP16, Integer

__all__ = ["InferenceCopy", "build_inference_copy", "float32_weight", "inference_copy"]


def inference_copy(model: keras.Model) -> keras.Model:
    """Return the float32 inference copy of `model` that `to_tflite` converts.

    Quantized layers become plain `Dense` / `Conv` layers holding `quantized_kernel()` (and
    their input quantizer), bfloat16-policy layers are rebuilt in float32, all other layers
    are cloned with their weights. Use it to check, in Keras, what the TFLite file computes.

    Example:

    ```python
    reference = inference_copy(bf16_model)
    np.testing.assert_allclose(reference(x), litert_outputs, atol=1e-5)
    ```

    Args:
        model: a built Sequential or functional Keras model (a subclassed model is returned
            as is when it needs no rebuild).
    """
    require_tensorflow_backend()
    check_model(model)
    return build_inference_copy(model).model


@dataclasses.dataclass(frozen=True)
class InferenceCopy:
    """An inference copy with what the exporter needs to know about it.

    Attributes:
        model: the float32 Keras model that is converted.
        origin: its layer names -> the user's layers (to name a layer in conversion errors).
        quantized_kernels: the float32 kernels (Keras layout) of the folded quantized layers and
            of the ternary pieces: the weight tensors that sub-8-bit storage may narrow.
        kernel_storage: how an `"auto"` file stores each folded kernel (quantized layers, their
            ternary pieces, Keras-quantized Dense layers, and bfloat16 Dense / Conv kernels).
    """

    model: keras.Model
    origin: dict[str, keras.layers.Layer]
    quantized_kernels: list[np.ndarray]
    kernel_storage: tuple[KernelStorage, ...] = ()


def _is_float32(layer: keras.layers.Layer) -> bool:
    policy = layer.dtype_policy
    return policy.compute_dtype == "float32" and policy.variable_dtype == "float32"


def _is_graph_model(model: keras.Model) -> bool:
    return isinstance(model, keras.Sequential) or type(model).__name__ == "Functional" or _compat.is_graph_network(model)


class _InputQuantizer(keras.layers.Layer):
    """Applies a quantized layer's input quantizer; exists only inside an inference copy."""

    def __init__(self, quantizer: Callable, **kwargs):
        super().__init__(**kwargs)
        self.quantizer = quantizer

    def call(self, inputs):
        return self.quantizer(inputs, training=False)


def _plain_layer(layer: keras.layers.Layer, name: str) -> tuple[keras.layers.Layer, list]:
    """A plain Keras Dense/Conv layer holding `layer.quantized_kernel()`, and its weights."""
    if callable(getattr(layer, "float_layer", None)):
        return layer.float_layer(name), layer.float_weights()
    weights = layer.float_weights()  # the quantized kernel as the inference pass applies it, and the bias
    kernel = weights[0]
    common = {"activation": layer.activation, "use_bias": layer.use_bias, "dtype": "float32"}
    if hasattr(layer, "units"):
        return keras.layers.Dense(layer.units, name=name, **common), weights
    if hasattr(layer, "filters") and kernel.ndim in (3, 4):
        conv = keras.layers.Conv2D if kernel.ndim == 4 else keras.layers.Conv1D
        plain = conv(
            layer.filters,
            layer.kernel_size,
            strides=layer.strides,
            padding=layer.padding,
            data_format=layer.data_format,
            dilation_rate=layer.dilation_rate,
            name=name,
            **common,
        )
        return plain, weights
    raise ValueError(
        f"Layer {layer.name!r} ({type(layer).__name__}) follows the quantized-layer export "
        f"protocol but is neither dense (`units`) nor a 1D/2D convolution (`filters`, kernel "
        f"rank 3 or 4); received a kernel of shape {kernel.shape}."
    )


def _kept_input_quantizer(layer: keras.layers.Layer, static_activations: bool):
    quantizer = getattr(layer, "input_quantizer", None)
    if static_activations and isinstance(quantizer, DFP16):
        return None
    return quantizer


def _with_input_quantizer(
    layer: keras.layers.Layer, core: keras.layers.Layer, static_activations: bool
):
    """`core` alone, or preceded by `layer`'s input quantizer, under `layer`'s name."""
    quantizer = _kept_input_quantizer(layer, static_activations)
    if quantizer is None:
        return core
    return keras.Sequential(
        [_InputQuantizer(quantizer, name=f"{layer.name}_input_quantizer", dtype="float32"), core],
        name=layer.name,
    )




_FLOAT_KERNEL_TYPES = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.EinsumDense,
)
# Kernels wider than this are stored as float16 ("auto"): DFP-16, float16.
_INTEGER_STORAGE_BITS = 8


def _storage_of(layer: keras.layers.Layer, kernel: np.ndarray, name: str | None = None) -> KernelStorage:
    """How an "auto" file stores the folded kernel of the quantized `layer`."""
    quantizer = layer.kernel_quantizer
    name = layer.name if name is None else name
    if getattr(quantizer, "precision", 32) > _INTEGER_STORAGE_BITS:
        return KernelStorage(kernel, "float16", 16, name)
    bits = quantizer.bits if isinstance(quantizer, Integer) else None
    return KernelStorage(kernel, "exact", bits, name, getattr(quantizer, "grid_bits", None))


def _folded_kernels(layer: keras.layers.Layer, weights: list) -> list[KernelStorage]:
    """The storage records of a quantized layer's folded kernels (one per attention projection).

    Einsum and depthwise kernels are recorded as `kernel_matrix()` (reduction x output channels),
    the layout whose transpose, or reshape, is the converter's FullyConnected / depthwise filter.
    """
    parts = layer.projections() if callable(getattr(layer, "projections", None)) else [layer]
    records = []
    for part in parts:
        name = part.name if part is layer else f"{layer.name}/{part.name}"
        kernel = part.kernel_matrix() if callable(getattr(part, "kernel_matrix", None)) else weights[0]
        records.append(_storage_of(part, np.asarray(kernel, np.float32), name))
    return records


def float32_weight(weight: np.ndarray) -> np.ndarray:
    """Float weights (bfloat16 and float16 included) as float32; others (counters) as is."""
    weight = np.asarray(weight)
    if weight.dtype.kind == "f" or weight.dtype.name == "bfloat16":
        return weight.astype(np.float32)
    return weight


def _float32_config(layer: keras.layers.Layer) -> dict:
    """`layer`'s config under float32, if it computes in a float dtype (an integer layer, e.g. a lookup, keeps its own)."""
    config = dict(layer.get_config())
    if "dtype" in config and keras.backend.is_float_dtype(layer.dtype_policy.compute_dtype):
        config["dtype"] = "float32"
    return config


def build_inference_copy(
    model: keras.Model, split_ternary: bool = False, static_activations: bool = False
) -> InferenceCopy:
    """The float32 inference copy of `model`, with its layer origins and quantized kernels.

    `split_ternary`: ternary-residual Dense layers become per-(term, block) matmuls (for
    `"dynamic_int8"`). `static_activations`: DFP-16 input quantizers are left out (for
    `"int8"` / `"int16x8"`, whose calibrated activation quantization takes their place).
    """
    layers = flatten_layers(model)
    needs_rebuild = any(
        is_quantized_layer(layer) or is_keras_quantized(layer) or not _is_float32(layer) for layer in layers
    )
    if not _is_graph_model(model):
        if needs_rebuild:
            raise ValueError(
                "Exporting quantized layers (ours or Keras') or a bfloat16 policy rebuilds the model, which needs "
                "a Sequential or functional model. Received a subclassed model of class "
                f"{type(model).__name__}; rebuild it as a functional model first."
            )
        return InferenceCopy(model, {layer.name: layer for layer in layers}, [])

    weights_to_copy: list[tuple[keras.layers.Layer, list]] = []
    origin: dict[str, keras.layers.Layer] = {}
    quantized_kernels: list[np.ndarray] = []
    storage: list[KernelStorage] = []

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if not isinstance(layer, keras.layers.Layer):
            # An operator-syntax / keras.ops node (`h + pos`): stateless, but a fresh copy, so the copy's
            # graph adds no node to the user's operation (and keeps no reference to the copy alive).
            return layer.__class__.from_config(layer.get_config())
        terms = ternary_pieces(layer) if split_ternary else None
        if terms is not None or is_quantized_layer(layer):
            # The user's layer name stays on the outermost replacement (error messages).
            kept = _kept_input_quantizer(layer, static_activations)
            core_name = layer.name if kept is None else f"{layer.name}_core"
            if terms is not None:
                core = TernaryTermsDense(*terms, name=core_name, dtype="float32")
                weights = []
                quantized_kernels.extend(kernel for _, _, kernel in terms[0])
                storage.extend(KernelStorage(kernel, "exact", None, layer.name) for _, _, kernel in terms[0])
            else:
                core, weights = _plain_layer(layer, core_name)
                folded = _folded_kernels(layer, weights)
                quantized_kernels.extend(record.kernel for record in folded)
                storage.extend(folded)
            new, target = _with_input_quantizer(layer, core, static_activations), core
            for sublayer in [new, *getattr(new, "layers", [])]:
                origin[sublayer.name] = layer
        elif is_keras_quantized(layer):
            kernel, bits, exact = keras_dense_kernel(layer)
            new = keras.layers.Dense.from_config(float_dense_config(layer))
            weights = [kernel]
            if layer.use_bias:
                weights.append(np.asarray(keras.ops.convert_to_numpy(layer.bias), dtype=np.float32))
            target = new
            origin[new.name] = layer
            quantized_kernels.append(kernel)
            storage.append(KernelStorage(kernel, "exact" if exact else "int", bits, layer.name))
        else:
            new = type(layer).from_config(_float32_config(layer))
            weights = [float32_weight(w) for w in layer.get_weights()]
            target = new
            origin[new.name] = layer
            if not _is_float32(layer) and type(layer) in _FLOAT_KERNEL_TYPES:
                # bfloat16 computes with 8 significant bits: float16 (11) keeps what it uses.
                storage.append(KernelStorage(weights[0], "float16", 16, layer.name))
        weights_to_copy.append((target, weights))
        return new

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for target, weights in weights_to_copy:
        if weights:
            target.set_weights(weights)
    origin.setdefault(copy.name, model)
    return InferenceCopy(copy, origin, quantized_kernels, tuple(storage))
