"""Demo stage (e): every model of the demo as a TFLite file, evaluated with the LiteRT interpreter.

Each file is written by `export.to_tflite` (float32 for the float models, each layer at its own
precision for the two HAWQ models, sparse storage for the pruned float model), compared with its Keras model (`parity_report`) and timed
(`evaluate_tflite`, median batch-1 latency on one interpreter thread).
"""

from __future__ import annotations

import os
from typing import Any

# (key, label, source model, to_tflite mode, sparse storage), in the report's order. The float
# ABSA file is the reference of the size ratios.
EXPORTS = (
    ("fixed_batch", "float32, fixed batch", "baseline", "float32", False),
    ("absa", "float32, ABSA", "absa", "float32", False),
    ("hawq", "HAWQ mixed precision", "hawq", "auto", False),
    ("pruned", "OBD-pruned float32 (sparse)", "pruned", "float32", True),
    ("pruned_quantized", "OBD-pruned + HAWQ", "pruned_quantized", "auto", False),
)
REFERENCE = "absa"


def export_all(models: dict, data: tuple, run: Any, iterations: dict) -> dict:
    """`{key: row}` for every entry of `EXPORTS`; the files go to `out/KEY.tflite`."""
    from keras_hessian.export import evaluate_tflite, parity_report, to_tflite

    _, test = data
    rows = {}
    for key, label, source, mode, sparse in EXPORTS:
        path = os.path.join(run.out, f"{key}.tflite")
        to_tflite(models[source], path, mode=mode, sparse=sparse)
        parity = parity_report(models[source], path, test)
        evaluation = evaluate_tflite(path, test, latency_examples=run.settings.latency_examples, num_threads=1)
        rows[key] = {
            "label": label,
            "file": f"{key}.tflite",
            "mode": mode,
            "sparse": sparse,
            "keras_accuracy": parity["keras_accuracy"],
            "litert_accuracy": evaluation["accuracy"],
            "top1_agreement": parity["top1_agreement"],
            "max_abs_logit_diff": parity["max_abs_logit_diff"],
            "iterations": int(iterations[source]),
            "file_bytes": int(evaluation["file_bytes"]),
            "latency_ms": float(evaluation["latency_ms"]),
        }
        run.log(f"  {key}.tflite: {rows[key]['file_bytes']:,} bytes, LiteRT accuracy {evaluation['accuracy']:.4f}, "
              f"{evaluation['latency_ms']:.3f} ms per example")
    for row in rows.values():
        row["size_ratio"] = row["file_bytes"] / rows[REFERENCE]["file_bytes"]
    return rows
