"""Results print as a short summary, not as walls of numbers (bug 15 of issue 9)."""

from __future__ import annotations

from keras_hessian.hessian import HessianOperator, hutchinson_trace, spectral_density, top_eigenvalues

DUMPS = ("tf.Tensor", "numpy=", "array(", "EagerTensor")


def assert_short(text: str, limit: int) -> None:
    assert len(text) < limit, text
    assert "\n" not in text.strip() or len(text.splitlines()) < 12, text
    for dump in DUMPS:
        assert dump not in text, text


def test_per_layer_eigen_results_print_their_values(mlp, hessian_batch_flat):
    results = top_eigenvalues(HessianOperator(mlp, hessian_batch_flat, blocks="layer"), k=2, seed=0)
    text = repr(results)
    assert_short(text, 600)
    for name, result in results.items():
        assert name in text
        assert f"hvp_count={result.hvp_count}" in repr(result)
        for value in result.eigenvalues:
            assert f"{value:.6g}" in repr(result)
    # The arrays stay attributes.
    first = next(iter(results.values()))
    assert len(first.eigenvectors) == 2 and first.eigenvalues.shape == (2,)


def test_trace_result_prints_estimate_error_and_counts(mlp, hessian_batch_flat):
    result = hutchinson_trace(HessianOperator(mlp, hessian_batch_flat), max_iter=40, seed=0)
    text = repr(result)
    assert_short(text, 200)
    assert f"{result.trace:.6g}" in text and f"{result.standard_error:.3g}" in text
    assert f"samples={len(result.samples)}" in text and f"hvp_count={result.hvp_count}" in text
    assert result.samples.shape == (len(result.samples),)


def test_density_result_prints_shapes_not_arrays(mlp, hessian_batch_flat):
    result = spectral_density(HessianOperator(mlp, hessian_batch_flat), n_vectors=2, lanczos_steps=8, seed=0)
    text = repr(result)
    assert_short(text, 300)
    assert str(result.nodes.shape) in text and f"hvp_count={result.hvp_count}" in text
    assert f"{result.trace:.6g}" in text and f"grid_points={len(result.grid)}" in text
    assert result.grid.shape == (2000,)
