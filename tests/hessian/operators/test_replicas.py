"""The operator under tf.distribute: MirroredStrategy over two logical CPU devices (set up in
conftest.py) gives the Hessian of the same mean loss as one device."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.hessian import HessianOperator, top_eigenvalues
from tests.conftest import by_magnitude, exact_hessian, flat


def architecture():
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, activation="tanh"), keras.layers.Dense(10)])


@pytest.fixture(scope="module")
def mirrored(digits_flat):
    (x, y), _ = digits_flat
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    keras.utils.set_random_seed(9)
    with strategy.scope():
        model = architecture()
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # The reference: the same weights in a model on one device, exact Hessian by Jacobian.
    plain = architecture()
    plain.set_weights(model.get_weights())
    x, y = x[:203], y[:203]
    return strategy, model, x, y, exact_hessian(plain, x, y)


def test_mirrored_hvp_matches_one_device_exact_hessian(mirrored):
    strategy, model, x, y, hessian = mirrored
    assert strategy.num_replicas_in_sync == 2
    rng = np.random.default_rng(0)
    # Batches of 64, 64, 64 and 11 (split 32/32 ... 5/6 across the replicas) and a batch of 1
    # (fewer examples than replicas: computed on one).
    for op in (HessianOperator(model, (x, y), batch_size=64), HessianOperator(model, (x[:-1], y[:-1]), batch_size=101)):
        assert op.strategy is strategy
        v = [tf.constant(rng.standard_normal(w.shape), tf.float32) for w in op.variables]
        expected = (hessian if len(x) == op._num_examples else exact_hessian_of(model, x[:-1], y[:-1])) @ flat(v)
        np.testing.assert_allclose(flat(op.hvp(v)), expected, rtol=1e-4, atol=1e-5)


def exact_hessian_of(model, x, y):
    plain = architecture()
    plain.set_weights(model.get_weights())
    return exact_hessian(plain, x, y)


def test_mirrored_eigenvalues(mirrored):
    _, model, x, y, hessian = mirrored
    result = top_eigenvalues(HessianOperator(model, (x, y), batch_size=50), k=2, seed=0)
    np.testing.assert_allclose(result.eigenvalues, by_magnitude(np.linalg.eigvalsh(hessian))[:2], rtol=1e-3)


def test_training_mode_is_refused_under_a_strategy(mirrored):
    _, model, x, y, _ = mirrored
    with pytest.raises(ValueError, match="training=True is not supported"):
        HessianOperator(model, (x, y), training=True)


def test_multi_worker_two_processes_on_loopback(tmp_path):
    """Two real worker processes (MultiWorkerMirroredStrategy, gRPC on 127.0.0.1) each hold one
    replica; both must return the one-device exact Hessian's product and top eigenvalue."""
    import json
    import os
    import socket
    import subprocess
    import sys

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    workers = [f"127.0.0.1:{p}" for p in ports]
    job = os.path.join(os.path.dirname(__file__), "multiworker_job.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    processes = [
        subprocess.Popen(
            [sys.executable, job, json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}),
             str(tmp_path / f"worker{i}.npz")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert all(p.returncode == 0 for p in processes), "\n".join(o[-3000:] for o in outputs)
    results = [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]
    (x, y), _ = __import__("keras_hessian.data", fromlist=["load_digits"]).load_digits(image=False)
    plain = keras.Sequential([keras.Input((64,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(10)])
    plain.set_weights([results[0][f"w{i}"] for i in range(4)])
    hessian = exact_hessian(plain, x[:203], y[:203])
    for r in results:
        assert int(r["replicas"]) == 2
        np.testing.assert_allclose(r["hv"], hessian @ r["v"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(r["top"], by_magnitude(np.linalg.eigvalsh(hessian))[:1], rtol=1e-3)
