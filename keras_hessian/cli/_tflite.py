"""What `export` and `quantize` share: evaluation data shaped for a model, and a checked TFLite write.

The write converts to a temporary file next to the target, runs the parity report, and only then
replaces the target, so an existing file survives any failure.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from keras_hessian.cli._common import load_data


def export_data(name: str, model: Any) -> tuple[Any, tuple[Any, Any]]:
    """(calibration inputs, (test inputs, test labels)) shaped for `model`'s input.

    Unlike `fit_inputs` a layout that does not fit is passed on as is, so that the parity
    report names the shapes that disagree.
    """
    import numpy as np

    (x_train, _), (x_test, y_test) = load_data(name, "train"), load_data(name, "test")
    shape = tuple(model.input_shape[1:])

    def fit(x):
        if None not in shape and x.shape[1:] != shape and x[0].size == int(np.prod(shape)):
            return x.reshape((len(x), *shape))
        return x

    return fit(x_train).astype("float32"), (fit(x_test).astype("float32"), y_test)


def write_checked(
    model: Any,
    output: str,
    mode: str,
    calibration: Any,
    evaluation: Any,
    *,
    sparse: bool = False,
    weight_only: bool = False,
) -> tuple[str, dict | None]:
    """Convert `model` to `output` (`to_tflite`, `sparse` / `weight_only` storage if asked), with the parity report on `evaluation`.

    Returns `(absolute target path, report or None)`.
    """
    from keras_hessian import export

    target = os.path.abspath(os.path.expanduser(output))
    directory, name = os.path.split(target)
    temporary = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tflite")
    try:
        written = export.to_tflite(
            model, temporary, mode=mode, representative_data=calibration, sparse=sparse, weight_only=weight_only
        )
        report = None if evaluation is None else export.parity_report(model, written, evaluation)
        os.replace(written, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return target, report
