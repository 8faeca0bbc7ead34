"""`keras-hessian spectrum MODEL.keras --data ...`: top eigenvalues, trace, density and loss landscape of a saved model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from keras_hessian._validation import check_int
from keras_hessian.cli._common import (
    DATA_HELP,
    add_verbose,
    check_input_file,
    check_output_file,
    data_source,
    fit_inputs,
    load_data,
    print_table,
    progress,
    quiet_tensorflow,
)
from keras_hessian.cli._model import check_examples, load_model, model_loss, refuse_overwriting, write_json

SPLITS = ("train", "test")
# spectral_density's defaults, named in the progress line.
_SLQ_RUNS, _SLQ_STEPS, _SLQ_DEFLATION = 4, 25, 0  # spectral_density's defaults: PyHessian's 100 products
# The landscape's grid along the (unit) top eigenvector: PyHessian's example's 21 points.
_LANDSCAPE_SPAN, _LANDSCAPE_STEPS = 1.0, 21


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "spectrum",
        help="Hessian eigenvalues, trace and density of a saved model",
        description="Measure the Hessian of MODEL's loss on examples of --data: top eigenvalues (Lanczos), "
        "optionally the trace (Hutch++), per-layer blocks and the SLQ spectral density.",
    )
    parser.add_argument("model", help="a saved Keras model (.keras), loaded with safe_mode=True unless --unsafe")
    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument(
        "--split", choices=SPLITS, default="train",
        help="the split the Hessian is taken over (default: train, the loss the model was fit to; "
        "an npz without x_test, y_test has one split)",
    )
    parser.add_argument("--samples", type=int, default=1000, help="examples the Hessian is taken over (default 1000)")
    parser.add_argument("--top-k", type=int, default=3, help="number of top eigenvalues (default 3)")
    parser.add_argument("--trace", action="store_true", help="also estimate the trace (Hutch++)")
    parser.add_argument("--density", metavar="PNG", help="write the SLQ spectral density to this PNG")
    parser.add_argument(
        "--landscape", metavar="PNG",
        help="write the loss along the top Hessian eigenvector (offsets -1..1, 21 points) to this PNG",
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument(
        "--layers", action="store_true", help="also one spectrum per layer (Hessian diagonal blocks)"
    )
    parser.add_argument(
        "--loss", metavar="NAME",
        help="a Keras loss name (e.g. sparse_categorical_crossentropy) instead of the compiled loss; needed for "
        "an uncompiled model. A cross-entropy's from_logits follows the last activation (softmax/sigmoid: False)",
    )
    parser.add_argument(
        "--unsafe", action="store_true",
        help="load with safe_mode=False (runs Python code stored in the file, e.g. a Lambda layer): trusted files only",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_verbose(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    top_k = check_int("--top-k", args.top_k, 1)
    samples = check_int("--samples", args.samples, 1)
    check_input_file("MODEL", args.model)
    refuse_overwriting(args.model, {"--json": args.json, "--density": args.density, "--landscape": args.landscape})
    check_output_file("--json", args.json)
    check_output_file("--density", args.density)
    check_output_file("--landscape", args.landscape)
    quiet_tensorflow(args.verbose)
    model = load_model(args.model, command="spectrum", unsafe=args.unsafe)
    loss, loss_name = model_loss(model, args.loss)
    with progress(f"loading --data {args.data} ({args.split} split)"):
        x, y = load_data(args.data, args.split)
    x, y = fit_inputs(x[:samples], model), y[:samples]
    check_examples(model, x, y, loss, loss_name)
    source = data_source(args.data, args.split)
    print(f"{args.model}: {model.count_params()} parameters; Hessian of {loss_name} over {len(x)} examples of {source}")
    report = spectrum_report(
        model, x, y, loss=loss, top_k=top_k, trace=args.trace, layers=args.layers, density=args.density,
        seed=args.seed, landscape=args.landscape,
    )
    report.update(model=args.model, data=args.data, split=args.split)
    if args.json:
        write_json(args.json, report)
        print(f"results written to {args.json}")
    return 0


def spectrum_report(
    model: Any,
    x: Any,
    y: Any,
    *,
    top_k: int,
    trace: bool,
    layers: bool,
    density: str | None,
    seed: int,
    loss: Any = None,
    landscape: str | None = None,
) -> dict:
    """Measure and print the spectrum of `model` on `(x, y)`; return it as a JSON-ready dict.

    The whole model's row always comes first (block `"model"`); with `layers` one row per layer
    (Hessian diagonal block) follows.
    """
    from keras_hessian import plots
    from keras_hessian.hessian import (
        HessianOperator,
        hutchinson_trace,
        loss_landscape,
        spectral_density,
        top_eigenvalues,
    )

    report: dict = {"parameters": None, "examples": len(x), "blocks": {}}
    top_eigen = None
    with progress(f"Hessian operator on {len(x)} examples"):
        operator = HessianOperator(model, (x, y), loss=loss)
        # An operator with several blocks makes the estimators answer per block: one operator per layer.
        per_layer = HessianOperator(model, (x, y), loss=loss, blocks="layer") if layers else None
    report["parameters"] = operator.num_parameters
    blocks = [("model", operator)] + ([(name, per_layer.block(name)) for name in per_layer.blocks] if layers else [])
    for name, block in blocks:
        k = min(top_k, block.num_parameters)
        entry: dict = {"parameters": block.num_parameters}
        with progress(f"{name}: top-{k} eigenvalues (Lanczos)"):
            eigen = top_eigenvalues(block, k=k, seed=seed)
        entry["eigenvalues"] = [float(v) for v in eigen.eigenvalues]
        entry["eigenvalue_hvps"] = eigen.hvp_count
        if name == "model":
            top_eigen = eigen
        if trace:
            with progress(f"{name}: trace (Hutch++)"):
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
    print_table(header, rows)
    if density:
        label = f"spectral density (SLQ: {_SLQ_RUNS} runs x {_SLQ_STEPS} Lanczos steps)"

        redraw = sys.stdout.isatty()

        def step_line(step: int, steps: int) -> None:
            # On a terminal the line is redrawn after each Lanczos step; in a log, every tenth step is appended.
            if redraw:
                print(f"\r{label} ... step {step}/{steps}", end="", flush=True)
            elif step % 10 == 0 or step == steps:
                print(f" step {step}/{steps}", end="", flush=True)

        with progress(label):
            result = spectral_density(
                operator, n_vectors=_SLQ_RUNS, lanczos_steps=_SLQ_STEPS, deflation=_SLQ_DEFLATION, seed=seed,
                progress=step_line,
            )
        plots.plot_density(result, density)
        report["density_png"] = density
        print(f"density written to {density}")
    if landscape:
        label = f"loss landscape along the top eigenvector ({_LANDSCAPE_STEPS} points in [-{_LANDSCAPE_SPAN:g}, {_LANDSCAPE_SPAN:g}])"

        def point_line(done: int, total: int) -> None:
            print(f"\r{label} ... point {done}/{total}", end="", flush=True)

        with progress(label):
            # Along the eigenvector just found (an EigenResult as directions): no second Lanczos run.
            result = loss_landscape(
                model, (x, y), directions=top_eigen, span=_LANDSCAPE_SPAN, steps=_LANDSCAPE_STEPS, loss=loss,
                progress=point_line,
            )
        plots.plot_landscape(result, landscape)
        report["landscape"] = {
            "png": landscape, "offsets": [float(a) for a in result.offsets], "losses": [float(v) for v in result.losses],
        }
        print(f"landscape written to {landscape}")
    return report
