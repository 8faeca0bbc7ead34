"""prepare_multi_worker: `model.fit` under MultiWorkerMirroredStrategy with several workers (Keras 3.15).

Keras 3.15's TensorFlow trainer cannot run `fit` under a `MultiWorkerMirroredStrategy` of more
than one worker (keras-team/keras#20585, open): it fails before the first step, and again on every
step's logs. Our own fix lives in `keras_hessian._compat.fix_multi_worker_fit` (private Keras
symbols); this is its public entry, because the callbacks cannot apply it themselves: `fit`
fails before it hands the callbacks the model.
"""

from __future__ import annotations

import keras

from keras_hessian import _compat
from keras_hessian._backend import require_tensorflow_backend
from keras_hessian._validation import check_type

__all__ = ["prepare_multi_worker"]


def prepare_multi_worker(model: keras.Model) -> keras.Model:
    """Lets `model.fit` / `evaluate` / `predict` run under a MultiWorkerMirroredStrategy of several workers.

    Call it on every worker after `model.compile(...)` (inside or outside `strategy.scope()`);
    it changes this model object only (its `fit`, `evaluate` and `predict` are wrapped; its
    weights, config and saved files are untouched), does nothing on one device, and nothing more
    when called twice. With it, the metrics `fit` logs are averaged over the workers (scalars with
    `axis=None`, where Keras asks for `axis=0`), and the symbolic build before the first step
    reads this worker's own share of the first batch instead of averaging the batch over the
    workers (which fails in `CollectiveAllReduceStrategy`, and under any strategy when the first
    global batch does not split evenly across the replicas).

    Example:

    ```python
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # TF_CONFIG set on every worker
    with strategy.scope():
        model = keras_hessian.models.small_mlp()
        keras_hessian.models.compile_classifier(model)
    keras_hessian.callbacks.prepare_multi_worker(model)
    model.fit(keras_hessian.data.adaptive_dataset(x, y, seed=0), epochs=8,
              callbacks=[keras_hessian.callbacks.AdaptiveBatchSize((x[:512], y[:512]))])
    ```

    Args:
        model: a Keras model (TensorFlow backend).

    Returns:
        `model` itself.
    """
    require_tensorflow_backend()
    check_type("model", model, keras.Model, "a keras.Model")
    _compat.fix_multi_worker_fit(model)
    return model
