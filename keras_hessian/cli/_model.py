"""Loading MODEL.keras for a sub-command, choosing its loss, and checking `--data` against it.

Each failure is one `CommandError` line that says what to do; Keras' own messages (advice to pass
`safe_mode=False` or `loss=`, which the command line does not have, or a dump of the whole input
array) do not reach the user.
"""

from __future__ import annotations

import os
import uuid
import zipfile
from typing import Any

from keras_hessian.cli._common import CommandError, check_input_file, one_line, progress, warn

# Cross-entropies take `from_logits`; the command sets it from the model's last activation.
_CROSS_ENTROPIES = {
    "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
    "categorical_crossentropy": "CategoricalCrossentropy",
    "binary_crossentropy": "BinaryCrossentropy",
}
_PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid", "log_softmax")


def load_model(path: str, *, command: str, unsafe: bool = False) -> Any:
    """`keras.models.load_model(path)` with the custom layers registered and one-line errors.

    `unsafe` loads with `safe_mode=False` (a Lambda layer's code runs): a warning says so.
    """
    import keras

    import keras_hessian.layers  # noqa: F401  (registers the quantized layers for deserialization)

    check_input_file("MODEL", path)
    if not zipfile.is_zipfile(path):
        raise CommandError(
            f"MODEL: {path!r} is not a valid .keras file (not a zip archive: truncated, corrupt or another "
            "format); save the model with model.save('MODEL.keras')."
        )
    if unsafe:
        warn(command, f"--unsafe: loading {path!r} may run Python code stored in it; use it only for files you trust.")
    try:
        with progress(f"loading {path}"):
            return keras.models.load_model(path, safe_mode=not unsafe)
    except (zipfile.BadZipFile, EOFError, KeyError, OSError) as error:
        raise CommandError(f"MODEL: {path!r} is not a valid .keras file ({one_line(error)}).") from None
    except ValueError as error:
        if "safe_mode" in str(error):
            raise CommandError(
                f"MODEL: {path!r} holds a Lambda layer (or other stored Python code), which Keras loads only from "
                "a trusted file: pass --unsafe if you trust it."
            ) from None
        raise CommandError(f"MODEL: {path!r} could not be loaded: {one_line(error)}") from None


def model_loss(model: Any, name: str | None) -> tuple[Any, str]:
    """The loss to measure with: `(loss for HessianOperator, description)`.

    `name` (from `--loss`) overrides the compiled loss; a cross-entropy's `from_logits` follows
    the model's last activation (softmax / sigmoid: probabilities; anything else: logits).
    Without `--loss` the model must be compiled with a loss.
    """
    import keras

    from keras_hessian import _compat

    if name is None:
        if _compat.compiled_loss(model) is None:
            raise CommandError(
                "MODEL: the model was saved without a compiled loss: pass --loss NAME, e.g. --loss "
                "sparse_categorical_crossentropy (from_logits follows the model's last activation)."
            )
        compiled = getattr(model, "loss", None)
        return None, f"the compiled loss ({getattr(compiled, 'name', None) or compiled})"
    if name in _CROSS_ENTROPIES:
        from_logits = _last_activation(model) not in _PROBABILITY_ACTIVATIONS
        loss = getattr(keras.losses, _CROSS_ENTROPIES[name])(from_logits=from_logits)
        return loss, f"{name} (from_logits={from_logits}, from the model's last activation)"
    try:
        keras.losses.get(name)
    except (ValueError, TypeError):
        raise CommandError(
            f"--loss: {name!r} is not a Keras loss name (e.g. sparse_categorical_crossentropy, mse)."
        ) from None
    return name, name


def _last_activation(model: Any) -> str | None:
    """The name of the last activation the model applies (`"linear"` for a plain Dense), if any."""
    for layer in reversed(model.layers):
        if getattr(layer, "layers", None):  # a nested model
            return _last_activation(layer)
        if type(layer).__name__ == "Softmax":
            return "softmax"
        activation = getattr(layer, "activation", None)
        if callable(activation):
            return getattr(activation, "__name__", type(activation).__name__).lower()
    return None


def check_examples(model: Any, x: Any, y: Any, loss: Any, loss_name: str) -> None:
    """Run the model and the loss on two examples: a mismatch is one line naming the shapes.

    Keras' own message for a wrong input shape prints the whole input array, and a one-hot label
    under a sparse loss reports ranks of tensors the user never named.
    """
    import keras

    from keras_hessian import _compat

    head_x, head_y = x[:2], y[:2]
    expected = tuple(getattr(model, "input_shape", (None,))[1:])
    try:
        predictions = model(head_x, training=False)
    except Exception as error:  # Keras raises ValueError, TypeError or its own types here
        raise CommandError(
            f"--data: examples of shape {tuple(x.shape[1:])} do not fit the model's input {expected}."
        ) from error
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    function = loss if loss is not None else _compat.detached_compiled_loss(model)
    try:
        function(head_y, predictions)
    except Exception as error:  # as above, for the loss
        shape = tuple(getattr(predictions, "shape", (None,))[1:])
        raise CommandError(
            f"--data: labels of shape {tuple(y.shape[1:])} do not fit {loss_name} on predictions of shape {shape} "
            "(a sparse cross-entropy takes class indices of shape (), a categorical one one-hot rows)."
        ) from error


def refuse_overwriting(model: str, outputs: dict) -> None:
    """Fail if an output path (`{option: path}`, None skipped) names the input model or another output."""
    for option, path in outputs.items():
        if path is not None and same_file(model, path):
            raise CommandError(f"{option} {path!r} is the input model: writing it would destroy the model.")
    refuse_same_outputs(outputs)


def refuse_same_outputs(outputs: dict) -> None:
    """Fail if two output paths (`{option: path}`, None skipped) name one file."""
    given = [(option, path) for option, path in outputs.items() if path is not None]
    for i, (option, path) in enumerate(given):
        for other, earlier in given[:i]:
            if same_file(earlier, path):
                raise CommandError(f"{option} {path!r} is the same file as {other}: give them two names.")


def check_keras_file(option: str, path: str | None) -> None:
    """Fail unless `path` (None skipped) names a `.keras` file, Keras' native format."""
    if path is not None and not str(path).endswith(".keras"):
        raise CommandError(f"{option} must name a .keras file (Keras' native format). Received {path!r}.")


def same_file(a: str, b: str) -> bool:
    """True if paths `a` and `b` name one file (the same path, a symlink, or a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def save_model_atomically(model: Any, path: str) -> None:
    """`model.save(path)` through a temporary `.keras` file beside it: `path` is replaced whole or not at all."""
    target = os.path.abspath(os.path.expanduser(path))
    directory, name = os.path.split(target)
    temporary = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.keras")
    try:
        model.save(temporary)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(path: str, content: Any, indent: int = 2) -> None:
    """Strict JSON (NaN and infinities written as null), written atomically."""
    import json
    import math
    import pathlib

    from keras_hessian._files import write_atomically

    def strict(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: strict(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [strict(item) for item in value]
        return value

    text = json.dumps(strict(content), indent=indent, allow_nan=False)
    write_atomically(pathlib.Path(os.path.abspath(os.path.expanduser(path))), text.encode())
