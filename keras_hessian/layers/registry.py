"""The ONE registry of quantized layers: scheme -> Keras layer type -> quantized class.

Every quantized layer class registers itself here (`@register_quantized_layer("binary",
keras.layers.Dense)`), and everything that needs the list (`keras_hessian.layers`,
`quantize_model`, export, the tests) reads it, so a new quantized layer is one decorator.
(`tests/layers/test_quantized_layers.py` lists every class with the arguments its save / load,
bfloat16 and training tests use, and checks that list against this registry: a new class then
needs that one test case too, on purpose.)
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = [
    "is_quantized_layer",
    "quantizable_types",
    "quantized_layer_class",
    "quantized_layer_classes",
    "register_quantized_layer",
    "scheme_of",
    "schemes",
]

_REGISTRY: dict[str, dict[type, type]] = {}
_SCHEME_OF: dict[type, str] = {}


def register_quantized_layer(scheme: str, float_type: type):
    """Class decorator: `cls` is the `scheme` version of the Keras layer type `float_type`.

    Args:
        scheme: the quantization scheme's name, e.g. `"binary"`.
        float_type: the float Keras layer class it replaces, e.g. `keras.layers.Dense`.
    """
    if not isinstance(scheme, str) or not scheme:
        raise ValueError(f"scheme must be a non-empty str. Received scheme={scheme!r}.")
    if not (isinstance(float_type, type) and issubclass(float_type, keras.layers.Layer)):
        raise TypeError(f"float_type must be a keras.layers.Layer subclass. Received float_type={float_type!r}.")

    def register(cls: type) -> type:
        existing = _REGISTRY.get(scheme, {}).get(float_type)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"Scheme {scheme!r} already has a quantized {float_type.__name__}: {existing.__name__}. "
                f"Received {cls.__name__}."
            )
        _REGISTRY.setdefault(scheme, {})[float_type] = cls
        _SCHEME_OF[cls] = scheme
        return cls

    return register


def schemes() -> tuple[str, ...]:
    """The schemes that have quantized layer classes, in registration order."""
    return tuple(_REGISTRY)


def quantizable_types(scheme: str | None = None) -> tuple[type, ...]:
    """The float Keras layer types that `scheme` (or any scheme) has a quantized class for."""
    if scheme is not None:
        return tuple(_REGISTRY.get(scheme, {}))
    seen: dict[type, None] = {}
    for table in _REGISTRY.values():
        seen.update(dict.fromkeys(table))
    return tuple(seen)


def quantized_layer_class(scheme: str, float_layer: Any) -> type | None:
    """The quantized class of `scheme` for a float layer (instance or class), or None.

    Exact types only: a subclass of Dense may compute something else in its `call`.
    """
    float_type = float_layer if isinstance(float_layer, type) else type(float_layer)
    return _REGISTRY.get(scheme, {}).get(float_type)


def quantized_layer_classes() -> tuple[type, ...]:
    """Every registered quantized layer class."""
    return tuple(cls for table in _REGISTRY.values() for cls in table.values())


def scheme_of(layer: Any) -> str | None:
    """The scheme of a quantized layer (instance or class), or None for any other layer."""
    cls = layer if isinstance(layer, type) else type(layer)
    for klass in cls.__mro__:
        if klass in _SCHEME_OF:
            return _SCHEME_OF[klass]
    return None


def is_quantized_layer(layer: Any) -> bool:
    """True if `layer` is an instance of a registered quantized layer class."""
    return scheme_of(layer) is not None
