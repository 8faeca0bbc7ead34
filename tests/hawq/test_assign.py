"""assign_precision on a real model: optimal against brute force, budgets kept, plan applies and saves."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from keras_hessian.hawq import PrecisionPlan, assign_precision, get_candidate
from keras_hessian.models import compact_cnn
from keras_hessian.quantize import quantize_model

CANDIDATES = ["int8", "int4", "ternary", "binary"]


@pytest.fixture(scope="module")
def trained(digits_image):
    (x, y), _ = digits_image
    keras.utils.set_random_seed(0)
    model = compact_cnn((8, 8, 1))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    return model, (x[:256], y[:256])


SENSITIVITY = {"conv_1": 3.0, "conv_2": 0.5, "dense": 0.02, "logits": 1.0}


def brute_force(plan: PrecisionPlan, budget: float):
    rows = list(plan.layers.values())
    best = None
    for names in itertools.product(*[list(row.options) for row in rows]):
        size = sum(row.options[n]["bytes"] for row, n in zip(rows, names))
        if size > budget:
            continue
        value = sum(row.options[n]["objective"] for row, n in zip(rows, names))
        if best is None or value < best[0]:
            best = (value, names)
    return best


@pytest.mark.parametrize("fraction", [0.075, 0.1, 0.15, 0.25])
def test_plan_is_the_brute_force_optimum_within_the_budget(trained, fraction):
    model, _ = trained
    plan = assign_precision(model, candidates=CANDIDATES, budget=fraction, pin=None, sensitivity=SENSITIVITY)
    value, names = brute_force(plan, fraction * plan.float32_bytes)
    assert tuple(plan.precisions.values()) == names
    assert plan.predicted_perturbation == pytest.approx(value, rel=1e-9)
    assert plan.predicted_bytes <= fraction * plan.float32_bytes


def test_objective_terms_are_sensitivity_times_the_numpy_quantization_error(trained):
    model, _ = trained
    plan = assign_precision(model, candidates=CANDIDATES, budget=0.15, pin=None, sensitivity=SENSITIVITY)
    w = model.get_layer("dense").kernel.numpy().astype(np.float64)
    step = np.abs(w).max(axis=0) / 7  # int4: symmetric per output channel, levels -7..7
    error = np.sum((np.round(w / step) * step - w) ** 2)
    assert plan.layers["dense"].options["int4"]["objective"] == pytest.approx(SENSITIVITY["dense"] * error, rel=1e-5)
    # float32 bytes: 4 per kernel weight and bias.
    assert plan.float32_bytes == 4 * sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("fraction", [0.08, 0.15])
def test_applied_plan_exports_to_the_predicted_file_size(trained, tmp_path, fraction):
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    from keras_hessian.export import to_tflite

    model, (x, _) = trained
    weights = [w.copy() for w in model.get_weights()]
    plan = assign_precision(model, candidates=CANDIDATES, budget=fraction, pin=None, sensitivity=SENSITIVITY)
    quantized = quantize_model(model, plan)
    for path, precision in plan.precisions.items():
        candidate = get_candidate(precision)
        expected = candidate.quantize(model.get_layer(path), model.get_layer(path).kernel)
        np.testing.assert_allclose(quantized.get_layer(path).quantized_kernel(), expected, rtol=0, atol=1e-7)
    assert quantized.predict(x[:8], verbose=0).shape == (8, 10)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))  # original untouched
    # The file: the plan's bytes plus the graph itself (the float32 file less its weight buffers).
    planned_file = to_tflite(quantized, tmp_path / "plan.tflite")
    float_file = to_tflite(model, tmp_path / "float.tflite", mode="float32")
    buffers = tfl_flatbuffer_utils.read_model(str(float_file)).buffers
    graph = float_file.stat().st_size - sum(len(b.data) for b in buffers if b.data is not None)
    assert abs(planned_file.stat().st_size - (plan.predicted_bytes + graph)) <= 0.05 * (plan.predicted_bytes + graph)


def test_widest_budget_gives_all_widest_and_the_plan_round_trips(trained, tmp_path):
    model, _ = trained
    plan = assign_precision(model, candidates=["float32", "int8", "binary"], budget=1.0, sensitivity=SENSITIVITY)
    assert set(plan.precisions.values()) == {"float32"}
    narrow = assign_precision(model, candidates=CANDIDATES, budget=0.1, sensitivity=SENSITIVITY)
    loaded = PrecisionPlan.load(narrow.save(tmp_path / "plan.json"))
    assert loaded == narrow and dict(loaded) == dict(narrow)


def test_measured_sensitivities_and_the_uniform_ablation(trained):
    model, data = trained
    hawq = assign_precision(model, data, CANDIDATES, budget=0.1, pin=None, max_iter=64, seed=0)
    assert hawq.metric == "trace" and all(row.sensitivity > 0 for row in hawq.layers.values())
    uniform = assign_precision(model, candidates=CANDIDATES, budget=0.1, pin=None, sensitivity="uniform")
    assert uniform.metric == "none" and {row.sensitivity for row in uniform.layers.values()} == {1.0}


def test_bad_input_is_named_and_the_model_is_unchanged(trained):
    model, _ = trained
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="precision must be one of"):
        assign_precision(model, candidates=["int3"], budget=0.1, sensitivity=SENSITIVITY)
    plan = assign_precision(model, candidates=CANDIDATES, budget=0.1, pin=None, sensitivity=SENSITIVITY)
    smallest = sum(get_candidate("binary").weight_bytes(model.get_layer(p)) for p in plan)
    with pytest.raises(ValueError, match=f"smallest reachable size: {smallest:,.0f} bytes"):
        assign_precision(model, candidates=CANDIDATES, budget=0.01, pin=None, sensitivity=SENSITIVITY)
    with pytest.raises(ValueError, match="pin: 'nope'"):
        assign_precision(model, candidates=CANDIDATES, budget=0.1, pin=["nope"], sensitivity=SENSITIVITY)
    with pytest.raises(ValueError, match="exactly one of budget"):
        assign_precision(model, candidates=CANDIDATES, sensitivity=SENSITIVITY)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="elsewhere")])
    with pytest.raises(ValueError, match="not in model"):
        quantize_model(other, plan)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
