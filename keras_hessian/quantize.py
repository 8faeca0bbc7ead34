"""quantize_model: a new model with Dense/Conv layers swapped for quantized ones; summary.

Post-training quantization: the new model carries the original float weights as its latent
weights, so it can be evaluated at once or fine-tuned (quantization-aware training, the
latent weights receive straight-through gradients). The original model is never modified.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from keras_hessian._backend import require_tensorflow_backend
from keras_hessian.layers import (
    BinaryConv1D,
    BinaryConv2D,
    BinaryDense,
    DFP16Conv1D,
    DFP16Conv2D,
    DFP16Dense,
    TernaryResidualConv1D,
    TernaryResidualConv2D,
    TernaryResidualDense,
)
from keras_hessian.layers._base import QuantizedLayer
from keras_hessian.layers.precision import bfloat16_layer_policy

__all__ = ["QUANTIZABLE_LAYERS", "SCHEMES", "quantization_summary", "quantize_model"]

SCHEMES = ("binary", "ternary_residual", "dfp16", "bfloat16", "float32")
QUANTIZABLE_LAYERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)

_LAYER_CLASSES = {
    "binary": {
        keras.layers.Dense: BinaryDense,
        keras.layers.Conv1D: BinaryConv1D,
        keras.layers.Conv2D: BinaryConv2D,
    },
    "ternary_residual": {
        keras.layers.Dense: TernaryResidualDense,
        keras.layers.Conv1D: TernaryResidualConv1D,
        keras.layers.Conv2D: TernaryResidualConv2D,
    },
    "dfp16": {
        keras.layers.Dense: DFP16Dense,
        keras.layers.Conv1D: DFP16Conv1D,
        keras.layers.Conv2D: DFP16Conv2D,
    },
}
# Starting from float weights, binary layers need the XNOR-Net per-channel scale, or every
# layer's output is rescaled by about 1 / mean|W| (the deck's BNNs train from scratch).
_DEFAULT_OPTIONS = {"binary": {"per_channel_scale": True}}
_COMMON_KEYS = (
    "name",
    "dtype",
    "trainable",
    "activation",
    "use_bias",
    "kernel_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "bias_constraint",
)
_DENSE_KEYS = ("units",)
_CONV_KEYS = ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate")


# --------------------------------------------------------------------------- plan


def _is_quantizable(layer: keras.layers.Layer) -> bool:
    # Exact types: a subclass of Dense may compute something else in `call`.
    return type(layer) in QUANTIZABLE_LAYERS


def _walk_layers(model: keras.Model) -> list[keras.layers.Layer]:
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layers.extend(_walk_layers(layer))
        else:
            layers.append(layer)
    return layers


def _normalize_spec(spec: Any, where: str) -> tuple[str, dict]:
    if isinstance(spec, str):
        scheme, options = spec, {}
    elif isinstance(spec, Mapping) and "scheme" in spec:
        options = {k: v for k, v in spec.items() if k != "scheme"}
        scheme = spec["scheme"]
    else:
        raise TypeError(
            f"{where} must be a scheme name {list(SCHEMES)} or a dict with a 'scheme' key. "
            f"Received {where}={spec!r}."
        )
    if scheme not in SCHEMES:
        raise ValueError(f"{where} must name a scheme in {list(SCHEMES)}. Received {where}={spec!r}.")
    if options and scheme in ("bfloat16", "float32"):
        raise ValueError(f"{where}: scheme {scheme!r} takes no options. Received {where}={spec!r}.")
    _check_options(scheme, options, where)
    return scheme, {**_DEFAULT_OPTIONS.get(scheme, {}), **options}


def _check_float_weights(layer: keras.layers.Layer) -> None:
    mode = getattr(layer, "quantization_mode", None)
    for weight in layer.weights:
        if not keras.backend.is_float_dtype(weight.dtype):
            raise TypeError(
                f"Layer {layer.name!r} has non-float weight {weight.path!r} of dtype "
                f"{weight.dtype} (quantization_mode={mode!r}); quantize_model needs float "
                "weights (quantize the float model instead)."
            )
    if getattr(layer, "groups", 1) != 1:
        raise ValueError(
            f"Layer {layer.name!r} is a grouped convolution (groups={layer.groups}); "
            "quantized convolutions support groups=1 only."
        )


def _make_plan(
    model: keras.Model, scheme: Any, skip_first_last: bool
) -> tuple[dict[str, tuple[str, dict]], str | None]:
    """Map layer name -> (scheme, options) for the layers to change; and the model scheme."""
    layers = _walk_layers(model)
    by_name = {layer.name: layer for layer in layers}
    quantizable = [layer for layer in layers if _is_quantizable(layer)]
    if isinstance(scheme, Mapping) and "scheme" not in scheme:
        unknown = sorted(set(scheme) - set(by_name))
        if unknown:
            raise ValueError(
                f"scheme names layers that are not in model {model.name!r}: {unknown}. "
                f"Layers: {sorted(by_name)}."
            )
        plan = {}
        for name, spec in scheme.items():
            layer = by_name[name]
            if not _is_quantizable(layer):
                raise TypeError(
                    f"scheme[{name!r}]: layer {name!r} of type {type(layer).__name__} cannot be "
                    f"quantized; quantizable types: {[c.__name__ for c in QUANTIZABLE_LAYERS]}."
                )
            plan[name] = _normalize_spec(spec, f"scheme[{name!r}]")
        return plan, None
    spec = _normalize_spec(scheme, "scheme")
    chosen = quantizable[1:-1] if skip_first_last else quantizable
    return {layer.name: spec for layer in chosen}, spec[0]


# --------------------------------------------------------------------------- cloning


def _quantized_layer(layer: keras.layers.Layer, scheme: str, options: dict) -> keras.layers.Layer:
    config = layer.get_config()
    if scheme == "float32":
        return layer.__class__.from_config(config)
    if scheme == "bfloat16":
        return layer.__class__.from_config({**config, "dtype": bfloat16_layer_policy(layer)})
    keys = _COMMON_KEYS + (_DENSE_KEYS if isinstance(layer, keras.layers.Dense) else _CONV_KEYS)
    arguments = {key: config[key] for key in keys if key in config}
    target = _LAYER_CLASSES[scheme][type(layer)]
    return target(**arguments, **options)


def _check_options(scheme: str, options: dict, where: str) -> None:
    if scheme not in _LAYER_CLASSES:
        return
    accepted = set()
    for target in _LAYER_CLASSES[scheme].values():
        parameters = inspect.signature(target.__init__).parameters
        accepted |= {
            name
            for name, parameter in parameters.items()
            if parameter.kind is parameter.POSITIONAL_OR_KEYWORD
            and name not in ("self", "units", "filters", "kernel_size")
        }
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"{where}: options {unknown} are not accepted by scheme {scheme!r}; "
            f"accepted options: {sorted(accepted)}."
        )


def _copy_weights(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    if isinstance(target, QuantizedLayer) and not isinstance(source, QuantizedLayer):
        target.kernel.assign(source.kernel)
        if source.use_bias:
            target.bias.assign(source.bias)
        return
    target.set_weights(source.get_weights())


def quantize_model(
    model: keras.Model,
    scheme: str | Mapping[str, Any],
    *,
    skip_first_last: bool = True,
) -> keras.Model:
    """Return a NEW model with Dense/Conv layers swapped for quantized ones, weights carried.

    Post-training quantization that is ready for quantization-aware fine-tuning: each
    selected `Dense`, `Conv1D` or `Conv2D` becomes the matching `Binary*`,
    `TernaryResidual*` or `DFP16*` layer with the float kernel and bias as its latent
    weights; every other layer is cloned with its weights. The original model is never
    modified, on success or on error. The new model is not compiled.

    Schemes (a name applies to every quantizable layer, minus the first and last when
    `skip_first_last`, which are the most sensitive ones; see the reference decks):

    - `"binary"`: `Binary*` with `per_channel_scale=True` (XNOR-Net scaling; needed when
      starting from float weights).
    - `"ternary_residual"`: `TernaryResidual*` (default `block_size=64`, `residuals=1`).
    - `"dfp16"`: `DFP16*` (int16 inputs and weights, exact int32 accumulation).
    - `"bfloat16"`: the `mixed_bfloat16` policy on every layer except normalization and
      softmax layers (`keras_hessian.layers.precision.keeps_float32`), and except the first
      and last quantizable layers when `skip_first_last`.
    - `"float32"`: no change (useful in plans).
    - `{"scheme": name, **options}`: a scheme with layer options, e.g.
      `{"scheme": "ternary_residual", "block_size": 16, "residuals": 3}`.
    - `{layer_name: spec}`: a per-layer plan (e.g. from HAWQ); each spec is a name or a
      dict as above. Exactly the named layers change; `skip_first_last` is ignored. A
      layer whose activation is softmax stays float32 even when a plan names "bfloat16".

    Example:
        >>> quantized = quantize_model(model, {"scheme": "ternary_residual", "residuals": 2})
        >>> quantized.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        >>> quantized.fit(x, y, epochs=2)                   # optional QAT fine-tune
        >>> quantization_summary(quantized)

    Args:
        model: a built Sequential or Functional Keras model (nested models are walked).
        scheme: a scheme name, a scheme dict, or a per-layer plan.
        skip_first_last: keep the first and last quantizable layers in float32.

    Returns:
        The new model, same architecture and layer names.

    Raises:
        ValueError: unknown scheme or layer name, bad layer options (e.g. `residuals < 0`,
            `block_size < 1`, `precision` outside 2..16), or an unbuilt model.
        TypeError: a plan names a layer that cannot be quantized, non-float weights, or a
            subclassed model.
    """
    require_tensorflow_backend()
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model. Received model={model!r}.")
    if not model.built:
        raise ValueError(f"model {model.name!r} must be built (call it or give it an Input) first.")
    plan, model_scheme = _make_plan(model, scheme, skip_first_last)
    for name in plan:
        layer = next(layer for layer in _walk_layers(model) if layer.name == name)
        _check_float_weights(layer)

    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in plan:
            new = _quantized_layer(layer, *plan[layer.name])
        elif model_scheme == "bfloat16":
            policy = bfloat16_layer_policy(layer)
            if _is_quantizable(layer):  # a skipped first/last layer stays float32
                policy = "float32"
            new = layer.__class__.from_config({**layer.get_config(), "dtype": policy})
        else:
            new = layer.__class__.from_config(layer.get_config())
        pairs.append((layer, new))
        return new

    try:
        clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    except ValueError as error:
        if "subclass" in str(error).lower() or "functional" in str(error).lower():
            raise TypeError(
                "quantize_model needs a Sequential or Functional model; subclassed models "
                f"cannot be cloned layer by layer. Received model={model.name!r}: {error}"
            ) from error
        raise
    for source, target in pairs:
        _copy_weights(source, target)
    return clone


# --------------------------------------------------------------------------- summary


def _output_shape(layer: keras.layers.Layer) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return None


def _layer_cost(layer: keras.layers.Layer) -> dict:
    """Precision label, weight bits, real multiplications and replaced ones per example."""
    parameters = sum(
        int(np.prod(w.shape)) for w in layer.weights if keras.backend.is_float_dtype(w.dtype)
    )
    compute_dtype = keras.backend.standardize_dtype(layer.compute_dtype)
    float_bits = 16 if compute_dtype in ("bfloat16", "float16") else 32
    row = {
        "name": layer.name,
        "type": type(layer).__name__,
        "precision": compute_dtype,
        "bits_per_weight": float(float_bits),
        "parameters": parameters,
        "weight_bits": parameters * float_bits,
        "multiplications": 0,
        "replaced_multiplications": 0,
    }
    kernel = getattr(layer, "kernel", None)
    if kernel is None or not (_is_quantizable(layer) or isinstance(layer, QuantizedLayer)):
        return row
    shape = _output_shape(layer)
    kernel_size = int(np.prod(kernel.shape))
    out_channels = int(kernel.shape[-1])
    reduction = kernel_size // out_channels
    outputs = None if shape is None or None in shape[1:] else int(np.prod(shape[1:]))
    macs = None if outputs is None else outputs * reduction
    bias_bits = (parameters - kernel_size) * float_bits
    row["multiplications"] = macs

    if isinstance(layer, (BinaryDense, BinaryConv1D, BinaryConv2D)):
        scale_bits = 32 * out_channels if layer.per_channel_scale else 0
        row["precision"] = "binary w+a" if layer.binary_activations else "binary w"
        row["bits_per_weight"] = 1.0
        row["weight_bits"] = kernel_size + scale_bits + bias_bits
        row["replaced_multiplications"] = macs
        # One multiplication by alpha_c per output element when scaled.
        row["multiplications"] = None if macs is None else (outputs if layer.per_channel_scale else 0)
    elif isinstance(layer, (TernaryResidualDense, TernaryResidualConv1D, TernaryResidualConv2D)):
        terms = layer.active_residuals + 1
        blocks_per_output = math.ceil(reduction / layer.block_size)
        scale_bits = 32 * out_channels * blocks_per_output * terms
        row["precision"] = f"ternary x{terms} N={layer.block_size}"
        row["bits_per_weight"] = 2.0 * terms
        row["weight_bits"] = 2 * kernel_size * terms + scale_bits + bias_bits
        row["replaced_multiplications"] = macs
        # One multiplication per block and term: the block's scale times its partial sum.
        row["multiplications"] = (
            None if macs is None else outputs * blocks_per_output * terms
        )
    elif isinstance(layer, (DFP16Dense, DFP16Conv1D, DFP16Conv2D)):
        row["precision"] = f"DFP-{layer.precision}"
        row["bits_per_weight"] = float(layer.precision)
        row["weight_bits"] = layer.precision * kernel_size + 8 + bias_bits
    return row


def quantization_summary(
    model: keras.Model, print_fn: Callable[[str], Any] | None = print
) -> dict:
    """Per-layer precision, parameters, weight memory and multiplications, with totals.

    Printed like `model.summary()`. Multiplications are counted per example for Dense and
    Conv layers: a float or DFP layer does one per multiply-accumulate; a binary layer
    replaces all of them by sign flips and adds (XNOR/popcount with binary inputs) and keeps
    one multiplication per output when scaled; a ternary-residual layer replaces them by
    sign/add and keeps one multiplication per block and active term (Kundu, Banerjee et al.
    2018). Memory counts the deployed representation: 32 (float32), 16 (bfloat16, DFP-16),
    1 (binary) or 2 x terms (ternary) bits per kernel weight, plus float32 scales and biases.

    Example:
        >>> report = quantization_summary(quantize_model(model, "binary"))
        >>> report["total"]["weight_bytes"]

    Args:
        model: a built Keras model.
        print_fn: where lines go (`None`: print nothing).

    Returns:
        `{"layers": [row, ...], "total": {...}}`; each row has `name`, `type`, `precision`,
        `bits_per_weight`, `parameters`, `weight_bits`, `weight_bytes`, `multiplications`,
        `replaced_multiplications` (None when an output shape is unknown).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model. Received model={model!r}.")
    rows = [_layer_cost(layer) for layer in _walk_layers(model)]
    for row in rows:
        row["weight_bytes"] = math.ceil(row["weight_bits"] / 8)

    def total(key: str) -> int | None:
        values = [row[key] for row in rows]
        return None if any(v is None for v in values) else int(sum(values))

    totals = {
        key: total(key)
        for key in ("parameters", "weight_bits", "weight_bytes", "multiplications",
                    "replaced_multiplications")
    }
    totals["float32_weight_bytes"] = 4 * totals["parameters"]
    report = {"layers": rows, "total": totals}
    if print_fn is not None:
        _print_summary(model, report, print_fn)
    return report


