"""quantize_model: a new model with Dense/Conv layers swapped for quantized ones, weights carried.

Post-training quantization: the new model carries the original float weights as its latent
weights, so it can be evaluated at once or fine-tuned (quantization-aware training, the
latent weights receive straight-through gradients). The original model is never modified.
Which class replaces which layer comes from the one registry (`keras_hessian.layers.registry`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from keras_hessian._backend import require_tensorflow_backend
from keras_hessian.layers import registry
from keras_hessian.layers.precision import bfloat16_layer_policy, keeps_float32
from keras_hessian.quantize._plan import is_quantizable, make_plan, walk_layers

__all__ = ["quantize_model"]


def _quantized_layer(layer: keras.layers.Layer, scheme: str, options: dict) -> keras.layers.Layer:
    config = layer.get_config()
    if scheme == "float32":
        return layer.__class__.from_config(config)
    if scheme == "bfloat16":
        return layer.__class__.from_config({**config, "dtype": bfloat16_layer_policy(layer)})
    if scheme == "float16" and keeps_float32(layer):
        # bfloat16's rule: a softmax classifier stays float32 (its probabilities are the output).
        return layer.__class__.from_config(config)
    return registry.quantized_layer_class(scheme, layer).from_float_layer(layer, **options)


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


def _copy_weights(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    if registry.is_quantized_layer(target) and not registry.is_quantized_layer(source):
        # The quantized layer has extra state (e.g. `active_residuals`): copy kernel and bias only
        # (an Embedding's table, each attention projection's; the layer knows where they are).
        target.load_float_weights(source)
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
    `TernaryResidual*`, `DFP16*`, `Integer*` or `Float16*` layer with the float kernel and bias as its latent
    weights (and its activation, regularizers, activity regularizer and constraints); every
    other layer is cloned with its weights. The original model is never modified, on success
    or on error. The new model is not compiled.

    Schemes (a name applies to every quantizable layer, minus the first and last when
    `skip_first_last`, which are the most sensitive ones; see the reference decks):

    - `"binary"`: `Binary*` with `per_channel_scale=True` (XNOR-Net scaling; needed when
      starting from float weights).
    - `"ternary_residual"`: `TernaryResidual*` (default `block_size=64`, `residuals=1`).
    - `"dfp16"`: `DFP16*` (int16 inputs and weights, exact int32 accumulation).
    - `"integer"`: `Integer*` (option `bits`, 2 to 8, default 8: symmetric per-channel int8 / int4
      weights, the grid TFLite stores them on).
    - `"float16"`: `Float16*`, the kernel rounded to IEEE half precision in the forward
      pass (inputs and activations float32; exported as a FLOAT16 tensor); a layer whose
      activation is softmax stays float32, as for `"bfloat16"`.
    - `"bfloat16"`: the `mixed_bfloat16` policy on every layer except normalization and
      softmax layers (`keras_hessian.layers.precision.keeps_float32`), and except the first
      and last quantizable layers when `skip_first_last`.
    - `"float32"`: no change (useful in plans).
    - `{"scheme": name, **options}`: a scheme with layer options, e.g.
      `{"scheme": "ternary_residual", "block_size": 16, "residuals": 3}`.
    - `{layer: spec}`: a per-layer plan (e.g. from HAWQ); each spec is a name or a dict as
      above. A layer is its name, or its path through nested models (`"inner_a/dense"`),
      which is required when nested models hold layers of the same name. Exactly the named
      layers change; `skip_first_last` is ignored. A layer whose activation is softmax stays
      float32 even when a plan names "bfloat16".

    Example:
        >>> quantized = quantize_model(model, {"scheme": "ternary_residual", "residuals": 2})
        >>> quantized.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        >>> quantized.fit(x, y, epochs=2)                   # optional QAT fine-tune
        >>> print(quantization_summary(quantized))

    Args:
        model: a built Sequential or Functional Keras model (nested models are walked).
        scheme: a scheme name, a scheme dict, or a per-layer plan.
        skip_first_last: keep the first and last quantizable layers in float32.

    Returns:
        The new model, same architecture and layer names.

    Raises:
        ValueError: unknown scheme or layer name, an ambiguous layer name, bad layer options
            (e.g. `residuals < 0`, `block_size < 1`, `precision` outside 2..16), or an
            unbuilt model.
        TypeError: a plan names a layer that cannot be quantized, non-float weights, or a
            subclassed model.
    """
    require_tensorflow_backend()
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model. Received model={model!r}.")
    if not model.built:
        raise ValueError(f"model {model.name!r} must be built (call it or give it an Input) first.")
    plan, model_scheme = make_plan(model, scheme, skip_first_last)
    for _, layer in walk_layers(model):
        if id(layer) in plan:
            _check_float_weights(layer)

    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        # Keyed by the source layer object: same-named layers of nested models stay apart.
        if id(layer) in plan:
            new = _quantized_layer(layer, *plan[id(layer)])
        elif model_scheme == "bfloat16":
            policy = bfloat16_layer_policy(layer)
            if is_quantizable(layer):  # a skipped first/last layer stays float32
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
