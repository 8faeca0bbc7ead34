"""Memory and speed of the Hessian engine on real architectures, and their quantized exports (issue 13).

Per architecture (`keras_hessian.architectures`: MobileNetV2 alpha 0.35 on 32x32 digits, the functional
transformer and the KerasHub BERT classifier on digit tokens), on one batch of `--batch` examples:

Times are the fastest of 15 calls after a warm-up (the machine is shared: the minimum is the least
disturbed estimate).

- parameter count; train-step ms (`train_on_batch`, Adam) in float32 and under `mixed_bfloat16`;
- gradient ms and HVP ms (reverse-over-reverse, the default) and their ratio;
- peak memory of one HVP (and of one gradient): the TensorFlow CPU allocator's peak during the call
  minus what was allocated before it, by `tf.config.experimental.get_memory_info("CPU:0")`. On CPU
  that call reports zeros unless TensorFlow's BFC allocator is on, so this script sets
  `TF_CPU_ALLOCATOR_USE_BFC=true` before TensorFlow starts (host numpy arrays are not counted);
- seconds and products of the top-1 eigenvalue (Lanczos, tol 1e-3), after the products are traced;
- `cache=False` streaming: peak memory of one HVP over a dataset of 2 and of 8 batches (flat when
  streaming works), with `cache=True` over 8 batches beside it;
- the token models: HVP ms and memory with the embedding's `IndexedSlices` kept sparse and scattered
  to dense (`keras_hessian.hessian.operators._sparse.SPARSE`), also on a 30,522-token vocabulary
  (BERT's), where the dense route materializes a vocabulary-by-width gradient;
- one epoch of `model.fit` with the `HessianSpectrum` callback: its logged top eigenvalue and seconds.

Then (skipped with `--engine-only`) per quantization scheme, after a short fine-tune on the same data,
through the public API only (`quantize_model`, `to_tflite`, `evaluate_tflite`): Keras accuracy, TFLite
bytes over the float32 file's, LiteRT accuracy and batch-1 latency. A scheme that fails at some stage
records that stage and the error string instead of stopping the run.

Writes benchmarks/results/real_models.{json,md} and prints the tables.

    nice -n 10 python benchmarks/real_models.py                # full run, ~15-25 minutes on 2 cores
    nice -n 10 python benchmarks/real_models.py --engine-only  # the engine part only
    python benchmarks/real_models.py --quick                   # smoke run: the transformer, tiny sizes
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

# Before TensorFlow starts: the CPU allocator keeps no statistics otherwise (get_memory_info gives 0).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np
import tensorflow as tf

from benchmarks._common import RESULTS, parser, write_results
from benchmarks._real_models_report import WIDE_VOCABULARY, markdown
from keras_hessian import architectures
from keras_hessian.callbacks import HessianSpectrum
from keras_hessian.data import load_digits_rgb, load_digits_tokens
from keras_hessian.hessian import HessianOperator, layer_table, top_eigenvalues
from keras_hessian.hessian.operators import _sparse

ARCHITECTURES = ("mobilenet_v2", "transformer_classifier", "keras_hub_bert_classifier")
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# ---------------------------------------------------------------------------------------------- data, models
def load(name: str):
    """`((x, y), (x_test, y_test))` for an architecture: digits as 32x32 RGB images or as 64 tokens."""
    if name == "mobilenet_v2":
        (x, y), (xt, yt) = load_digits_rgb(32)
        return (x, y), (xt, yt)
    (x, y), (xt, yt) = load_digits_tokens()
    if name == "keras_hub_bert_classifier":
        return (architectures.bert_inputs(x), y), (architectures.bert_inputs(xt), yt)
    return (x, y), (xt, yt)


def build(name: str, seed: int = 0, **config) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = getattr(architectures, name)(**config)
    if not model.built or name == "keras_hub_bert_classifier":
        model(take(load(name)[0][0], 2))
    return model


def take(x, n: int, start: int = 0):
    """The examples `start:start+n` of an array or a dict of arrays."""
    return tf.nest.map_structure(lambda a: a[start : start + n], x)


def size(x) -> int:
    return int(tf.nest.flatten(x)[0].shape[0])


# ---------------------------------------------------------------------------------------------- measures
def describe(error: Exception) -> str:
    """`Type: message`, its head and tail when long (a StagingError's message holds a whole traceback)."""
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text if len(text) <= 400 else f"{text[:150]} ... {text[-250:]}"


def best_ms(function, repeats: int) -> float:
    """The fastest of `repeats` calls after a warm-up, in ms: the machine is shared, and the minimum is
    the estimate of a call's own cost that other processes' load disturbs least."""
    function()  # warm-up: tracing and first allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def interleaved_ms(functions: dict, repeats: int) -> dict:
    """`best_ms` of several functions whose calls alternate, so other processes' load falls on all alike
    (timed one after the other, a gradient once came out as slow as an HVP on MobileNetV2)."""
    for function in functions.values():
        function()
    times: dict = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * min(values) for name, values in times.items()}


