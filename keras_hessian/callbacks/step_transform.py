"""The ONE place where callbacks change what a training step does.

Keras 3 calls `set_model` on every callback while it builds the CallbackList, before
`make_train_function()`. A callback that derives from `StepTransformCallback` returns a
`StepTransform` from `step_transform()`; its `set_model` hands it to `install`, which composes
the transforms of all such callbacks of the fit into one step, sets it as the model's
`train_step` and resets `model.train_function`, so Keras traces the composed step. `on_train_end`
restores the model's own step. Keras calls `set_model` in `evaluate` and `predict` too: there the
transform is dropped again at `on_test_begin` / `on_predict_begin` (unless a fit is running, whose
validation calls them), so a later plain `fit` runs the model's own step.

This module knows nothing about what a transform is for: a transform that holds something for
the duration of a fit (the batch-size control of adaptive datasets) passes `on_restore`, which
runs when its step is taken off the model, also after a fit that raised.

XLA (`jit_compile=True`, Keras' default on a GPU) compiles the composed step. A transform that
cannot work there (`supports_xla=False`, e.g. a check by `tf.debugging.Assert`, which XLA drops)
makes `install` warn and switch XLA off for that fit; `restore` puts `jit_compile` back.

A composed step does, for each batch:

* without gradient accumulation: `model.train_step(transform_k(...transform_1(batch)))`, i.e.
  the model's own step (a user's `train_step` override included) on the transformed batch;
* with accumulation (some transform asks for `micro_batch_size`): the batch is cut into
  micro-batches of at most that size inside the step (`tf.while_loop`, the count is dynamic so
  a new batch size does not retrace); each micro-batch is transformed, its gradient of the
  mean loss is weighted by its share of the batch and summed, and the optimizer applies the sum
  once. For Keras' default `sum_over_batch_size` reduction, and layers whose training-mode
  output of an example does not depend on the rest of the batch, this is exactly the gradient of
  the whole batch (Yao et al., arXiv 1810.01021, build large batches the same way); BatchNorm in
  training mode normalizes each micro-batch by its own statistics, as a smaller physical batch
  would (and Dropout draws its masks per micro-batch, which changes nothing in expectation); metrics and
  the loss tracker are updated per micro-batch with sample counts, so they report the batch.
  Memory holds the inputs of the whole batch but the activations of one micro-batch only.

Then, in both cases, each transform's `after_step(model)` runs once, after the optimizer's
update (pruning's masks, so that pruned weights are exactly zero when the step ends).

Failure safety: if `fit` raises, Keras skips `on_train_end`, so the composed function would
stay cached in `model.train_function`. The function installed here is therefore guarded: each
participating callback announces every batch in `on_train_batch_begin`; a call that nobody
announced comes from a later `fit` without these callbacks, and the guard restores the model's
own step before running it. A later `fit` WITH such callbacks starts from the model's own step. An error raised inside a
step also restores the model before it propagates.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

import keras
import tensorflow as tf

from keras_hessian import _compat

__all__ = ["StepTransform", "StepTransformCallback", "install", "restore"]


class StepTransform:
    """What one callback contributes to the training step.

    Args:
        transform_batch: `f(model, data) -> data`, run inside the traced step on each
            (micro-)batch before the forward pass; `data` is Keras' `(x, y, sample_weight)`
            element (use `keras.utils.unpack_x_y_sample_weight`).
        micro_batch_size: when set, batches larger than this are processed by gradient
            accumulation over micro-batches of at most this size.
        on_restore: `f()`, called once when the transform is taken off the model (end of the
            fit, an error in a step, a later fit finding it stale, or an `evaluate`/`predict`).
        supports_xla: False if the transform cannot run in an XLA-compiled step; the fit then
            runs without XLA (with a warning naming the callback) and `jit_compile` comes back.
        after_step: `f(model)`, run inside the traced step after the optimizer applied the
            gradients (its variable writes are ordered after the update by TensorFlow's
            automatic control dependencies).
    """

    def __init__(
        self,
        transform_batch: Callable | None = None,
        micro_batch_size: int | None = None,
        *,
        on_restore: Callable[[], None] | None = None,
        supports_xla: bool = True,
        after_step: Callable | None = None,
    ):
        self.transform_batch = transform_batch
        self.micro_batch_size = micro_batch_size
        self.on_restore = on_restore
        self.supports_xla = supports_xla
        self.after_step = after_step


class _Session:
    def __init__(self, model):
        self.model_ref = weakref.ref(model)
        # A user may have set `model.train_step` on the instance: keep it to put it back.
        self.instance_step = model.__dict__.get("train_step")
        self.transforms: dict[int, tuple[object, StepTransform]] = {}
        self.running = False
        self.announced = False
        self.jit_compile = None  # the model's setting, when this session switched XLA off


_SESSIONS: dict[int, _Session] = {}


def _uses_default_train_step(model, session: _Session) -> bool:
    return session.instance_step is None and getattr(type(model), "train_step", None) is _compat.default_train_step()


def _original_step(model, session: _Session) -> Callable:
    if session.instance_step is not None:
        return session.instance_step
    return type(model).train_step.__get__(model)


def _dense(gradient, variable):
    if gradient is None:
        return tf.zeros(variable.shape, variable.dtype)
    return tf.convert_to_tensor(gradient)


def _accumulating_step(model, micro_batch_size: int, transform: Callable) -> Callable:
    """Keras' TensorFlow `train_step`, summing weighted micro-batch gradients before one update."""

    def step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        whole = (x, y, sample_weight)
        n = tf.shape(tf.nest.flatten(x)[0])[0]
        micro = tf.constant(int(micro_batch_size), tf.int32)
        count = (n + micro - 1) // micro
        weights = model.trainable_weights

        def body(i, accumulated):
            start = i * micro
            stop = tf.minimum(start + micro, n)
            part = tf.nest.map_structure(lambda t: None if t is None else t[start:stop], whole)
            part = transform(keras.utils.pack_x_y_sample_weight(*part))
            xb, yb, wb = keras.utils.unpack_x_y_sample_weight(part)
            size = stop - start
            with tf.GradientTape() as tape:
                y_pred = model(xb, training=True)
                loss = _compat.compute_loss_for_training(model, xb, yb, y_pred, wb)
                _compat.loss_tracker(model).update_state(_compat.unscale_loss_for_distribution(loss), sample_weight=size)
                scaled = model.optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled, weights)
            share = tf.cast(size, tf.float32) / tf.cast(n, tf.float32)
            model.compute_metrics(xb, yb, y_pred, sample_weight=wb)
            return i + 1, [
                a + tf.cast(share, a.dtype) * tf.cast(_dense(g, v), a.dtype)
                for a, g, v in zip(accumulated, gradients, weights)
            ]

        start = [tf.zeros(v.shape, v.dtype) for v in weights]
        _, accumulated = tf.while_loop(lambda i, _: i < count, body, [tf.constant(0), start])
        accumulated = _weigh_replica_share(accumulated, n)
        model.optimizer.apply_gradients(zip(accumulated, weights))
        return model.get_metrics_result()

    return step


