"""The one home of argument checks: every public function and class validates through these.

Each check names the argument and the value received, in Keras' style
(`"k must be an integer >= 1. Received k=0."`), and accepts numpy scalars where a Python number
is accepted (`np.int64(3)` is an integer, `True` is not).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


class ArgumentTypeError(TypeError, ValueError):
    """A wrong type of argument: both a TypeError and (as the earlier checks raised) a ValueError.

    numpy's `AxisError` (a ValueError and an IndexError) is the precedent: code that catches either
    keeps working.
    """


def _received(name: str, value: Any) -> str:
    return f"Received {name}={value!r}."


def is_integer(value: Any) -> bool:
    """True for Python and numpy integers, False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for Python and numpy reals (integers included), False for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(
    name: str,
    value: Any,
    minimum: int | None = 1,
    maximum: int | None = None,
    *,
    allow_none: bool = False,
) -> int | None:
    """Return `value` as a Python int, or raise naming `name` and the bounds.

    Raises:
        ArgumentTypeError: (a TypeError and a ValueError) if `value` is not an integer (bools are
            not), or None where not allowed.
        ValueError: if `value` lies outside `[minimum, maximum]`.
    """
    if value is None and allow_none:
        return None
    bounds = []
    if minimum is not None:
        bounds.append(f">= {minimum}")
    if maximum is not None:
        bounds.append(f"<= {maximum}")
    wanted = "an integer" + (" " + " and ".join(bounds) if bounds else "") + (" or None" if allow_none else "")
    if not is_integer(value):
        raise ArgumentTypeError(f"{name} must be {wanted}. {_received(name, value)}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {wanted}. {_received(name, value)}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    allow_none: bool = False,
) -> float | None:
    """Return `value` as a finite Python float, or raise naming `name` and the bounds.

    Raises:
        ArgumentTypeError: if `value` is not a real number.
        ValueError: if it is not finite or lies outside the bounds.
    """
    if value is None and allow_none:
        return None
    bounds = []
    if minimum is not None:
        bounds.append(f"{'>' if exclusive_minimum else '>='} {minimum}")
    if maximum is not None:
        bounds.append(f"{'<' if exclusive_maximum else '<='} {maximum}")
    wanted = "a number" + (" " + " and ".join(bounds) if bounds else "") + (" or None" if allow_none else "")
    if not is_number(value):
        raise ArgumentTypeError(f"{name} must be {wanted}. {_received(name, value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number. {_received(name, value)}")
    if minimum is not None and (number <= minimum if exclusive_minimum else number < minimum):
        raise ValueError(f"{name} must be {wanted}. {_received(name, value)}")
    if maximum is not None and (number >= maximum if exclusive_maximum else number > maximum):
        raise ValueError(f"{name} must be {wanted}. {_received(name, value)}")
    return number


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return `value` if it is one of `choices`, else raise ValueError listing them."""
    choices = tuple(choices)
    if not isinstance(value, str | int | float | type(None)) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}. {_received(name, value)}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Return `value` if it is a bool (numpy bools included), else raise ArgumentTypeError."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise ArgumentTypeError(f"{name} must be a bool. {_received(name, value)}")
    return bool(value)


def check_type(name: str, value: Any, types: type | tuple[type, ...], what: str) -> Any:
    """Return `value` if it is an instance of `types`, else raise ArgumentTypeError saying `what` was expected."""
    if not isinstance(value, types):
        raise ArgumentTypeError(f"{name} must be {what}. {_received(name, value)}")
    return value
