"""ABSA (AdaptiveBatchSize + AdversarialAugmentation) and HessianSpectrum in `model.fit` under tf.distribute.

The training is `examples/multiworker_absa.py --quick`'s (512 digits, a small MLP, 3 epochs, ABS
with the duration rule off so the eigenvalue alone grows the batch, gradient accumulation over
micro-batches of 16, FGSM, a held-out HessianSpectrum). The truth is that training on one device
without a strategy, same seeds: a strategy splits each global batch across the replicas and
all-reduces gradients and Hessian products, so the schedule must be the same and every logged
float the same up to the order of the sums (1e-5).

* MirroredStrategy over the two logical CPU devices of conftest.py (set before TensorFlow
  starts, for the whole suite), in this process;
* MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1, started by the example's
  launcher (run here, in this process) on free ports with their TF_CONFIG; it kills their
  process groups in `finally`, which the last test checks on a failing run.

With micro-batches of 16 and per-replica batches of at least 16, one device's micro-batches are
exactly the replicas' micro-batches, so the FGSM examples (the first `ratio` of each) are the same.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.callbacks import FixedBatchSize, prepare_multi_worker
from keras_hessian.data import adaptive_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def example():
    path = os.path.join(ROOT, "examples", "multiworker_absa.py")
    spec = importlib.util.spec_from_file_location("multiworker_absa", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def args(example):
    return example.parse_args(["--quick", "--timeout", "240"])


@pytest.fixture(scope="module")
def one_device(example, args):
    return example.train(args)


@pytest.fixture(scope="module")
def strategy():
    # One strategy for the module: two MirroredStrategy objects over the same devices in one
    # process hand out the same collective keys, and their models' all-reduces then collide.
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="module")
def mirrored(example, args, strategy):
    return example.train(args, strategy)


def _assert_same_run(run, one):
    assert run["replicas"] == 2
    assert run["batch_size"] == one["batch_size"] and run["trigger"] == one["trigger"]
    np.testing.assert_allclose(run["learning_rate"], one["learning_rate"], rtol=1e-6)
    np.testing.assert_allclose(run["eigenvalue"], one["eigenvalue"], rtol=1e-5)  # ABS, training subset
    np.testing.assert_allclose(run["test_eigenvalue"], one["test_eigenvalue"], rtol=1e-5)  # HessianSpectrum
    np.testing.assert_allclose(run["adversarial_ratio"], one["adversarial_ratio"])
    np.testing.assert_allclose(run["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(run["accuracy"], one["accuracy"], atol=1e-6)


def test_the_eigenvalue_alone_drives_the_reference_schedule(one_device):
    """The premise of the comparison: increases where |lambda| fell by the drop ratio (1.05)
    since the last increase, with a margin, the LR scaled linearly on the global batch."""
    one = one_device
    assert "eigenvalue" in one["trigger"] and "patience" not in one["trigger"]
    reference = None
    for value, trigger in zip(one["eigenvalue"], one["trigger"]):
        if reference is None:
            reference = value
            continue
        ratio = abs(reference) / abs(value)
        assert abs(ratio - 1.05) > 1e-3, "a decision this close to the threshold would not be a test"
        assert trigger == ("eigenvalue" if ratio >= 1.05 else None)
        reference = value if trigger else reference
    expected = [32]
    for trigger in one["trigger"][:-1]:  # a change decided at the end of epoch k applies in k + 1
        expected.append(expected[-1] * 2 if trigger else expected[-1])
    assert one["batch_size"] == expected
    np.testing.assert_allclose(one["learning_rate"], [0.05 * b / 32 for b in one["batch_size"]], rtol=1e-6)


def test_mirrored_splits_the_global_batch(one_device, mirrored):
    assert one_device["shard"]["replica_examples"] == [32]
    assert mirrored["shard"]["replica_examples"] == [16, 16]
    assert mirrored["shard"]["x_sum"] == pytest.approx(one_device["shard"]["x_sum"], rel=1e-6)


def test_mirrored_reproduces_the_one_device_run(one_device, mirrored):
    _assert_same_run(mirrored, one_device)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_two_workers_reproduce_the_one_device_run(example, args, one_device):
    started: list = []
    workers = example.launch(args, started=started)
    assert len(started) == 2 and all(_gone(pid) for pid, _ in started)
    assert [w["task"] for w in workers] == [0, 1]
    # Each worker got its own half of the first global batch.
    assert [w["shard"]["replica_examples"] for w in workers] == [[16], [16]]
    assert sum(w["shard"]["x_sum"] for w in workers) == pytest.approx(one_device["shard"]["x_sum"], rel=1e-6)
    assert workers[0]["shard"]["x_sum"] != pytest.approx(workers[1]["shard"]["x_sum"], rel=1e-6)
    for worker in workers:
        _assert_same_run(worker, one_device)


def test_a_failing_worker_takes_the_others_down_and_frees_the_ports(example):
    """Worker 0 exits at once with an error; worker 1 listens on its port and would wait forever
    (as a worker blocked in a collective does): the launcher kills it and reports worker 0."""
    hold = (
        "import json, os, socket, time; t = json.loads(os.environ['TF_CONFIG']); "
        "s = socket.socket(); s.bind(('127.0.0.1', int(t['cluster']['worker'][t['task']['index']].split(':')[1]))); "
        "s.listen(); print('listening', flush=True); time.sleep(120)"
    )

    def command(index):
        return [sys.executable, "-c", "import time, sys; time.sleep(1); sys.exit(3)" if index == 0 else hold]

    started: list = []
    begin = time.monotonic()
    with pytest.raises(RuntimeError, match="worker 0 failed"):
        example.launch(example.parse_args(["--timeout", "60"]), command=command, started=started)
    assert time.monotonic() - begin < 20
    assert len(started) == 2
    assert all(_gone(pid) for pid, _ in started)
    assert all(_port_free(port) for _, port in started)



def test_prepare_multi_worker_changes_this_model_object_only(tmp_path, digits_flat):
    """Off multi-worker the wrapped fit runs Keras' own; the class and the saved file are untouched."""
    (x, y), _ = digits_flat
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert prepare_multi_worker(prepare_multi_worker(model)) is model  # twice: wrapped once
    assert isinstance(model.fit.__wrapped__, types.MethodType) and model.fit.__wrapped__.__self__ is model
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    assert type(model).fit is keras.Model.fit and "fit" not in vars(keras.Sequential([keras.Input((64,))]))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert "fit" not in vars(loaded)
    np.testing.assert_array_equal(loaded.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0))
    with pytest.raises(TypeError, match="model must be a keras.Model"):
        prepare_multi_worker("model.keras")