def _weigh_replica_share(gradients: list, n: tf.Tensor) -> list:
    """Under tf.distribute: weigh a replica's mean gradient by its share of the global batch.

    Keras divides each replica's mean loss by the replica count, so the summed gradients are the
    mean of the replicas' means: the global batch's mean only when it splits evenly. Scaled by
    `replicas * n / global n` (one scalar all-reduce per step, outside the loop, so every replica
    runs it exactly once), the sum is the mean over the global batch, as on one device; an even
    split gives the factor 1 exactly.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    context = tf.distribute.get_replica_context()
    if replicas < 2 or context is None:
        return gradients
    size = tf.cast(n, tf.float32)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, size)
    factor = size * float(replicas) / tf.maximum(total, 1.0)
    return [g * tf.cast(factor, g.dtype) for g in gradients]


def _compose(model, session: _Session) -> Callable:
    transforms = [t for _, t in session.transforms.values()]
    batch_transforms = [t.transform_batch for t in transforms if t.transform_batch is not None]

    def transform(data):
        for f in batch_transforms:
            data = f(model, data)
        return data

    micro_sizes = [t.micro_batch_size for t in transforms if t.micro_batch_size]
    if not micro_sizes:
        original = _original_step(model, session)
        inner = lambda data: original(transform(data))
    elif not _uses_default_train_step(model, session):
        raise TypeError(
            "max_physical_batch_size (gradient accumulation) replaces Keras' train_step, but "
            f"{type(model).__name__} overrides train_step. Received a model with its own "
            "train_step: drop max_physical_batch_size or fold accumulation into your step."
        )
    else:
        inner = _accumulating_step(model, min(micro_sizes), transform)
    after_steps = [t.after_step for t in transforms if t.after_step is not None]
    if after_steps:
        inner = _then(inner, model, after_steps)

    if model.jit_compile:
        # An XLA-compiled step is one op whose inputs are the batch: it waits for get_next as a
        # whole (and XLA cannot lift the optimizer's variable creation out of a control
        # dependency scope, so none is added).
        return inner

    def step(data):
        # Every op of the step waits for the batch. Without this, Keras' optimizer increments
        # `iterations` even on the call that finds the data exhausted (unknown cardinality: one
        # phantom iteration per epoch), and reads of callback variables could race get_next.
        with tf.control_dependencies([t for t in tf.nest.flatten(data) if t is not None]):
            return inner(data)

    return step


def _then(inner: Callable, model, after_steps: list) -> Callable:
    def step(data):
        logs = inner(data)
        for f in after_steps:
            f(model)
        return logs

    return step


class _GuardedTrainFunction:
    """`model.train_function` that runs only while a participating callback announced the batch."""

    def __init__(self, function, session: _Session):
        self.function = function
        self.session = session

    def __call__(self, iterator):
        if self.session.announced:
            self.session.announced = False
            try:
                return self.function(iterator)
            except (tf.errors.OutOfRangeError, StopIteration):
                raise  # the end of an epoch of unknown length, which Keras catches
            except Exception:
                restore(self.session.model_ref())  # Keras skips on_train_end when fit raises
                raise
        model = self.session.model_ref()
        restore(model)  # left over by a fit that raised; this fit runs the model's own step
        model.make_train_function()
        return model.train_function(iterator)


def _require_compiled(model, owner) -> None:
    if model is None or not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"{type(owner).__name__} needs a compiled model (an optimizer and a loss): call "
            "model.compile(...) first. Received a model that is not compiled."
        )


def install(owner, transform: StepTransform) -> None:
    """Add `owner`'s transform to the step of `owner.model` (call it from `set_model`)."""
    model = owner.model
    session = _SESSIONS.get(id(model))
    if session is not None and (session.running or session.model_ref() is not model):
        restore(session.model_ref())  # a fit that raised left it: start from the model's step
        session = None
    if session is None:
        session = _Session(model)
        _SESSIONS[id(model)] = session
    session.transforms[id(owner)] = (owner, transform)
    if not transform.supports_xla and session.jit_compile is None and model.jit_compile:
        warnings.warn(
            f"{type(owner).__name__} cannot run in an XLA-compiled train step (jit_compile=True): "
            "this fit runs without XLA; the model's jit_compile is restored when it ends.",
            UserWarning,
            stacklevel=3,
        )
        session.jit_compile = model.jit_compile
        model.jit_compile = False
    try:
        step = _compose(model, session)
    except Exception:
        restore(model)
        raise
    model.train_step = step
    model.train_function = None


