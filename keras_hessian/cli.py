"""The `keras-hessian` command: one sub-command per job, each a `_add_<name>` + `_run_<name>` pair."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-hessian",
        description="Hessian spectra, adaptive batch size, quantized layers and TFLite export for Keras.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    # Registration of the sub-commands, one line each.
    _add_demo(subparsers)
    _add_spectrum(subparsers)
    _add_export(subparsers)
    _add_train(subparsers)
    return parser


def _add_export(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="convert a .keras model to TFLite and print its parity report against Keras",
        description="Convert MODEL.keras to a TFLite file (quantized layers folded, bfloat16 "
        "rebuilt in float32), run it with LiteRT and compare it with the Keras model.",
    )
    parser.add_argument("model", help="a model saved with model.save('MODEL.keras')")
    parser.add_argument("output", help="the .tflite file to write (written atomically)")
    parser.add_argument(
        "--mode",
        default="auto",
        choices=["auto", "float32", "float16", "dynamic_int8", "int8", "int16x8"],
        help="conversion mode (default: auto, the narrowest exact storage for the model)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="digits, mnist1d, tfds:NAME (e.g. tfds:mnist, needs the network once) or FILE.npz (arrays x, y; x_test, y_test optional): "
        "calibration for int8/int16x8 and the parity report",
    )
    parser.add_argument(
        "--representative-examples",
        type=int,
        default=200,
        help="training examples used to calibrate int8/int16x8 (default: 200)",
    )
    parser.set_defaults(run=_run_export)


def _run_export(args) -> int:
    import uuid

    import keras

    from keras_hessian import export

    try:  # registers the custom layers for load_model
        import keras_hessian.layers  # noqa: F401
    except ImportError:
        pass
    model = keras.models.load_model(args.model, safe_mode=True)
    calibration = evaluation = None
    if args.data is None and args.mode in ("int8", "int16x8"):
        raise ValueError(f"--mode {args.mode} calibrates on examples: pass --data digits, mnist1d, tfds:NAME or FILE.npz.")
    mode = export.auto_mode(model) if args.mode == "auto" else args.mode
    if args.data is not None:
        calibration, evaluation = _export_data(args.data, model)
        calibration = calibration[: args.representative_examples]
    target = export._check_output_path(args.output)
    # Convert and check a temporary file next to the target; an existing file at the
    # target is replaced only once the conversion and the parity report succeeded.
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tflite")
    try:
        written = export.to_tflite(model, temporary, mode=mode, representative_data=calibration)
        report = None if evaluation is None else export.parity_report(model, written, evaluation)
        os.replace(written, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    path = target
    if report is None:
        print(f"wrote {path} ({path.stat().st_size:,} bytes, mode {mode})")
        return 0
    print(f"{'mode':<20} {mode}")
    print(export.format_parity_report(report, path))
    return 0


def _export_data(name: str, model):
    """(calibration inputs, (test inputs, test labels)) shaped for `model`'s input.

    Unlike `_fit_inputs` a layout that does not fit is passed on as is, so that the parity
    report names the shapes that disagree.
    """
    import numpy as np

    (x_train, _), (x_test, y_test) = _load_data(name, "train"), _load_data(name, "test")
    shape = tuple(model.input_shape[1:])

    def fit(x):
        if None not in shape and x.shape[1:] != shape and x[0].size == int(np.prod(shape)):
            return x.reshape((len(x), *shape))
        return x

    return fit(x_train).astype("float32"), (fit(x_test).astype("float32"), y_test)


def _load_data(spec: str, split: str = "train"):
    """`digits`, `mnist1d` or a FILE.npz with arrays x, y (x_test, y_test optional)."""
    if spec in ("digits", "mnist1d") or spec.startswith("tfds:"):
        from keras_hessian.data import load_dataset

        train, test = load_dataset(spec)
        return train if split == "train" else test
    if spec.endswith(".npz"):
        if not os.path.isfile(spec):
            raise ValueError(f"--data: no such file {spec!r}.")
        arrays = dict(__import__("numpy").load(spec))
        key_x, key_y = ("x", "y") if split == "train" or "x_test" not in arrays else ("x_test", "y_test")
        if key_x not in arrays or key_y not in arrays:
            raise ValueError(f"--data: {spec!r} must hold arrays 'x' and 'y'. It holds {sorted(arrays)}.")
        return arrays[key_x], arrays[key_y]
    raise ValueError(f"--data must be digits, mnist1d, tfds:NAME or a FILE.npz. Received {spec!r}.")


def _fit_inputs(x, model):
    """Reshape flat or image data to the model's input shape when only the layout differs."""
    import numpy as np

    shape = tuple(getattr(model, "input_shape", (None,) + x.shape[1:])[1:])
    if None in shape or shape == x.shape[1:]:
        return x
    if int(np.prod(shape)) != int(np.prod(x.shape[1:])):
        raise ValueError(f"--data: examples of shape {x.shape[1:]} do not fit the model's input {shape}.")
    return x.reshape((-1,) + shape)


