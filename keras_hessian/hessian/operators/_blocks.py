"""Blocks: the groups of variables whose diagonal Hessian blocks the estimators measure apart."""

from __future__ import annotations

from collections.abc import Sequence

from keras_hessian._compat import sublayers
from keras_hessian._layers import walk_layers
from keras_hessian._validation import ArgumentTypeError

Block = tuple  # (name, [variables])


def _sublayer_blocks(path: str, layer, seen: set) -> list[Block]:
    """The blocks of one layer: one per sub-layer with trainable weights (recursively), and the
    layer's own weights that no sub-layer holds under the layer's path. A weight is counted once
    (the first block that reaches it), so a shared sub-layer does not appear twice."""
    out: list[Block] = []
    names: set[str] = set()
    for sub in sublayers(layer):
        if not sub.trainable_weights or id(sub) in seen:
            continue
        seen.add(id(sub))
        name, suffix = sub.name, 1
        while name in names:  # two sub-layers of one name: keep both, numbered
            name, suffix = f"{sub.name}_{suffix}", suffix + 1
        names.add(name)
        out.extend(_sublayer_blocks(f"{path}/{name}", sub, seen))
    covered = {id(v) for _, group in out for v in group}
    own = [v for v in layer.trainable_weights if id(v) not in covered]
    return ([(path, own)] if own else []) + out


def layer_blocks(model) -> list[Block]:
    """One block per leaf layer that owns trainable weights, recursing into nested models and
    into layers made of layers.

    Blocks are named by path: layers of nested models as `outer/inner`, so two towers with a
    layer of the same name stay two blocks; the sub-layers of a composite layer as
    `layer/sub` (a transformer's `block_0_attention/query`, `.../key`, `.../value`,
    `.../attention_output`; KerasHub's `bert_backbone/transformer_layer_0/self_attention/query`),
    so a transformer's blocks read as its parts. Weights a composite layer holds itself (not
    through a sub-layer) are a block under the layer's own path.
    """
    out: list[Block] = []
    seen: set[int] = set()
    for path, layer in walk_layers(model):
        if layer.trainable_weights:
            out.extend(_sublayer_blocks(path, layer, seen))
    claimed: set[int] = set()
    blocks = []
    for name, group in out:  # a weight reached twice (shared between layers) stays in its first block
        group = [v for v in group if id(v) not in claimed]
        claimed.update(id(v) for v in group)
        if group:
            blocks.append((name, group))
    return blocks


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
