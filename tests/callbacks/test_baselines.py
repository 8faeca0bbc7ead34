"""Fixed-schedule baselines (fixed batch, FB, GG), their composition, and the benchmark's smoke run."""

from __future__ import annotations

import json
import math
import os
import sys

import keras
import numpy as np
import pytest

from keras_hessian.callbacks import (
    AdaptiveBatchSize,
    AdversarialAugmentation,
    BatchIncreaseSchedule,
    FixedBatchSize,
    LinearScalingWarmup,
    step_decay,
    training_callbacks,
)
from keras_hessian.data import adaptive_dataset

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model(lr=0.01):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(10)])
    model.compile(keras.optimizers.SGD(lr), LOSS)
    return model


@pytest.fixture(scope="module")
def data(digits_flat):
    (x, y), _ = digits_flat
    return x[:300], y[:300]


def _fit(data, callbacks, epochs, lr=0.01):
    x, y = data
    model = _model(lr)
    history = model.fit(adaptive_dataset(x, y), epochs=epochs, verbose=0, callbacks=callbacks)
    return model, history.history


def test_fixed_batch(data):
    model, logs = _fit(data, [FixedBatchSize(64)], epochs=2)
    assert logs["batch_size"] == [64.0, 64.0]
    assert int(model.optimizer.iterations.numpy()) == 2 * math.ceil(300 / 64)


def test_fb_linear_scaling_with_gradual_warmup(data):
    eta = 0.01
    _, logs = _fit(data, [LinearScalingWarmup(64, base_batch_size=16, warmup_epochs=2)], epochs=4, lr=eta)
    k = 64 / 16
    expected = [eta + (k * eta - eta) * min(1.0, e / 2) for e in range(4)]  # Goyal et al.
    assert expected == pytest.approx([eta, 2.5 * eta, 4 * eta, 4 * eta])
    np.testing.assert_allclose(logs["learning_rate"], expected, rtol=1e-6)
    assert logs["batch_size"] == [64.0] * 4


def test_gg_grows_the_batch_at_the_milestones_then_decays_the_rate(data):
    eta = 0.01
    model, logs = _fit(data, [BatchIncreaseSchedule([1, 2], factor=4, initial_batch_size=16, max_batch_size=128)], 3, eta)
    assert logs["batch_size"] == [16.0, 64.0, 128.0]
    # At epoch 2 the batch could only grow x2 of the x4: the rate takes the remaining 1/2.
    np.testing.assert_allclose(logs["learning_rate"], [eta, eta, eta / 2], rtol=1e-6)
    assert int(model.optimizer.iterations.numpy()) == sum(math.ceil(300 / b) for b in (16, 64, 128))


@pytest.mark.parametrize("decay_first", [False, True])
def test_step_decay_composes_with_abs_in_any_order(data, decay_first):
    x, y = data
    eta = 0.01
    abs_callback = AdaptiveBatchSize((x[:50], y[:50]), 16, 256, patience=1, max_iter=3)
    callbacks = [step_decay([2], 0.5), abs_callback] if decay_first else [abs_callback, step_decay([2], 0.5)]
    _, logs = _fit(data, callbacks, epochs=3, lr=eta)
    assert logs["batch_size"] == [16.0, 32.0, 64.0]
    np.testing.assert_allclose(logs["learning_rate"], [eta, 2 * eta, 2 * eta], rtol=1e-6)


def test_training_callbacks_columns(data):
    x, y = data
    kinds = {
        "baseline": [FixedBatchSize],
        "large": [FixedBatchSize],
        "fb": [LinearScalingWarmup],
        "gg": [BatchIncreaseSchedule],
        "abs": [AdaptiveBatchSize],
        "absa": [AdaptiveBatchSize, AdversarialAugmentation],
    }
    for method, types in kinds.items():
        callbacks = training_callbacks(method, hessian_data=(x[:20], y[:20]), lr_milestones=[3] if method == "gg" else ())
        assert [type(c) for c in callbacks] == types
    with pytest.raises(ValueError, match="method='sgd'"):
        training_callbacks("sgd")
    with pytest.raises(ValueError, match="hessian_data=None"):
        training_callbacks("abs")


@pytest.mark.parametrize(
    "make, error, words",
    [
        (lambda: FixedBatchSize(0), ValueError, "batch_size=0"),
        (lambda: LinearScalingWarmup(64, warmup_epochs=-1), ValueError, "warmup_epochs=-1"),
        (lambda: LinearScalingWarmup(64, base_batch_size=0), ValueError, "base_batch_size=0"),
        (lambda: BatchIncreaseSchedule([2], factor=1.0), ValueError, "factor=1.0"),
        (lambda: BatchIncreaseSchedule([-1]), ValueError, "milestones="),
        (lambda: BatchIncreaseSchedule([2], initial_batch_size=512, max_batch_size=256), ValueError, "max_batch_size=256"),
        (lambda: step_decay([2], 1.5), ValueError, "decay=1.5"),
    ],
)
def test_bad_arguments_are_named(make, error, words):
    with pytest.raises(error, match=words):
        make()


def test_two_batch_size_callbacks_are_refused(data):
    x, y = data
    model = _model()
    model.fit(x[:16], y[:16], epochs=1, verbose=0)
    before = model.get_weights()
    with pytest.raises(ValueError, match="Only one batch-size callback"):
        model.fit(adaptive_dataset(x, y), epochs=1, verbose=0, callbacks=[FixedBatchSize(16), FixedBatchSize(32)])
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert "train_step" not in model.__dict__


