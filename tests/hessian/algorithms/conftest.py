"""The `case` fixture shared by the algorithms' tests: a trained model, its data and its exact Hessian."""

from __future__ import annotations

import pytest

CASES = [("mlp", "hessian_batch_flat"), ("cnn", "hessian_batch_image")]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def case(request):
    model_name, data_name = request.param
    model = request.getfixturevalue(model_name)
    data = request.getfixturevalue(data_name)
    hessian = request.getfixturevalue(f"{model_name}_hessian")
    return model, data, hessian
