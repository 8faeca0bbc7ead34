"""Conversion of a Keras model to a TFLite file: the modes, `auto_mode`, the converter set-up.

Conversion goes through `tf.lite.TFLiteConverter.from_keras_model` on the float32 inference copy
(`inference_copy.py`), or, for a model with dict or several inputs (a KerasHub model), through a
concrete function whose input signature names each input (`from_keras_model` fails there under
Keras 3); `"dynamic_int8"` weights are then stored by `storage.py`, and the weights of
an `"auto"` file of a quantized model layer by layer by `planned_storage.py`. A converter failure
is re-raised as a ValueError naming the user's layer. The file is written atomically.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import tempfile
import warnings
from typing import Any

import keras
import tensorflow as tf

from keras_hessian._backend import require_tensorflow_backend
from keras_hessian._compat import flatten_layers, input_structure
from keras_hessian._files import check_output_path, write_atomically
from keras_hessian._validation import check_bool, check_choice
from keras_hessian.export._checks import check_model
from keras_hessian.export.inference_copy import build_inference_copy
from keras_hessian.export.keras_quantized import is_keras_quantized
from keras_hessian.export.planned_storage import store_planned_weights
from keras_hessian.export.representative_data import representative_dataset
from keras_hessian.export.storage import store_dynamic_range_weights
from keras_hessian.layers.registry import is_quantized_layer
from keras_hessian.quantize.fold import fold_batch_norm as fold_batch_norm_copy

__all__ = ["MODES", "SPARSE_MODES", "auto_mode", "to_tflite"]

MODES = ("auto", "float32", "float16", "dynamic_int8", "int8", "int16x8")
# Modes the converter's sparsity pass (`EXPERIMENTAL_SPARSITY`) combines with; "dynamic_int8"
# weights are rewritten by storage.py afterwards, which knows no sparse tensors.
SPARSE_MODES = ("float32", "int8")
# What `auto_mode` answers for a model whose layers are stored each at its own precision.
PER_LAYER = "per_layer"
_MODES_NEEDING_DATA = ("int8", "int16x8")


def to_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    mode: str = "auto",
    representative_data: Any = None,
    narrow_weights: bool = True,
    weight_only: bool = False,
    sparse: bool = False,
    fold_batch_norm: bool = False,
) -> pathlib.Path:
    """Convert a Keras model to a TFLite flatbuffer file that LiteRT runs.

    Use it to ship a trained (and possibly quantized) model to an edge device. The conversion
    works on a float32 inference copy of the model (`inference_copy`), so the model passed
    in is never changed:

    - quantized layers (`BinaryDense`, `TernaryResidualDense`, `DFP16Conv2D`, ...) become
      plain `Dense` / `Conv` layers whose kernel is `layer.quantized_kernel()`, the kernel
      exactly as the inference pass applies it (scales folded in, the currently active
      residual count of a ternary-residual layer baked in); a layer's `input_quantizer`, if
      any, stays in front of it as builtin TFLite ops (sign, or DFP rounding);
    - layers under a `bfloat16` / `mixed_bfloat16` policy are rebuilt in float32 with their
      weights copied (TFLite has no bfloat16 MatMul/BiasAdd/Relu kernels).

    Modes (weights / activations as TFLite stores and computes them):

    - `"float32"`: float32 / float32. Matches Keras to float rounding.
    - `"float16"`: float16 weights, dequantized at load / float32.
    - `"dynamic_int8"`: int8 weights with one scale per output channel / float32 (hybrid
      kernels quantize activations on the fly) for the FullyConnected / Conv2D weights, stored
      by `ai-edge-quantizer` (`storage.py`); weight tensors of fewer than 1,024 elements stay
      float32, as the converter leaves them. With `narrow_weights`, a tensor whose levels fit
      is stored in int2/int4 instead, and a ternary-residual Dense becomes one int2 matmul per
      (term, block) where that makes the file smaller.
    - `"int8"`: int8 weights and activations, calibrated on `representative_data`; the file
      keeps float32 inputs and outputs.
    - `"int16x8"`: int8 weights (TFLite has no int16 weights), int16 activations, calibrated
      on `representative_data`. In `"int8"` and `"int16x8"` the calibrated fixed-point
      activations replace a DFP-16 layer's dynamic input quantizer.
    - `"auto"` (default): `"float32"` for a model without quantized layers (a bfloat16
      model included: its file then matches the float32 rebuild); otherwise each layer at
      its own precision (`planned_storage.py`), as a per-layer plan
      (`quantize_model(model, {layer: spec})`, e.g. from HAWQ) asks:

      - integer layers (`IntegerDense`, ... with `bits`) and Dense layers quantized by Keras'
        `model.quantize("int8" | "int4")`: int8 / int4 (int2 for a 2-bit FullyConnected)
        per output channel, the layer's own grid, exactly (Keras' sub-channel int4 is
        re-stored per channel);
      - binary and ternary kernels: the narrowest of int2 (FullyConnected), int4 or int8
        that holds their levels exactly; binary weights +-alpha_c are +-1 in int2 at scale
        alpha_c. A ternary-residual Dense is split into int2 pieces where that makes the
        file smaller; otherwise its folded kernel is rounded to the channel's int8 grid
        when block-wise alphas put it off any grid (error at most max|W[..., c]| / 254);
      - DFP-16, float16 and bfloat16 layers: float16 (for DFP-16 an IEEE half keeps 11
        significant bits rather than a 15-bit mantissa under one shared exponent, at the
        same 2 bytes per weight);
      - float32 layers (e.g. the first and last, which plans keep float): float32.

      Integer storage uses LiteRT's dynamic-range (hybrid) kernels, as `"dynamic_int8"`.

    References: TFLite post-training quantization (Jacob et al., 2018, "Quantization and
    Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference").

    Example:

    ```python
    from keras_hessian.export import to_tflite, parity_report
    to_tflite(model, "model.tflite", mode="int8", representative_data=x_train[:200])
    print(parity_report(model, "model.tflite", (x_test, y_test)))
    ```

    Args:
        model: a built Keras 3 model (Sequential or functional, dict or several inputs
            included, e.g. a KerasHub classifier: the file's serving signature then names each
            input as the model does; a subclassed model converts only if it holds no quantized
            layer and no bfloat16 policy).
        path: the `.tflite` file to write. Its directory must exist and be writable.
        mode: one of `MODES` (see above).
        representative_data: calibration inputs for `"int8"` / `"int16x8"` (required there):
            an array of examples (batch axis first), an `(x, y)` tuple, a `tf.data.Dataset`
            of examples or batches, or a TFLite-style callable returning an iterable of
            `[input_batch]` lists. A few hundred examples are enough.
        narrow_weights: in `"dynamic_int8"` and `"auto"` modes, store a weight tensor in int4
            or int2 when that is lossless (the same weight values; checked in LiteRT on a probe
            batch: outputs equal to the int8 file's, or no farther than its from the float32
            file's, as int4 hybrid kernels round activations differently): binary kernels
            (+-alpha_c per output channel) then take 2 bits per weight.
        weight_only: in `"dynamic_int8"` and `"auto"` modes of quantized models, store the
            integer filters weight-only: the file keeps them as int4 / int8 (int2 filters as
            int4: LiteRT has no int2 dequantization) and LiteRT dequantizes them to float32 once,
            when it prepares the file; the ops then compute in float32. The outputs are the
            Keras model's (to float rounding) wherever the stored levels are exact (binary,
            per-channel ternary and integer layers, ternary residuals with `grid_bits` in `"auto"`
            mode, the default for quantized models; not
            block-wise ternary-residual kernels with free alphas, whose levels are rounded to one
            int8 grid per channel), where hybrid kernels round every
            activation to int8 on the fly: on a briefly trained MobileNetV2 that moved the top-1
            class of 7-11% of the digits. The file is as large where filters are int4 / int8, and
            larger where hybrid storage would use int2 (FullyConnected binary / ternary filters:
            the transformer's binary file 0.550x of float against 0.499x); LiteRT holds float32
            weights in memory and runs float32 kernels (on the CPUs here 3x faster than the hybrid
            ones on MobileNetV2, 1.6x slower on the small transformer's binary file). See
            `benchmarks/results/litert_kernels.md`.
        sparse: store pruned weight tensors in TFLite's sparse format
            (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`; values plus index arrays, for a kernel
            sparse enough to gain), in `"float32"` or `"int8"` mode (`SPARSE_MODES`): pruning and
            quantization combined. LiteRT's default XNNPACK delegate refuses sparse float32
            FullyConnected weights: run such a file with
            `experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`.
        fold_batch_norm: first fold each inference-mode BatchNormalization into the float
            Dense / Conv / DepthwiseConv layer before it (`keras_hessian.quantize.fold_batch_norm`,
            on a copy). To have the folded weights quantized too, fold when quantizing instead:
            `quantize_model(model, scheme, fold_batch_norm=True)`.

    Returns:
        The path written, as a `pathlib.Path`.

    Raises:
        TypeError: `model` is not a Keras model, or `path` is not a path.
        ValueError: an unknown `mode`, missing/ill-shaped `representative_data`, an
            unwritable `path`, or a layer the converter cannot convert (the message names it).
    """
    require_tensorflow_backend()
    check_model(model)
    check_choice("mode", mode, MODES)
    narrow_weights = check_bool("narrow_weights", narrow_weights)
    weight_only = check_bool("weight_only", weight_only)
    sparse = check_bool("sparse", sparse)
    fold = check_bool("fold_batch_norm", fold_batch_norm)
    target = check_output_path(path)
    if fold:
        model = fold_batch_norm_copy(model)
    if mode == "auto":
        mode = auto_mode(model)
    if sparse and mode not in SPARSE_MODES:
        raise ValueError(f"sparse=True works with mode in {list(SPARSE_MODES)}. Received mode={mode!r}.")
    if weight_only and mode not in ("dynamic_int8", PER_LAYER):
        raise ValueError(
            "weight_only=True stores integer weights for float compute: it needs mode='dynamic_int8', or "
            f"mode='auto' on a model with quantized layers. Received mode={mode!r} (after 'auto')."
        )
    per_layer = mode == PER_LAYER
    if per_layer:
        mode = "dynamic_int8"  # converted in float32; planned_storage.py stores each layer
    if mode in _MODES_NEEDING_DATA and representative_data is None:
        raise ValueError(
            f"mode={mode!r} calibrates activation ranges and needs representative_data "
            "(a few hundred input examples). Received representative_data=None."
        )
    representative = (
        representative_dataset(representative_data, model) if mode in _MODES_NEEDING_DATA else None
    )
    inference = build_inference_copy(
        model,
        # The split stores int2 pieces, which only hybrid kernels run; weight-only pieces would be
        # int4 (two of them as large as one int8 copy, though exact): not done.
        split_ternary=mode == "dynamic_int8" and narrow_weights and not weight_only,
        static_activations=mode in _MODES_NEEDING_DATA,
    )
    # The SavedModel of a dict-input model is written to (and removed with) a temporary folder.
    with tempfile.TemporaryDirectory(prefix="keras_hessian_export_") as folder:
        try:
            # "dynamic_int8" converts in float32; storage.py then quantizes the weights it chooses.
            converter = _make_converter(
                inference.model, "float32" if mode == "dynamic_int8" else mode, representative, folder
            )
            if sparse:
                converter.optimizations = [*converter.optimizations, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
            # The converter's SavedModel step prints its endpoints; keep stdout for the user.
            # Float inputs/outputs are kept on purpose: the converter's warning about missing
            # input statistics does not apply.
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
                flatbuffer = converter.convert()
        except Exception as error:  # the converter raises several unrelated types
            raise _conversion_error(error, inference.model, inference.origin, mode) from error
    if len(flatbuffer) < 8 or flatbuffer[4:8] != b"TFL3":
        raise ValueError(f"The TFLite converter returned no valid flatbuffer for mode={mode!r}.")
    if per_layer:
        flatbuffer = store_planned_weights(
            flatbuffer, list(inference.kernel_storage), narrow=narrow_weights, weight_only=weight_only
        )
    elif mode == "dynamic_int8":
        flatbuffer = store_dynamic_range_weights(
            flatbuffer,
            inference.quantized_kernels,
            float_layers=True,
            narrow=narrow_weights,
            weight_only=weight_only,
        )
    write_atomically(target, flatbuffer)
    return target


def auto_mode(model: keras.Model) -> str:
    """What `to_tflite(model, path)` does: `"float32"`, or `"per_layer"` storage.

    `"float32"` for a model without quantized layers (ours or Keras'); `"per_layer"` otherwise:
    each layer stored at its own precision (see `to_tflite`).

    Example:

    ```python
    auto_mode(quantize_model(model, "binary"))  # 'per_layer'
    ```

    Args:
        model: a built Keras model.
    """
    check_model(model)
    quantized = any(is_quantized_layer(layer) or is_keras_quantized(layer) for layer in flatten_layers(model))
    return PER_LAYER if quantized else "float32"


def _make_converter(model: keras.Model, mode: str, representative, folder: str) -> tf.lite.TFLiteConverter:
    structure = input_structure(model)
    if isinstance(structure, dict) or len(keras.tree.flatten(structure)) > 1:
        # `from_keras_model` traces the flat `model.inputs` list, which a dict-input model
        # (KerasHub) rejects, and then fails in tf_keras' call context ("'NoneType' object is
        # not callable"); a SavedModel signature with the model's own input structure converts.
        converter = _saved_model_converter(model, structure, folder)
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    # Builtin ops only: a file with Flex (TF) ops needs the large Flex delegate on device.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode == "float32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode in _MODES_NEEDING_DATA:
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
            if mode == "int8"
            else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    return converter


def _saved_model_converter(model: keras.Model, structure: Any, folder: str) -> tf.lite.TFLiteConverter:
    """A converter of `model(inputs, training=False)` exported as a SavedModel signature with one named input each.

    This is what `from_keras_model` itself does for a Keras 3 model, with the model's own input
    structure (a dict stays a dict) instead of the flat `model.inputs` list its call rejects. A
    concrete function handed to `from_concrete_functions` with the model as `trackable_obj` keeps
    the weights as uninitialized resource variables in the file (LiteRT then returns NaN).
    """
    names = {id(tensor): key for key, tensor in structure.items()} if isinstance(structure, dict) else {}
    spec = keras.tree.map_structure(
        lambda tensor: tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype, name=names.get(id(tensor), tensor.name)),
        structure,
    )
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda inputs: model(inputs, training=False), [spec])
    with contextlib.redirect_stdout(io.StringIO()):
        archive.write_out(folder, verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(folder)


_UNSUPPORTED_OP = re.compile(r"'tf\.(\w+)' op is neither")
_OP_LOCATION = re.compile(r'fused\["[^"]*", "([^"@]+)@')


def _conversion_error(
    error: Exception, model: keras.Model, origin: dict[str, keras.layers.Layer], mode: str
) -> ValueError:
    """A ValueError naming the user's layer whose ops the converter rejected, when it can."""
    text = str(error)
    ops = sorted(set(_UNSUPPORTED_OP.findall(text)))
    culprit = None
    for location in _OP_LOCATION.findall(text):
        # Op names are "<model>/<layer>/<op>"; tracing twice adds "_1" to scope names.
        for segment in reversed(location.split("/")[:-1]):
            for name in (segment, re.sub(r"_\d+$", "", segment)):
                if name in origin and origin[name] is not None and name != model.name:
                    culprit = origin[name]
                    break
            if culprit is not None:
                break
        if culprit is not None:
            break
    first_line = next((line for line in text.splitlines() if line.strip()), type(error).__name__)
    what = f"unsupported TensorFlow ops {ops}" if ops else first_line
    if culprit is not None:
        return ValueError(
            f"Layer {culprit.name!r} ({type(culprit).__name__}) cannot be converted to TFLite "
            f"builtin ops in mode={mode!r}: {what}."
        )
    return ValueError(f"The TFLite converter failed in mode={mode!r}: {what}.")
