"""Walking a model's layers by path: the one walker the engine, HAWQ, pruning and quantize share.

A layer's path is its name below the top model, the nested models' names joined by "/"
(`"inner_a/dense"`), so same-named layers of different nested models stay apart. Works for
Keras 3 and tf_keras models alike (a nested model is anything with its own `layers`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["walk_layers"]


def walk_layers(model: Any) -> list[tuple[str, Any]]:
    """`(path, layer)` of every leaf layer below `model` in order, nested models walked, each layer once."""
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def visit(container: Any, prefix: str) -> None:
        for layer in container.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if hasattr(layer, "layers"):  # a nested model (Keras 3 or tf_keras); plain layers have none
                visit(layer, f"{prefix}{layer.name}/")
            else:
                found.append((prefix + layer.name, layer))

    visit(model, "")
    return found
