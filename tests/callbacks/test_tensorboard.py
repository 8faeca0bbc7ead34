"""The `hessian/...` values of HessianSpectrum reach TensorBoard's event files through keras.callbacks.TensorBoard.

The truth is the event files themselves, read back with TensorBoard's own EventAccumulator, and
the History of the same fit.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_hessian.callbacks import HessianSpectrum


def test_hessian_scalars_land_in_tensorboard_event_files(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    spectrum = HessianSpectrum((x, y), top_k=2, trace=True, seed=0)
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0,
                        callbacks=[spectrum, keras.callbacks.TensorBoard(str(tmp_path))])

    from tensorboard.util import tensor_util

    events = event_accumulator.EventAccumulator(str(tmp_path / "train"), size_guidance={"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["tensors"]) | set(events.Tags()["scalars"])
    for key in ("hessian/top_eigenvalue", "hessian/eigenvalue_2", "hessian/trace"):
        tag = f"epoch_{key}"
        assert tag in tags, sorted(tags)
        if tag in events.Tags()["tensors"]:  # TF 2 summaries are tensors
            written = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]
        else:
            written = [e.value for e in events.Scalars(tag)]
        np.testing.assert_allclose(written, history.history[key], rtol=1e-6)
