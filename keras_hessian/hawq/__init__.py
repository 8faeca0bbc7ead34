"""HAWQ: Hessian-aware mixed precision, from per-layer sensitivity to a per-layer precision plan.

- `sensitivity.py`: `layer_sensitivity` (HAWQ-V2 average trace, HAWQ-V1 top eigenvalue, per layer);
- `candidates.py`: the precisions to choose from (`CANDIDATES`, `register_candidate`);
- `ilp.py`: the exact allocation program (`scipy.optimize.milp`);
- `assign.py`: `assign_precision`, which returns a `PrecisionPlan` (`precision_plan.py`) that
  `quantize_model(model, plan)` applies.
"""

from keras_hessian.hawq.assign import DEFAULT_CANDIDATES, assign_precision, planned_layers
from keras_hessian.hawq.candidates import CANDIDATES, Candidate, get_candidate, register_candidate
from keras_hessian.hawq.ilp import AllocationResult, solve_allocation
from keras_hessian.hawq.precision_plan import LayerChoice, PrecisionPlan
from keras_hessian.hawq.sensitivity import METRICS, LayerSensitivity, layer_sensitivity

__all__ = [
    "CANDIDATES",
    "DEFAULT_CANDIDATES",
    "METRICS",
    "AllocationResult",
    "Candidate",
    "LayerChoice",
    "LayerSensitivity",
    "PrecisionPlan",
    "assign_precision",
    "get_candidate",
    "layer_sensitivity",
    "planned_layers",
    "register_candidate",
    "solve_allocation",
]
