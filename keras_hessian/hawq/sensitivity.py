"""Per-layer Hessian sensitivity, the quantity HAWQ ranks layers by.

HAWQ-V1 (Dong et al., ICCV 2019) ranks layers by the top eigenvalue of the loss Hessian's block
of the layer's weights; HAWQ-V2 (Dong et al., NeurIPS 2020) by its average trace, tr(H_i) / n_i,
which it shows to be the better measure of how much quantizing that layer perturbs the loss
(the second-order term of E[dL] = 1/2 * tr(H_i) / n_i * ||Q(W_i) - W_i||^2 for a perturbation
isotropic within the layer). Both are computed here with the engine over ALL of `data`, in
inference mode by default, with the model's weights untouched: the block is the layer's kernel
(the tensor that gets quantized), the rest of the model held fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import keras

from keras_hessian import _compat
from keras_hessian._layers import walk_layers
from keras_hessian._validation import check_choice, check_float, check_int
from keras_hessian.hessian import HessianOperator, hutchinson_trace, top_eigenvalues

__all__ = ["METRICS", "LayerSensitivity", "kernel_layers", "kernel_of", "kernels_of", "layer_sensitivity"]

METRICS = ("trace", "top_eigenvalue")
_KERNEL_NAMES = ("kernel", "depthwise_kernel", "embeddings")


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's sensitivity.

    Attributes:
        name: the layer's path in the model (`outer/inner` for layers of nested models).
        parameters: the number of weights in its kernel.
        metric: `"trace"` (HAWQ-V2) or `"top_eigenvalue"` (HAWQ-V1).
        sensitivity: trace / parameters, or top eigenvalue / parameters.
        standard_error: of `sensitivity` (the trace estimate's; None for an eigenvalue).
        trace: the kernel block's trace estimate (None for the eigenvalue metric).
        top_eigenvalue: the kernel block's top eigenvalue (None for the trace metric).
        hvp_count: Hessian-vector products spent on this layer.
    """

    name: str
    parameters: int
    metric: str
    sensitivity: float
    standard_error: float | None
    trace: float | None
    top_eigenvalue: float | None
    hvp_count: int

    def __repr__(self) -> str:
        error = "" if self.standard_error is None else f" +- {self.standard_error:.3g}"
        return (
            f"LayerSensitivity({self.name!r}, {self.metric}/n = {self.sensitivity:.4g}{error}, "
            f"parameters={self.parameters}, hvps={self.hvp_count})"
        )


def kernel_of(layer: keras.layers.Layer):
    """The weight a quantizer replaces in `layer` (kernel, depthwise kernel, embeddings), or None."""
    for name in _KERNEL_NAMES:
        weight = getattr(layer, name, None)
        if weight is not None and getattr(weight, "trainable", False):
            return weight
    return None


def kernels_of(layer: keras.layers.Layer) -> list:
    """Every weight a quantizer replaces in `layer`: one kernel, or a composite layer's several.

    A MultiHeadAttention's quantized twin quantizes its query / key / value / output projections,
    a SeparableConv2D's its depthwise and pointwise kernels, a KerasHub TransformerEncoder's its
    attention projections and feed-forward kernels: their HAWQ block is all of them.
    """
    if isinstance(layer, keras.layers.MultiHeadAttention):
        projections = _compat.attention_projections(layer).values()
        return [p.kernel for p in projections if getattr(p, "kernel", None) is not None and p.kernel.trainable]
    encoder = _compat.encoder_kernel_layers(layer)  # KerasHub TransformerEncoder
    if encoder is not None:
        return [p.kernel for p in encoder if p.kernel.trainable]
    if isinstance(layer, keras.layers.SeparableConv2D) and getattr(layer, "pointwise_kernel", None) is not None:
        return [w for w in (layer.depthwise_kernel, layer.pointwise_kernel) if w.trainable]
    kernel = kernel_of(layer)
    return [] if kernel is None else [kernel]


