"""Running exported files under LiteRT: predictions, accuracy and latency, parity with Keras.

The interpreter is `ai_edge_litert.interpreter.Interpreter` (imported on first use). Integer
inputs/outputs of a fully quantized file are (de)quantized with the file's own scale and zero point.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import keras
import numpy as np

from keras_hessian._validation import check_int
from keras_hessian.export._checks import check_model

__all__ = ["evaluate_tflite", "format_parity_report", "parity_report", "predict_tflite"]


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
    batch_size = check_int("batch_size", batch_size)
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
        data: `(x, y)` with integer labels `y` of shape `(n,)` or `(n, 1)`, or one-hot labels.
        latency_examples: how many batch-1 calls the median is taken over.
        num_threads: interpreter threads (`None`: LiteRT's default).

    Returns:
        `{"accuracy", "latency_ms", "file_bytes", "num_examples"}`.
    """
    latency_examples = check_int("latency_examples", latency_examples)
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
    check_model(model)
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
        if y.ndim == 2 and y.shape[-1] == 1:  # a column of class indices, as Keras accepts
            y = y[:, 0]
        elif y.ndim == 2:  # one-hot (or soft) rows
            y = np.argmax(y, axis=-1)
        if y.shape != (len(x),):
            raise ValueError(
                f"data labels must have one entry per input ({len(x)}). Received shape {y.shape}."
            )
    return x, y


def _open_interpreter(path: Any, num_threads: int | None):
    from ai_edge_litert.interpreter import Interpreter

    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise ValueError(f"path must be an existing .tflite file. Received path={path!r}.")
    interpreter = Interpreter(model_path=os.fspath(path), num_threads=num_threads)
    try:
        interpreter.allocate_tensors()
    except RuntimeError as error:
        if "delegate" not in str(error).lower():
            raise
        # LiteRT's default XNNPACK delegate refuses some valid files (sparse float32
        # FullyConnected weights, `to_tflite(sparse=True)`): run them on the builtin kernels.
        from ai_edge_litert.interpreter import OpResolverType

        interpreter = Interpreter(
            model_path=os.fspath(path),
            num_threads=num_threads,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
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
    if scale == 0:  # an integer input that is not quantized (token ids): passed as integers
        return np.asarray(x).astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.dtype(detail["dtype"]) == np.float32:
        return y.copy()
    scale, zero_point = detail["quantization"]
    if scale == 0:  # not quantized: integer outputs as they are
        return y.copy()
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
