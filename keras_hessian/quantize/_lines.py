"""A text table's printing, shared by QuantizeReport and QuantizationSummary: each defines `lines()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class PrintsLines:
    """`print()`, `repr()` / `str()` and IPython's display of an object's `lines()`."""

    def lines(self) -> list[str]:  # pragma: no cover - defined by each table
        raise NotImplementedError

    def print(self, print_fn: Callable[[str], Any] = print) -> None:
        """Send the full table to `print_fn` line by line (default: `print`)."""
        for line in self.lines():
            print_fn(line)

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    __str__ = __repr__

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # IPython would otherwise pretty-print the object's fields (a dict for the summary), not the table.
        printer.text(repr(self))
