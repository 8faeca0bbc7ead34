"""HessianOperator: how to multiply a vector by the Hessian of a Keras model's loss.

The operator is the only place that knows about models, losses and data. The estimators
(`eigen.py`, `trace.py`, `density.py`) see only `hvp` / `hvp_many`, so any estimator runs on any
operator (the split of hessian-eigenthings' `operators/` and `algorithms/`).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_hessian._backend import require_tensorflow_backend

REVERSE_OVER_REVERSE = "reverse_over_reverse"
FORWARD_OVER_REVERSE = "forward_over_reverse"
HVP_METHODS = (REVERSE_OVER_REVERSE, FORWARD_OVER_REVERSE)
# Picked by benchmarks/hvp_cost.py on the 2-core CPU machine (results/hvp_cost.json).
DEFAULT_HVP_METHOD = REVERSE_OVER_REVERSE

# Batch size used to split numpy data when the caller gives none. The result does not depend
# on it (batches are combined by size); it only bounds the memory of one product.
DEFAULT_NUMPY_BATCH_SIZE = 1024


def _tf_variable(variable):
    """The `tf.Variable` behind a Keras 3 variable (tf_keras variables already are one)."""
    if isinstance(variable, keras.Variable):
        return variable.value
    return variable


def _is_tf_keras_model(model) -> bool:
    return type(model).__module__.startswith("tf_keras") or any(
        c.__module__.startswith("tf_keras") for c in type(model).__mro__
    )


def _layer_blocks(model, prefix: str = "") -> list[tuple[str, list]]:
    """One block per leaf layer that owns trainable weights, recursing into nested models.

    Layers of nested models are named `outer/inner`, so two towers with a layer of the same
    name stay two blocks.
    """
    blocks = []
    for layer in model.layers:
        if getattr(layer, "layers", None):  # a nested model: its own layers are the blocks
            blocks.extend(_layer_blocks(layer, f"{prefix}{layer.name}/"))
        elif layer.trainable_weights:
            blocks.append((prefix + layer.name, list(layer.trainable_weights)))
    return blocks


def _resolve_blocks(model, blocks, variables: list) -> list[tuple[str, list]]:
    if isinstance(blocks, str):
        if blocks == "model":
            return [("model", variables)]
        if blocks == "layer":
            found = _layer_blocks(model)
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
        raise TypeError(f'blocks must be "model", "layer", a list or a dict of variable groups. Received {type(blocks).__name__}.')
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


def _unscale_for_replicas(loss):
    """Undo Keras' division of a loss by the replica count inside a replica context.

    Keras 3 `Loss` objects and `compute_loss` divide by `num_replicas_in_sync` so that summed
    replica gradients give the mean; the operator weights each replica's mean by its share of
    the examples itself, so it needs the plain mean (same rule as Keras'
    `unscale_loss_for_distribution`).
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss * tf.cast(replicas, loss.dtype) if replicas > 1 else loss


def _mean_of(per_example: Callable) -> Callable:
    """A loss by name (`keras.losses.get("mse")` is per example) reduced as Keras reduces it:
    the weighted sum over the batch divided by the batch size ("sum_over_batch_size")."""

    def loss(y_true, y_pred, sample_weight=None):
        values = per_example(y_true, y_pred)
        if sample_weight is not None:
            values = values * tf.cast(tf.reshape(sample_weight, tf.shape(values)), values.dtype)
        return tf.reduce_mean(values)

    return loss


def _lists_to_tuples(value):
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    return value


def _as_tensor_tree(value):
    return tf.nest.map_structure(lambda a: tf.convert_to_tensor(a), value)


def _first_dim(tree) -> int:
    return int(tf.nest.flatten(tree)[0].shape[0])


def _check_finite(tree, what: str) -> None:
    for t in tf.nest.flatten(tree):
        if t.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(t))):
            raise ValueError(f"data: {what} contains NaN or inf values.")