def _print_summary(model: keras.Model, report: dict, print_fn: Callable[[str], Any]) -> None:
    header = ("Layer (type)", "Precision", "Params", "Bytes", "Mults", "Mults -> sign/add")
    lines = []
    for row in report["layers"]:
        lines.append(
            (
                f"{row['name']} ({row['type']})",
                row["precision"],
                f"{row['parameters']:,}",
                f"{row['weight_bytes']:,}",
                "?" if row["multiplications"] is None else f"{row['multiplications']:,}",
                "?"
                if row["replaced_multiplications"] is None
                else f"{row['replaced_multiplications']:,}",
            )
        )
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) for i in range(len(header))]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))

    def render(cells):
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths))

    total = report["total"]
    print_fn(f'Quantization summary: "{model.name}"')
    print_fn(rule.replace("-", "="))
    print_fn(render(header))
    print_fn(rule.replace("-", "="))
    for line in lines:
        print_fn(render(line))
    print_fn(rule)
    ratio = total["float32_weight_bytes"] / max(total["weight_bytes"], 1)
    print_fn(f"Total params: {total['parameters']:,}")
    print_fn(
        f"Weight memory: {total['weight_bytes']:,} bytes ({total['weight_bits']:,} bits), "
        f"{ratio:.1f}x smaller than float32 ({total['float32_weight_bytes']:,} bytes)"
    )
    mults = total["multiplications"]
    replaced = total["replaced_multiplications"]
    print_fn(f"Multiplications per example: {'?' if mults is None else f'{mults:,}'}")
    print_fn(
        "Multiplications replaced by sign/add: " + ("?" if replaced is None else f"{replaced:,}")
    )
    print_fn(rule.replace("-", "="))

