"""Hutchinson / Hutch++ trace against the exact Hessian's trace."""

from __future__ import annotations

import numpy as np

from keras_hessian.hessian import HessianOperator, hutchinson_trace


def test_hutchinson_trace_within_2_percent_at_defaults(case):
    model, data, hessian = case
    exact = np.trace(hessian)
    for seed in (0, 1):
        result = hutchinson_trace(HessianOperator(model, data), seed=seed)
        assert abs(result.trace - exact) <= 0.02 * abs(exact)
        assert 0 < result.standard_error < 0.02 * abs(exact)


def test_plain_hutchinson_is_unbiased(cnn, hessian_batch_image, cnn_hessian):
    """deflation=0: the mean of z^T H z over Rademacher z; 3 standard errors cover the truth."""
    result = hutchinson_trace(HessianOperator(cnn, hessian_batch_image), seed=3, deflation=0, max_iter=200)
    assert abs(result.trace - np.trace(cnn_hessian)) < 3 * result.standard_error


def test_budgets_that_vary_reuse_a_few_compiled_sizes(cnn, hessian_batch_image, cnn_hessian):
    """Budgets of 21, 27 and 30 products on one operator: the batched products come in 8, 4, 2 and 1
    vectors only (a new size is a new trace), every product is spent, and Hutch++ still estimates
    the exact trace."""
    op = HessianOperator(cnn, hessian_batch_image)
    for budget in (21, 27, 30):
        before = op.hvp_count
        result = hutchinson_trace(op, max_iter=budget, tol=1e-12, seed=budget)
        assert op.hvp_count - before == budget == result.hvp_count
        assert abs(result.trace - np.trace(cnn_hessian)) < 4 * result.standard_error
    sizes = {kind for kind, _ in op._functions}
    assert sizes <= {"hvp", "hvp_many_8", "hvp_many_4", "hvp_many_2"}, sizes
