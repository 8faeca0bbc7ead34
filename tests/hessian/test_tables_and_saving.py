"""EigenResult saves and loads as .npz; per-layer tables equal the exact Hessian's diagonal blocks."""

from __future__ import annotations

import numpy as np
import pytest

from keras_hessian.hessian import EigenResult, HessianOperator, layer_table, top_eigenvalues


def test_eigen_result_round_trips_through_npz(mlp, hessian_batch_flat, tmp_path):
    op = HessianOperator(mlp, hessian_batch_flat)
    result = top_eigenvalues(op, k=2, seed=0)
    loaded = EigenResult.load(result.save(tmp_path / "eigen.npz"))
    np.testing.assert_array_equal(loaded.eigenvalues, result.eigenvalues)
    assert (loaded.hvp_count, loaded.converged, loaded.method) == (result.hvp_count, result.converged, result.method)
    for got, want in zip(loaded.eigenvectors, result.eigenvectors):
        for a, b in zip(got, want):
            assert a.shape == tuple(b.shape)  # weight-shaped
            np.testing.assert_array_equal(a, np.asarray(b))
    # A loaded result warm-starts the solver: from its converged top vector Lanczos needs far fewer products.
    cold = top_eigenvalues(op, k=1, seed=1)
    warm = top_eigenvalues(op, k=1, initial=[loaded.eigenvectors[0]], seed=1)
    assert warm.hvp_count < cold.hvp_count
    assert warm.eigenvalues[0] == pytest.approx(result.eigenvalues[0], rel=1e-3)
    with pytest.raises(ValueError, match="does not exist"):
        result.save(tmp_path / "missing" / "eigen.npz")


def test_layer_table_equals_the_exact_diagonal_blocks(mlp, hessian_batch_flat, mlp_hessian):
    table = layer_table(HessianOperator(mlp, hessian_batch_flat, blocks="layer"), top_k=2, seed=0)
    start = 0
    for row, layer in zip(table.rows, [layer for layer in mlp.layers if layer.trainable_weights]):
        n = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
        block = mlp_hessian[start : start + n, start : start + n]
        start += n
        exact = np.linalg.eigvalsh(block)
        exact = exact[np.argsort(-np.abs(exact))][:2]
        assert row["block"] == layer.name and row["parameters"] == n
        np.testing.assert_allclose(row["eigenvalues"], exact, rtol=1e-3)
        assert abs(row["trace"] - np.trace(block)) <= max(4 * row["trace_standard_error"], 0.02 * abs(np.trace(block)))
        assert row["trace_per_weight"] == pytest.approx(row["trace"] / n)
    markdown = table.markdown()
    assert markdown.count("\n") == len(table.rows) + 1 and "lambda_2" in markdown
