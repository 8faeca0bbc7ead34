"""What the sub-commands share: options, the error convention, quiet TensorFlow, data, progress, tables.

Nothing here imports TensorFlow at module level: building the parser and printing `--help` stay
instant. TensorFlow is imported by `quiet_tensorflow`, once the arguments are known to be valid.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import Any

DATA_HELP = (
    "digits, mnist1d (embedded, no network), tfds:NAME (e.g. tfds:mnist; needs tensorflow-datasets and the "
    "network once) or FILE.npz (arrays x, y; x_test, y_test optional)"
)
# The loggers that print TensorFlow's and Keras' Python-side messages.
_NOISY_LOGGERS = ("tensorflow", "absl", "h5py")
_NOISY_MODULES = r"(keras|tensorflow|tf_keras|absl|h5py|ai_edge_litert)(\.|$)"


class CommandError(ValueError):
    """A failure the user can fix: printed as one line `keras-hessian COMMAND: error: ...`, exit 2."""


def warn(command: str, message: str) -> None:
    """Print `keras-hessian COMMAND: warning: ...` on stderr (argparse's style)."""
    print(f"keras-hessian {command}: warning: {message}", file=sys.stderr, flush=True)


def add_verbose(parser: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    """`--verbose`, on the top parser (default False) and on each sub-command (default not set, so
    that `keras-hessian --verbose spectrum ...` and `keras-hessian spectrum ... --verbose` both work)."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=default,
        help="show TensorFlow's start-up log, library warnings and the traceback of a failure",
    )


def add_fine_tune_options(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that load a model, measure its Hessian and fine-tune it (quantize, prune)."""
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="fine-tune learning rate (Adam, 1e-3)")
    parser.add_argument("--loss", default=None, help="a Keras loss name, for a model saved without a compiled loss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unsafe", action="store_true", help="load with safe_mode=False: trusted files only")


def one_line(error: BaseException, limit: int = 400) -> str:
    """The error as one line: its first line, cut at `limit` characters (Keras may print whole arrays)."""
    text = str(error).strip()
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = str(error.args[0])
    first = text.splitlines()[0] if text else ""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        first = f"{error.filename}: {error.strerror}"
    if not isinstance(error, (ValueError, TypeError, OSError)):
        first = f"{type(error).__name__}: {first}" if first else type(error).__name__
    if len(first) > limit:
        first = first[: limit - 3] + "..."
    return first


@contextlib.contextmanager
def quiet_warnings(verbose: bool) -> Iterator[None]:
    """Hide the Python warnings of Keras, TensorFlow and LiteRT for the command's duration unless verbose."""
    with warnings.catch_warnings():
        if not verbose:
            warnings.filterwarnings("ignore", module=_NOISY_MODULES)
        yield


def quiet_tensorflow(verbose: bool) -> None:
    """Import TensorFlow without its start-up log (oneDNN, CUDA stub, cpu_feature_guard) unless verbose.

    `TF_CPP_MIN_LOG_LEVEL` hides the C++ INFO / WARNING lines, but the lines TensorFlow writes
    through absl before `absl::InitializeLog()` ignore it: they go straight to file descriptor 2.
    So the import and the device set-up (where `cuInit` reports a missing driver) run with fd 2
    sent to a temporary file, which is replayed if the import fails. An already imported
    TensorFlow (a test, a notebook) is left as it is. A user's own `TF_CPP_MIN_LOG_LEVEL` wins.
    """
    if verbose or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_logical_devices()
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def check_output_file(option: str, path: str | None) -> None:
    """Fail now, before any work, if `path` (the value of `option`) cannot be written.

    Uses the library's check (directory exists and is writable, path not a directory), which
    imports no TensorFlow, so a bad path is reported before TensorFlow starts.
    """
    if path is None:
        return
    from keras_hessian._files import check_output_path

    try:
        check_output_path(path)
    except (TypeError, ValueError) as error:
        raise CommandError(f"{option}: {error}") from None


def check_output_directory(option: str, path: str | None) -> None:
    """Fail now if the directory `path` can neither be used nor created (its nearest existing parent
    must be a writable directory)."""
    if path is None:
        return
    target = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(target) and not os.path.isdir(target):
        raise CommandError(f"{option}: {path!r} exists and is not a directory.")
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise CommandError(f"{option}: {existing!r} is not a directory, so {path!r} cannot be created.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CommandError(f"{option}: {existing!r} is not writable.")


def check_input_file(option: str, path: str) -> None:
    if not os.path.exists(path):
        raise CommandError(f"{option}: no such file {path!r}.")
    if os.path.isdir(path):
        raise CommandError(f"{option}: {path!r} is a directory, not a file.")


def load_data(spec: str, split: str = "train") -> tuple[Any, Any]:
    """`(x, y)` of one split of `--data`: `digits`, `mnist1d`, `tfds:NAME` or a FILE.npz.

    An npz without `x_test` / `y_test` has one split, used for both (`data_source` says so).
    """
    import numpy as np

    if spec in ("digits", "mnist1d") or spec.startswith("tfds:"):
        from keras_hessian.data import load_dataset

        try:
            train, test = load_dataset(spec)
        except ImportError as error:
            if "tensorflow_datasets" not in str(error) and "tensorflow-datasets" not in str(error):
                raise CommandError(f"--data {spec}: {one_line(error)}") from None
            raise CommandError(
                f"--data {spec} needs tensorflow-datasets: pip install '.[tfds]' in a keras-hessian checkout "
                "(or use --data digits or mnist1d, which need no network)."
            ) from None
        return train if split == "train" else test
    if spec.endswith(".npz"):
        if not os.path.isfile(spec):
            raise ValueError(f"--data: no such file {spec!r}.")
        try:
            arrays = dict(np.load(spec))
        except Exception as error:  # numpy raises OSError, ValueError, zipfile.BadZipFile, pickle errors
            raise CommandError(f"--data: {spec!r} is not a readable .npz file ({one_line(error)}).") from error
        key_x, key_y = _npz_keys(arrays, split)
        if key_x not in arrays or key_y not in arrays:
            raise ValueError(f"--data: {spec!r} must hold arrays {key_x!r} and {key_y!r}. It holds {sorted(arrays)}.")
        return arrays[key_x], arrays[key_y]
    raise ValueError(f"--data must be digits, mnist1d, tfds:NAME or a FILE.npz. Received {spec!r}.")


def data_source(spec: str, split: str) -> str:
    """In words, which arrays `load_data(spec, split)` returned."""
    if not spec.endswith(".npz"):
        return f"the {split} split of {spec}"
    import numpy as np

    with np.load(spec) as arrays:
        key_x, key_y = _npz_keys(arrays, split)
    note = " (it has no x_test, y_test)" if split == "test" and key_x == "x" else ""
    return f"arrays {key_x}, {key_y} of {spec}{note}"


def _npz_keys(arrays: Any, split: str) -> tuple[str, str]:
    return ("x", "y") if split == "train" or "x_test" not in arrays else ("x_test", "y_test")


def fit_inputs(x: Any, model: Any) -> Any:
    """Reshape flat or image data to the model's input shape when only the layout differs."""
    import numpy as np

    shape = tuple(getattr(model, "input_shape", (None,) + x.shape[1:])[1:])
    if None in shape or shape == x.shape[1:]:
        return x
    if int(np.prod(shape)) != int(np.prod(x.shape[1:])):
        raise ValueError(f"--data: examples of shape {x.shape[1:]} do not fit the model's input {shape}.")
    return x.reshape((-1,) + shape)


@contextlib.contextmanager
def progress(message: str) -> Iterator[None]:
    """`with progress("top-3 eigenvalues"):` prints `top-3 eigenvalues ...` now and
    ` done (1.2 s)` (or ` failed`) when the block ends: the CLI's progress line."""
    start = time.perf_counter()
    print(f"{message} ...", end="", flush=True)
    outcome = "failed"
    try:
        yield
        outcome = "done"
    finally:
        print(f" {outcome} ({time.perf_counter() - start:.1f} s)", flush=True)


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [[str(h) for h in header]] + [[f"{c:.6g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
