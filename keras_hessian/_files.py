"""Output files (exports, plans, reports): the path checks run before any work, and atomic writes.

A file is written to a temporary file in the target directory, then moved over the target with
`os.replace`, so the target is either the complete new file or untouched.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from typing import Any

from keras_hessian._validation import check_type

__all__ = ["check_output_path", "write_atomically"]


def check_output_path(path: Any) -> pathlib.Path:
    """The absolute path to write, after checking it is a file in a writable directory.

    Run it before the slow work, so a bad path is reported at once.

    Args:
        path: a `str` or `os.PathLike`.

    Raises:
        TypeError: `path` is not a path.
        ValueError: `path` is a directory, or its directory is missing or not writable.
    """
    check_type("path", path, (str, os.PathLike), "a str or os.PathLike")
    target = pathlib.Path(path).expanduser().absolute()
    if target.is_dir():
        raise ValueError(f"path must be a file, not a directory. Received path={str(path)!r}.")
    if not target.parent.is_dir():
        raise ValueError(
            f"path must be in an existing directory; {str(target.parent)!r} does not exist or is "
            f"not a directory. Received path={str(path)!r}."
        )
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise ValueError(
            f"path must be in a writable directory; {str(target.parent)!r} is not writable. "
            f"Received path={str(path)!r}."
        )
    return target


def write_atomically(target: pathlib.Path, content: bytes) -> None:
    """Write `content` to `target` completely or not at all (temp file + os.replace)."""
    descriptor, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates 0600; give the usual mode
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
