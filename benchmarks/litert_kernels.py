"""LiteRT's hybrid kernels against weight-only storage, on MobileNetV2 and the transformer (issue 13).

A `"dynamic_int8"` / `"auto"` file of a quantized model holds integer weights. By default LiteRT runs
them in hybrid kernels, which quantize every activation to int8 on the fly; with
`to_tflite(..., weight_only=True)` the file holds the same integers, LiteRT dequantizes them to
float32 once, when it prepares the file, and the ops compute in float32. Per architecture
(`keras_hessian.architectures`, trained as `real_models.py` trains them: 5 epochs, BatchNorm
recalibrated, each scheme quantized with BatchNorm folded and fine-tuned one epoch) and per scheme,
both files side by side, measured in one run: bytes over the float32 file's, LiteRT top-1 agreement
with the Keras model and its accuracy, the largest logit difference from Keras, batch-1 latency.
Schemes: binary, integer, ternary residual (the deck's free alphas), and ternary residual with
`grid_bits=4` (every alpha of a channel on one int4 grid, depthwise filters on an int8 one, so the
weight-only file holds the kernels exactly), with the first and last layers float (the default)
and quantized too; and the grid's ablation, integer weights at the same widths on the same layers
(int4, depthwise int8: the same bytes, with every level of each width usable).

    nice -n 10 python benchmarks/litert_kernels.py           # ~10 minutes on 2 cores
    python benchmarks/litert_kernels.py --quick               # smoke run: the transformer, tiny sizes

Writes benchmarks/results/litert_kernels.{json,md}.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np

from benchmarks._common import parser, write_results
from benchmarks.real_models import LOSS, build, load, take

ARCHITECTURES = ("mobilenet_v2", "transformer_classifier")
GRID = {"scheme": "ternary_residual", "grid_bits": 4}


def _int4_plan(model, skip_first_last: bool) -> dict:
    """A per-layer plan: integer weights on the layers the grid quantizes, at the grid's widths."""
    from keras_hessian import quantize_model

    probe = quantize_model(model, GRID, fold_batch_norm=True, skip_first_last=skip_first_last, verbose=False)
    bits = lambda row: 8 if row.layer_type == "DepthwiseConv2D" else 4
    return {row.path: {"scheme": "integer", "bits": bits(row)} for row in probe.quantize_report.quantized}


# Row label -> (quantize_model scheme, or a function of (model, skip_first_last) that gives a plan;
# skip_first_last). The grid rows: ternary residuals with every alpha of a channel on one int4 grid
# (depthwise filters: int8), which the file holds exactly; then the same with the first and last
# layers quantized too (quantize_model keeps them float by default).
SCHEMES = {
    "binary": ("binary", True),
    "integer": ("integer", True),
    "ternary_residual": ("ternary_residual", True),
    "ternary_residual int4 grid": (GRID, True),
    "ternary_residual int4 grid, all layers": (GRID, False),
    # The grid's ablation: plain integer weights at the grid's widths on the same layers (int4,
    # depthwise int8), the same bytes in the file, every level of the width usable.
    "integer int4": (_int4_plan, True),
    "integer int4, all layers": (_int4_plan, False),
}
QUICK_SCHEMES = ("binary", "integer int4")
STORAGES = {"hybrid": False, "weight_only": True}


def _logits(model, x) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=128, verbose=0), dtype=np.float64)


