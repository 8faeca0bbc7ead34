"""A fit killed after epoch k and restarted with BackupAndRestore continues the same schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import keras
    from keras_hessian.callbacks import AdaptiveBatchSize, AdversarialAugmentation
    from keras_hessian.data import adaptive_dataset, load_digits

    mode, backup, log_path = sys.argv[1], sys.argv[2], sys.argv[3]
    (x, y), _ = load_digits(image=False)
    x, y = x[:240], y[:240]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(10)])
    model.compile(keras.optimizers.SGD(0.02, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    abs_callback = AdaptiveBatchSize((x[:60], y[:60]), 8, 64, patience=1, max_iter=20, tol=1e-6,
                                     backup_dir=backup)
    adversarial = AdversarialAugmentation(0.01, 0.4, stop_epoch=None)

    class Log(keras.callbacks.Callback):
        first = True
        def on_epoch_begin(self, epoch, logs=None):
            if self.first:  # after AdaptiveBatchSize restored its state and applied the pending change
                self.first = False
                self.write({"begin": epoch, "reference": abs_callback.reference,
                            "batch_size": abs_callback.batch_size,
                            "learning_rate": float(model.optimizer.learning_rate.numpy())})
        def on_epoch_end(self, epoch, logs=None):
            self.write({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
        def write(self, row):
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\\n")

    class Stall(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if mode == "kill" and epoch == 1:
                open(log_path + ".ready", "w").close()
                time.sleep(120)  # the test kills the process here

    model.fit(adaptive_dataset(x, y, seed=1), epochs=5, verbose=0, shuffle=False,
              callbacks=[keras.callbacks.BackupAndRestore(backup), abs_callback, adversarial, Log(), Stall()])
    """
)


def _read(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _run(script, mode, backup, log):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen(
        [sys.executable, script, mode, backup, log], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    script = str(tmp / "train.py")
    with open(script, "w") as f:
        f.write(SCRIPT)
    backup, log = str(tmp / "backup"), str(tmp / "resumed.jsonl")
    # The uninterrupted reference runs beside the killed one.
    reference = _run(script, "plain", str(tmp / "backup_reference"), str(tmp / "reference.jsonl"))
    killed = _run(script, "kill", backup, log)
    deadline = time.time() + 240
    while not os.path.exists(log + ".ready"):
        if killed.poll() is not None or time.time() > deadline:
            raise AssertionError(killed.communicate()[0].decode()[-3000:])
        time.sleep(0.2)
    killed.kill()
    killed.wait()
    before_restart = _read(log)
    state_files = sorted(os.listdir(backup))
    resumed = _run(script, "resume", backup, log)
    for process in (resumed, reference):
        output = process.communicate(timeout=240)[0].decode()
        assert process.returncode == 0, output[-3000:]
    return before_restart, _read(log), _read(str(tmp / "reference.jsonl")), state_files, backup


def test_killed_fit_resumes_with_the_same_schedule(runs):
    before, after, reference, state_files, backup = runs
    assert "keras_hessian.AdaptiveBatchSize.json" in state_files
    assert [r["epoch"] for r in before if "epoch" in r] == [0, 1]
    resumed = [r for r in after[len(before):] if "epoch" in r]
    start = next(r for r in after[len(before):] if "begin" in r)
    assert start["begin"] == 2 and [r["epoch"] for r in resumed] == [2, 3, 4]
    # The eigenvalue reference is the one measured before the kill, at the increase of epoch 1.
    epoch1 = next(r for r in before if r.get("epoch") == 1)
    assert start["reference"] == pytest.approx(epoch1["hessian/top_eigenvalue"], rel=1e-12)
    full = {r["epoch"]: r for r in reference if "epoch" in r}
    for row in resumed:
        same = full[row["epoch"]]
        assert row["batch_size"] == same["batch_size"]
        assert row["learning_rate"] == pytest.approx(same["learning_rate"], rel=1e-6)
        assert row["adversarial/ratio"] == pytest.approx(same["adversarial/ratio"], rel=1e-6)
    # Batch 8 -> 16 -> 32 -> 64 (cap): adversarial ratio halves at each doubling, stops at the cap.
    assert [full[e]["batch_size"] for e in range(5)] == [8, 16, 32, 64, 64]
    np.testing.assert_allclose([full[e]["adversarial/ratio"] for e in range(5)], [0.4, 0.2, 0.1, 0, 0])
    # Same weights and data order after the restart: same eigenvalue measured at epoch 2.
    assert resumed[0]["hessian/top_eigenvalue"] == pytest.approx(full[2]["hessian/top_eigenvalue"], rel=1e-3)
    assert not os.path.exists(backup)  # completed: Keras removed its backup, and ours with it