def peak_bytes(function) -> int:
    """Allocator bytes at the peak of `function()` above those live before it (CPU BFC allocator)."""
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    tf.config.experimental.reset_memory_stats("CPU:0")
    function()
    return int(tf.config.experimental.get_memory_info("CPU:0")["peak"] - before)


def unit_vector(op, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    v = [rng.standard_normal(tuple(var.shape)).astype("float32") for var in op.variables]
    scale = float(np.sqrt(sum(float(np.sum(t * t)) for t in v)))
    return [tf.constant(t / scale) for t in v]


def train_step_ms(name: str, batch, repeats: int, policy: str) -> float:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build(name)
        model.compile(keras.optimizers.Adam(1e-3), LOSS)
        x, y = batch
        return best_ms(lambda: model.train_on_batch(x, y), repeats)
    finally:
        keras.config.set_dtype_policy(previous)


def streaming(model, x, y, batch: int) -> dict:
    """What an operator over 2 and over 8 batches holds (allocator bytes live after it is built, above
    those before) and its HVP's peak, with `cache=False` (streamed) and `cache=True`.

    Streaming is flat when both stay the same from 2 to 8 batches; a cached operator holds every batch.
    """
    out: dict = {}
    for cache in (False, True):
        kind = "cached" if cache else "streamed"
        for batches in (2, 8):
            n = min(batches * batch, size(x))
            dataset = tf.data.Dataset.from_tensor_slices((take(x, n), y[:n])).batch(batch)
            before = tf.config.experimental.get_memory_info("CPU:0")["current"]
            op = HessianOperator(model, dataset, LOSS, cache=cache)
            held = int(tf.config.experimental.get_memory_info("CPU:0")["current"] - before)
            v = unit_vector(op)
            op.hvp(v)  # trace
            out[f"{kind}_{batches}_batches"] = {
                "examples": n,
                "held_bytes": held,
                "hvp_peak_bytes": peak_bytes(lambda op=op, v=v: op.hvp(v)),
            }
        for measure in ("held_bytes", "hvp_peak_bytes"):
            two, eight = out[f"{kind}_2_batches"][measure], out[f"{kind}_8_batches"][measure]
            out[f"{kind}_{measure}_8_over_2"] = eight / max(two, 1)
    out["batch_bytes"] = int(
        sum(np.asarray(t[:batch]).nbytes for t in tf.nest.flatten(x)) + np.asarray(y[:batch]).nbytes
    )
    return out


def indexed_slices(model, batch_data, repeats: int) -> dict:
    """HVP ms and peak memory with the embedding gradient kept sparse and scattered to dense; the two
    routes' calls alternate, so load from other processes falls on both alike."""
    saved = _sparse.SPARSE
    ops = {}
    try:
        for route in ("sparse", "dense"):
            _sparse.SPARSE = route == "sparse"
            ops[route] = HessianOperator(model, batch_data, LOSS)
            ops[route].hvp(unit_vector(ops[route]))  # traced with its route
    finally:
        _sparse.SPARSE = saved
    v = unit_vector(ops["sparse"])
    times = interleaved_ms({route: (lambda op=op: op.hvp(v)) for route, op in ops.items()}, repeats)
    out: dict = {
        route: {"hvp_ms": times[route], "hvp_peak_bytes": peak_bytes(lambda op=op: op.hvp(v))}
        for route, op in ops.items()
    }
    out["dense_over_sparse_ms"] = out["dense"]["hvp_ms"] / out["sparse"]["hvp_ms"]
    return out


def engine(name: str, quick: bool, batch: int) -> dict:
    (x, y), _ = load(name)
    repeats = 2 if quick else 15
    model = build(name)
    xb, yb = take(x, batch), y[:batch]
    row: dict = {"parameters": int(model.count_params()), "batch": batch}
    row["train_step_ms_float32"] = train_step_ms(name, (xb, yb), repeats, "float32")
    row["train_step_ms_mixed_bfloat16"] = train_step_ms(name, (xb, yb), repeats, "mixed_bfloat16")
    row["bfloat16_speedup"] = row["train_step_ms_float32"] / row["train_step_ms_mixed_bfloat16"]

    op = HessianOperator(model, (xb, yb), LOSS)
    v = unit_vector(op)
    row.update(interleaved_ms({"gradient_ms": op.loss_and_gradient, "hvp_ms": lambda: op.hvp(v)}, repeats))
    row["hvp_over_gradient"] = row["hvp_ms"] / row["gradient_ms"]
    row["gradient_peak_bytes"] = peak_bytes(op.loss_and_gradient)
    row["hvp_peak_bytes"] = peak_bytes(lambda: op.hvp(v))
    row["weights_bytes"] = int(sum(int(np.prod(w.shape)) * 4 for w in model.trainable_weights))

    start = time.perf_counter()
    result = top_eigenvalues(op, k=1, seed=0)
    row["top1_seconds"] = time.perf_counter() - start
    row["top1_hvps"] = int(result.hvp_count)
    row["top1_eigenvalue"] = float(result.eigenvalues[0])
    row["top1_converged"] = bool(result.converged)
    row["layer_blocks"] = len(HessianOperator(model, (xb, yb), LOSS, blocks="layer").blocks)

    if name == "keras_hub_bert_classifier" or quick:  # issue 13 item 5: the KerasHub model's per-block spectrum
        start = time.perf_counter()
        # Eigenvalues only: Hutch++ on each of the 22 blocks took 7 minutes more here.
        table = layer_table(HessianOperator(model, (xb, yb), LOSS, blocks="layer"), top_k=1, trace=False, seed=0)
        row["per_block_seconds"] = time.perf_counter() - start
        row["per_block"] = table.rows
    row["streaming"] = streaming(model, x, y, batch)
    if name != "mobilenet_v2":
        row["indexed_slices"] = indexed_slices(model, (xb, yb), repeats)
        wide = build(name, vocabulary_size=WIDE_VOCABULARY)
        row["indexed_slices_wide_vocabulary"] = {
            "vocabulary_size": WIDE_VOCABULARY,
            "parameters": int(wide.count_params()),
            **indexed_slices(wide, (xb, yb), repeats),
        }

    fitted = build(name, seed=1)
    fitted.compile(keras.optimizers.Adam(1e-3), LOSS)
    spectrum = HessianSpectrum((xb, yb), top_k=1, seed=0)
    n = batch * (2 if quick else 8)
    start = time.perf_counter()
    history = fitted.fit(take(x, n), y[:n], batch_size=batch, epochs=1, verbose=0, callbacks=[spectrum])
    row["fit_with_spectrum"] = {
        "examples": n,
        "seconds": time.perf_counter() - start,
        "spectrum_seconds": spectrum.seconds,
        "top_eigenvalue": float(history.history["hessian/top_eigenvalue"][-1]),
    }
    return row


# ---------------------------------------------------------------------------------------------- quantization
def _accuracy(model, x, y) -> float:
    logits = model.predict(x, batch_size=128, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(y).reshape(-1)))


