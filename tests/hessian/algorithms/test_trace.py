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
