"""TFLite export for edge devices: conversion, LiteRT evaluation, parity with the Keras model.

Conversion goes through `tf.lite.TFLiteConverter.from_keras_model` on a float32 inference copy
of the model: quantized layers (binary, ternary-residual, DFP-16) become plain `Dense` / `Conv`
layers whose kernel is the quantized kernel folded into a constant (plus the layer's input
quantizer, as ordinary TFLite ops), and layers under a bfloat16 policy are rebuilt in float32
(TFLite has no bfloat16 kernels). The user's model is never changed. Files are written
atomically: a temporary file in the target directory, then `os.replace`, so the target is
either the complete new file or untouched.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_hessian._backend import require_tensorflow_backend

__all__ = [
    "MODES",
    "auto_mode",
    "evaluate_tflite",
    "format_parity_report",
    "inference_copy",
    "narrow_integer_weights",
    "parity_report",
    "predict_tflite",
    "to_tflite",
]

MODES = ("auto", "float32", "float16", "dynamic_int8", "int8", "int16x8")
_MODES_NEEDING_DATA = ("int8", "int16x8")
# Bits up to which a quantized kernel is represented exactly (binary, ternary) or nearly
# (ternary residual r >= 2) by int8 with one scale per output channel.
_INT8_EXACT_BITS = 8


def to_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    mode: str = "auto",
    representative_data: Any = None,
    narrow_weights: bool = True,
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
      kernels quantize activations on the fly). The converter leaves weight tensors of
      fewer than 1,024 elements in float32. With `narrow_weights`, int8 tensors whose levels
      fit are re-stored in int2/int4 (`narrow_integer_weights`), and a ternary-residual
      Dense becomes one int2 matmul per (term, block) where that makes the file smaller.
    - `"int8"`: int8 weights and activations, calibrated on `representative_data`; the file
      keeps float32 inputs and outputs.
    - `"int16x8"`: int8 weights (TFLite has no int16 weights), int16 activations, calibrated
      on `representative_data`. In `"int8"` and `"int16x8"` the calibrated fixed-point
      activations replace a DFP-16 layer's dynamic input quantizer.
    - `"auto"` (default): `"float32"` for a model without quantized layers;
      `"dynamic_int8"` when every quantized kernel has at most 8 bits. There binary weights
      +-alpha_c (output channel c) are exactly the int8 levels +-127 at scale alpha_c / 127,
      hence exactly +-1 in int2 at scale alpha_c: the file takes ~2 bits per weight with no
      weight error. Block-wise ternary(-residual) weights, whose alphas vary by block
      within a channel, are rounded to the channel's int8 grid (error at most
      max|W[..., c]| / 254 per weight) unless split into int2 pieces as above.
      `"float16"` when a kernel has more bits (DFP-16): int16x8 would cut the 16-bit DFP
      kernel to int8, so it is kept as IEEE half instead (11 significant bits rather than
      a 15-bit mantissa under one shared exponent, at the same 2 bytes per weight).

    References: TFLite post-training quantization (Jacob et al., 2018, "Quantization and
    Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference").

    Example:

    ```python
    from keras_hessian.export import to_tflite, parity_report
    to_tflite(model, "model.tflite", mode="int8", representative_data=x_train[:200])
    print(parity_report(model, "model.tflite", (x_test, y_test)))
    ```

    Args:
        model: a built Keras 3 model (Sequential or functional; a subclassed model converts
            only if it holds no quantized layer and no bfloat16 policy).
        path: the `.tflite` file to write. Its directory must exist and be writable.
        mode: one of `MODES` (see above).
        representative_data: calibration inputs for `"int8"` / `"int16x8"` (required there):
            an array of examples (batch axis first), an `(x, y)` tuple, a `tf.data.Dataset`
            of examples or batches, or a TFLite-style callable returning an iterable of
            `[input_batch]` lists. A few hundred examples are enough.
        narrow_weights: in `"dynamic_int8"` mode, store an int8 weight tensor in int4 or
            int2 when that is lossless (see `narrow_integer_weights`): binary kernels
            (+-127 in int8) then take 2 bits per weight.

    Returns:
        The path written, as a `pathlib.Path`.

    Raises:
        TypeError: `model` is not a Keras model, or `path` is not a path.
        ValueError: an unknown `mode`, missing/ill-shaped `representative_data`, an
            unwritable `path`, or a layer the converter cannot convert (the message names it).
    """
    require_tensorflow_backend()
    _check_model(model)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}. Received mode={mode!r}.")
    target = _check_output_path(path)
    keep_float_layers = mode == "auto"
    if mode == "auto":
        mode = auto_mode(model)
    if mode in _MODES_NEEDING_DATA and representative_data is None:
        raise ValueError(
            f"mode={mode!r} calibrates activation ranges and needs representative_data "
            "(a few hundred input examples). Received representative_data=None."
        )
    representative = (
        _representative_dataset(representative_data, model)
        if mode in _MODES_NEEDING_DATA
        else None
    )
    inference_model, origin = _inference_copy(
        model,
        split_ternary=mode == "dynamic_int8" and narrow_weights,
        static_activations=mode in _MODES_NEEDING_DATA,
    )
    converter = _make_converter(inference_model, mode, representative)
    try:
        # The converter's SavedModel step prints its endpoints; keep stdout for the user.
        # Float inputs/outputs are kept on purpose: the converter's warning about missing
        # input statistics does not apply.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            flatbuffer = converter.convert()
    except Exception as error:  # the converter raises several unrelated types
        raise _conversion_error(error, inference_model, origin, mode) from error
    if len(flatbuffer) < 8 or flatbuffer[4:8] != b"TFL3":
        raise ValueError(f"The TFLite converter returned no valid flatbuffer for mode={mode!r}.")
    if mode == "dynamic_int8" and keep_float_layers:
        flatbuffer = _restore_float_kernels(flatbuffer, _float_kernels(model))
    if mode == "dynamic_int8" and narrow_weights:
        flatbuffer = narrow_integer_weights(flatbuffer)
    _write_atomically(target, flatbuffer)
    return target


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
    _check_model(model)
    return _inference_copy(model)[0]