def quantization(name: str, quick: bool, epochs: int, fine_tune_epochs: int) -> dict:
    """Train the float model, then per scheme: quantize, fine-tune, export, run in LiteRT (errors recorded)."""
    from keras_hessian import evaluate_tflite, quantize_model, to_tflite
    from keras_hessian.export import parity_report
    from keras_hessian.quantize import recalibrate_batch_norm, scheme_names

    (x, y), (xt, yt) = load(name)
    if quick:
        x, y, xt, yt = take(x, 128), y[:128], take(xt, 64), yt[:64]
    model = build(name)
    model.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    # MobileNetV2's BatchNorm momentum (0.999) leaves its moving statistics near their start after a
    # short fit, and the inference-mode model at chance: set them to the training inputs' statistics.
    recalibrate_batch_norm(model, x)
    latency_examples = 10 if quick else 100
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        float_row: dict = {"keras_accuracy": _accuracy(model, xt, yt)}
        float_bytes = None
        try:
            path = to_tflite(model, Path(tmp) / "float32.tflite", mode="float32")
            float_bytes = Path(path).stat().st_size
            float_row.update(file_bytes=float_bytes, size_ratio=1.0)
            report = evaluate_tflite(path, (xt, yt), latency_examples=latency_examples)
            float_row.update(litert_accuracy=report["accuracy"], litert_latency_ms=report["latency_ms"],
                             litert_agreement=parity_report(model, path, (xt, yt))["top1_agreement"])
        except Exception as error:  # noqa: BLE001 - recorded in the table, the run goes on
            float_row["error"] = describe(error)
        out["float32"] = float_row
        schemes = [s for s in scheme_names() if s != "float32"]
        for scheme in schemes[:2] if quick else schemes:
            row: dict = {}
            stage = "quantize_model"
            try:
                # BatchNorm folded first, as edge deployment expects: the folded kernels are what gets
                # quantized, and the converter cannot fold a BatchNorm into an already-quantized kernel.
                quantized = quantize_model(model, scheme, fold_batch_norm=True, verbose=False)
                report = quantized.quantize_report
                row["quantized_layers"] = len(report.quantized)
                row["float_layers"] = len(report.kept_float)
                stage = "fine-tune"
                quantized.compile(keras.optimizers.Adam(1e-4), LOSS)
                quantized.fit(x, y, batch_size=32, epochs=fine_tune_epochs, verbose=0)
                row["keras_accuracy"] = _accuracy(quantized, xt, yt)
                stage = "to_tflite"
                path = to_tflite(quantized, Path(tmp) / f"{scheme}.tflite")
                row["file_bytes"] = Path(path).stat().st_size
                if float_bytes:
                    row["size_ratio"] = row["file_bytes"] / float_bytes
                stage = "evaluate_tflite"
                report = evaluate_tflite(path, (xt, yt), latency_examples=latency_examples)
                row.update(litert_accuracy=report["accuracy"], litert_latency_ms=report["latency_ms"],
                           litert_agreement=parity_report(quantized, path, (xt, yt))["top1_agreement"])
            except Exception as error:  # noqa: BLE001 - recorded in the table, the run goes on
                row["error"] = f"{stage}: {describe(error)}"
            out[scheme] = row
    return out


