"""What the layers made of quantized parts share (MultiHeadAttention's projections, SeparableConv2D's two convolutions).

Such a layer is Keras' own layer whose `build` replaces its float parts by quantized layers of one
family, configured by one `quantizer_options` dict; only weight-only quantization applies (an
input quantizer inside it would be lost in the plain float layer that is exported).
"""

from __future__ import annotations

from typing import Any

import keras

from keras_hessian.quantizers.base import BaseQuantizer

# Family options that quantize a part's inputs: not for parts inside another layer.
INPUT_OPTIONS = ("binary_activations", "input_quantizer")


def part_option_names(part: type) -> tuple[str, ...]:
    """The options a composite layer takes for its parts of class `part`."""
    return tuple(name for name in part.option_names() if name not in INPUT_OPTIONS)


def checked_part_options(owner: str, part: type, options: Any, *probe_args: Any) -> dict:
    """`options` as a dict, checked: names `part` accepts, values `part(*probe_args, **options)` accepts."""
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"quantizer_options must be a dict. Received quantizer_options={options!r}.")
    options = dict(options or {})
    unknown = sorted(set(options) - set(part.option_names()))
    if unknown:
        raise ValueError(
            f"quantizer_options {unknown} are not options of {part.__name__}; "
            f"accepted: {list(part_option_names(part))}. Received quantizer_options={options!r}."
        )
    probe = part(*probe_args, **options)  # bad values fail here, named by the part's class
    if probe.input_quantizer is not None:
        raise ValueError(
            f"{owner} quantizes weights only (its parts' inputs stay in float); input quantization "
            f"does not apply. Received quantizer_options={options!r}."
        )
    return options


def post_training_options(part: type) -> dict:
    """The part family's post-training defaults that a composite layer takes."""
    return {k: v for k, v in part.POST_TRAINING_OPTIONS.items() if k in part_option_names(part)}


def serialized_options(options: dict) -> dict:
    """`quantizer_options` for a config: quantizer objects serialized."""
    return {k: keras.saving.serialize_keras_object(v) if isinstance(v, BaseQuantizer) else v for k, v in options.items()}