def test_accumulation_takes_the_global_mean_of_an_unevenly_split_batch(digits_flat, strategy):
    """One SGD step on 19 examples split 10 / 9 across the replicas, micro-batches of 8: the update
    is the one-device gradient of the mean loss over the 19 (by GradientTape here), not the mean
    of the two replicas' means (which differs by several percent). Keras' fit cannot start on an
    unevenly split first batch under a strategy without prepare_multi_worker (its symbolic build
    sums the replicas' shares of the batch)."""
    (x, y), _ = digits_flat
    x, y = x[:19], y[:19]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.utils.set_random_seed(5)
    with strategy.scope():
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
        model.compile(keras.optimizers.SGD(0.5), loss)
    prepare_multi_worker(model)
    start = [w.copy() for w in model.get_weights()]
    model.fit(adaptive_dataset(x, y, shuffle=False), epochs=1, verbose=0, shuffle=False,
              callbacks=[FixedBatchSize(19, max_physical_batch_size=8)])
    plain = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])

    def gradient(rows):
        plain.set_weights(start)
        with tf.GradientTape() as tape:
            value = loss(y[rows], plain(x[rows]))
        return [g.numpy() for g in tape.gradient(value, plain.trainable_weights)]

    exact = gradient(slice(0, 19))
    halves = [(a + b) / 2 for a, b in zip(gradient(slice(0, 10)), gradient(slice(10, 19)))]
    assert max(np.max(np.abs(h - e)) / np.max(np.abs(e)) for h, e in zip(halves, exact)) > 1e-2
    for w, w0, g in zip(model.get_weights(), start, exact):
        np.testing.assert_allclose(w, w0 - 0.5 * g, rtol=1e-5, atol=1e-6)