def architecture(name: str, quick: bool) -> dict:
    from keras_hessian import quantize_model, to_tflite
    from keras_hessian.quantize import recalibrate_batch_norm

    (x, y), (xt, yt) = load(name)
    if quick:
        x, y, xt, yt = take(x, 128), y[:128], take(xt, 64), yt[:64]
    model = build(name)
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    model.fit(x, y, batch_size=32, epochs=1 if quick else 5, verbose=0)
    recalibrate_batch_norm(model, x)
    latency_examples = 10 if quick else 100
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        float_path = to_tflite(model, Path(tmp) / "float32.tflite", mode="float32")
        float_bytes = float_path.stat().st_size
        rows["float32"] = {
            "file_bytes": float_bytes,
            **_litert(float_path, _logits(model, xt), xt, yt, latency_examples),
        }
        for label, (scheme, skip_first_last) in SCHEMES.items():
            if quick and label not in QUICK_SCHEMES:
                continue
            if callable(scheme):
                scheme = scheme(model, skip_first_last)
            quantized = quantize_model(
                model, scheme, fold_batch_norm=True, skip_first_last=skip_first_last, verbose=False
            )
            quantized.compile(keras.optimizers.Adam(1e-4), LOSS)
            quantized.fit(x, y, batch_size=32, epochs=1, verbose=0)
            keras_logits = _logits(quantized, xt)  # once per model: both files are compared with it
            for storage, weight_only in STORAGES.items():
                target = Path(tmp) / f"{label}_{storage}.tflite".replace(" ", "_").replace(",", "")
                path = to_tflite(quantized, target, weight_only=weight_only)
                row = {"file_bytes": path.stat().st_size, "size_ratio": path.stat().st_size / float_bytes}
                row.update(_litert(path, keras_logits, xt, yt, latency_examples))
                rows[f"{label} {storage}"] = row
    return rows


def _litert(path, keras_logits: np.ndarray, xt, yt, latency_examples: int) -> dict:
    """The file against the Keras logits on the test split (one LiteRT pass), and its batch-1 latency."""
    from keras_hessian import evaluate_tflite
    from keras_hessian.export import predict_tflite

    litert_logits = np.asarray(predict_tflite(path, xt, batch_size=len(xt)), dtype=np.float64)
    labels = np.asarray(yt).reshape(-1)
    # Latency only: evaluate_tflite's batch-1 calls run on the first `latency_examples` rows.
    latency = evaluate_tflite(path, (xt[:latency_examples], yt[:latency_examples]), latency_examples=latency_examples)
    return {
        "keras_accuracy": float(np.mean(keras_logits.argmax(-1) == labels)),
        "litert_accuracy": float(np.mean(litert_logits.argmax(-1) == labels)),
        "litert_agreement": float(np.mean(keras_logits.argmax(-1) == litert_logits.argmax(-1))),
        "max_abs_logit_diff": float(np.abs(keras_logits - litert_logits).max()),
        "litert_latency_ms": latency["latency_ms"],
    }


def markdown(payload: dict) -> str:
    lines = [
        "# LiteRT hybrid kernels vs weight-only storage (float compute)",
        "",
        (
            "Same quantized Keras model, two files: `to_tflite(q)` (hybrid: int weights, activations rounded to "
            "int8 on the fly) and `to_tflite(q, weight_only=True)` (the same integers dequantized once at load, "
            "float32 compute). Agreement: top-1 class equal to the Keras model's on the test split; latency: "
            "median batch-1 ms, and its ratio to the float32 file's measured in the same run. Command: "
            "`nice -n 10 python benchmarks/litert_kernels.py`."
        ),
        "",
        (
            "| architecture | model | file / float32 | Keras acc | LiteRT acc | LiteRT agreement | max logit diff "
            "| LiteRT ms | ms / float32's |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in payload["architectures"].items():
        float_ms = rows["float32"]["litert_latency_ms"]
        for label, row in rows.items():
            ratio = row.get("size_ratio", 1.0)
            lines.append(
                f"| {name} | {label} | {ratio:.3f} | {row['keras_accuracy']:.3f} | {row['litert_accuracy']:.3f} "
                f"| {row['litert_agreement']:.3f} | {row['max_abs_logit_diff']:.2g} | {row['litert_latency_ms']:.3f} "
                f"| {row['litert_latency_ms'] / float_ms:.2f} |"
            )
    return "\n".join(lines) + "\n"


def run(quick: bool = False, out: str | None = None) -> dict:
    names = ARCHITECTURES[1:] if quick else ARCHITECTURES
    payload = {"quick": quick, "architectures": {}}
    for name in names:
        payload["architectures"][name] = architecture(name, quick)
        print(name, payload["architectures"][name], flush=True)
    text = markdown(payload)
    write_results("litert_kernels", payload, out, text)
    print(text)
    return payload


if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    run(args.quick, args.out)