def _split_element(element) -> tuple[Any, Any, Any]:
    if not isinstance(element, (tuple, list)) or len(element) not in (2, 3):
        raise ValueError(
            "data must yield (x, y) or (x, y, sample_weight); labels are needed for the loss. "
            f"Received elements of type {type(element).__name__}"
            + (f" with {len(element)} parts." if isinstance(element, (tuple, list)) else ".")
        )
    x, y = element[0], element[1]
    weights = element[2] if len(element) == 3 else None
    if y is None:
        raise ValueError("data must hold labels: received y=None.")
    return x, y, weights


class HessianOperator:
    """The Hessian of a Keras model's mean loss over a dataset, as a matrix-free operator.

    `hvp(v)` returns `H v` where `H` is the Hessian, with respect to the model's trainable
    weights, of the mean loss over ALL of `data` (regularization losses in `model.losses`
    included). Batches are combined weighted by their size, so splitting the data differently
    gives the same operator. The model is evaluated in inference mode by default
    (`training=False`: BatchNormalization uses its moving statistics, no dropout), as PyHessian
    does with `model.eval()`. The operator reads the model's current weights at each product, so
    build it once and reuse it while the model trains.

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
            diagonal blocks), or a list / dict of variable groups.
        training: evaluate the model in training mode (batch statistics, dropout). Moving
            statistics and dropout seeds are restored after every product, so the model is
            left unchanged and every product sees the same dropout mask.
        method: `"forward_over_reverse"` (`tf.autodiff.ForwardAccumulator` over a tape) or
            `"reverse_over_reverse"` (nested `tf.GradientTape`); `None` takes the faster one
            measured by `benchmarks/hvp_cost.py`.
        batch_size: batch size for numpy data (default: up to 1024) or for an unbatched
            dataset (required then).
        cache: keep the batches of a dataset in memory after the first pass (default `True`);
            `False` iterates the dataset again for each product (for data larger than memory).
        strategy: a `tf.distribute.Strategy` (default: the model's own, when it was built under
            one with several replicas). Each batch is then split across the replicas and the
            products are all-reduced, giving the same operator as on one device.
    """

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
            raise TypeError(f"model must be a Keras model. Received {type(model).__name__}.")
        if not getattr(model, "built", False):
            raise ValueError(
                "model must be built before its Hessian can be taken: call it on data once or "
                "give it an Input. Received a model that is not built."
            )
        variables = list(model.trainable_variables)
        if not variables:
            raise ValueError("model has no trainable weights: there is no Hessian to take.")
        method = DEFAULT_HVP_METHOD if method is None else method
        if method not in HVP_METHODS:
            raise ValueError(f"method must be one of {HVP_METHODS}. Received method={method!r}.")
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer. Received batch_size={batch_size!r}.")
        if not isinstance(training, bool):
            raise TypeError(f"training must be a bool. Received training={training!r}.")

        if strategy is None:
            strategy = getattr(model, "distribute_strategy", None)
        if strategy is not None and not isinstance(strategy, tf.distribute.Strategy):
            raise TypeError(f"strategy must be a tf.distribute.Strategy or None. Received {type(strategy).__name__}.")
        if strategy is not None and strategy.num_replicas_in_sync < 2:
            strategy = None  # one replica: the plain path is the same computation
        if strategy is not None and training:
            raise ValueError(
                "training=True is not supported under a distribution strategy (moving statistics "
                "would be all-reduced and changed). Use training=False or build the operator without one."
            )
        self.strategy = strategy
        self.model = model
        self.method = method
        self.training = training
        self.hvp_count = 0
        self._tf_keras = _is_tf_keras_model(model)
        self._loss_fn, self._loss_includes_model_losses = self._make_loss_fn(loss)
        self._all_variables = variables
        self._blocks = _resolve_blocks(model, blocks, variables)
        self.variables = [v for _, group in self._blocks for v in group]
        self._dataset, self._batches, self._num_examples, self._has_weights = self._prepare_data(
            data, batch_size, cache
        )
        self._first_batch = self._batches[0]
        self._usual_batch_size = _first_dim(self._first_batch[0])
        if not cache and isinstance(data, tf.data.Dataset):
            self._batches = None  # read the dataset again for each product
        self._functions: dict[str, Callable] = {}
        self._validate_loss()

    # ------------------------------------------------------------------ set-up
    def _make_loss_fn(self, loss):
        model = self.model
        if loss is None:
            if self._tf_keras:
                if getattr(model, "loss", None) is None:
                    raise ValueError("loss is None and the model is not compiled with a loss: pass loss= or compile the model.")
                import tf_keras

                compiled = tf_keras.losses.get(model.loss)
                return (lambda x, y, y_pred, w: compiled(y, y_pred, sample_weight=w)), False
            if getattr(model, "_compile_loss", None) is None:
                raise ValueError("loss is None and the model is not compiled with a loss: pass loss= or compile the model.")

            def compiled_loss(x, y, y_pred, w):
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=w, training=self.training)
                return _unscale_for_replicas(loss)

            return compiled_loss, True  # Keras 3's compute_loss adds model.losses itself
        if isinstance(loss, str):
            # keras.losses.get("mse") is the per-example function: wrap it in its mean.
            loss = _mean_of(keras.losses.get(loss))
        if not callable(loss):
            raise TypeError(f"loss must be a loss name, a callable or None. Received {type(loss).__name__}.")

        scaled = isinstance(loss, keras.losses.Loss)

        def user_loss(x, y, y_pred, w):
            value = loss(y, y_pred) if w is None else loss(y, y_pred, sample_weight=w)
            return _unscale_for_replicas(value) if scaled else value

        return user_loss, False

    def _prepare_data(self, data, batch_size, cache):
        if isinstance(data, tf.data.Dataset):
            if data.cardinality() == tf.data.INFINITE_CARDINALITY:
                raise ValueError(
                    "data is an infinite dataset (e.g. after .repeat()): the Hessian is of the mean "
                    "loss over all of it. Pass a finite dataset, e.g. data.take(n)."
                )
            dataset = data
            if batch_size is not None:
                dataset = dataset.batch(int(batch_size))
            else:
                self._check_batched(dataset)
        elif isinstance(data, (tuple, list)):
            x, y, weights = _split_element(tuple(data))
            # Lists of arrays are several inputs / outputs (as in model.fit), not one stacked array.
            x, y = _as_tensor_tree(_lists_to_tuples(x)), _as_tensor_tree(_lists_to_tuples(y))
            n = _first_dim(x)
            if n == 0:
                raise ValueError("data is empty: x has 0 examples.")
            if _first_dim(y) != n:
                raise ValueError(f"data: y has {_first_dim(y)} examples but x has {n}.")
            parts = (x, y) if weights is None else (x, y, _as_tensor_tree(weights))
            dataset = tf.data.Dataset.from_tensor_slices(parts).batch(
                int(batch_size or min(n, DEFAULT_NUMPY_BATCH_SIZE))
            )
        else:
            raise TypeError(
                "data must be a tuple (x, y) / (x, y, sample_weight) of arrays or a tf.data.Dataset. "
                f"Received {type(data).__name__}."
            )
        # numpy data is in memory already: `cache=False` only streams datasets.
        keep_all = cache or not isinstance(data, tf.data.Dataset)
        batches, total, has_weights = [], 0, None
        for element in dataset:
            x, y, w = _split_element(element)
            if has_weights is None:
                has_weights = w is not None
            _check_finite(x, "x")
            _check_finite(y, "y")
            if w is not None:
                _check_finite(w, "sample_weight")
            total += _first_dim(x)
            if keep_all or not batches:
                batches.append((x, y, w))  # without cache only the first, for tracing and checks
        if total == 0:
            raise ValueError("data is empty: it yielded no examples.")
        return dataset, batches, total, bool(has_weights)

    def _check_batched(self, dataset) -> None:
        inputs = getattr(self.model, "inputs", None)
        try:
            x_spec = _split_element(dataset.element_spec)[0]
        except ValueError:
            return  # reported with a clearer message when the data is read
        if not inputs or len(tf.nest.flatten(x_spec)) != len(inputs):
            return
        for spec, tensor in zip(tf.nest.flatten(x_spec), inputs):
            if spec.shape.rank is not None and spec.shape.rank == len(tensor.shape) - 1:
                raise ValueError(
                    "data looks unbatched (its x has the rank of ONE example of the model's input): "
                    "batch the dataset (dataset.batch(n)) or pass batch_size= to HessianOperator."
                )

    def _total_loss(self, x, y, w, training: bool):
        y_pred = self.model(x, training=training)
        loss = self._loss_fn(x, y, y_pred, w)
        if not self._loss_includes_model_losses:
            extra = self.model.losses
            if extra:
                loss = loss + tf.add_n([tf.cast(e, loss.dtype) for e in extra])
        if loss.dtype in (tf.float16, tf.bfloat16):  # mixed precision: differentiate in float32
            loss = tf.cast(loss, tf.float32)
        return loss, y_pred

    def _validate_loss(self) -> None:
        x, y, w = self._first_batch
        state = self._save_state()
        try:
            # Labels first: a mismatched shape may broadcast silently inside the loss.
            self._check_label_shape(y, self.model(x, training=self.training))
            loss, _ = self._total_loss(x, y, w, self.training)
        finally:
            self._restore_state(state)
        if loss.shape.rank != 0:
            raise ValueError(
                f"loss must return a scalar (a mean over the batch). It returned shape {loss.shape.as_list()}; "
                "use a reduction such as 'sum_over_batch_size'."
            )
        if not bool(tf.math.is_finite(loss)):
            raise ValueError(f"loss is {float(loss)} on the first batch of data: the Hessian would not be finite.")

    @staticmethod
    def _check_label_shape(y, y_pred) -> None:
        if len(tf.nest.flatten(y)) != 1 or len(tf.nest.flatten(y_pred)) != 1:
            return  # several outputs: the compiled loss checks its own structure
        y_shape = tf.nest.flatten(y)[0].shape.as_list()
        p_shape = tf.nest.flatten(y_pred)[0].shape.as_list()
        fits = (
            y_shape == p_shape
            or (len(y_shape) == len(p_shape) and y_shape[:-1] == p_shape[:-1] and y_shape[-1] == 1)
            or (len(y_shape) == len(p_shape) - 1 and y_shape == p_shape[:-1])
        )
        if not fits:
            raise ValueError(
                f"data: labels of shape {y_shape} do not fit predictions of shape {p_shape}; expected "
                f"{p_shape} (one-hot / regression targets) or {p_shape[:-1]} (class indices)."
            )

    # ------------------------------------------------------------------ state
    def _stateful_variables(self) -> list:
        if not self.training:
            return []
        return [_tf_variable(v) for v in self.model.non_trainable_variables]

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
        if not isinstance(index, int) or not 0 <= index < len(names):
            raise ValueError(f"name must be one of {names} or an index below {len(names)}. Received name={name!r}.")
        restricted = copy.copy(self)
        restricted._blocks = [self._blocks[index]]
        restricted.variables = list(self._blocks[index][1])
        restricted._functions = {}
        restricted.hvp_count = 0
        return restricted

    # ------------------------------------------------------------------ products
    def _batch_specs(self, batch_size: int | None):
        x, y, w = self._first_batch

        def spec(t):
            return tf.TensorSpec([batch_size] + t.shape.as_list()[1:], t.dtype)

        parts = [tf.nest.map_structure(spec, x), tf.nest.map_structure(spec, y)]
        if self._has_weights:
            parts.append(tf.nest.map_structure(spec, w))
        return parts

    def _vector_specs(self, leading: list) -> list:
        return [tf.TensorSpec(leading + list(v.shape), tf.as_dtype(v.dtype)) for v in self.variables]

    def _function(self, kind: str, batch_size: int | None = None) -> Callable:
        """The compiled function `kind` for batches of `batch_size` examples (None: any size).

        Batches of the data's usual size get a function traced for that static size: with
        static shapes TensorFlow's CPU kernels run about 14% faster (benchmarks/hvp_cost.py).
        Any other size (the last, smaller batch; replica shards) shares one shape-generic trace.
        """
        key = (kind, batch_size)
        if key in self._functions:
            return self._functions[key]
        tf_vars = [_tf_variable(v) for v in self.variables]
        stateful = self._stateful_variables()
        batch_specs = self._batch_specs(batch_size)
        has_weights = self._has_weights

        def unpack(batch):
            return batch[0], batch[1], (batch[2] if has_weights else None)

        def with_state_restored(body):
            def run(*args):
                saved = [tf.identity(v) for v in stateful]
                result = body(*args)
                with tf.control_dependencies(tf.nest.flatten(result)):
                    for v, value in zip(stateful, saved):
                        v.assign(value)
                    return tf.nest.map_structure(tf.identity, result)

            return run

        def loss_and_gradient(batch):
            x, y, w = unpack(batch)
            with tf.GradientTape() as tape:
                tape.watch(tf_vars)
                loss, _ = self._total_loss(x, y, w, self.training)
            grads = tape.gradient(loss, tf_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return loss, grads

        def hvp_reverse(batch, vector):
            x, y, w = unpack(batch)
            with tf.GradientTape() as outer:
                outer.watch(tf_vars)
                with tf.GradientTape() as inner:
                    inner.watch(tf_vars)
                    loss, _ = self._total_loss(x, y, w, self.training)
                grads = inner.gradient(loss, tf_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            # d(g . v)/dw = H v, with v fed as the output gradient (no explicit dot product).
            return outer.gradient(
                grads, tf_vars, output_gradients=list(vector), unconnected_gradients=tf.UnconnectedGradients.ZERO
            )

        def hvp_forward(batch, vector):
            x, y, w = unpack(batch)
            with tf.autodiff.ForwardAccumulator(primals=tf_vars, tangents=list(vector)) as accumulator:
                with tf.GradientTape() as tape:
                    tape.watch(tf_vars)
                    loss, _ = self._total_loss(x, y, w, self.training)
                grads = tape.gradient(loss, tf_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return [
                accumulator.jvp(g, unconnected_gradients=tf.UnconnectedGradients.ZERO) for g in grads
            ]

        def hvp_many(batch, stacked):
            # One forward pass and one first-order backward pass shared by all k vectors; a
            # persistent outer tape then takes one extra backward pass per vector.
            x, y, w = unpack(batch)
            k = stacked[0].shape[0]
            with tf.GradientTape(persistent=True) as outer:
                outer.watch(tf_vars)
                with tf.GradientTape() as inner:
                    inner.watch(tf_vars)
                    loss, _ = self._total_loss(x, y, w, self.training)
                grads = inner.gradient(loss, tf_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                projections = [
                    tf.add_n([tf.reduce_sum(g * tf.stop_gradient(v[j])) for g, v in zip(grads, stacked)])
                    for j in range(k)
                ]
            products = [
                outer.gradient(p, tf_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO) for p in projections
            ]
            del outer
            return [tf.stack([products[j][i] for j in range(k)]) for i in range(len(tf_vars))]

        if kind == "gradient":
            fn = tf.function(with_state_restored(loss_and_gradient), input_signature=[batch_specs])
        elif kind == "hvp":
            body = hvp_forward if self.method == FORWARD_OVER_REVERSE else hvp_reverse
            fn = tf.function(with_state_restored(body), input_signature=[batch_specs, self._vector_specs([])])
        elif kind.startswith("hvp_many_"):
            k = int(kind.rsplit("_", 1)[1])
            fn = tf.function(with_state_restored(hvp_many), input_signature=[batch_specs, self._vector_specs([k])])
        else:  # pragma: no cover - internal names only
            raise KeyError(kind)
        self._functions[key] = fn
        return fn

    def _iterate_batches(self):
        if self._batches is not None:
            yield from self._batches
            return
        for element in self._dataset:
            yield _split_element(element)

    def _pack(self, batch):
        x, y, w = batch
        return [x, y, w] if self._has_weights else [x, y]

    def _mean_over_data(self, kind: str, *args):
        """Sum over batches of the function `kind`(batch, *args) weighted by batch size / total examples.

        Under a distribution strategy each batch is split across the replicas, each replica
        weights its part by its own size, and the parts are all-reduced (summed).
        """
        total = None
        for batch in self._iterate_batches():
            size = _first_dim(batch[0])
            if self.strategy is not None and size >= self.strategy.num_replicas_in_sync:
                out = self._distributed(self._function(kind), self._pack(batch), size, *args)
            else:
                static = size if size == self._usual_batch_size else None
                out = self._function(kind, static)(self._pack(batch), *args)
                if size != self._num_examples:
                    out = tf.nest.map_structure(lambda t, w=size / self._num_examples: t * tf.cast(w, t.dtype), out)
            total = out if total is None else tf.nest.map_structure(tf.add, total, out)
        return total

    def _distributed(self, fn, packed, size: int, *args):
        strategy = self.strategy
        bounds = np.linspace(0, size, strategy.num_replicas_in_sync + 1).astype(int)

        def local_part(context):
            i = context.replica_id_in_sync_group
            return tf.nest.map_structure(lambda t: t[bounds[i] : bounds[i + 1]], packed)

        local = strategy.experimental_distribute_values_from_function(local_part)
        total = float(self._num_examples)

        def replica_step(part, *replica_args):
            weight = tf.cast(tf.shape(tf.nest.flatten(part[0])[0])[0], tf.float32) / total
            return tf.nest.map_structure(lambda t: t * tf.cast(weight, t.dtype), fn(part, *replica_args))

        per_replica = strategy.run(replica_step, args=(local, *args))
        return tf.nest.map_structure(
            lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None), per_replica
        )

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
        result = self._mean_over_data("hvp", vector)
        self.hvp_count += 1
        return list(result)

    def hvp_many(self, vectors: Sequence[Sequence]) -> list[list[tf.Tensor]]:
        """`[H v_1, ..., H v_k]`, sharing one forward and one first-order backward pass per batch.

        Used by the estimators that can work on several vectors at once (trace probes, SLQ runs).
        """
        if len(vectors) == 0:
            return []
        checked = [self._check_vector(v, "vectors[i]") for v in vectors]
        k = len(checked)
        stacked = [tf.stack([c[i] for c in checked]) for i in range(len(self.variables))]
        result = self._mean_over_data(f"hvp_many_{k}", stacked)
        self.hvp_count += k
        return [[t[j] for t in result] for j in range(k)]

    def loss_and_gradient(self) -> tuple[float, list[tf.Tensor]]:
        """The mean loss over the data and its gradient with respect to `self.variables`."""
        loss, grads = self._mean_over_data("gradient")
        return float(loss), list(grads)

    def tracing_count(self) -> int:
        """How many times the operator's functions were traced (one per kind when compiled once)."""
        return sum(int(fn.experimental_get_tracing_count()) for fn in self._functions.values())

    def __repr__(self) -> str:
        return (
            f"HessianOperator(model={getattr(self.model, 'name', '?')!r}, parameters={self.num_parameters}, "
            f"examples={self._num_examples}, blocks={self.blocks}, training={self.training}, method={self.method!r})"
        )


def per_block(estimator: Callable) -> Callable:
    """Run an estimator once per block when the operator has several, returning `{name: result}`."""

    @functools.wraps(estimator)
    def run(operator: HessianOperator, *args, **kwargs):
        if not isinstance(operator, HessianOperator) and not hasattr(operator, "hvp"):
            raise TypeError(f"operator must be a HessianOperator. Received {type(operator).__name__}.")
        names = getattr(operator, "blocks", ["model"])
        if len(names) > 1:
            return {name: estimator(operator.block(name), *args, **kwargs) for name in names}
        return estimator(operator, *args, **kwargs)

    return run
