"""TFLite export table: file size, LiteRT vs Keras accuracy, batch-1 latency, per model.

On sklearn digits (8x8 CNN) and MNIST-1D (1-D CNN), one float32 model is trained; from it:

- bfloat16: `quantize_model(initial, "bfloat16")` trained from the same initial weights;
- DFP-16, ternary-residual r=0, 1 and 2 (blocks of N=64, and r=1 with N=256), binary:
  `quantize_model(trained, scheme)` (first and last layers kept in float32) plus a short
  quantization-aware fine-tune;
- the HAWQ plan, when `keras_hessian.hawq` exists.

Each Keras model is exported with `keras_hessian.export.to_tflite` (mode "auto": float32 for
float and bfloat16 models, dynamic_int8 with int2/int4 narrowing for binary and ternary,
float16 for DFP-16; plus a few explicit modes) and run with the LiteRT interpreter.

Columns: file size relative to the dataset's float32 file; Keras and LiteRT test accuracy;
median batch-1 latency of LiteRT `invoke`, of `model.predict` and of calling the model
directly (`model(x, training=False)`), all measured in this one run.

Writes benchmarks/results/tflite_table.{json,md} and prints the table.

    python benchmarks/tflite_table.py            # full run (both datasets), a few minutes
    python benchmarks/tflite_table.py --quick    # smoke run, digits only, seconds
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np

from benchmarks._common import RESULTS, fit, input_shape, load, parser, write_results
from keras_hessian.export import evaluate_tflite, parity_report, to_tflite
from keras_hessian.models import compact_cnn
from keras_hessian.quantize import quantize_model

COLUMNS = (
    "dataset",
    "model",
    "mode",
    "file_bytes",
    "size_ratio",
    "keras_accuracy",
    "litert_accuracy",
    "litert_latency_ms",
    "keras_predict_latency_ms",
    "keras_call_latency_ms",
)


def build_model(dataset: str, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return compact_cnn(input_shape(dataset))


def median_ms(function, inputs) -> float:
    for sample in inputs[:3]:  # warm-up (tracing, first allocations)
        function(sample)
    times = []
    for sample in inputs:
        start = time.perf_counter()
        function(sample)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def keras_latencies(model, x, runs: int) -> tuple[float, float]:
    samples = [x[i : i + 1] for i in range(runs)]
    predict = median_ms(lambda s: model.predict(s, verbose=0), samples)
    call = median_ms(lambda s: np.asarray(model(s, training=False)), samples)
    return predict, call


def hawq_model(base, data, quick):
    """The HAWQ plan at 0.15x of the float32 weight bytes (int8 / int4 / ternary / binary), applied."""
    from keras_hessian.hawq import assign_precision

    (x_train, y_train), _ = data
    examples = 128 if quick else 512
    plan = assign_precision(base, (x_train[:examples], y_train[:examples]), budget=0.15, pin=None, seed=0)
    return quantize_model(base, plan)


def variants(dataset, data, quick):
    """(name, Keras model, [modes]) for every row group of the table."""
    epochs = 2 if quick else 12
    tune = 1 if quick else 3
    initial = build_model(dataset, seed=0)
    base = keras.models.clone_model(initial)
    base.set_weights(initial.get_weights())
    base = fit(base, data, epochs, 3e-3)
    yield "float32", base, (["float32"] if quick else ["float32", "dynamic_int8", "int8"])

    if not quick:
        bf16 = quantize_model(initial, "bfloat16")  # same initial weights as float32
        yield "bfloat16", fit(bf16, data, epochs, 3e-3), ["auto"]

    schemes = [
        ("ternary_residual_r1", {"scheme": "ternary_residual", "residuals": 1}),
        ("binary", "binary"),
    ]
    if not quick:
        schemes = [
            ("dfp16", "dfp16"),
            ("ternary_residual_r0", {"scheme": "ternary_residual", "residuals": 0}),
            *schemes[:1],
            ("ternary_residual_r2", {"scheme": "ternary_residual", "residuals": 2}),
            # The deck's other block size: fewer, larger blocks make the per-(term, block)
            # int2 split pay for r = 1 too (each piece carries per-channel scales).
            ("ternary_residual_r1_n256", {"scheme": "ternary_residual", "residuals": 1, "block_size": 256}),
            *schemes[1:],
        ]
    for name, scheme in schemes:
        quantized = fit(quantize_model(base, scheme), data, tune, 1e-3)
        modes = ["auto", "int16x8"] if name == "dfp16" else ["auto"]
        yield name, quantized, modes

    if not quick:
        planned = hawq_model(base, data, quick)
        if planned is not None:
            yield "hawq_plan", fit(planned, data, tune, 1e-3), ["auto"]


def run(quick: bool = False, results_dir: Path = RESULTS, datasets=None) -> list[dict]:
    datasets = datasets or (["digits"] if quick else ["digits", "mnist1d"])
    runs = 10 if quick else 100
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for dataset in datasets:
            data = load(dataset, quick)
            (x_train, _), (x_test, y_test) = data
            float_bytes = None
            for name, model, modes in variants(dataset, data, quick):
                predict_ms, call_ms = keras_latencies(model, x_test, runs)
                for mode in modes:
                    path = Path(scratch) / f"{dataset}_{name}_{mode}.tflite"
                    started = time.perf_counter()
                    to_tflite(model, path, mode=mode, representative_data=x_train[:200])
                    convert_s = time.perf_counter() - started
                    evaluation = evaluate_tflite(path, (x_test, y_test), latency_examples=runs)
                    parity = parity_report(model, path, (x_test, y_test))
                    if float_bytes is None:
                        float_bytes = evaluation["file_bytes"]
                    rows.append(
                        {
                            "dataset": dataset,
                            "model": name,
                            "mode": mode,
                            "file_bytes": evaluation["file_bytes"],
                            "size_ratio": evaluation["file_bytes"] / float_bytes,
                            "keras_accuracy": parity["keras_accuracy"],
                            "litert_accuracy": evaluation["accuracy"],
                            "litert_latency_ms": evaluation["latency_ms"],
                            "keras_predict_latency_ms": predict_ms,
                            "keras_call_latency_ms": call_ms,
                            "top1_agreement": parity["top1_agreement"],
                            "max_abs_logit_diff": parity["max_abs_logit_diff"],
                            "convert_seconds": convert_s,
                        }
                    )
                    print(format_row(rows[-1]), flush=True)
    write_results("tflite_table", {"rows": rows}, results_dir, markdown(rows, quick))
    return rows


HEADER = (
    f"{'dataset':<8} {'model':<20} {'mode':<13} {'bytes':>8} {'ratio':>6} {'keras':>6} "
    f"{'litert':>6} {'top1=':>6} {'lite ms':>8} {'pred ms':>8} {'call ms':>8} {'lite/pred':>9}"
)


def format_row(row: dict) -> str:
    return (
        f"{row['dataset']:<8} {row['model']:<20} {row['mode']:<13} {row['file_bytes']:>8} "
        f"{row['size_ratio']:>6.3f} {row['keras_accuracy']:>6.3f} {row['litert_accuracy']:>6.3f} "
        f"{row['top1_agreement']:>6.3f} {row['litert_latency_ms']:>8.4f} "
        f"{row['keras_predict_latency_ms']:>8.2f} {row['keras_call_latency_ms']:>8.2f} "
        f"{row['litert_latency_ms'] / row['keras_predict_latency_ms']:>9.5f}"
    )


def markdown(rows: list[dict], quick: bool) -> str:
    lines = [
        "# TFLite export (benchmarks/tflite_table.py" + (" --quick)" if quick else ")"),
        "",
        "size ratio: file bytes / the dataset's float32 file. Latency: median batch-1 wall",
        "time (LiteRT invoke incl. input copy; Keras `predict`; Keras direct call).",
        "",
        (
            "| dataset | model | mode | file bytes | size ratio | Keras acc | LiteRT acc "
            "| top-1 agree | LiteRT ms | predict ms | call ms | LiteRT / predict |"
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row['model']} | {row['mode']} | {row['file_bytes']} "
            f"| {row['size_ratio']:.3f} | {row['keras_accuracy']:.4f} "
            f"| {row['litert_accuracy']:.4f} | {row['top1_agreement']:.4f} "
            f"| {row['litert_latency_ms']:.4f} | {row['keras_predict_latency_ms']:.2f} "
            f"| {row['keras_call_latency_ms']:.2f} "
            f"| {row['litert_latency_ms'] / row['keras_predict_latency_ms']:.5f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parser(__doc__, "digits only, few epochs").parse_args(argv)
    print(HEADER)
    started = time.perf_counter()
    run(quick=args.quick, results_dir=args.out if args.out is not None else RESULTS)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
