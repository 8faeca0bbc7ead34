"""`per_block`: run an algorithm once per block of an operator, returning `{block name: result}`."""

from __future__ import annotations

import functools
from collections.abc import Callable

from keras_hessian._validation import ArgumentTypeError


def per_block(estimator: Callable) -> Callable:
    """Run an estimator once per block when the operator has several, returning `{name: result}`.

    Each value is the estimator's result on `operator.block(name)`, the Hessian's diagonal block.
    """

    @functools.wraps(estimator)
    def run(operator, *args, **kwargs):
        if not hasattr(operator, "hvp"):
            raise ArgumentTypeError(f"operator must be a HessianOperator. Received {type(operator).__name__}.")
        names = getattr(operator, "blocks", ["model"])
        if len(names) > 1:
            # A per-block argument (a warm start) comes as {block name: value}, as the results do.
            initial = kwargs.pop("initial", None)
            if initial is not None and not isinstance(initial, dict):
                raise ArgumentTypeError(
                    "initial must be a dict {block name: value} on an operator with several blocks "
                    f"{list(names)}. Received {type(initial).__name__}."
                )

            def per_name(name):
                extra = {} if initial is None else {"initial": initial.get(name)}
                return estimator(operator.block(name), *args, **kwargs, **extra)

            return {name: per_name(name) for name in names}
        return estimator(operator, *args, **kwargs)

    return run
