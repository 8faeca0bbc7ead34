"""HessianOperator: how to multiply a vector by the Hessian of a Keras model's loss.

The operator is the only place that knows about models, losses and data; the algorithms
(`algorithms/`) see only `hvp` / `hvp_many`, so any algorithm runs on any operator (the split of
hessian-eigenthings' `operators/` and `algorithms/`). Its helpers, one concept each: `_data.py`
(data intake), `_losses.py` (loss resolution), `_blocks.py`, `_products.py` (the compiled
functions), `_finite_difference.py` (the product by two gradients), `_replicas.py` (tf.distribute),
`_precision.py` (the float32 view of a mixed-precision model).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from keras_hessian._backend import require_tensorflow_backend
from keras_hessian._validation import ArgumentTypeError, check_bool, check_choice, check_int, check_type, is_integer
from keras_hessian.hessian.operators._blocks import resolve_blocks
from keras_hessian.hessian.operators._data import check_label_shape, first_dim, prepare_data
from keras_hessian.hessian.operators._finite_difference import finite_difference_hvp, unit_roundoff
from keras_hessian.hessian.operators._losses import resolve_loss
from keras_hessian.hessian.operators._precision import float32_view, mixed_layers
from keras_hessian.hessian.operators._products import (
    DEFAULT_HVP_METHOD,
    FINITE_DIFFERENCE,
    HVP_METHODS,
    compile_product,
    hessian_bodies,
    tf_variable,
)
from keras_hessian.hessian.operators._replicas import distributed_mean


def _shapes(tree) -> Any:
    """The batch-free shape(s) of a tensor structure, for error messages."""
    shapes = [tuple(t.shape.as_list()[1:]) for t in tf.nest.flatten(tree)]
    return shapes[0] if len(shapes) == 1 else shapes


class HessianOperator:
    """The Hessian of a Keras model's mean loss over a dataset, as a matrix-free operator.

    `hvp(v)` returns `H v` where `H` is the Hessian, with respect to the model's trainable
    weights, of the mean loss over ALL of `data` (regularization losses in `model.losses`
    included). Batches are combined weighted by their size, so splitting the data differently
    gives the same operator. The model is evaluated in inference mode by default
    (`training=False`: BatchNormalization uses its moving statistics, Dropout is off), as PyHessian
    does with `model.eval()`: the Hessian of the loss the deployed model has, and one that does not
    move with the batch's statistics or a dropout mask. The operator reads the model's current
    weights at each product, so build it once and reuse it while the model trains.

    Inputs are never differentiated: integer token ids, segment ids and padding masks (a KerasHub
    model's dict of inputs, any nest of arrays) go in as they are. An `Embedding`'s gradient, which
    TensorFlow returns as `tf.IndexedSlices`, is kept sparse inside the products (`_sparse.py`: no
    vocabulary-sized gradient is formed before the second backward pass; the product itself is dense).

    Mixed precision: for a model under `mixed_bfloat16` / `mixed_float16` the operator
    differentiates a float32 view of it (the float32 variables read without the cast to 16 bits,
    every layer computing in float32; `_precision.py`), so its products are those of the model's
    float32 twin at the same weights and carry no bfloat16 rounding. The model's policies are
    unchanged outside the operator's own calls.

    Use it with the estimators: `top_eigenvalues`, `hutchinson_trace`, `spectral_density`.

    Example:

    ```python
    op = HessianOperator(model, (x_test, y_test))
    result = top_eigenvalues(op, k=3)
    print(result.eigenvalues)
    per_layer = top_eigenvalues(HessianOperator(model, (x, y), blocks="layer"))
    ```

    Args:
        model: a built Keras 3 model (Sequential, functional or subclassed) or a tf_keras model.
        data: numpy `(x, y)` / `(x, y, sample_weight)`, or a `tf.data.Dataset` yielding such
            tuples, batched (or unbatched with `batch_size=`).
        loss: a loss name or callable `loss(y_true, y_pred[, sample_weight])` returning a
            scalar; `None` uses the loss the model was compiled with.
        blocks: `"model"` (one block), `"layer"` (one block per layer with trainable weights:
            estimators then return one result per layer, the eigenvalues of the Hessian's
            diagonal blocks), or a list / dict of variable groups. `"layer"` names blocks by
            layer path and splits layers made of layers into their parts: a transformer's
            `block_0_attention/query`, `.../key`, `.../value`, `.../attention_output`, a KerasHub
            model's `bert_backbone/transformer_layer_0/self_attention_layer/query`.
        training: evaluate the model in training mode (batch statistics, dropout). Moving
            statistics and dropout seeds are restored after every product, so the model is
            left unchanged and every product sees the same dropout mask.
        method: `"forward_over_reverse"` (`tf.autodiff.ForwardAccumulator` over a tape),
            `"reverse_over_reverse"` (nested `tf.GradientTape`), or `"finite_difference"`
            (two gradients at w +/- eps v, for models without second-order autodiff: relative
            error below 1e-3 in float32 and 1e-6 in float64 on twice-differentiable models,
            far larger in float32 across ReLU kinks; see `_finite_difference.py`; the weights
            are restored bit-identically after each product); `None` takes the faster
            autodiff method measured by `benchmarks/hvp_cost.py`.
        batch_size: batch size for numpy data (default: up to 1024) or for an unbatched
            dataset (required then).
        cache: keep the batches of a dataset in memory after the first pass (default `True`);
            `False` iterates the dataset again for each product (for data larger than memory).
        strategy: a `tf.distribute.Strategy` (default: the model's own, when it was built under
            one with several replicas). Each batch is then split across the replicas and the
            products are all-reduced, giving the same operator as on one device.
    """

    _methods = HVP_METHODS  # the curvature operators built on it take the autodiff ones only

    def __init__(
        self,
        model,
        data,
        loss: str | Callable | None = None,
        *,
        blocks: str | Sequence | dict = "model",
        training: bool = False,
        method: str | None = None,
        batch_size: int | None = None,
        cache: bool = True,
        strategy: tf.distribute.Strategy | None = None,
    ):
        require_tensorflow_backend()
        if not callable(model) or not hasattr(model, "trainable_variables"):
            raise ArgumentTypeError(f"model must be a Keras model. Received {type(model).__name__}.")
        if not getattr(model, "built", False):
            raise ValueError(
                "model must be built before its Hessian can be taken: call it on data once or "
                "give it an Input. Received a model that is not built."
            )
        variables = list(model.trainable_variables)
        if not variables:
            raise ValueError("model has no trainable weights: there is no Hessian to take.")
        self.method = check_choice("method", DEFAULT_HVP_METHOD if method is None else method, self._methods)
        batch_size = check_int("batch_size", batch_size, 1, allow_none=True)
        self.training = check_bool("training", training)
        cache = check_bool("cache", cache)
        self.strategy = _resolve_strategy(model, strategy, self.training)
        self.model = model
        self._mixed_layers = mixed_layers(model)
        self.hvp_count = 0
        self._loss_fn, self._loss_includes_model_losses = resolve_loss(model, loss, self.training)
        self._blocks = resolve_blocks(model, blocks, variables)
        self.variables = [v for _, group in self._blocks for v in group]
        self._data = prepare_data(model, data, batch_size, cache)
        self._num_examples = self._data.num_examples
        self._usual_batch_size = first_dim(self._data.first[0])
        self._functions: dict[tuple, Callable] = {}
        self._validate_loss()

    # ------------------------------------------------------------------ loss
    def _call_model(self, x):
        """The model's outputs on `x`, computed in float32 for a mixed-precision model."""
        with float32_view(self._mixed_layers):
            return self.model(x, training=self.training)

    def _total_loss(self, x, y, w):
        y_pred = self._call_model(x)
        loss = self._loss_fn(x, y, y_pred, w)
        if not self._loss_includes_model_losses:
            extra = self.model.losses
            if extra:
                loss = loss + tf.add_n([tf.cast(e, loss.dtype) for e in extra])
        self._raw_loss_dtype = loss.dtype  # before the cast below: the precision it was computed in
        if loss.dtype in (tf.float16, tf.bfloat16):  # a 16-bit model outside the view: differentiate in float32
            loss = tf.cast(loss, tf.float32)
        return loss, y_pred

    def _validate_loss(self) -> None:
        x, y, w = self._data.first
        state = self._save_state()
        try:
            try:
                y_pred = self._call_model(x)
            except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
                # Keras' own message prints the whole input array: name the shapes instead.
                raise ValueError(
                    f"data: inputs of shape {_shapes(x)} do not fit the model's input "
                    f"{getattr(self.model, 'input_shape', '?')}."
                ) from error
            # Labels first: a mismatched shape may broadcast silently inside the loss.
            check_label_shape(y, y_pred)
            try:
                loss, _ = self._total_loss(x, y, w)
            except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
                raise ValueError(
                    f"data: labels of shape {_shapes(y)} do not fit the loss on predictions of shape "
                    f"{_shapes(y_pred)} (a sparse cross-entropy takes class indices, a categorical one "
                    "one-hot rows)."
                ) from error
        finally:
            self._restore_state(state)
        # The precisions the loss is computed in: they set the finite-difference step.
        self._compute_dtypes = [t.dtype for t in tf.nest.flatten(y_pred)] + [self._raw_loss_dtype]
        if loss.shape.rank != 0:
            raise ValueError(
                f"loss must return a scalar (a mean over the batch). It returned shape {loss.shape.as_list()}; "
                "use a reduction such as 'sum_over_batch_size'."
            )
        if not bool(tf.math.is_finite(loss)):
            raise ValueError(f"loss is {float(loss)} on the first batch of data: the Hessian would not be finite.")

    # ------------------------------------------------------------------ state
    def _stateful_variables(self) -> list:
        if not self.training:
            return []
        return [tf_variable(v) for v in self.model.non_trainable_variables]

    def _save_state(self) -> list:
        return [tf.identity(v) for v in self._stateful_variables()]

    def _restore_state(self, saved) -> None:
        for v, value in zip(self._stateful_variables(), saved):
            v.assign(value)

    # ------------------------------------------------------------------ blocks
    @property
    def blocks(self) -> list[str]:
        """The names of the operator's blocks."""
        return [name for name, _ in self._blocks]

    @property
    def num_parameters(self) -> int:
        """Number of scalar parameters the operator acts on."""
        return int(sum(np.prod(v.shape, dtype=np.int64) for v in self.variables))

    def block(self, name: str | int) -> HessianOperator:
        """The operator restricted to one block (the Hessian's diagonal block), sharing the data."""
        names = self.blocks
        index = names.index(name) if isinstance(name, str) and name in names else name
        if not is_integer(index) or not 0 <= index < len(names):
            raise ValueError(f"name must be one of {names} or an index below {len(names)}. Received name={name!r}.")
        restricted = copy.copy(self)
        restricted._blocks = [self._blocks[index]]
        restricted.variables = list(self._blocks[index][1])
        restricted._functions = {}
        restricted.hvp_count = 0
        return restricted

    # ------------------------------------------------------------------ products
    def _batch_specs(self, batch_size: int | None) -> list:
        x, y, w = self._data.first

        def spec(t):
            return tf.TensorSpec([batch_size] + t.shape.as_list()[1:], t.dtype)

        parts = [tf.nest.map_structure(spec, x), tf.nest.map_structure(spec, y)]
        if self._data.has_weights:
            parts.append(tf.nest.map_structure(spec, w))
        return parts

    def _function(self, kind: str, batch_size: int | None = None) -> Callable:
        """The compiled function `kind` for batches of `batch_size` examples (None: any size).

        Batches of the data's usual size get a function traced for that static size: with
        static shapes TensorFlow's CPU kernels run about 14% faster (benchmarks/hvp_cost.py).
        Any other size (the last, smaller batch; replica shards) shares one shape-generic trace.
        """
        key = (kind, batch_size)
        if key not in self._functions:
            self._functions[key] = compile_product(
                kind,
                self._product_bodies,
                self.variables,
                self._stateful_variables(),
                self._batch_specs(batch_size),
                self.method,
            )
        return self._functions[key]

    def _product_bodies(self, tf_vars: list) -> dict[str, Callable]:
        """The uncompiled products; the other curvature operators override only this."""
        return hessian_bodies(self._total_loss, tf_vars, self._data.has_weights)

    def _pack(self, batch) -> list:
        x, y, w = batch
        return [x, y, w] if self._data.has_weights else [x, y]

    def _mean_over_data(self, kind: str, *args):
        """Sum over batches of the function `kind`(batch, *args) weighted by batch size / total examples.

        Under a distribution strategy each batch is split across the replicas (`_replicas.py`).
        """
        total = None
        for batch in self._data:
            size = first_dim(batch[0])
            if self.strategy is not None and size >= self.strategy.num_replicas_in_sync:
                out = distributed_mean(self.strategy, self._function(kind), self._pack(batch), self._num_examples, *args)
            else:
                static = size if size == self._usual_batch_size else None
                out = self._function(kind, static)(self._pack(batch), *args)
                if size != self._num_examples:
                    out = tf.nest.map_structure(lambda t, w=size / self._num_examples: t * tf.cast(w, t.dtype), out)
            total = out if total is None else tf.nest.map_structure(tf.add, total, out)
        return total

    def _check_vector(self, vector, name: str = "v") -> list:
        if len(vector) != len(self.variables):
            raise ValueError(
                f"{name} must hold one tensor per variable of the operator ({len(self.variables)}). "
                f"Received {len(vector)}."
            )
        out = []
        for v, var in zip(vector, self.variables):
            t = tf.convert_to_tensor(v, dtype=tf.as_dtype(var.dtype))
            if t.shape != tuple(var.shape):
                raise ValueError(f"{name}: a tensor of shape {t.shape} was given for a variable of shape {tuple(var.shape)}.")
            out.append(t)
        return out

    def hvp(self, vector: Sequence) -> list[tf.Tensor]:
        """`H v` for one vector `v` (a list of tensors shaped like `self.variables`)."""
        vector = self._check_vector(vector)
        if self.method == FINITE_DIFFERENCE:
            tf_vars = [tf_variable(v) for v in self.variables]
            roundoff = unit_roundoff(*self._compute_dtypes, *(v.dtype for v in self.variables))
            result = finite_difference_hvp(tf_vars, vector, lambda: self._mean_over_data("gradient")[1], roundoff)
        else:
            result = self._mean_over_data("hvp", vector)
        self.hvp_count += 1
        return list(result)

    def hvp_many(self, vectors: Sequence[Sequence]) -> list[list[tf.Tensor]]:
        """`[H v_1, ..., H v_k]`, sharing one forward and one first-order backward pass per batch.

        Used by the estimators that can work on several vectors at once (trace probes, SLQ runs).
        """
        if len(vectors) == 0:
            return []
        if self.method == FINITE_DIFFERENCE:  # two gradients per vector: nothing to share
            return [self.hvp(v) for v in vectors]
        checked = [self._check_vector(v, "vectors[i]") for v in vectors]
        k = len(checked)
        stacked = [tf.stack([c[i] for c in checked]) for i in range(len(self.variables))]
        result = self._mean_over_data(f"hvp_many_{k}", stacked)
        self.hvp_count += k
        return [[t[j] for t in result] for j in range(k)]

    def mean_loss(self) -> float:
        """The mean loss over the data at the model's current weights (no gradient taken)."""
        return float(self._mean_over_data("loss"))

    def loss_and_gradient(self) -> tuple[float, list[tf.Tensor]]:
        """The mean loss over the data and its gradient with respect to `self.variables`."""
        loss, grads = self._mean_over_data("gradient")
        return float(loss), list(grads)

    def tracing_count(self) -> int:
        """How many times the operator's functions were traced (one per kind when compiled once)."""
        return sum(int(fn.experimental_get_tracing_count()) for fn in self._functions.values())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={getattr(self.model, 'name', '?')!r}, parameters={self.num_parameters}, "
            f"examples={self._num_examples}, blocks={self.blocks}, training={self.training}, method={self.method!r})"
        )


def _resolve_strategy(model, strategy, training: bool) -> tf.distribute.Strategy | None:
    """The strategy to split batches over: the given one or the model's, None for one replica."""
    if strategy is None:
        strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None:
        check_type("strategy", strategy, tf.distribute.Strategy, "a tf.distribute.Strategy or None")
    if strategy is not None and strategy.num_replicas_in_sync < 2:
        strategy = None  # one replica: the plain path is the same computation
    if strategy is not None and training:
        raise ValueError(
            "training=True is not supported under a distribution strategy (moving statistics "
            "would be all-reduced and changed). Use training=False or build the operator without one."
        )
    return strategy
