"""quantize_model: a new model with Dense/Conv layers swapped for quantized ones, weights carried, and its report.

Post-training quantization: the new model carries the original float weights as its latent
weights, so it can be evaluated at once or fine-tuned (quantization-aware training, the
latent weights receive straight-through gradients). The original model is never modified.
Which class replaces which layer comes from the one registry (`keras_hessian.layers.registry`).
The graph is rebuilt by Keras' own `clone_model` (a `clone_function` that builds each new layer
from one decision, `_decide`, which the report's rows come from too); weights are carried after.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from keras_hessian import _compat
from keras_hessian._backend import require_tensorflow_backend
from keras_hessian._validation import check_bool
from keras_hessian.layers import registry
from keras_hessian.layers.precision import bfloat16_layer_policy, keeps_float32
from keras_hessian.quantize import report as report_module
from keras_hessian.quantize._plan import Plan, is_quantizable, make_plan, normalize_spec, walk_layers
from keras_hessian.quantize.fold import fold_batch_norm_with_record
from keras_hessian.quantize.report import LayerOutcome, QuantizeReport

__all__ = ["quantize_model"]


@dataclasses.dataclass(frozen=True)
class _Decision:
    """What one layer becomes: `"quantize"` (scheme, options), `"policy"` (a dtype policy) or `"copy"`."""

    action: str
    scheme: str | None = None
    options: dict = dataclasses.field(default_factory=dict)
    policy: str | None = None
    reason: str = ""


def _float_rule(layer: keras.layers.Layer) -> str:
    return report_module.NORMALIZATION if not getattr(layer, "activation", None) else report_module.SOFTMAX


def _decide(layer: keras.layers.Layer, plan: Plan, model_scheme: str | None, inside_subclassed: bool) -> _Decision:
    """The one decision both the new layer and its report row come from."""
    if id(layer) in plan:
        scheme, options = plan[id(layer)]
        if scheme == "float32":
            return _Decision("copy", reason=report_module.FLOAT32)
        if scheme in ("bfloat16", "float16") and keeps_float32(layer):
            # bfloat16's rule: a softmax classifier stays float32 (its probabilities are the output).
            return _Decision("copy", reason=_float_rule(layer))
        if scheme == "bfloat16":
            return _Decision("policy", "bfloat16", policy=bfloat16_layer_policy(layer))
        return _Decision("quantize", scheme, options)
    if inside_subclassed:
        return _Decision("copy", reason=report_module.IN_SUBCLASSED_MODEL)
    if model_scheme == "bfloat16":
        if is_quantizable(layer):  # a skipped first/last layer stays float32
            return _Decision("policy", policy="float32", reason=report_module.FIRST_OR_LAST)
        policy = bfloat16_layer_policy(layer)
        reason = _float_rule(layer) if policy == "float32" and layer.weights else ""
        return _Decision("policy", "bfloat16" if not reason else None, policy=policy, reason=reason)
    if registry.is_quantized_layer(layer):
        reason = report_module.ALREADY_QUANTIZED
    elif not layer.weights:
        reason = report_module.NO_WEIGHTS
    elif model_scheme is None:
        reason = report_module.NOT_IN_PLAN if is_quantizable(layer) else report_module.NO_QUANTIZED_FORM
    elif model_scheme == "float32":
        reason = report_module.FLOAT32
    elif getattr(layer, "groups", 1) != 1 and is_quantizable(layer, model_scheme):
        reason = report_module.GROUPED
    elif is_quantizable(layer, model_scheme):
        reason = report_module.FIRST_OR_LAST
    else:
        reason = f"{report_module.NO_QUANTIZED_FORM} under {model_scheme!r}" + _inner_layers(layer) + _subclass_of(layer)
    return _Decision("copy", reason=reason)


def _subclass_of(layer: keras.layers.Layer) -> str:
    """`" (a subclass of Embedding: the registry matches exact types)"`, e.g. for KerasHub's ReversibleEmbedding."""
    bases = [t.__name__ for t in registry.quantizable_types() if isinstance(layer, t) and type(layer) is not t]
    return f" (a subclass of {bases[0]}: the registry matches exact types)" if bases else ""


def _inner_layers(layer: keras.layers.Layer) -> str:
    """`" (holds 4 EinsumDense, not graph layers)"` for a composite layer such as MultiHeadAttention."""
    inner = Counter(type(sub).__name__ for sub in _compat.flatten_layers(layer) if sub.weights and sub is not layer)
    if not inner:
        return ""
    return " (holds " + ", ".join(f"{n} {name}" for name, n in inner.most_common()) + ", not graph layers)"


