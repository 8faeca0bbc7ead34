"""`keras-hessian demo [--quick] [--out DIR] [--data digits|mnist1d]`: the whole package in one run.

The stages live in `keras_hessian.demo` (a library module, so a notebook can run them too); this
module checks the arguments before TensorFlow starts and hands over.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from keras_hessian._validation import check_int
from keras_hessian.cli._common import CommandError, add_verbose, check_output_directory, quiet_tensorflow

# keras_hessian.demo.DATASETS, spelled out so that `--help` needs no TensorFlow (a test keeps them equal).
DATASETS = ("digits", "mnist1d")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="ABSA training, per-layer spectrum, HAWQ, OBD pruning and TFLite export of a small CNN, with a report",
        description="Train a small CNN with adaptive batch size and adversarial augmentation (ABSA) beside a "
        "fixed batch, measure its per-layer Hessian spectrum and density, quantize it with a HAWQ plan, prune it "
        "with OBD, export every model to TFLite and evaluate it with LiteRT. Writes DIR/report.md, DIR/demo.json, "
        "four PNGs and the .tflite files. About 30 seconds on 2 CPU cores; --quick about 20.",
    )
    parser.add_argument("--quick", action="store_true", help="every stage smaller (about 20 seconds)")
    parser.add_argument("--out", default="keras-hessian-demo", help="output directory (default: keras-hessian-demo)")
    parser.add_argument("--data", default="digits", help="digits (default) or mnist1d, both embedded")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs of both runs (default 12, quick 4)")
    parser.add_argument("--fine-tune-epochs", type=int, default=None,
                        help="fine-tune epochs after quantization (default 2, quick 1)")
    parser.add_argument("--seed", type=int, default=0)
    add_verbose(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.data not in DATASETS:
        raise CommandError(f"--data must be one of {', '.join(DATASETS)}. Received {args.data!r}.")
    if args.epochs is not None:
        check_int("--epochs", args.epochs, 1)
    if args.fine_tune_epochs is not None:
        check_int("--fine-tune-epochs", args.fine_tune_epochs, 0)
    check_int("--seed", args.seed, 0)
    check_output_directory("--out", args.out)
    quiet_tensorflow(args.verbose)

    from keras_hessian.demo import run_demo, settings_for

    settings = settings_for(args.quick, args.data, epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs)
    run_demo(args.out, settings, seed=args.seed, log=lambda line: print(line, flush=True),
             verbose="auto" if sys.stdout.isatty() else 2)
    return 0
