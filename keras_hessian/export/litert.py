"""Running exported files under LiteRT: predictions, accuracy and latency, parity with Keras.

The interpreter is `ai_edge_litert.interpreter.Interpreter` (imported on first use). Integer
inputs/outputs of a fully quantized file are (de)quantized with the file's own scale and zero point.
A file with several inputs (a dict-input KerasHub model) is fed a dict of arrays by name: each
key is matched to the name of the file's serving-signature input (the input's name in the Keras
model, which `to_tflite` keeps), or else to the input tensor's name without TFLite's
`serving_default_` prefix and `:0` suffix.
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
    """Run a single-output TFLite file on `x` with the LiteRT interpreter.

    Use it to get the raw outputs (logits) of an exported file; integer inputs/outputs of a
    fully quantized file are (de)quantized with the file's own scale and zero point.

    Example:

    ```python
    logits = predict_tflite("model.tflite", x_test)
    ```

    Args:
        path: a `.tflite` file.
        x: inputs, batch axis first; for a file with several inputs, a dict of such arrays
            keyed by input name (e.g. `{"token_ids": ..., "segment_ids": ..., "padding_mask": ...}`).
        batch_size: examples per interpreter call (the file's batch axis must be dynamic for
            more than 1).
        num_threads: interpreter threads (`None`: LiteRT's default).

    Returns:
        float32 outputs, batch axis first.
    """
    batch_size = check_int("batch_size", batch_size)
    interpreter, input_details, output_detail = _open_interpreter(path, num_threads)
    x = _as_inputs(x, input_details, "x")
    if any(detail["shape_signature"][0] != -1 for detail in input_details.values()):
        batch_size = int(next(iter(input_details.values()))["shape"][0])
    outputs = []
    current = None
    for start in range(0, _length(x), batch_size):
        chunk = {name: values[start : start + batch_size] for name, values in x.items()}
        shapes = [values.shape for values in chunk.values()]
        if shapes != current:
            for name, detail in input_details.items():
                interpreter.resize_tensor_input(detail["index"], list(chunk[name].shape))
            interpreter.allocate_tensors()
            current = shapes
        for name, detail in input_details.items():
            interpreter.set_tensor(detail["index"], _quantize(chunk[name], detail))
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
        data: `(x, y)` with integer labels `y` of shape `(n,)` or `(n, 1)`, or one-hot labels;
            `x` a dict of arrays by input name for a file with several inputs.
        latency_examples: how many batch-1 calls the median is taken over.
        num_threads: interpreter threads (`None`: LiteRT's default).

    Returns:
        `{"accuracy", "latency_ms", "file_bytes", "num_examples"}`.
    """
    latency_examples = check_int("latency_examples", latency_examples)
    x, y = _split_data(data, need_labels=True)
    outputs = predict_tflite(path, x, num_threads=num_threads)
    _check_classes(outputs, path)
    accuracy = float(np.mean(np.argmax(outputs, axis=-1) == y))

    interpreter, input_details, output_detail = _open_interpreter(path, num_threads)
    x = _as_inputs(x, input_details, "data")
    for name, detail in input_details.items():
        interpreter.resize_tensor_input(detail["index"], [1, *x[name].shape[1:]])
    interpreter.allocate_tensors()
    samples = [
        {name: _quantize(x[name][i : i + 1], detail) for name, detail in input_details.items()}
        for i in range(min(latency_examples, _length(x)))
    ]

    def feed(sample):
        for name, detail in input_details.items():
            interpreter.set_tensor(detail["index"], sample[name])

    for sample in samples[:10]:  # warm-up: first invokes allocate and pack weights
        feed(sample)
        interpreter.invoke()
    times = []
    for sample in samples:
        start = time.perf_counter()
        feed(sample)
        interpreter.invoke()
        interpreter.get_tensor(output_detail["index"])
        times.append(time.perf_counter() - start)
    return {
        "accuracy": accuracy,
        "latency_ms": 1000.0 * statistics.median(times),
        "file_bytes": os.path.getsize(path),
        "num_examples": _length(x),
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
        data: inputs `x`, or `(x, y)` to also report both accuracies; `x` a dict of arrays by
            input name for a model with dict inputs (a KerasHub model), as the model takes it.
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
            keras.ops.convert_to_numpy(model(_rows(x, i, i + batch_size), training=False)).astype(
                np.float32
            )
            for i in range(0, _length(x), batch_size)
        ],
        axis=0,
    )
    if reference.shape != litert.shape:
        raise ValueError(
            f"The model's outputs have shape {reference.shape} but the file at path={str(path)!r} "
            f"gives {litert.shape}: is it the export of this model?"
        )
    _check_classes(litert, path)
    difference = np.abs(reference - litert)
    keras_top1 = np.argmax(reference, axis=-1)
    litert_top1 = np.argmax(litert, axis=-1)
    report = {
        "num_examples": _length(x),
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


def _length(x: np.ndarray | dict[str, np.ndarray]) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def _rows(x: np.ndarray | dict[str, np.ndarray], start: int, stop: int) -> np.ndarray | dict[str, np.ndarray]:
    return {key: values[start:stop] for key, values in x.items()} if isinstance(x, dict) else x[start:stop]


def _split_data(data: Any, need_labels: bool) -> tuple[np.ndarray | dict[str, np.ndarray], np.ndarray | None]:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif need_labels:
        raise ValueError(
            "data must be a tuple (x, y) of inputs and labels. "
            f"Received data of type {type(data).__name__}."
        )
    else:
        x, y = data, None
    if isinstance(x, dict):
        x = {key: np.asarray(values) for key, values in x.items()}
        lengths = {key: len(values) if values.ndim else 0 for key, values in x.items()}
        if not x or min(lengths.values()) == 0 or len(set(lengths.values())) != 1:
            raise ValueError(
                "data inputs given as a dict must hold non-empty arrays with the same batch size. "
                f"Received batch sizes {lengths}."
            )
    else:
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
        if y.shape != (_length(x),):
            raise ValueError(
                f"data labels must have one entry per input ({_length(x)}). Received shape {y.shape}."
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
    if len(outputs) != 1:
        raise ValueError(
            "Only single-output files are evaluated here. Received a file with "
            f"{len(outputs)} outputs at path={str(path)!r}."
        )
    return interpreter, _input_names(interpreter, inputs), outputs[0]


def _input_names(interpreter: Any, inputs: list[dict]) -> dict[str, dict]:
    """The file's input details by input name: the serving signature's names, else the tensors' own."""
    by_index = {detail["index"]: detail for detail in inputs}
    signatures = interpreter.get_signature_list()
    if len(signatures) == 1:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        named = {name: by_index.get(detail["index"]) for name, detail in runner.get_input_details().items()}
        if len(named) == len(inputs) and all(detail is not None for detail in named.values()):
            return named
    return {_tensor_input_name(detail["name"]): detail for detail in inputs}


def _tensor_input_name(name: str) -> str:
    name = name.split(":")[0]
    return name.removeprefix("serving_default_")


def _as_inputs(x: Any, details: dict[str, dict], argument: str) -> dict[str, np.ndarray]:
    """`x` as float32 arrays by the file's input names (a single array for a single-input file)."""
    if isinstance(x, dict):
        if set(x) != set(details):
            raise ValueError(
                f"{argument} must be a dict with the file's input names {sorted(details)} as keys. "
                f"Received keys {sorted(map(str, x))}."
            )
        arrays = {name: np.asarray(x[name], dtype=np.float32) for name in details}
    elif len(details) == 1:
        arrays = {next(iter(details)): np.asarray(x, dtype=np.float32)}
    else:
        raise ValueError(
            f"{argument} must be a dict of arrays by input name for this file with {len(details)} inputs "
            f"{sorted(details)}. Received {type(x).__name__}."
        )
    for name, detail in details.items():
        expected = tuple(int(d) for d in detail["shape_signature"][1:])
        values = arrays[name]
        if values.ndim != len(expected) + 1 or any(
            want != -1 and want != got for want, got in zip(expected, values.shape[1:])
        ):
            which = f"{argument}[{name!r}]" if len(details) > 1 else argument
            raise ValueError(
                f"{which} must hold inputs of shape (batch, {', '.join(map(str, expected))}) "
                f"for this file. Received shape {values.shape}."
            )
    return arrays


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


def _check_classes(outputs: np.ndarray, path: Any) -> None:
    """Top-1 needs a class axis: a single output unit (a sigmoid head) has no argmax to compare."""
    if outputs.ndim < 2 or outputs.shape[-1] < 2:
        raise ValueError(
            f"The file at path={str(path)!r} gives outputs of shape {outputs.shape}: accuracy and top-1 "
            "agreement need one score per class (a last axis of 2 or more); for a single sigmoid unit, "
            "threshold predict_tflite's outputs yourself."
        )