def _new_layer(layer: keras.layers.Layer, decision: _Decision) -> keras.layers.Layer:
    if decision.action == "quantize":
        return registry.quantized_layer_class(decision.scheme, layer).from_float_layer(layer, **decision.options)
    config = layer.get_config()
    if decision.action == "policy":
        config = {**config, "dtype": decision.policy}
    return layer.__class__.from_config(config)


def _label(scheme: str, options: dict) -> str:
    return scheme + (f"({', '.join(f'{k}={v!r}' for k, v in sorted(options.items()))})" if options else "")


def _rows(model, layers, decisions, pairs, folds) -> list[LayerOutcome]:
    """One `LayerOutcome` per layer of the original model (folded BatchNormalizations after their layer)."""
    new_of = {id(old): new for old, new in pairs}
    parameters = {path: sum(int(np.prod(w.shape)) for w in layer.weights) for path, layer in walk_layers(model)}
    originals = dict(walk_layers(model))
    folded_after = {producer: norm for norm, producer in folds.items()}
    rows = []
    for path, layer in layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        decision = decisions[id(layer)]
        new = new_of.get(id(layer), layer)
        if decision.action == "quantize":
            precision = _label(decision.scheme, decision.options)
        else:
            precision = new.dtype_policy.name
        source_type = type(originals.get(path, layer)).__name__
        count = parameters.get(path, sum(int(np.prod(w.shape)) for w in layer.weights))
        quantized = decision.scheme is not None and not decision.reason
        rows.append(LayerOutcome(path, source_type, count, quantized, precision, decision.reason, type(new).__name__))
        if path in folded_after:
            norm = folded_after[path]
            reason = f"{report_module.FOLDED} {path}"
            rows.append(LayerOutcome(norm, "BatchNormalization", parameters[norm], False, "folded", reason, ""))
    return rows


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
        # The quantized layer has extra state (e.g. `active_residuals`): it copies the float layer's
        # kernel and bias only (an Embedding's table, each attention projection's; it knows where they are).
        target.load_float_weights(source)
        return
    target.set_weights(source.get_weights())


def _check_graph_model(model: keras.Model) -> None:
    if _compat.is_graph_model(model):
        return
    raise TypeError(
        f"quantize_model needs a Sequential or Functional model; {model.name!r} is a subclassed "
        f"{type(model).__name__}, whose layers Keras cannot rebuild one by one. Either build it "
        "functionally (keras.Model(inputs, outputs)), or quantize its layers where you create them: "
        "`keras_hessian.layers.registry.quantized_layer_class(scheme, layer).from_float_layer(layer)` "
        "gives the quantized layer for a Dense/Conv layer (then copy its kernel and bias)."
    )


def _subclassed_members(model: keras.Model) -> set[int]:
    """Ids of the layers inside nested subclassed models: cloning copies those models whole."""
    found: set[int] = set()
    for layer in model.layers:
        if _compat.is_graph_model(layer):
            found |= _subclassed_members(layer)
        elif hasattr(layer, "layers"):
            found |= {id(inner) for _, inner in walk_layers(layer)}
    return found


