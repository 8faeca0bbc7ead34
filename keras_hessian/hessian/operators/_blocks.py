"""Blocks: the groups of variables whose diagonal Hessian blocks the estimators measure apart."""

from __future__ import annotations

from collections.abc import Sequence

from keras_hessian._layers import walk_layers
from keras_hessian._validation import ArgumentTypeError

Block = tuple  # (name, [variables])


def layer_blocks(model) -> list[Block]:
    """One block per leaf layer that owns trainable weights, recursing into nested models.

    Layers of nested models are named by path (`outer/inner`), so two towers with a layer of
    the same name stay two blocks.
    """
    return [(path, list(layer.trainable_weights)) for path, layer in walk_layers(model) if layer.trainable_weights]


def resolve_blocks(model, blocks: str | Sequence | dict, variables: list) -> list[Block]:
    """`blocks` as `[(name, [variables])]`: "model", "layer", a list or a dict of variable groups."""
    if isinstance(blocks, str):
        if blocks == "model":
            return [("model", variables)]
        if blocks == "layer":
            found = layer_blocks(model)
            covered = {id(v) for _, vs in found for v in vs}
            rest = [v for v in variables if id(v) not in covered]
            if rest:  # weights created by the model itself, not by a layer
                found.append(("model_own_weights", rest))
            return found
        raise ValueError(f'blocks must be "model", "layer" or a list of variable groups. Received blocks={blocks!r}.')
    if isinstance(blocks, dict):
        items = list(blocks.items())
    elif isinstance(blocks, Sequence):
        items = [(f"block_{i}", group) for i, group in enumerate(blocks)]
    else:
        raise ArgumentTypeError(
            f'blocks must be "model", "layer", a list or a dict of variable groups. Received {type(blocks).__name__}.'
        )
    if not items:
        raise ValueError("blocks must name at least one variable group. Received an empty list.")
    known = {id(v) for v in variables}
    out = []
    for name, group in items:
        group = list(group) if isinstance(group, (list, tuple)) else [group]
        if not group:
            raise ValueError(f"blocks: the group {name!r} is empty.")
        for v in group:
            if id(v) not in known:
                raise ValueError(
                    f"blocks: the group {name!r} holds {getattr(v, 'path', getattr(v, 'name', v))!r}, "
                    "which is not a trainable variable of the model."
                )
        out.append((str(name), group))
    return out