def predict_tflite(
    path: str | os.PathLike, x: Any, *, batch_size: int = 256, num_threads: int | None = None
) -> np.ndarray:
    """Run a single-input, single-output TFLite file on `x` with the LiteRT interpreter.

    Use it to get the raw outputs (logits) of an exported file; integer inputs/outputs of a
    fully quantized file are (de)quantized with the file's own scale and zero point.

    Example:

    ```python
    logits = predict_tflite("model.tflite", x_test)
    ```

    Args:
        path: a `.tflite` file.
        x: inputs, batch axis first.
        batch_size: examples per interpreter call (the file's batch axis must be dynamic for
            more than 1).
        num_threads: interpreter threads (`None`: LiteRT's default).

    Returns:
        float32 outputs, batch axis first.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int. Received batch_size={batch_size!r}.")
    interpreter, input_detail, output_detail = _open_interpreter(path, num_threads)
    x = _as_inputs(x, input_detail, "x")
    if input_detail["shape_signature"][0] != -1:
        batch_size = int(input_detail["shape"][0])
    outputs = []
    current = None
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        if chunk.shape != current:
            interpreter.resize_tensor_input(input_detail["index"], list(chunk.shape))
            interpreter.allocate_tensors()
            current = chunk.shape
        interpreter.set_tensor(input_detail["index"], _quantize(chunk, input_detail))
        interpreter.invoke()
        outputs.append(_dequantize(interpreter.get_tensor(output_detail["index"]), output_detail))
    return np.concatenate(outputs, axis=0)


def evaluate_tflite(
    path: str | os.PathLike,
    data: Any,
    *,
    latency_examples: int = 100,
    num_threads: int | None = None,
) -> dict[str, float]:
    """Accuracy, median batch-1 latency and file size of a TFLite classifier under LiteRT.

    Use it to check an exported file before shipping it. Accuracy is the top-1 accuracy of
    the file's outputs (logits or probabilities) on all of `data`; latency is the median
    wall time of one batch-1 `invoke` (input copy and output read included) over the first
    `latency_examples` examples, after a short warm-up.

    Example:

    ```python
    evaluate_tflite("model.tflite", (x_test, y_test))
    # {'accuracy': 0.97, 'latency_ms': 0.02, 'file_bytes': 43664, 'num_examples': 450}
    ```

    Args:
        path: a `.tflite` file.
        data: `(x, y)` with integer labels `y` (or one-hot labels).
        latency_examples: how many batch-1 calls the median is taken over.
        num_threads: interpreter threads (`None`: LiteRT's default).

    Returns:
        `{"accuracy", "latency_ms", "file_bytes", "num_examples"}`.
    """
    if not isinstance(latency_examples, int) or latency_examples < 1:
        raise ValueError(
            "latency_examples must be a positive int. "
            f"Received latency_examples={latency_examples!r}."
        )
    x, y = _split_data(data, need_labels=True)
    outputs = predict_tflite(path, x, num_threads=num_threads)
    accuracy = float(np.mean(np.argmax(outputs, axis=-1) == y))

    interpreter, input_detail, output_detail = _open_interpreter(path, num_threads)
    x = _as_inputs(x, input_detail, "data")
    interpreter.resize_tensor_input(input_detail["index"], [1, *x.shape[1:]])
    interpreter.allocate_tensors()
    samples = [_quantize(x[i : i + 1], input_detail) for i in range(min(latency_examples, len(x)))]
    for sample in samples[:10]:  # warm-up: first invokes allocate and pack weights
        interpreter.set_tensor(input_detail["index"], sample)
        interpreter.invoke()
    times = []
    for sample in samples:
        start = time.perf_counter()
        interpreter.set_tensor(input_detail["index"], sample)
        interpreter.invoke()
        interpreter.get_tensor(output_detail["index"])
        times.append(time.perf_counter() - start)
    return {
        "accuracy": accuracy,
        "latency_ms": 1000.0 * statistics.median(times),
        "file_bytes": os.path.getsize(path),
        "num_examples": len(x),
    }


def parity_report(
    model: keras.Model,
    path: str | os.PathLike,
    data: Any,
    *,
    batch_size: int = 256,
    num_threads: int | None = None,
) -> dict[str, float]:
    """Compare a TFLite file with the Keras model it came from, output by output.

    Use it after `to_tflite` to see what the conversion cost: the largest absolute
    difference of the outputs (logits) and the share of examples whose top-1 class agrees.
    The Keras model runs in inference mode (`training=False`) and is not changed.

    Example:

    ```python
    report = parity_report(model, "model.tflite", (x_test, y_test))
    assert report["top1_agreement"] > 0.99
    ```

    Args:
        model: the Keras model that was exported.
        path: the `.tflite` file.
        data: inputs `x`, or `(x, y)` to also report both accuracies.
        batch_size: examples per call, for Keras and LiteRT alike.
        num_threads: interpreter threads (`None`: LiteRT's default).

    Returns:
        `{"num_examples", "max_abs_logit_diff", "mean_abs_logit_diff", "top1_agreement"}`,
        plus `"keras_accuracy"` and `"litert_accuracy"` when labels are given.
    """
    _check_model(model)
    x, y = _split_data(data, need_labels=False)
    litert = predict_tflite(path, x, batch_size=batch_size, num_threads=num_threads)
    reference = np.concatenate(
        [
            keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False)).astype(
                np.float32
            )
            for i in range(0, len(x), batch_size)
        ],
        axis=0,
    )
    if reference.shape != litert.shape:
        raise ValueError(
            f"The model's outputs have shape {reference.shape} but the file at path={str(path)!r} "
            f"gives {litert.shape}: is it the export of this model?"
        )
    difference = np.abs(reference - litert)
    keras_top1 = np.argmax(reference, axis=-1)
    litert_top1 = np.argmax(litert, axis=-1)
    report = {
        "num_examples": len(x),
        "max_abs_logit_diff": float(difference.max()),
        "mean_abs_logit_diff": float(difference.mean()),
        "top1_agreement": float(np.mean(keras_top1 == litert_top1)),
    }
    if y is not None:
        report["keras_accuracy"] = float(np.mean(keras_top1 == y))
        report["litert_accuracy"] = float(np.mean(litert_top1 == y))
    return report


def format_parity_report(report: dict[str, float], path: str | os.PathLike | None = None) -> str:
    """Render a `parity_report` (and optionally the file size) as aligned text lines."""
    lines = []
    if path is not None:
        lines.append(f"{'file':<20} {path} ({os.path.getsize(path):,} bytes)")
    for key, value in report.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<20} {text}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- validation


def _check_model(model: Any) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"model must be a Keras 3 keras.Model. Received model of type {type(model).__name__}."
        )
    if not model.built:
        raise ValueError(
            f"model must be built (called once or given an Input). Received unbuilt {model.name!r}."
        )


def _check_output_path(path: Any) -> pathlib.Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike. Received path={path!r}.")
    target = pathlib.Path(path).expanduser().absolute()
    if target.is_dir():
        raise ValueError(f"path must be a file, not a directory. Received path={str(path)!r}.")
    if not target.parent.is_dir():
        raise ValueError(
            f"path must be in an existing directory; {str(target.parent)!r} does not exist or is "
            f"not a directory. Received path={str(path)!r}."
        )
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise ValueError(
            f"path must be in a writable directory; {str(target.parent)!r} is not writable. "
            f"Received path={str(path)!r}."
        )
    return target


def _split_data(data: Any, need_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif need_labels:
        raise ValueError(
            "data must be a tuple (x, y) of inputs and labels. "
            f"Received data of type {type(data).__name__}."
        )
    else:
        x, y = data, None
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(
            f"data inputs must be a non-empty array with a batch axis. Received shape {x.shape}."
        )
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 2:  # one-hot
            y = np.argmax(y, axis=-1)
        if y.shape != (len(x),):
            raise ValueError(
                f"data labels must have one entry per input ({len(x)}). Received shape {y.shape}."
            )
    return x, y


# ------------------------------------------------------------------------ inference copy


def _is_quantized_layer(layer: keras.layers.Layer) -> bool:
    """The export protocol of keras_hessian.layers: a folded kernel and a kernel quantizer."""
    return callable(getattr(layer, "quantized_kernel", None)) and hasattr(
        layer, "kernel_quantizer"
    )


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return list(model._flatten_layers(include_self=False, recursive=True))


def _is_float32(layer: keras.layers.Layer) -> bool:
    policy = layer.dtype_policy
    return policy.compute_dtype == "float32" and policy.variable_dtype == "float32"


def auto_mode(model: keras.Model) -> str:
    """The mode `to_tflite(model, path)` picks: the narrowest storage that keeps the weights.

    `"float32"` without quantized layers; `"dynamic_int8"` when every quantized kernel has
    at most 8 bits (binary, ternary, ternary residual); `"float16"` otherwise (DFP-16).

    Example:

    ```python
    auto_mode(quantize_model(model, "binary"))  # 'dynamic_int8'
    ```

    Args:
        model: a built Keras model.
    """
    _check_model(model)
    bits = [
        getattr(layer.kernel_quantizer, "precision", 32)
        for layer in _all_layers(model)
        if _is_quantized_layer(layer)
    ]
    if not bits:
        return "float32"
    return "dynamic_int8" if max(bits) <= _INT8_EXACT_BITS else "float16"


def _is_graph_model(model: keras.Model) -> bool:
    return isinstance(model, keras.Sequential) or type(model).__name__ == "Functional" or (
        getattr(model, "_is_graph_network", False)
    )


class _InputQuantizer(keras.layers.Layer):
    """Applies a quantized layer's input quantizer; exists only inside an inference copy."""

    def __init__(self, quantizer: Callable, **kwargs):
        super().__init__(**kwargs)
        self.quantizer = quantizer

    def call(self, inputs):
        return self.quantizer(inputs, training=False)


def _plain_layer(layer: keras.layers.Layer, name: str) -> tuple[keras.layers.Layer, list]:
    """A plain Keras Dense/Conv layer holding `layer.quantized_kernel()`, and its weights."""
    kernel = np.asarray(keras.ops.convert_to_numpy(layer.quantized_kernel()), dtype=np.float32)
    weights = [kernel]
    if layer.use_bias:
        weights.append(np.asarray(keras.ops.convert_to_numpy(layer.bias), dtype=np.float32))
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
    if static_activations and type(quantizer).__name__ == "DFP16":
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


# The converter leaves smaller weight tensors in float32 under dynamic-range quantization.
_DYNAMIC_RANGE_MIN_ELEMENTS = 1024
_PIECE_BYTES = 600


class _TernaryTermsDense(keras.layers.Layer):
    """A ternary-residual Dense as a sum of per-(term, block) matmuls; inference copy only.

    `y = activation(sum_{t <= k} sum_b x[..., block b] @ T_{t,b} + bias)`, where each
    `T_{t,b}` holds one ternary term on one block of input rows: its entries are
    `{-alpha, 0, +alpha}` with one alpha per output column, i.e. exactly an int2 tensor with
    a per-channel scale once the converter and `narrow_integer_weights` have stored it.
    """

    def __init__(self, pieces, bias, activation, **kwargs):
        super().__init__(**kwargs)
        self.pieces = pieces  # [(start, stop, kernel)] as numpy, captured as constants
        self.bias_values = bias
        self.activation = activation

    def call(self, inputs):
        outputs = None
        for start, stop, kernel in self.pieces:
            part = keras.ops.matmul(inputs[..., start:stop], keras.ops.convert_to_tensor(kernel))
            outputs = part if outputs is None else outputs + part
        if self.bias_values is not None:
            outputs = outputs + keras.ops.convert_to_tensor(self.bias_values)
        return outputs if self.activation is None else self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.pieces[0][2].shape[-1])


def _ternary_pieces(layer: keras.layers.Layer):
    """(pieces, bias, activation) of a ternary-residual Dense, or None if splitting won't pay.

    Needs `ternary_terms()`, `active_residuals` and `kernel_quantizer.block_size` (the
    layers in keras_hessian.layers.ternary have them), a 2-D kernel, and blocks large
    enough that the converter quantizes every piece (>= 1,024 weights each).
    """
    block_size = getattr(getattr(layer, "kernel_quantizer", None), "block_size", None)
    if not (
        _is_quantized_layer(layer)
        and hasattr(layer, "units")
        and callable(getattr(layer, "ternary_terms", None))
        and isinstance(block_size, int)
    ):
        return None
    active = int(layer.active_residuals)
    terms = [np.asarray(t, dtype=np.float32) for t in layer.ternary_terms()][: active + 1]
    folded = np.asarray(layer.quantized_kernel(), dtype=np.float32)
    rows, units = folded.shape if folded.ndim == 2 else (0, 0)
    if folded.ndim != 2 or not np.allclose(sum(terms), folded, rtol=1e-6, atol=1e-7):
        return None  # not the decomposition we expect: use the folded kernel instead
    bounds = [(start, min(start + block_size, rows)) for start in range(0, rows, block_size)]
    if any((stop - start) * units < _DYNAMIC_RANGE_MIN_ELEMENTS for start, stop in bounds):
        return None
    # Each piece costs its int2 weights, a float32 scale and an int64 zero point per output
    # channel, and about 600 bytes of ops and tensor records (measured). The split pays only
    # while that stays below one int8 copy of the folded kernel: with 64-row blocks, for
    # k = 0 (plain block-wise ternary) but not for k >= 1.
    piece_overhead = len(bounds) * (units * 12 + _PIECE_BYTES)
    pieces_bytes = len(terms) * (rows * units / 4 + piece_overhead)
    if pieces_bytes >= rows * units + units * 12:
        return None
    pieces = [(start, stop, term[start:stop]) for term in terms for start, stop in bounds]
    bias = np.asarray(layer.bias, dtype=np.float32) if layer.use_bias else None
    return pieces, bias, layer.activation


def _float32_weight(weight: np.ndarray) -> np.ndarray:
    """Float weights (bfloat16 and float16 included) as float32; others (counters) as is."""
    weight = np.asarray(weight)
    if weight.dtype.kind == "f" or weight.dtype.name == "bfloat16":
        return weight.astype(np.float32)
    return weight


def _float32_config(config: dict) -> dict:
    config = dict(config)
    if "dtype" in config:
        config["dtype"] = "float32"
    return config


def _inference_copy(
    model: keras.Model, split_ternary: bool = False, static_activations: bool = False
) -> tuple[keras.Model, dict[str, keras.layers.Layer]]:
    """The float32 inference copy, and a map from its layer names to the user's layers.

    `split_ternary`: ternary-residual Dense layers become per-(term, block) matmuls (for
    `"dynamic_int8"`). `static_activations`: DFP-16 input quantizers are left out (for
    `"int8"` / `"int16x8"`, whose calibrated activation quantization takes their place).
    """
    layers = _all_layers(model)
    needs_rebuild = any(_is_quantized_layer(layer) or not _is_float32(layer) for layer in layers)
    if not _is_graph_model(model):
        if needs_rebuild:
            raise ValueError(
                "Exporting quantized layers or a bfloat16 policy rebuilds the model, which needs "
                "a Sequential or functional model. Received a subclassed model of class "
                f"{type(model).__name__}; rebuild it as a functional model first."
            )
        return model, {layer.name: layer for layer in layers}

    weights_to_copy: list[tuple[keras.layers.Layer, list]] = []
    origin: dict[str, keras.layers.Layer] = {}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        terms = _ternary_pieces(layer) if split_ternary else None
        if terms is not None or _is_quantized_layer(layer):
            # The user's layer name stays on the outermost replacement (error messages).
            kept = _kept_input_quantizer(layer, static_activations)
            core_name = layer.name if kept is None else f"{layer.name}_core"
            if terms is not None:
                core = _TernaryTermsDense(*terms, name=core_name, dtype="float32")
                weights = []
            else:
                core, weights = _plain_layer(layer, core_name)
            new, target = _with_input_quantizer(layer, core, static_activations), core
            for sublayer in [new, *getattr(new, "layers", [])]:
                origin[sublayer.name] = layer
        else:
            new = type(layer).from_config(_float32_config(layer.get_config()))
            weights = [_float32_weight(w) for w in layer.get_weights()]
            target = new
            origin[new.name] = layer
        weights_to_copy.append((target, weights))
        return new

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for target, weights in weights_to_copy:
        if weights:
            target.set_weights(weights)
    origin.setdefault(copy.name, model)
    return copy, origin


# ----------------------------------------------------------------------------- conversion


def _input_shape(model: keras.Model) -> tuple:
    count = len(model.inputs) if hasattr(model, "inputs") and model.inputs else 1
    if count != 1:
        raise ValueError(
            f"to_tflite calibrates single-input models only. Received a model with {count} "
            "inputs; pass representative_data as a TFLite-style callable instead."
        )
    return tuple(model.input_shape)


def _representative_dataset(data: Any, model: keras.Model) -> Callable[[], Iterable[list]]:
    if callable(data) and not isinstance(data, (np.ndarray, tf.Tensor, tf.data.Dataset)):
        return data
    expected = _input_shape(model)
    if isinstance(data, tf.data.Dataset):

        def from_dataset():
            for element in data:
                x = element[0] if isinstance(element, (tuple, list)) else element
                x = np.asarray(x, dtype=np.float32)
                batch = x if x.ndim == len(expected) else x[None]
                for i in range(len(batch)):
                    yield [batch[i : i + 1]]

        return from_dataset
    if isinstance(data, (tuple, list)) and len(data) == 2:
        data = data[0]
    x = np.asarray(data, dtype=np.float32)
    if x.ndim != len(expected) or len(x) == 0 or any(
        want is not None and want != got for want, got in zip(expected[1:], x.shape[1:])
    ):
        raise ValueError(
            f"representative_data must be a non-empty batch of model inputs of shape {expected}. "
            f"Received shape {x.shape}."
        )

    def from_array():
        for i in range(len(x)):
            yield [x[i : i + 1]]

    return from_array


def _make_converter(model: keras.Model, mode: str, representative) -> tf.lite.TFLiteConverter:
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


def _write_atomically(target: pathlib.Path, content: bytes) -> None:
    """Write `content` to `target` completely or not at all (temp file + os.replace)."""
    descriptor, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates 0600; give the usual mode
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


# ------------------------------------------------------------------ narrow weight storage

# Builtin ops whose filter (input 1) LiteRT reads in int4; int2 only for FullyConnected
# (measured with ai-edge-litert 2.3: outputs identical to the int8 file).
_INT4_FILTER_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")
_INT2_FILTER_OPS = ("FULLY_CONNECTED",)


def narrow_integer_weights(flatbuffer: bytes) -> bytes:
    """Re-store int8 filter tensors in int4 or int2 where that loses nothing.

    Use it on a `"dynamic_int8"` file (`to_tflite` does by default) to shrink binary and
    ternary kernels below the int8 floor of 1/4 of float32. For a filter with int8 levels
    `q[..., c]` and scale `s_c` per output channel `c`, let `g_c = gcd(|q[..., c]|)`; if every
    `|q / g_c| <= 1` (and the op is FullyConnected) the tensor becomes int2 with scale
    `s_c * g_c`, if every `|q / g_c| <= 7` it becomes int4 (TFLite's packed layout, lowest
    bits first). The dequantized weights `q * s_c = (q / g_c) * (s_c * g_c)` are unchanged up
    to one float32 rounding of the scale. A +-alpha_c binary kernel is +-127 in int8, hence
    +-1 in int2. Only constant filters read by one op are touched; bias stays as it was (in
    the hybrid kernels of `"dynamic_int8"` it is float32, so a new weight scale needs no
    bias change). If LiteRT cannot run the narrowed file, or its outputs differ from the
    int8 file on a probe batch, the int8 file is returned unchanged.

    Example:

    ```python
    small = narrow_integer_weights(pathlib.Path("binary.tflite").read_bytes())
    ```

    Args:
        flatbuffer: the bytes of a `.tflite` file.

    Returns:
        The bytes of the narrowed file (or `flatbuffer` itself when nothing narrows).
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    changed = False
    for tensor, buffer, role in _constant_filters(model):
        changed |= _narrow_tensor(tensor, buffer, role, schema)
    if not changed:
        return flatbuffer
    narrowed = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return narrowed if _same_outputs(flatbuffer, narrowed) else flatbuffer


def _constant_filters(model):
    """(tensor, buffer, op name) of constant filters read by exactly one conv/FC op."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python import schema_util

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    for subgraph in model.subgraphs:
        readers: dict[int, list[str]] = {}
        for operator in subgraph.operators:
            code = schema_util.get_builtin_code_from_operator_code(
                model.operatorCodes[operator.opcodeIndex]
            )
            for position, tensor_index in enumerate(operator.inputs):
                role = names.get(code, "?") if position == 1 else "other"
                readers.setdefault(int(tensor_index), []).append(role)
        buffer_users: dict[int, int] = {}
        for tensor in subgraph.tensors:
            buffer_users[tensor.buffer] = buffer_users.get(tensor.buffer, 0) + 1
        for index, tensor in enumerate(subgraph.tensors):
            roles = readers.get(index, [])
            buffer = model.buffers[tensor.buffer]
            if (
                len(roles) == 1
                and roles[0] in _INT4_FILTER_OPS
                and buffer_users.get(tensor.buffer, 0) == 1
                and buffer.data is not None
            ):
                yield tensor, buffer, roles[0]


def _float_kernels(model: keras.Model) -> list[np.ndarray]:
    """The kernels of `model`'s float (not quantized) layers, float32."""
    kernels = []
    for layer in _all_layers(model):
        kernel = getattr(layer, "kernel", None)
        if _is_quantized_layer(layer) or kernel is None or len(kernel.shape) < 2:
            continue
        kernels.append(_float32_weight(keras.ops.convert_to_numpy(kernel)))
    return kernels


def _restore_float_kernels(flatbuffer: bytes, kernels: list[np.ndarray]) -> bytes:
    """Put the exact float32 kernels of float layers back where the converter made int8.

    Dynamic-range quantization applies to every weight tensor of 1,024 elements or more;
    in `"auto"` mode only the quantized layers should be narrowed, so a float layer (kept
    in float32 on purpose: a first/last layer, a HAWQ-sensitive one) gets its kernel back.
    An int8 filter is identified as a float layer's kernel when every dequantized weight is
    within half an int8 step of it (TFLite layout: output channels first).
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    if not kernels:
        return flatbuffer
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    changed = False
    for tensor, buffer, _ in _constant_filters(model):
        quantization = tensor.quantization
        if tensor.type != schema.TensorType.INT8 or quantization is None or (
            quantization.scale is None
        ):
            continue
        shape = tuple(int(d) for d in tensor.shape)
        values = np.frombuffer(bytes(bytearray(buffer.data)), dtype=np.int8).reshape(shape)
        scales = np.asarray(quantization.scale, dtype=np.float32)
        broadcast = [1] * len(shape)
        if len(scales) > 1:
            broadcast[int(quantization.quantizedDimension)] = -1
        step = scales.reshape(broadcast)
        dequantized = values.astype(np.float32) * step
        for kernel in kernels:
            if kernel.size != values.size:
                continue
            layouts = (np.moveaxis(kernel, -1, 0).reshape(shape), kernel.reshape(shape))
            match = next(
                (
                    layout
                    for layout in layouts
                    if np.all(np.abs(layout - dequantized) <= 0.5001 * step + 1e-30)
                ),
                None,
            )
            if match is not None:
                buffer.data = np.frombuffer(
                    np.ascontiguousarray(match, dtype="<f4").tobytes(), dtype=np.uint8
                )
                tensor.type = schema.TensorType.FLOAT32
                tensor.quantization = None
                changed = True
                break
    if not changed:
        return flatbuffer
    restored = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return restored if _runs(restored) else flatbuffer


def _runs(content: bytes) -> bool:
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=content)
        interpreter.allocate_tensors()
        interpreter.invoke()
    except (RuntimeError, ValueError):
        return False
    return True


def _narrow_tensor(tensor, buffer, role: str, schema) -> bool:
    quantization = tensor.quantization
    if (
        tensor.type != schema.TensorType.INT8
        or buffer.data is None
        or quantization is None
        or quantization.scale is None
        or len(tensor.shape) < 2
    ):
        return False
    values = np.frombuffer(bytes(bytearray(buffer.data)), dtype=np.int8).reshape(tensor.shape)
    scales = np.asarray(quantization.scale, dtype=np.float32)
    axis = int(quantization.quantizedDimension)
    per_channel = np.moveaxis(values.astype(np.int32), axis, 0).reshape(len(scales), -1)
    if len(scales) == 1:
        per_channel = per_channel.reshape(1, -1)
    divisors = np.maximum(np.gcd.reduce(np.abs(per_channel), axis=1), 1)
    levels = per_channel // divisors[:, None]
    largest = int(np.abs(levels).max())
    if largest <= 1 and role in _INT2_FILTER_OPS:
        bits, kind = 2, schema.TensorType.INT2
    elif largest <= 7:
        bits, kind = 4, schema.TensorType.INT4
    else:
        return False
    restored = np.moveaxis(
        levels.reshape((len(scales),) + tuple(np.moveaxis(values, axis, 0).shape[1:])), 0, axis
    )
    flat = restored.reshape(-1).astype(np.int8)
    per_byte = 8 // bits
    flat = np.concatenate([flat, np.zeros(-len(flat) % per_byte, dtype=np.int8)])
    nibbles = (flat.astype(np.uint8) & np.uint8((1 << bits) - 1)).reshape(-1, per_byte)
    packed = np.zeros(len(nibbles), dtype=np.uint8)
    for position in range(per_byte):  # lowest bits hold the first element
        packed |= (nibbles[:, position] << np.uint8(bits * position)).astype(np.uint8)
    buffer.data = packed
    quantization.scale = (scales * divisors.astype(np.float32)).tolist()
    tensor.type = kind
    return True


def _same_outputs(reference: bytes, candidate: bytes) -> bool:
    """Whether LiteRT runs `candidate` and gives `reference`'s outputs on a probe batch."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        outputs = []
        for content in (reference, candidate):
            interpreter = Interpreter(model_content=content)
            interpreter.allocate_tensors()
            for detail in interpreter.get_input_details():
                probe = np.random.default_rng(0).normal(size=detail["shape"])
                interpreter.set_tensor(detail["index"], probe.astype(detail["dtype"]))
            interpreter.invoke()
            outputs.append(
                [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
            )
    except (RuntimeError, ValueError):
        return False
    return all(
        np.allclose(a, b, rtol=1e-4, atol=1e-5 * (1.0 + float(np.abs(a).max())))
        for a, b in zip(*outputs)
    )


# ---------------------------------------------------------------------------- interpreter


def _open_interpreter(path: Any, num_threads: int | None):
    from ai_edge_litert.interpreter import Interpreter

    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise ValueError(f"path must be an existing .tflite file. Received path={path!r}.")
    interpreter = Interpreter(model_path=os.fspath(path), num_threads=num_threads)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            "Only single-input, single-output files are evaluated here. Received a file with "
            f"{len(inputs)} inputs and {len(outputs)} outputs at path={str(path)!r}."
        )
    return interpreter, inputs[0], outputs[0]


def _as_inputs(x: Any, detail: dict, argument: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    expected = tuple(int(d) for d in detail["shape_signature"][1:])
    if x.ndim != len(expected) + 1 or any(
        want != -1 and want != got for want, got in zip(expected, x.shape[1:])
    ):
        raise ValueError(
            f"{argument} must hold inputs of shape (batch, {', '.join(map(str, expected))}) "
            f"for this file. Received shape {x.shape}."
        )
    return x


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.dtype(detail["dtype"]) == np.float32:
        return y.copy()
    scale, zero_point = detail["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
