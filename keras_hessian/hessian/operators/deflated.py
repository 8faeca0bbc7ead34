"""DeflatedOperator: a Hessian operator with known eigen-directions projected out."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from keras_hessian.hessian import vectors as V


class DeflatedOperator:
    """`P H P` with `P = I - Q Q^T`, for orthonormal directions `Q` (e.g. top eigenvectors).

    Estimators run on it like on a `HessianOperator`: stochastic Lanczos quadrature on the
    deflated operator sees only the bulk of the spectrum, whose variance is far smaller than
    that of the outliers taken out (the idea of Hutch++, and of deflated SLQ).

    Example:

    ```python
    top = top_eigenvalues(op, k=10)
    bulk = DeflatedOperator(op, top.eigenvectors)
    ```

    Args:
        operator: a `HessianOperator`.
        directions: orthonormal parameter vectors to project out.
    """

    def __init__(self, operator, directions: Sequence):
        self.operator = operator
        self.variables = operator.variables
        self.blocks = ["model"]
        self._basis = tf.stack([V.to_flat(d) for d in directions], axis=1) if len(directions) else None

    @property
    def num_parameters(self) -> int:
        return self.operator.num_parameters

    @property
    def hvp_count(self) -> int:
        return self.operator.hvp_count

    def project(self, vector) -> list:
        """`(I - Q Q^T) v`."""
        if self._basis is None:
            return list(vector)
        flat = V.to_flat(vector)
        flat = flat - tf.linalg.matvec(self._basis, tf.linalg.matvec(self._basis, flat, transpose_a=True))
        return V.from_flat(flat, self.variables)

    def hvp(self, vector) -> list:
        return self.project(self.operator.hvp(self.project(vector)))

    def hvp_many(self, vectors) -> list:
        products = self.operator.hvp_many([self.project(v) for v in vectors])
        return [self.project(p) for p in products]