def quantize_model(
    model: keras.Model,
    scheme: str | Mapping[str, Any],
    *,
    skip_first_last: bool = True,
    fold_batch_norm: bool = False,
    verbose: bool = True,
) -> keras.Model:
    """Return a NEW model with Dense/Conv layers swapped for quantized ones, weights carried, and say what stayed float.

    Post-training quantization that is ready for quantization-aware fine-tuning: each
    selected layer whose exact type the registry (`keras_hessian.layers.registry`) has a class
    for under the scheme (`Dense`, `Conv1D`, `Conv2D`, `DepthwiseConv2D`, `EinsumDense`, `Embedding`,
    `MultiHeadAttention`, `SeparableConv2D`, and KerasHub's `TransformerEncoder` when keras-hub is
    installed; `keras_hessian.quantize.QUANTIZABLE_LAYERS`) becomes
    that `Binary*`, `TernaryResidual*`, `DFP16*`, `Integer*` or `Float16*` layer with the float
    kernel and bias as its latent weights (and its activation, regularizers, activity
    regularizer and constraints); every other layer is cloned with its weights (BatchNorm,
    LayerNorm, Embedding, attention, custom layers such as KerasHub's), and every `keras.ops`
    node between layers (`x + y`, `h[:, 0]`) is rebuilt as it is. The graph is rebuilt by
    `keras.models.clone_model(..., recursive=True)`: nested Sequential and Functional models,
    shared layers and several inputs and outputs keep their structure (a Functional subclass,
    such as a KerasHub task or backbone, comes back as a plain Functional model). The original
    model is never modified, on success or on error. The new model is compiled like the
    original if it was (as `clone_model` does).

    Schemes (a name applies to every quantizable layer, minus the first and last when
    `skip_first_last`, which are the most sensitive ones; see the reference decks):

    - `"binary"`: `Binary*` with `per_channel_scale=True` (XNOR-Net scaling; needed when
      starting from float weights).
    - `"ternary_residual"`: `TernaryResidual*` (default `block_size=64`, `residuals=1`; option
      `grid_bits=4` puts every alpha of a channel on one int4 grid, which `to_tflite` stores
      exactly, so a `weight_only=True` file computes what Keras computes).
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

    The report: the new model's `quantize_report` attribute (a `QuantizeReport`) lists every
    layer of the original by path, with what it became or why it stayed float (no quantized
    form for its type under the scheme, first or last layer, softmax or normalization rule, not
    named by the plan, no weights, folded). With `verbose` its summary is printed, e.g.
    `quantized 34 layers (34 ternary_residual), kept 71 in float:` then one line per kind,
    `52 BatchNormalization: no quantized form under 'ternary_residual'; fold them ...`.

    Example:
        >>> quantized = quantize_model(model, {"scheme": "ternary_residual", "residuals": 2})
        >>> quantized.quantize_report.kept_float           # what stayed float, and why
        >>> quantized.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        >>> quantized.fit(x, y, epochs=2)                   # optional QAT fine-tune
        >>> print(quantization_summary(quantized))

    Args:
        model: a built Sequential or Functional Keras model (nested models are walked).
        scheme: a scheme name, a scheme dict, or a per-layer plan.
        skip_first_last: keep the first and last quantizable layers in float32.
        fold_batch_norm: first fold each inference-mode BatchNormalization into the linear layer
            before it (`keras_hessian.quantize.fold_batch_norm`), so the folded weights are
            what is quantized; the new model then has no such BatchNormalization.
        verbose: print the report's summary (default True, as Keras' `model.quantize`).

    Returns:
        The new model, same architecture and layer names (minus folded BatchNormalizations),
        with its `quantize_report`.

    Raises:
        ValueError: unknown scheme or layer name, an ambiguous layer name, bad layer options
            (e.g. `residuals < 0`, `block_size < 1`, `precision` outside 2..16), or an
            unbuilt model.
        TypeError: a plan names a layer that cannot be quantized, non-float weights, or a
            subclassed model (the message says what to do instead).
    """
    require_tensorflow_backend()
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model. Received model={model!r}.")
    if not model.built:
        raise ValueError(f"model {model.name!r} must be built (call it or give it an Input) first.")
    _check_graph_model(model)
    fold = check_bool("fold_batch_norm", fold_batch_norm)
    verbose = check_bool("verbose", verbose)
    source, folds = fold_batch_norm_with_record(model) if fold else (model, {})
    plan, model_scheme = make_plan(source, scheme, skip_first_last)
    inside = _subclassed_members(source)
    layers = walk_layers(source)
    for path, layer in layers:
        if id(layer) in inside and id(layer) in plan:
            if model_scheme is None:
                raise TypeError(
                    f"scheme[{path!r}]: this layer is inside a subclassed model, which quantize_model "
                    "copies whole; build that model functionally to quantize its layers."
                )
            del plan[id(layer)]
        if id(layer) in plan:
            _check_float_weights(layer)
    decisions = {id(layer): _decide(layer, plan, model_scheme, id(layer) in inside) for _, layer in layers}
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone_layer(operation: Any) -> Any:
        if not isinstance(operation, keras.layers.Layer):
            # A keras.ops node between layers (`x + y`, `x[:, 0]`): no weights, no dtype policy.
            return operation.__class__.from_config(operation.get_config())
        # Keyed by the source layer object: same-named layers of nested models stay apart.
        decision = decisions.get(id(operation), _Decision("copy"))
        new = _new_layer(operation, decision)
        pairs.append((operation, new))
        return new

    clone = keras.models.clone_model(source, clone_function=clone_layer, recursive=True)
    for old, new in pairs:
        if old.weights:
            _copy_weights(old, new)
    label = "per-layer plan" if model_scheme is None else _label(model_scheme, normalize_spec(scheme, "scheme")[1])
    report = QuantizeReport(model.name, label, _rows(model, layers, decisions, pairs, folds))
    clone.quantize_report = report
    if verbose:
        for line in report.summary():
            print(line)
    return clone