def kernel_layers(model: keras.Model) -> list[tuple[str, keras.layers.Layer]]:
    """`(path, layer)` for every leaf layer with a trainable kernel (or several), nested models included."""
    return [(path, layer) for path, layer in walk_layers(model) if kernels_of(layer)]


def _select(model: keras.Model, layers: Iterable[str] | None) -> list[tuple[str, keras.layers.Layer]]:
    available = kernel_layers(model)
    if layers is None:
        if not available:
            raise ValueError(f"model {model.name!r} has no layer with a trainable kernel to measure.")
        return available
    if isinstance(layers, str):
        layers = [layers]
    by_path = dict(available)
    by_name = {}
    for path, layer in available:
        by_name.setdefault(layer.name, []).append(path)
    chosen = []
    for name in layers:
        if name in by_path:
            chosen.append((name, by_path[name]))
        elif len(by_name.get(name, [])) == 1:
            chosen.append((by_name[name][0], by_path[by_name[name][0]]))
        else:
            raise ValueError(
                f"layers: {name!r} is not a layer with a trainable kernel of model {model.name!r} "
                f"(or names several; use its path). Layers: {[p for p, _ in available]}."
            )
    return chosen


def layer_sensitivity(
    model: keras.Model,
    data,
    metric: str = "trace",
    loss: str | Callable | None = None,
    *,
    layers: Iterable[str] | None = None,
    training: bool = False,
    batch_size: int | None = None,
    tol: float = 1e-2,
    max_iter: int = 400,
    seed: int | None = 0,
) -> dict[str, LayerSensitivity]:
    """Per-layer HAWQ sensitivity: the kernel block's average trace (V2) or top eigenvalue (V1).

    Use it to see which layers tolerate low precision (small values) and as the `sensitivity=`
    of `assign_precision`.

    Example:

    ```python
    sensitivity = layer_sensitivity(model, (x_val, y_val), metric="trace")
    for name, s in sensitivity.items():
        print(name, s.sensitivity, s.standard_error)
    ```

    Args:
        model: a built Keras model (compiled, or pass `loss=`).
        data: what `HessianOperator` takes: `(x, y)` arrays or a `tf.data.Dataset`.
        metric: `"trace"` (HAWQ-V2, Hutch++ with a standard error) or `"top_eigenvalue"` (HAWQ-V1,
            Lanczos).
        loss: a loss name or callable; `None` uses the compiled loss.
        layers: layer names or paths to measure (default: every layer with a trainable kernel).
        training: differentiate the loss in training mode (default: inference mode).
        batch_size: batch size for the Hessian products over numpy data.
        tol: the estimator's relative tolerance (trace: relative standard error).
        max_iter: the most Hessian-vector products per layer.
        seed: seed of the random probes / start vectors.

    Returns:
        `{layer path: LayerSensitivity}` in model order.
    """
    check_choice("metric", metric, METRICS)
    tol = check_float("tol", tol, minimum=0.0, exclusive_minimum=True)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    chosen = _select(model, layers)
    blocks = {path: kernels_of(layer) for path, layer in chosen}
    operator = HessianOperator(model, data, loss, blocks=blocks, training=training, batch_size=batch_size)
    results = {}
    for path, layer in chosen:
        block = operator.block(path)
        n = int(block.num_parameters)
        start = block.hvp_count
        if metric == "trace":
            estimate = hutchinson_trace(block, max_iter=max_iter, tol=tol, seed=seed)
            value, error, trace, top = estimate.trace / n, estimate.standard_error / n, estimate.trace, None
        else:
            eigen = top_eigenvalues(block, k=1, max_iter=max_iter, tol=tol, seed=seed)
            top = float(eigen.eigenvalues[0])
            value, error, trace = top / n, None, None
        results[path] = LayerSensitivity(
            name=path,
            parameters=n,
            metric=metric,
            sensitivity=float(value),
            standard_error=None if error is None else float(error),
            trace=None if trace is None else float(trace),
            top_eigenvalue=top,
            hvp_count=int(block.hvp_count - start),
        )
    return results