def test_benchmark_quick_mode(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
    import absa_table

    absa_table.main(["--quick", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "absa_table.json").read_text())["rows"]
    keys = {"method", "batch_size_start", "batch_size_end", "test_accuracy_mean", "test_accuracy_std",
            "iterations", "wall_seconds", "hessian_seconds", "seeds"}
    assert [r["method"] for r in rows] == ["baseline", "large", "fb", "gg", "abs", "absa"]
    for row in rows:
        assert keys <= set(row) and 0.0 <= row["test_accuracy_mean"] <= 1.0
    assert (tmp_path / "absa_table.md").exists() and (tmp_path / "absa_table.png").exists()
    _check_frontier_rows(json.loads((tmp_path / "absa_table.json").read_text()))
    assert (tmp_path / "absa_frontier.png").exists()


def _check_frontier_rows(payload):
    """The 19 rows of the quick run against closed forms: schedules, step counts, increase counts."""
    config = payload["settings"]["easy"]["config"]
    rows = {r["row"]: r for r in payload["settings"]["easy"]["rows"]}
    timers = [f"timer{k}" for k in (1, 2, 3, 4, 6)]
    rules = [f"{m}_p{p}_d{d}" for m in ("abs", "absa") for p, d in ((0, 2), (0, 1.5), (4, 2), (8, 2))]
    assert list(rows) == ["baseline", "large", "fb", "gg", "abs", "absa", *timers, *rules]
    n, base, cap, epochs = config["train"], config["base_batch"], config["large_batch"], config["epochs"]
    for k, key in zip((1, 2, 3, 4, 6), timers):
        r = rows[key]
        sizes = [min(base * 2 ** (e // k), cap) for e in range(epochs)]  # TimerBatchSize's closed form
        assert (r["schedule"], r["batch_size_end"]) == ("timer", sizes[-1])
        assert r["iterations"] == sum(math.ceil(n / b) for b in sizes)  # the adaptive dataset keeps the remainder
        assert r["hessian_seconds"] == 0.0 and r["eigenvalue_increases"] == r["patience_increases"] == [0]
    for key in ["abs", "absa", *rules]:
        r = rows[key]
        assert r["schedule"] == "hessian" and r["wall_split"]["hessian"] == pytest.approx(r["hessian_seconds"])
        doublings = round(math.log2(r["batch_size_end"] / r["batch_size_start"]))
        assert [e + p for e, p in zip(r["eigenvalue_increases"], r["patience_increases"])] == [doublings]
        if r["patience"] is None:
            assert r["patience_increases"] == [0]
        hvps = r["hvps_per_check"]
        assert hvps["checks"] >= 1 and 1 <= hvps["first"] <= config["hessian_iterations"]
    assert rows["abs_p0_d1.5"]["drop_ratio"] == 1.5 and rows["absa_p8_d2"]["patience"] == 8
    for r in rows.values():
        assert r["wall_split"]["compute"] > 0 and r["wall_split"]["batch_size_change"] >= 0


def test_frontier_verdict_against_a_hand_made_frontier():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
    from benchmarks._absa_report import frontier_verdict

    def point(iterations, accuracy, std=0.0):
        return {"iterations": iterations, "test_accuracy_mean": accuracy, "test_accuracy_std": std}

    timers = [point(1000, 0.95), point(100, 0.90)]  # the line at sqrt(100 * 1000) iterations: 0.925
    middle = math.sqrt(1000 * 100)
    assert frontier_verdict(point(middle, 0.94, 0.005), timers) == ("above", pytest.approx(1.5))
    assert frontier_verdict(point(middle, 0.92, 0.01), timers)[0] == "within spread"
    assert frontier_verdict(point(middle, 0.90, 0.01), timers) == ("below", pytest.approx(-2.5))
    assert frontier_verdict(point(50, 0.91), timers)[0] == "above"  # fewer iterations, better than k's end
    assert frontier_verdict(point(50, 0.85), timers)[0] == "outside"
    assert frontier_verdict(point(2000, 0.90), timers)[0] == "below"  # more iterations, worse


def test_hard_setting_model_is_the_short_resnet():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
    from benchmarks._absa_rows import build_model

    model = build_model("hard", 0)
    # stem 5*32+32, stride conv 3*32*32+32, block(32) 2*(3*32*32+32), stride conv 3*32*64+64,
    # block(64) 2*(3*64*64+64), logits 640*10+10
    assert model.count_params() == 192 + 3104 + 2 * 3104 + 6208 + 2 * 12352 + 6410
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 2


def test_cli_train_prints_the_schedule(capsys, tmp_path):
    from keras_hessian.cli import main

    out = tmp_path / "rows.json"
    code = main(["train", "--method", "abs", "--data", "digits", "--epochs", "2", "--batch-size", "32",
                 "--max-batch-size", "64", "--patience", "1", "--hessian-examples", "64", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "batch" in printed and "eigenvalue" in printed
    rows = json.loads(out.read_text())["epochs"]
    assert [r["batch_size"] for r in rows] == [32, 64]
    assert rows[1]["learning_rate"] == pytest.approx(2 * rows[0]["learning_rate"])
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in rows)
    assert main(["train", "--method", "fb", "--data", "digits", "--epochs", "0"]) == 2


def test_a_reused_warmup_gives_the_same_schedule_again(data):
    """Issue 9, bug 7: the base rate stays in the callback; the second fit does not start from k * eta."""
    x, y = data
    eta = 0.01
    model = _model(eta)
    callback = LinearScalingWarmup(64, base_batch_size=16, warmup_epochs=2)
    expected = [eta, 2.5 * eta, 4 * eta, 4 * eta]  # Goyal et al., k = 4
    for _ in range(2):
        history = model.fit(adaptive_dataset(x, y), epochs=4, verbose=0, callbacks=[callback])
        np.testing.assert_allclose(history.history["learning_rate"], expected, rtol=1e-6)