def run(
    quick: bool = False,
    out: str | None = None,
    engine_only: bool = False,
    names: tuple[str, ...] | None = None,
    batch: int | None = None,
) -> dict:
    names = names or (("transformer_classifier",) if quick else ARCHITECTURES)
    batch = batch or (8 if quick else 32)
    payload: dict = {
        "batch": batch,
        "memory_method": "tf.config.experimental.get_memory_info('CPU:0') with TF_CPU_ALLOCATOR_USE_BFC=true",
        "hvp_method": "reverse_over_reverse",
        "quick": quick,
        "engine": {},
        "quantization": {},
    }
    for name in names:
        try:
            payload["engine"][name] = engine(name, quick, batch)
        except Exception as error:  # noqa: BLE001 - one architecture's failure must not hide the others'
            payload["engine"][name] = {"error": describe(error)}
        print(name, payload["engine"][name], flush=True)
    if not engine_only:
        for name in names:
            payload["quantization"][name] = quantization(name, quick, epochs=1 if quick else 5, fine_tune_epochs=1)
            print(name, payload["quantization"][name], flush=True)
    previous = Path(out or RESULTS) / "real_models.json"
    if names != ARCHITECTURES and not quick and previous.exists():  # a partial rerun keeps the others' rows
        old = json.loads(previous.read_text())
        for part in ("engine", "quantization"):
            payload[part] = {**{k: v for k, v in old.get(part, {}).items() if k not in names}, **payload[part]}
    text = markdown(payload)
    write_results("real_models", payload, out, text)
    print(text)
    return payload


if __name__ == "__main__":
    arguments = parser(__doc__)
    arguments.add_argument("--engine-only", action="store_true", help="skip the quantization table")
    arguments.add_argument("--architectures", nargs="+", choices=ARCHITECTURES, default=None)
    arguments.add_argument("--batch", type=int, default=None, help="examples per batch (default 32; 8 when quick)")
    args = arguments.parse_args()
    run(args.quick, args.out, args.engine_only, tuple(args.architectures) if args.architectures else None, args.batch)
