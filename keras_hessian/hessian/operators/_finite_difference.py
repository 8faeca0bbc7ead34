"""The finite-difference Hessian-vector product: two gradients at w + eps v and w - eps v.

    H v ~ (g(w + eps v) - g(w - eps v)) / (2 eps)

It needs first derivatives only, so it serves models whose second-order automatic
differentiation is unavailable (an op with no registered second derivative, a custom gradient)
or too heavy in memory; Pearlmutter ("Fast exact multiplication by the Hessian", Neural
Computation 1994) introduced the exact R-operator (what `reverse_over_reverse` and
`forward_over_reverse` compute) as the cure for this approximation's error, and Nocedal & Wright
("Numerical Optimization", 2nd ed., sections 8.1 and 7.1) analyse its step.

Why our own code: no library offers a Hessian-vector product by differences of a Keras model's
gradient, and the part that matters is moving the user's weights and putting them back EXACTLY.
The weights are perturbed on the host between two ordinary gradient passes and restored in a
`finally` block by assigning a saved copy (never by subtracting eps v again, which would round),
so they are bit-identical after every product, also when a gradient pass raises.

The step. A central difference has truncation error eps^2 ||v||^2 |f'''| / 6 and a rounding
error of about u |g| / eps (u the unit roundoff of the precision the loss is computed in),
minimised at eps ~ u^(1/3) (Nocedal & Wright, eq. 8.6 and the remark after it; sqrt(u) is the
optimum of the one-sided difference). Scaling by (1 + ||w||) / ||v|| makes the perturbation a
fixed fraction of the weights (so that w + eps v is not rounded back to w) and independent of
v's length:

    eps = u^(1/3) * (1 + ||w||) / ||v||

u is that of the coarsest of the variables', the outputs' and the loss's dtypes: float64 layers
with a Keras loss object under the float32 floatx compute the loss in float32, and a float64
step there gave errors of 3e-3.

Measured once on the 2-core CPU machine (trained digits models, 300 examples, floatx set to the
precision, relative error ||Hv_fd - Hv|| / ||Hv|| against reverse-over-
reverse for four Gaussian v; MLP 64-24(tanh)-10, and 8x8 CNNs conv-pool-conv-dense with tanh +
average pooling or ReLU + max pooling):

    precision  MLP (tanh)     CNN (tanh, avg pool)  CNN (ReLU, max pool)
    float32    7e-5 .. 1.2e-4  1.4e-4 .. 2.2e-4      9e-2 .. 3e-1
    float64    3e-9 .. 5e-8    1.5e-9 .. 3e-8        1e-10 .. 4e-8

(sqrt(u) instead of u^(1/3): float32 errors equal to 2x larger on the smooth models; u^(1/4):
10x larger.) The documented
bound, tested: 1e-3 in float32 and 1e-6 in float64 for twice-differentiable models. Piecewise-
linear models (ReLU, max pooling) are the exception in float32: a step large enough to rise
above float32 rounding moves some pre-activations across their kinks, where the gradient jumps,
and autodiff's product (the Hessian of the active linear pieces) is not what the difference
sees; in float64 the step is small enough to cross none. A Keras 3 model under a mixed policy
is differentiated through its float32 view (`_precision.py`), so u is float32's there; a model
still computing in bfloat16/float16 (a full 16-bit policy, tf_keras) gets the 16-bit u and an
error that grows accordingly: prefer an autodiff method or float64 there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from keras_hessian.hessian import vectors as V

# The relative error against autodiff documented above for twice-differentiable models (the
# tests' bounds), by the precision the loss is computed in.
DOCUMENTED_RELATIVE_ERROR = {tf.float32: 1e-3, tf.float64: 1e-6}


def unit_roundoff(*dtypes) -> float:
    """Machine epsilon of the coarsest of `dtypes` (floating dtypes only count)."""
    floating = [tf.as_dtype(d) for d in dtypes if tf.as_dtype(d).is_floating]
    return max(float(np.finfo(d.as_numpy_dtype).eps) for d in floating) if floating else float(np.finfo(np.float32).eps)


def finite_difference_step(weights: Sequence[tf.Tensor], vector: Sequence[tf.Tensor], roundoff: float) -> float:
    """The step eps = u^(1/3) (1 + ||w||) / ||v|| (see the module docstring); 0 for v = 0."""
    vector_norm = float(V.norm(vector))
    if vector_norm == 0.0:
        return 0.0
    return roundoff ** (1.0 / 3.0) * (1.0 + float(V.norm(weights))) / vector_norm


def finite_difference_hvp(
    tf_vars: Sequence[tf.Variable], vector: Sequence[tf.Tensor], gradient: Callable[[], list], roundoff: float
) -> list[tf.Tensor]:
    """`H v` by central differences of `gradient()` (the mean gradient at the variables' current
    values), with the step for unit roundoff `roundoff`; the variables are restored
    bit-identically afterwards, also on error."""
    saved = [tf.identity(v.read_value()) for v in tf_vars]  # a copy, not a view of the buffer
    eps = finite_difference_step(saved, vector, roundoff)
    if eps == 0.0:
        return [tf.zeros_like(w) for w in saved]
    try:
        for v, w, d in zip(tf_vars, saved, vector):
            v.assign(w + tf.cast(eps, w.dtype) * d)
        plus = gradient()
        for v, w, d in zip(tf_vars, saved, vector):
            v.assign(w - tf.cast(eps, w.dtype) * d)
        minus = gradient()
    finally:
        for v, w in zip(tf_vars, saved):
            v.assign(w)
    # Divide in float64 on the way: 2 eps can be tiny in float64 models, and the cast is cheap.
    return [
        tf.cast((tf.cast(p, tf.float64) - tf.cast(m, tf.float64)) / (2.0 * eps), w.dtype)
        for p, m, w in zip(plus, minus, saved)
    ]
