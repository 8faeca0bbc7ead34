"""AdaptiveBatchSize and HessianSpectrum start each measurement from the last eigenvector (counted products)."""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_hessian.callbacks import AdaptiveBatchSize, HessianSpectrum
from keras_hessian.data import adaptive_dataset
from tests.conftest import flat

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _frozen_copy(model):
    """A copy of a trained fixture model with learning rate 0: its Hessian is the same every epoch."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.compile(optimizer=keras.optimizers.SGD(0.0), loss=LOSS)
    return copy


def test_abs_from_its_second_check_starts_at_the_last_eigenvector(mlp, digits_flat, hessian_batch_flat, mlp_hessian):
    (x, y), _ = digits_flat
    model = _frozen_copy(mlp)
    callback = AdaptiveBatchSize(
        hessian_batch_flat, initial_batch_size=256, max_batch_size=1024, patience=None, method="power",
        max_iter=100, tol=1e-3,
    )
    history = model.fit(adaptive_dataset(x, y, seed=0), epochs=3, callbacks=[callback], verbose=0)
    counts = history.history["hessian/hvp_count"]
    # A random start needs several products; the same Hessian from its own converged vector: two
    # (the stopping rule compares two successive estimates).
    assert counts[0] > 2
    assert counts[1:] == [2.0, 2.0]
    assert [h["hvp_count"] for h in callback.history] == [int(c) for c in counts]
    v = flat(callback.eigenvectors[0])
    top = np.max(np.abs(np.linalg.eigvalsh(mlp_hessian)))
    np.testing.assert_allclose(abs(v @ mlp_hessian @ v), top, rtol=1e-2)


def test_abs_drops_the_vectors_on_a_model_of_other_shapes(mlp, cnn, digits_flat, digits_image, hessian_batch_image):
    (x, y), _ = digits_flat
    callback = AdaptiveBatchSize(
        (x[:300], y[:300]), initial_batch_size=256, max_batch_size=1024, patience=None, method="power", tol=1e-3,
        max_iter=100,
    )
    _frozen_copy(mlp).fit(adaptive_dataset(x, y, seed=0), epochs=1, callbacks=[callback], verbose=0)
    assert callback.eigenvectors is not None
    (xi, yi), _ = digits_image
    callback.hessian_data = hessian_batch_image
    history = _frozen_copy(cnn).fit(adaptive_dataset(xi, yi, seed=0), epochs=2, callbacks=[callback], verbose=0)
    counts = history.history["hessian/hvp_count"]
    assert counts[0] > 2 and counts[1] == 2.0
    assert [tuple(t.shape) for t in callback.eigenvectors[0]] == [tuple(w.shape) for w in cnn.trainable_weights]


def test_abs_logs_nan_products_between_checks(mlp, digits_flat, hessian_batch_flat):
    (x, y), _ = digits_flat
    callback = AdaptiveBatchSize(hessian_batch_flat, initial_batch_size=256, max_batch_size=1024, patience=None, check_every=2)
    history = _frozen_copy(mlp).fit(adaptive_dataset(x, y, seed=0), epochs=2, callbacks=[callback], verbose=0)
    counts = history.history["hessian/hvp_count"]
    assert math.isnan(counts[0]) and counts[1] > 0


def test_spectrum_warm_start_spends_fewer_products(mlp, digits_flat, hessian_batch_flat, mlp_hessian):
    (x, y), _ = digits_flat
    spectrum = HessianSpectrum(hessian_batch_flat, top_k=2, tol=1e-3)
    history = _frozen_copy(mlp).fit(x, y, batch_size=256, epochs=3, callbacks=[spectrum], verbose=0)
    counts = history.history["hessian/hvp_count"]
    assert counts[1] < counts[0] and counts[2] < counts[0]
    exact = np.sort(np.abs(np.linalg.eigvalsh(mlp_hessian)))[::-1][:2]
    np.testing.assert_allclose(np.abs([history.history["hessian/top_eigenvalue"][2], history.history["hessian/eigenvalue_2"][2]]), exact, rtol=1e-3)


def test_a_fit_of_another_model_with_the_same_shapes_starts_afresh(mlp, digits_flat, hessian_batch_flat):
    # A seed sweep reusing one callback: the second model's first check must not start from the first
    # model's eigenvector; it is then the very computation a fresh callback does (same seed, same start).
    (x, y), _ = digits_flat

    def first_check(callback, seed):
        keras.utils.set_random_seed(seed)
        model = keras.models.clone_model(mlp)
        model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(adaptive_dataset(x[:256], y[:256], seed=0), epochs=1, callbacks=[callback], verbose=0)
        return callback.history[0]["eigenvalue"], callback.history[0]["hvp_count"]

    def fresh():
        return AdaptiveBatchSize(
            hessian_batch_flat, initial_batch_size=64, max_batch_size=128, patience=None, method="power", tol=1e-4,
            max_iter=100,
        )

    reused = fresh()
    first_check(reused, 1)
    assert reused.eigenvectors is not None
    assert first_check(reused, 2) == first_check(fresh(), 2)