def _progress(message: str):
    """Print `message ...` now and `done (t s)` when the block ends: the CLI's progress line."""

    class Line:
        def __enter__(self):
            self.start = time.perf_counter()
            print(f"{message} ...", end="", flush=True)
            return self

        def __exit__(self, *exc):
            print(f" {'failed' if exc[0] else 'done'} ({time.perf_counter() - self.start:.1f} s)", flush=True)

    return Line()


def _print_table(header: list[str], rows: list[list]) -> None:
    cells = [[str(h) for h in header]] + [[f"{c:.6g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _spectrum_report(model, x, y, *, top_k: int, trace: bool, layers: bool, density: str | None, seed: int) -> dict:
    """Measure and print the spectrum of `model` on `(x, y)`; return it as a JSON-ready dict."""
    from keras_hessian import plots
    from keras_hessian.hessian import HessianOperator, hutchinson_trace, spectral_density, top_eigenvalues

    report: dict = {"parameters": None, "examples": len(x), "blocks": {}}
    operator = HessianOperator(model, (x, y), blocks="layer" if layers else "model")
    report["parameters"] = operator.num_parameters
    names = operator.blocks
    for name in names:
        block = operator.block(name) if len(names) > 1 else operator
        k = min(top_k, block.num_parameters)
        entry: dict = {"parameters": block.num_parameters}
        with _progress(f"{name}: top-{k} eigenvalues"):
            eigen = top_eigenvalues(block, k=k, seed=seed)
        entry["eigenvalues"] = [float(v) for v in eigen.eigenvalues]
        entry["eigenvalue_hvps"] = eigen.hvp_count
        if trace:
            with _progress(f"{name}: trace (Hutch++)"):
                result = hutchinson_trace(block, seed=seed)
            entry["trace"], entry["trace_standard_error"] = result.trace, result.standard_error
        report["blocks"][name] = entry
    rows = [
        [name, e["parameters"]]
        + [e["eigenvalues"][i] if i < len(e["eigenvalues"]) else "" for i in range(top_k)]
        + ([f"{e['trace']:.6g} +- {e['trace_standard_error']:.2g}"] if trace else [])
        for name, e in report["blocks"].items()
    ]
    header = ["block", "params"] + [f"lambda_{i + 1}" for i in range(top_k)] + (["trace"] if trace else [])
    print()
    _print_table(header, rows)
    if density:
        with _progress("spectral density (SLQ)"):
            result = spectral_density(HessianOperator(model, (x, y)), seed=seed)
        plots.plot_density(result, density)
        report["density_png"] = density
        print(f"density written to {density}")
    return report


def _add_demo(subparsers) -> None:
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
    parser.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    import keras

    from keras_hessian import plots
    from keras_hessian.callbacks import HessianSpectrum
    from keras_hessian.data import load_digits
    from keras_hessian.models import compile_classifier, small_cnn

    if args.epochs < 1:
        raise ValueError(f"--epochs must be at least 1. Received {args.epochs}.")
    if args.fine_tune_epochs < 0:
        raise ValueError(f"--fine-tune-epochs must be at least 0. Received {args.fine_tune_epochs}.")
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    (x, y), (x_test, y_test) = load_digits()
    print(f"sklearn digits: {len(x)} train / {len(x_test)} test images of 8x8")
    model = compile_classifier(small_cnn((8, 8, 1)))
    print(f"small CNN: {model.count_params()} parameters; Hessian on 512 held-out images each epoch")
    spectrum = HessianSpectrum((x_test[:512], y_test[:512]), top_k=3, trace=True, seed=args.seed)
    history = model.fit(x, y, batch_size=64, epochs=args.epochs, validation_data=(x_test, y_test), callbacks=[spectrum], verbose=2)
    keys = ["loss", "val_accuracy"] + spectrum.keys
    print()
    _print_table(["epoch"] + keys, [[e + 1] + [float(history.history[k][e]) for k in keys] for e in range(args.epochs)])
    plots.plot_history({k: history.history[k] for k in ["loss", "val_accuracy"] + spectrum.keys}, os.path.join(args.out, "history.png"))
    print()
    report = _spectrum_report(
        model, x_test[:512], y_test[:512], top_k=3, trace=True, layers=True,
        density=os.path.join(args.out, "density.png"), seed=args.seed,
    )
    report["history"] = {k: [float(v) for v in history.history[k]] for k in keys}
    print()
    report["quantized"], report["tflite"] = _demo_quantize_and_export(model, x, y, x_test, y_test, args)
    with open(os.path.join(args.out, "demo.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"history plot, density plot, model.tflite and demo.json written to {args.out}/")
    return 0


def _demo_quantize_and_export(model, x, y, x_test, y_test, args) -> tuple[dict, dict]:
    """The demo's second half: ternary-residual layers swapped in, fine-tuned, exported to TFLite."""
    import numpy as np

    from keras_hessian import quantization_summary, quantize_model
    from keras_hessian.export import evaluate_tflite, format_parity_report, parity_report, to_tflite
    from keras_hessian.models import compile_classifier

    def accuracy(m):
        return float(np.mean(np.argmax(m.predict(x_test, verbose=0), axis=-1) == y_test))

    spec = {"scheme": "ternary_residual", "residuals": 1}
    print(f"quantize_model(model, {spec}): first and last layers stay float32")
    quantized = compile_classifier(quantize_model(model, spec), learning_rate=1e-3)
    post_training = accuracy(quantized)
    if args.fine_tune_epochs:
        quantized.fit(x, y, batch_size=64, epochs=args.fine_tune_epochs, verbose=0)
    totals = quantization_summary(quantized, print_fn=None)["total"]
    float_totals = quantization_summary(model, print_fn=None)["total"]
    quantized_report = {
        "float32_accuracy": accuracy(model),
        "post_training_accuracy": post_training,
        "fine_tuned_accuracy": accuracy(quantized),
        "fine_tune_epochs": args.fine_tune_epochs,
        "weight_bytes": int(totals["weight_bytes"]),
        "float32_weight_bytes": int(float_totals["weight_bytes"]),
        "multiplications": int(totals["multiplications"]),
        "float32_multiplications": int(float_totals["multiplications"]),
    }
    _print_table(
        ["model", "test accuracy", "weight bytes", "multiplications / example"],
        [
            ["float32", quantized_report["float32_accuracy"], float_totals["weight_bytes"], float_totals["multiplications"]],
            ["ternary r=1, post-training", post_training, totals["weight_bytes"], totals["multiplications"]],
            [f"ternary r=1, fine-tuned {args.fine_tune_epochs} ep.", quantized_report["fine_tuned_accuracy"],
             totals["weight_bytes"], totals["multiplications"]],
        ],
    )
    path = to_tflite(quantized, os.path.join(args.out, "model.tflite"))
    print(f"\nto_tflite -> {path} (LiteRT interpreter), parity with the Keras model on the test set:")
    tflite_report = parity_report(quantized, path, (x_test, y_test))
    evaluation = evaluate_tflite(path, (x_test, y_test))
    tflite_report.update(latency_ms=evaluation["latency_ms"], file_bytes=evaluation["file_bytes"])
    print(format_parity_report(tflite_report, path))
    return quantized_report, tflite_report


def _add_spectrum(subparsers) -> None:
    parser = subparsers.add_parser("spectrum", help="Hessian eigenvalues, trace and density of a saved model")
    parser.add_argument("model", help="a saved Keras model (.keras), loaded with safe_mode=True")
    parser.add_argument("--data", required=True, help="digits, mnist1d, tfds:NAME (needs the network once) or FILE.npz (arrays x, y)")
    parser.add_argument("--samples", type=int, default=1000, help="examples the Hessian is taken over (default 1000)")
    parser.add_argument("--top-k", type=int, default=3, help="number of top eigenvalues (default 3)")
    parser.add_argument("--trace", action="store_true", help="also estimate the trace (Hutch++)")
    parser.add_argument("--density", metavar="PNG", help="write the SLQ spectral density to this PNG")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--layers", action="store_true", help="one spectrum per layer (Hessian diagonal blocks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=_run_spectrum)


def _run_spectrum(args) -> int:
    import keras

    if not os.path.isfile(args.model):
        raise ValueError(f"MODEL: no such file {args.model!r}.")
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1. Received {args.top_k}.")
    if args.samples < 1:
        raise ValueError(f"--samples must be at least 1. Received {args.samples}.")
    model = keras.models.load_model(args.model, safe_mode=True)
    x, y = _load_data(args.data)
    x, y = _fit_inputs(x[: args.samples], model), y[: args.samples]
    print(f"{args.model}: {model.count_params()} parameters; Hessian over {len(x)} examples of {args.data}")
    report = _spectrum_report(
        model, x, y, top_k=args.top_k, trace=args.trace, layers=args.layers, density=args.density, seed=args.seed
    )
    report["model"] = args.model
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"results written to {args.json}")
    return 0


# ----------------------------------------------------------------------------------- train
def _add_train(subparsers) -> None:
    from keras_hessian.callbacks import LR_SCALING_RULES, METHODS

    parser = subparsers.add_parser(
        "train",
        help="train a small model inside one fit with a batch-size method (ABS, ABSA, baselines)",
        description="Train a small CNN on embedded data with one column of the ABSA table "
        "(Yao et al., arXiv 1810.01021) and print batch size, learning rate, top Hessian "
        "eigenvalue and accuracy every epoch.",
    )
    parser.add_argument("--method", choices=METHODS, default="absa", help="default: absa")
    parser.add_argument("--data", choices=["mnist1d", "digits"], default="mnist1d", help="default: mnist1d")
    parser.add_argument("--samples", type=int, default=5000, help="MNIST-1D examples, train + test (default: 5000)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128, help="base / initial batch size (default: 128)")
    parser.add_argument("--max-batch-size", type=int, default=4096, help="large batch / cap (default: 4096)")
    parser.add_argument("--max-physical-batch-size", type=int, default=None,
                        help="accumulate gradients above this batch size (default: never)")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD (momentum 0.9) rate at the base batch")
    parser.add_argument("--lr-scaling", choices=LR_SCALING_RULES, default="linear", help="ABS/ABSA rule")
    parser.add_argument("--lr-milestones", type=int, nargs="*", default=[], help="epochs of the step decay")
    parser.add_argument("--lr-decay", type=float, default=0.2)
    parser.add_argument("--warmup-epochs", type=int, default=5, help="FB warm-up (default: 5)")
    parser.add_argument("--patience", type=int, default=10, help="ABS: grow anyway after this many epochs")
    parser.add_argument("--check-every", type=int, default=1, help="ABS: measure every this many epochs")
    parser.add_argument("--hessian-examples", type=int, default=256, help="ABS: size of the fixed subset")
    parser.add_argument("--epsilon", type=float, default=0.005, help="ABSA: FGSM step")
    parser.add_argument("--adversarial-ratio", type=float, default=0.2, help="ABSA: share of each batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backup-dir", default=None, help="resume a killed run (keras BackupAndRestore)")
    parser.add_argument("--json", default=None, help="also write the per-epoch rows to this file")
    parser.set_defaults(run=_run_train)


def _train_model(name: str, input_shape: tuple, seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    conv = keras.layers.Conv1D if name == "mnist1d" else keras.layers.Conv2D
    return keras.Sequential(
        [
            keras.Input(input_shape),
            conv(32, 5 if name == "mnist1d" else 3, padding="same", activation="relu"),
            conv(32, 3, strides=2, padding="same", activation="relu"),
            conv(64, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def _run_train(args) -> int:
    import keras
    import numpy as np

    from keras_hessian.callbacks import training_callbacks
    from keras_hessian.data import adaptive_dataset, load_digits, load_mnist1d

    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1. Received {args.epochs}.")
    if args.data == "mnist1d":
        (x, y), (xt, yt) = load_mnist1d(num_samples=args.samples, seed=42)
    else:
        (x, y), (xt, yt) = load_digits(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    subset = rng.choice(len(x), min(args.hessian_examples, len(x)), replace=False)
    callbacks = training_callbacks(
        args.method,
        hessian_data=(x[subset], y[subset]),
        base_batch_size=args.batch_size,
        large_batch_size=args.max_batch_size,
        max_physical_batch_size=args.max_physical_batch_size,
        lr_milestones=args.lr_milestones,
        lr_decay=args.lr_decay,
        warmup_epochs=args.warmup_epochs,
        epsilon=args.epsilon,
        adversarial_ratio=args.adversarial_ratio,
        backup_dir=args.backup_dir,
        **(
            {"patience": args.patience, "check_every": args.check_every,
             "lr_scaling": args.lr_scaling, "seed": args.seed}
            if args.method in ("abs", "absa") else {}
        ),
    )
    model = _train_model(args.data, x.shape[1:], args.seed)
    model.compile(
        keras.optimizers.SGD(args.lr, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rows = []
    header = ["epoch", "batch", "lr", "eigenvalue", "train_acc", "test_acc", "seconds"]

    class Report(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            print(f"{args.method} on {args.data}: {len(x)} train / {len(xt)} test examples")
            print("  ".join(header), flush=True)
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {
                "epoch": epoch,
                "batch_size": int(logs.get("batch_size", 0)),
                "learning_rate": float(logs.get("learning_rate", float("nan"))),
                "top_eigenvalue": float(logs.get("hessian/top_eigenvalue", float("nan"))),
                "train_accuracy": float(logs.get("accuracy", float("nan"))),
                "test_accuracy": float(logs.get("val_accuracy", float("nan"))),
                "seconds": time.perf_counter() - self.start,
            }
            rows.append(row)
            print(
                f"{epoch:5d}  {row['batch_size']:5d}  {row['learning_rate']:.4g}  "
                f"{row['top_eigenvalue']:10.4g}  {row['train_accuracy']:9.4f}  "
                f"{row['test_accuracy']:8.4f}  {row['seconds']:7.1f}",
                flush=True,
            )

    extra = [keras.callbacks.BackupAndRestore(args.backup_dir)] if args.backup_dir else []
    model.fit(
        adaptive_dataset(x, y, seed=args.seed),
        epochs=args.epochs,
        validation_data=(xt, yt),
        validation_batch_size=1024,
        callbacks=[*extra, *callbacks, Report()],
        shuffle=False,
        verbose=0,
    )
    print(f"SGD iterations: {int(model.optimizer.iterations.numpy())}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"method": args.method, "data": args.data, "epochs": rows}, f, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `keras-hessian` console script.

    Bad input (a ValueError / TypeError / OSError raised by a sub-command or the library) is
    printed as `keras-hessian COMMAND: error: ...` on stderr with exit status 2, as argparse
    does for bad arguments.
    """
    args = _build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, TypeError, OSError) as error:
        print(f"keras-hessian {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
