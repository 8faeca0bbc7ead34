"""`keras-hessian export MODEL.keras OUTPUT.tflite`: TFLite conversion and the parity report against Keras.

The conversion is `keras_hessian.export.to_tflite` with the user's `--mode` as given (`auto`
included), so the command writes the same file as the library for the same model.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from keras_hessian._validation import check_int
from keras_hessian.cli._common import (
    DATA_HELP,
    CommandError,
    add_verbose,
    check_input_file,
    check_output_file,
    quiet_tensorflow,
    warn,
)
from keras_hessian.cli._model import load_model, refuse_overwriting
from keras_hessian.cli._tflite import export_data, write_checked

# keras_hessian.export.MODES, spelled out so that `--help` needs no TensorFlow (a test keeps them equal).
MODES = ("auto", "float32", "float16", "dynamic_int8", "int8", "int16x8")
_MODES_NEEDING_DATA = ("int8", "int16x8")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="convert a .keras model to TFLite and print its parity report against Keras",
        description="Convert MODEL.keras to a TFLite file (quantized layers folded, bfloat16 "
        "rebuilt in float32), run it with LiteRT and compare it with the Keras model.",
    )
    parser.add_argument("model", help="a model saved with model.save('MODEL.keras')")
    parser.add_argument("output", help="the .tflite file to write (written atomically; never the input model)")
    parser.add_argument(
        "--mode",
        default="auto",
        choices=MODES,
        help="conversion mode (default: auto, the narrowest exact storage for the model, float first/last layers)",
    )
    parser.add_argument(
        "--data", default=None, help=f"{DATA_HELP}: calibration for int8/int16x8 and the parity report"
    )
    parser.add_argument(
        "--representative-examples",
        type=int,
        default=200,
        help="training examples used to calibrate int8/int16x8 (default: 200)",
    )
    parser.add_argument(
        "--weight-only",
        action="store_true",
        help="store integer weights for float compute (dequantized when LiteRT loads the file) instead of "
        "hybrid kernels: outputs equal to Keras' where the levels are exact; modes auto (quantized models) "
        "and dynamic_int8",
    )
    parser.add_argument(
        "--unsafe", action="store_true",
        help="load with safe_mode=False (runs Python code stored in the file, e.g. a Lambda layer): trusted files only",
    )
    add_verbose(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    representative_examples = check_int("--representative-examples", args.representative_examples, 1)
    if args.data is None and args.mode in _MODES_NEEDING_DATA:
        raise ValueError(
            f"--mode {args.mode} calibrates on examples: pass --data digits, mnist1d, tfds:NAME or FILE.npz."
        )
    if args.weight_only and args.mode not in ("auto", "dynamic_int8"):
        raise CommandError(
            f"--weight-only stores integer weights for float compute: it works with --mode auto (a quantized "
            f"model) or dynamic_int8. Received --mode {args.mode}."
        )
    check_input_file("MODEL", args.model)
    refuse_overwriting(args.model, {"OUTPUT": args.output})
    if os.path.splitext(args.output)[1].lower() != ".tflite":
        warn("export", f"OUTPUT {args.output!r} does not end in .tflite; it will hold a TFLite flatbuffer.")
    check_output_file("OUTPUT", args.output)
    quiet_tensorflow(args.verbose)

    from keras_hessian import export

    model = load_model(args.model, command="export", unsafe=args.unsafe)
    calibration = evaluation = None
    if args.data is not None:
        calibration, evaluation = export_data(args.data, model)
        calibration = calibration[:representative_examples]
    shown_mode = f"auto ({export.auto_mode(model)})" if args.mode == "auto" else args.mode
    target, report = write_checked(model, args.output, args.mode, calibration, evaluation, weight_only=args.weight_only)
    if report is None:
        print(f"wrote {target} ({os.path.getsize(target):,} bytes, mode {shown_mode})")
        return 0
    print(f"{'mode':<20} {shown_mode}")
    print(export.format_parity_report(report, target))
    return 0
