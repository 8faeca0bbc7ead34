"""Which layer of a model becomes what: walking nested models by path, and resolving a scheme to a plan.

Layers are addressed by their path below the top model, the nested models' names joined by
"/" (`"inner_a/dense"`); a bare layer name still works where it is unique. Plans are keyed by
the layer object itself, so two layers of the same name in different nested models never
share an entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from keras_hessian._layers import walk_layers
from keras_hessian.layers import registry

__all__ = ["FLOAT_SCHEMES", "Plan", "is_quantizable", "make_plan", "normalize_spec", "scheme_names", "walk_layers"]

# Schemes that change only the dtype policy, with no quantized layer class.
FLOAT_SCHEMES = ("bfloat16", "float32")

# id(layer) -> (scheme, options), for the layers `quantize_model` changes.
Plan = dict[int, tuple[str, dict]]


def scheme_names() -> tuple[str, ...]:
    """Every scheme `quantize_model` accepts now: the registry's, then bfloat16 and float32."""
    return registry.schemes() + FLOAT_SCHEMES


def is_quantizable(layer: keras.layers.Layer, scheme: str | None = None) -> bool:
    """Whether some scheme (or `scheme`) has a quantized class for exactly this layer's type."""
    if scheme is None or scheme in FLOAT_SCHEMES:
        return type(layer) in registry.quantizable_types()
    return registry.quantized_layer_class(scheme, layer) is not None


def _check_options(scheme: str, options: dict, where: str) -> None:
    classes = [registry.quantized_layer_class(scheme, t) for t in registry.quantizable_types(scheme)]
    accepted = {name for cls in classes for name in cls.option_names()}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"{where}: options {unknown} are not accepted by scheme {scheme!r}; "
            f"accepted options: {sorted(accepted)}."
        )


def normalize_spec(spec: Any, where: str) -> tuple[str, dict]:
    """`(scheme, options)` of a scheme name or a `{"scheme": name, **options}` dict, checked."""
    names = scheme_names()
    if isinstance(spec, str):
        scheme, options = spec, {}
    elif isinstance(spec, Mapping) and "scheme" in spec:
        options = {k: v for k, v in spec.items() if k != "scheme"}
        scheme = spec["scheme"]
    else:
        raise TypeError(
            f"{where} must be a scheme name {list(names)} or a dict with a 'scheme' key. "
            f"Received {where}={spec!r}."
        )
    if scheme not in names:
        raise ValueError(f"{where} must name a scheme in {list(names)}. Received {where}={spec!r}.")
    if scheme in FLOAT_SCHEMES:
        if options:
            raise ValueError(f"{where}: scheme {scheme!r} takes no options. Received {where}={spec!r}.")
    else:
        _check_options(scheme, options, where)
    return scheme, options


def _resolve(key: str, layers: list[tuple[str, keras.layers.Layer]], model: keras.Model):
    by_path = [layer for path, layer in layers if path == key]
    if by_path:
        return by_path[0]
    by_name = [(path, layer) for path, layer in layers if layer.name == key]
    if len(by_name) > 1:
        raise ValueError(
            f"scheme[{key!r}]: {len(by_name)} layers of model {model.name!r} are named {key!r}; "
            f"address one by its path: {[path for path, _ in by_name]}."
        )
    return by_name[0][1] if by_name else None


def make_plan(model: keras.Model, scheme: Any, skip_first_last: bool) -> tuple[Plan, str | None]:
    """The layers to change with their `(scheme, options)`, and the whole-model scheme (None for a plan)."""
    layers = walk_layers(model)
    if isinstance(scheme, Mapping) and "scheme" not in scheme:
        resolved = {key: _resolve(key, layers, model) for key in scheme}
        unknown = sorted(key for key, layer in resolved.items() if layer is None)
        if unknown:
            raise ValueError(
                f"scheme names layers that are not in model {model.name!r}: {unknown}. "
                f"Layers: {sorted(path for path, _ in layers)}."
            )
        plan: Plan = {}
        for key, spec in scheme.items():
            layer = resolved[key]
            where = f"scheme[{key!r}]"
            if not is_quantizable(layer):
                quantizable = [t.__name__ for t in registry.quantizable_types()]
                raise TypeError(
                    f"{where}: layer {key!r} of type {type(layer).__name__} cannot be "
                    f"quantized; quantizable types: {quantizable}."
                )
            name, options = normalize_spec(spec, where)
            if not is_quantizable(layer, name):
                raise TypeError(f"{where}: scheme {name!r} has no quantized {type(layer).__name__}.")
            if id(layer) in plan:
                raise ValueError(f"{where}: this layer is already named by another key of the plan.")
            plan[id(layer)] = (name, options)
        return plan, None
    name, options = normalize_spec(scheme, "scheme")
    # A grouped convolution has no quantized form: a whole-model scheme leaves it float (the report says so).
    quantizable = [layer for _, layer in layers if is_quantizable(layer, name) and getattr(layer, "groups", 1) == 1]
    chosen = quantizable[1:-1] if skip_first_last else quantizable
    return {id(layer): (name, options) for layer in chosen}, name