def begin(owner) -> None:
    """Mark the session of `owner.model` running and guard its train function (`on_train_begin`)."""
    model = owner.model
    session = _SESSIONS.get(id(model))
    if session is None or id(owner) not in session.transforms:
        return
    session.running = True
    if not isinstance(model.train_function, _GuardedTrainFunction):
        model.make_train_function()
        model.train_function = _GuardedTrainFunction(model.train_function, session)


def announce(owner) -> None:
    """Tell the guard that a participating callback saw this batch (`on_train_batch_begin`)."""
    session = _SESSIONS.get(id(owner.model))
    if session is not None:
        session.announced = True


def participants(model) -> list:
    """The callbacks whose transforms are composed into `model`'s step now."""
    session = _SESSIONS.get(id(model))
    return [] if session is None else [owner for owner, _ in session.transforms.values()]


def restore(model) -> None:
    """Give `model` back its own `train_step` and drop the composed train function."""
    if model is None:
        return
    session = _SESSIONS.pop(id(model), None)
    if session is None:
        return
    # What a transform holds for the fit ends with its session, also when a fit raised (Keras
    # then skips on_train_end).
    for _, transform in session.transforms.values():
        if transform.on_restore is not None:
            transform.on_restore()
    if session.jit_compile is not None:
        model.jit_compile = session.jit_compile
    if session.instance_step is not None:
        model.train_step = session.instance_step
    elif "train_step" in model.__dict__:
        del model.__dict__["train_step"]
    model.train_function = None


class StepTransformCallback(keras.callbacks.Callback):
    """Base class of callbacks that change the training step through this module.

    Subclasses implement `step_transform()` and call `super()` in the hooks they override.
    """

    def step_transform(self) -> StepTransform:
        raise NotImplementedError

    def set_model(self, model):
        _require_compiled(model, self)
        super().set_model(model)
        install(self, self.step_transform())

    def on_train_begin(self, logs=None):
        begin(self)

    def on_train_batch_begin(self, batch, logs=None):
        announce(self)

    def on_train_end(self, logs=None):
        restore(self.model)

    def _outside_fit(self) -> None:
        # evaluate/predict called set_model (which installed the transform) but run no train
        # step: take it off, unless a running fit is validating.
        session = _SESSIONS.get(id(self.model))
        if session is not None and not session.running and id(self) in session.transforms:
            restore(self.model)

    def on_test_begin(self, logs=None):
        self._outside_fit()

    def on_predict_begin(self, logs=None):
        self._outside_fit()
