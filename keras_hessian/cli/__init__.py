"""The `keras-hessian` command: one module per sub-command (`demo`, `spectrum`, `train`, `quantize`, `prune`, `export`).

Each sub-command module has `add_parser(subparsers)` and `run(args)`. Building the parser imports
no TensorFlow, so `--help`, `--version` and argument errors are instant; a sub-command imports
TensorFlow (quietly, see `_common.quiet_tensorflow`) once its arguments passed the cheap checks.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from keras_hessian._version import __version__
from keras_hessian.cli import demo, export, prune, quantize, spectrum, train
from keras_hessian.cli._common import add_verbose, one_line, quiet_warnings

_COMMANDS = (demo, spectrum, train, quantize, prune, export)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, with its errors on one line (no usage block), status 2 as before; sub-commands too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-hessian` with its sub-commands (imports no TensorFlow)."""
    parser = _Parser(
        prog="keras-hessian",
        description="Hessian spectra, adaptive batch size, pruning, quantized layers and TFLite export for Keras.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_verbose(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in _COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `keras-hessian` console script and of `python -m keras_hessian`.

    Without arguments it prints the help. Every failure of a sub-command is printed as one line
    `keras-hessian COMMAND: error: ...` on stderr with exit status 2, as argparse does for bad
    arguments; `--verbose` adds the traceback.
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    with quiet_warnings(args.verbose):
        try:
            return int(args.run(args) or 0)
        except Exception as error:  # noqa: BLE001  (the convention: one line, exit 2; Ctrl-C still stops)
            if args.verbose:
                traceback.print_exc()
            print(f"keras-hessian {args.command}: error: {one_line(error)}", file=sys.stderr)
            return 2


__all__ = ["build_parser", "main"]
