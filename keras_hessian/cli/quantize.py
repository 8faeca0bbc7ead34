"""`keras-hessian quantize MODEL.keras --budget 0.15 --out model.tflite`: a HAWQ plan, applied and exported.

Measures each layer's Hessian sensitivity on the training split of `--data`, solves the exact
allocation program for the budget (`keras_hessian.hawq.assign_precision`), prints the plan,
applies it (`quantize_model`), fine-tunes if asked, exports to TFLite and prints the LiteRT
parity report on the test split. `--out` is replaced only after the parity report succeeded.
"""

from __future__ import annotations

import argparse
from typing import Any

from keras_hessian._validation import check_float, check_int
from keras_hessian.cli._common import (
    DATA_HELP,
    CommandError,
    add_fine_tune_options,
    add_verbose,
    check_input_file,
    check_output_file,
    fit_inputs,
    load_data,
    print_table,
    progress,
    quiet_tensorflow,
)
from keras_hessian.cli._model import (
    check_examples,
    check_keras_file,
    load_model,
    model_loss,
    refuse_overwriting,
    save_model_atomically,
)
from keras_hessian.cli._tflite import export_data, write_checked

# keras_hessian.hawq names, spelled out so that `--help` needs no TensorFlow (a test keeps them equal).
CANDIDATES = ("float32", "bfloat16", "float16", "dfp16", "int8", "int4", "ternary_residual", "ternary", "binary")
DEFAULT_CANDIDATES = "int8,int4,ternary,binary"
METRICS = ("trace", "top_eigenvalue")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quantize",
        help="choose a precision per layer from the Hessian (HAWQ), quantize, fine-tune, export to TFLite",
        description="Measure per-layer Hessian sensitivity, solve the exact bit-allocation program for a size "
        "budget, apply the plan, optionally fine-tune, and export the result to TFLite with a parity report.",
    )
    parser.add_argument("model", help="a model saved with model.save('MODEL.keras')")
    parser.add_argument("--data", required=True, help=f"{DATA_HELP}: train split for the Hessian, test for parity")
    parser.add_argument("--budget", type=float, required=True, help="weight bytes as a fraction of float32 (e.g. 0.15)")
    parser.add_argument(
        "--candidates", default=DEFAULT_CANDIDATES,
        help=f"comma-separated precisions among {', '.join(CANDIDATES)} (default: {DEFAULT_CANDIDATES})",
    )
    parser.add_argument("--metric", default="trace", choices=METRICS, help="HAWQ-V2 trace (default) or V1 eigenvalue")
    parser.add_argument("--no-pin", action="store_true", help="plan the first and last layers too (default: float32)")
    parser.add_argument("--hessian-examples", type=int, default=512, help="training examples of the Hessian (512)")
    parser.add_argument("--fine-tune-epochs", type=int, default=0, help="quantization-aware epochs after (default: 0)")
    parser.add_argument("--plan-out", default=None, help="also write the plan as JSON")
    parser.add_argument("--plot", default=None, help="also draw the sensitivities and chosen precisions (PNG)")
    parser.add_argument("--save", default=None, help="also save the quantized Keras model (.keras)")
    parser.add_argument("--out", required=True, help="the .tflite file to write")
    add_fine_tune_options(parser)
    add_verbose(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    budget = check_float("--budget", args.budget, minimum=0.0, exclusive_minimum=True, maximum=1.0)
    examples = check_int("--hessian-examples", args.hessian_examples, 1)
    epochs = check_int("--fine-tune-epochs", args.fine_tune_epochs, 0)
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown or not candidates:
        raise CommandError(f"--candidates: {unknown or 'none'} not among {list(CANDIDATES)}.")
    check_input_file("MODEL", args.model)
    check_keras_file("--save", args.save)
    refuse_overwriting(args.model, {"--out": args.out, "--save": args.save, "--plan-out": args.plan_out, "--plot": args.plot})
    for option in ("--out", "--plan-out", "--plot", "--save"):
        check_output_file(option, getattr(args, option[2:].replace("-", "_")))
    quiet_tensorflow(args.verbose)

    from keras_hessian import hawq, plots
    from keras_hessian.quantize import quantize_model

    model = load_model(args.model, command="quantize", unsafe=args.unsafe)
    loss, loss_name = model_loss(model, args.loss)
    with progress(f"loading --data {args.data}"):
        x, y = load_data(args.data, "train")
    x = fit_inputs(x, model)
    check_examples(model, x, y, loss, loss_name)
    with progress(f"per-layer Hessian sensitivity ({args.metric}) of {loss_name} on {min(examples, len(x))} examples"):
        sensitivity = hawq.layer_sensitivity(model, (x[:examples], y[:examples]), args.metric, loss, seed=args.seed)
    plan = hawq.assign_precision(
        model, candidates=candidates, budget=budget, sensitivity=sensitivity, pin=None if args.no_pin else ("first", "last")
    )
    print()
    print_table(
        ["layer", "params", "sensitivity", "precision", "bytes"],
        [[r.name, r.parameters, "pinned" if r.sensitivity is None else r.sensitivity, r.precision, r.bytes]
         for r in plan.layers.values()],
    )
    print(f"planned: {plan.predicted_bytes:,} bytes = {plan.size_ratio:.3f} x float32 ({plan.float32_bytes:,})\n")
    quantized = quantize_model(model, plan)
    if epochs:
        _fine_tune(quantized, model, x, y, loss, epochs, args.learning_rate)
    calibration, evaluation = export_data(args.data, quantized)
    from keras_hessian import export

    target, report = write_checked(quantized, args.out, "auto", calibration[:200], evaluation)
    print(export.format_parity_report(report, target))
    # The other outputs once the export has succeeded: a failure above leaves every file as it was.
    if args.plan_out:
        plan.save(args.plan_out)
        print(f"plan written to {args.plan_out}")
    if args.plot:
        plots.plot_sensitivity(plan, args.plot)
        print(f"sensitivities drawn to {args.plot}")
    if args.save:
        save_model_atomically(quantized, args.save)
        print(f"quantized model saved to {args.save}")
    return 0


def _fine_tune(quantized: Any, original: Any, x: Any, y: Any, loss: Any, epochs: int, learning_rate: float) -> None:
    import keras

    from keras_hessian import _compat

    compiled = _compat.compiled_loss(original)
    quantized.compile(
        keras.optimizers.Adam(learning_rate),
        loss=loss if loss is not None else (original.loss if compiled is not None else None),
        metrics=["accuracy"],
    )
    with progress(f"fine-tuning {epochs} epoch(s) at learning rate {learning_rate:g}"):
        quantized.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
