"""`keras-hessian demo`: the whole package in one run on sklearn digits.

Train a small CNN with the spectrum callback, plot the spectrum, swap in ternary-residual layers,
fine-tune them and export to TFLite with a parity check.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from keras_hessian._validation import check_int
from keras_hessian.cli._common import add_verbose, check_output_directory, print_table, quiet_tensorflow
from keras_hessian.cli.spectrum import spectrum_report


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train a small CNN on sklearn digits with the spectrum callback, plot the spectrum, "
        "swap in ternary-residual layers and export to TFLite with a parity check",
    )
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    parser.add_argument(
        "--fine-tune-epochs", type=int, default=2, help="fine-tuning epochs of the ternary-residual model (default 2)"
    )
    parser.add_argument("--out", default="keras-hessian-demo", help="directory for the PNG and JSON outputs")
    parser.add_argument("--seed", type=int, default=0)
    add_verbose(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    epochs = check_int("--epochs", args.epochs, 1)
    fine_tune_epochs = check_int("--fine-tune-epochs", args.fine_tune_epochs, 0)
    check_output_directory("--out", args.out)
    quiet_tensorflow(args.verbose)

    import keras

    from keras_hessian import plots
    from keras_hessian.callbacks import HessianSpectrum
    from keras_hessian.data import load_digits
    from keras_hessian.models import compile_classifier, small_cnn

    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    (x, y), (x_test, y_test) = load_digits()
    print(f"sklearn digits: {len(x)} train / {len(x_test)} test images of 8x8")
    model = compile_classifier(small_cnn((8, 8, 1)))
    print(f"small CNN: {model.count_params()} parameters; Hessian on 512 held-out images each epoch")
    spectrum = HessianSpectrum((x_test[:512], y_test[:512]), top_k=3, trace=True, seed=args.seed)
    history = model.fit(
        x, y, batch_size=64, epochs=epochs, validation_data=(x_test, y_test), callbacks=[spectrum], verbose=2
    )
    keys = ["loss", "val_accuracy"] + spectrum.keys
    print()
    print_table(["epoch"] + keys, [[e + 1] + [float(history.history[k][e]) for k in keys] for e in range(epochs)])
    plots.plot_history({k: history.history[k] for k in keys}, os.path.join(args.out, "history.png"))
    print()
    report = spectrum_report(
        model, x_test[:512], y_test[:512], top_k=3, trace=True, layers=True,
        density=os.path.join(args.out, "density.png"), seed=args.seed,
    )
    report["history"] = {k: [float(v) for v in history.history[k]] for k in keys}
    print()
    report["quantized"], report["tflite"] = _quantize_and_export(
        model, (x, y), (x_test, y_test), fine_tune_epochs, args.out
    )
    with open(os.path.join(args.out, "demo.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"history plot, density plot, model.tflite and demo.json written to {args.out}/")
    return 0


def _quantize_and_export(model: Any, train: tuple, test: tuple, fine_tune_epochs: int, out: str) -> tuple[dict, dict]:
    """The demo's second half: ternary-residual layers swapped in, fine-tuned, exported to TFLite."""
    import numpy as np

    from keras_hessian import quantization_summary, quantize_model
    from keras_hessian.export import evaluate_tflite, format_parity_report, parity_report, to_tflite
    from keras_hessian.models import compile_classifier

    (x, y), (x_test, y_test) = train, test

    def accuracy(m):
        return float(np.mean(np.argmax(m.predict(x_test, verbose=0), axis=-1) == y_test))

    spec = {"scheme": "ternary_residual", "residuals": 1}
    print(f"quantize_model(model, {spec}): first and last layers stay float32")
    quantized = compile_classifier(quantize_model(model, spec), learning_rate=1e-3)
    post_training = accuracy(quantized)
    if fine_tune_epochs:
        quantized.fit(x, y, batch_size=64, epochs=fine_tune_epochs, verbose=0)
    totals = quantization_summary(quantized, print_fn=None)["total"]
    float_totals = quantization_summary(model, print_fn=None)["total"]
    quantized_report = {
        "float32_accuracy": accuracy(model),
        "post_training_accuracy": post_training,
        "fine_tuned_accuracy": accuracy(quantized),
        "fine_tune_epochs": fine_tune_epochs,
        "weight_bytes": int(totals["weight_bytes"]),
        "float32_weight_bytes": int(float_totals["weight_bytes"]),
        "multiplications": int(totals["multiplications"]),
        "float32_multiplications": int(float_totals["multiplications"]),
    }
    print_table(
        ["model", "test accuracy", "weight bytes", "multiplications / example"],
        [
            ["float32", quantized_report["float32_accuracy"], float_totals["weight_bytes"],
             float_totals["multiplications"]],
            ["ternary r=1, post-training", post_training, totals["weight_bytes"], totals["multiplications"]],
            [f"ternary r=1, fine-tuned {fine_tune_epochs} ep.", quantized_report["fine_tuned_accuracy"],
             totals["weight_bytes"], totals["multiplications"]],
        ],
    )
    path = to_tflite(quantized, os.path.join(out, "model.tflite"))
    print(f"\nto_tflite -> {path} (LiteRT interpreter), parity with the Keras model on the test set:")
    tflite_report = parity_report(quantized, path, test)
    evaluation = evaluate_tflite(path, test)
    tflite_report.update(latency_ms=evaluation["latency_ms"], file_bytes=evaluation["file_bytes"])
    print(format_parity_report(tflite_report, path))
    return quantized_report, tflite_report
