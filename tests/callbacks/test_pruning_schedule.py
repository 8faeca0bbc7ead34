"""pruning_schedule: TFMOT's own schedules, one-shot at step 0 or iterative ending inside the fine-tune."""

from __future__ import annotations

import pytest
from tensorflow_model_optimization.sparsity.keras import ConstantSparsity, PolynomialDecay

from keras_hessian.callbacks import pruning_schedule


def _pruning_steps(schedule, steps: int) -> list[tuple[int, float]]:
    out = []
    for step in range(steps):
        should, sparsity = schedule(step)
        if bool(should):
            out.append((step, round(float(sparsity), 6)))
    return out


@pytest.mark.parametrize("steps", [1, 2, 7, 100, 418])
def test_one_shot_prunes_once_at_step_zero(steps):
    schedule = pruning_schedule("constant", 0.9, steps)
    assert isinstance(schedule, ConstantSparsity)
    assert _pruning_steps(schedule, steps) == [(0, 0.9)]


@pytest.mark.parametrize(("steps", "updates"), [(2, 10), (7, 10), (100, 4), (418, 4), (441, 10)])
def test_iterative_reaches_the_target_at_its_last_update_within_two_thirds(steps, updates):
    schedule = pruning_schedule("polynomial", 0.9, steps, updates=updates)
    assert isinstance(schedule, PolynomialDecay)
    pruned = _pruning_steps(schedule, steps)
    # TFMOT's PolynomialDecay (power 3) from 0 at step 0 to 0.9 at the last update.
    assert pruned[0] == (0, 0.0) and pruned[-1][1] == pytest.approx(0.9)
    assert pruned[-1][0] <= max(1, 2 * steps // 3) and pruned[-1][0] <= steps - 1
    assert len(pruned) - 1 == min(updates, pruned[-1][0])  # the updates after step 0
    assert [s for _, s in pruned] == sorted(s for _, s in pruned)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="schedule"):
        pruning_schedule("cubic", 0.9, 10)
    with pytest.raises(ValueError, match="sparsity"):
        pruning_schedule("constant", 1.0, 10)
    with pytest.raises(ValueError, match="steps"):
        pruning_schedule("polynomial", 0.5, 0)
