"""The engine on architectures no test here wrote: MobileNetV2, a functional transformer, a KerasHub BERT.

What they bring that small Sequential models do not: BatchNorm (inference-mode Hessian), LayerNorm,
attention (`EinsumDense` inside `MultiHeadAttention`), `Embedding` gradients that arrive as
`tf.IndexedSlices`, integer token inputs, dict inputs, nested models and composite layers.
The truths: ARPACK (`scipy.sparse.linalg.eigsh`) for the top eigenvalue, central differences of
gradients taken here with a plain tape, exact Hessian blocks from `tape.jacobian`.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.sparse.linalg
import tensorflow as tf

from keras_hessian import architectures
from keras_hessian.callbacks import HessianSpectrum
from keras_hessian.data import load_digits_rgb, load_digits_tokens
from keras_hessian.hessian import (
    GaussNewtonOperator,
    HessianOperator,
    hessian_diagonal,
    hutchinson_trace,
    spectral_density,
    top_eigenvalues,
)
from keras_hessian.hessian.operators import _sparse
from tests.conftest import flat

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
N_TOKENS = 32  # examples of the token models
N_IMAGES = 16  # examples of MobileNetV2 (409k parameters: one HVP is the cost of a few gradients)


def _loss(y, logits):  # written out here: the reference does not share the operator's loss code
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))


@pytest.fixture(scope="module")
def tokens():
    (x, y), _ = load_digits_tokens()
    return x[:N_TOKENS], y[:N_TOKENS]


@pytest.fixture(scope="module")
def mobilenet():
    keras.utils.set_random_seed(0)
    (x, y), _ = load_digits_rgb(32)
    return architectures.mobilenet_v2(), (x[:N_IMAGES], y[:N_IMAGES])


@pytest.fixture(scope="module")
def transformer(tokens):
    keras.utils.set_random_seed(0)
    return architectures.transformer_classifier(), tokens


@pytest.fixture(scope="module")
def bert(tokens):
    pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    model = architectures.keras_hub_bert_classifier()
    x, y = tokens
    model(architectures.bert_inputs(x[:2]))
    return model, (architectures.bert_inputs(x), y)


@pytest.fixture(scope="module")
def bert_op(bert):
    model, data = bert
    return HessianOperator(model, data, LOSS)


@pytest.fixture(scope="module")
def transformer_op(transformer):
    model, data = transformer
    return HessianOperator(model, data, LOSS, blocks="layer")


@pytest.fixture(scope="module", params=["mobilenet", "transformer", "bert"])
def real(request):
    model, data = request.getfixturevalue(request.param)
    op = request.getfixturevalue("bert_op") if request.param == "bert" else HessianOperator(model, data, LOSS)
    return model, op


def _weights(model) -> list[np.ndarray]:
    return [np.array(v) for v in model.weights]


def _assert_unchanged(model, before: list[np.ndarray]) -> None:
    for b, a in zip(before, _weights(model)):  # weights and BatchNorm's moving statistics, bit for bit
        np.testing.assert_array_equal(a, b)


def _exact_block(model, x, y, variables) -> np.ndarray:
    """The exact Hessian block of `variables` (near the output: the Jacobian's backward passes are short)."""
    tf_vars = [v.value for v in variables]
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = _loss(y, model(x, training=False))
        grad = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(loss, tf_vars)], 0)
    n = int(grad.shape[0])
    block = np.concatenate([tf.reshape(j, [n, -1]).numpy() for j in outer.jacobian(grad, tf_vars)], axis=1)
    return (block.astype(np.float64) + block.T.astype(np.float64)) / 2


def _gradient(model, x, y) -> np.ndarray:
    """The mean loss's gradient by a plain tape (dense), in inference mode."""
    variables = [v.value for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        loss = _loss(y, model(x, training=False))
    return np.concatenate(
        [np.asarray(tf.convert_to_tensor(g), np.float64).ravel() for g in tape.gradient(loss, variables)]
    )


def _finite_difference_hvp(model, x, y, v_flat: np.ndarray, eps: float) -> np.ndarray:
    """(g(w + eps v) - g(w - eps v)) / (2 eps), the weights put back bit-identically."""
    variables = model.trainable_variables
    saved = [np.array(var) for var in variables]
    pieces, start = [], 0
    for var in variables:
        size = int(np.prod(var.shape))
        pieces.append(v_flat[start : start + size].reshape(var.shape))
        start += size
    try:
        for var, w, p in zip(variables, saved, pieces):
            var.assign((w + eps * p).astype(w.dtype))
        plus = _gradient(model, x, y)
        for var, w, p in zip(variables, saved, pieces):
            var.assign((w - eps * p).astype(w.dtype))
        minus = _gradient(model, x, y)
    finally:
        for var, w in zip(variables, saved):
            var.assign(w)
    return (plus - minus) / (2 * eps)


def _unit(op, seed: int, only=None) -> tuple[list, np.ndarray]:
    """A random unit vector on the operator's variables (zero outside the variables `only`, when given)."""
    rng = np.random.default_rng(seed)
    keep = None if only is None else {id(v) for v in only}
    v = [
        rng.standard_normal(tuple(var.shape)).astype("float32")
        if keep is None or id(var) in keep
        else np.zeros(tuple(var.shape), "float32")
        for var in op.variables
    ]
    scale = np.linalg.norm(flat(v))
    v = [t / scale for t in v]
    return v, flat(v)


# ---------------------------------------------------------------------------------------------- eigenvalues
def test_lanczos_top_eigenvalue_equals_arpack(real):
    """Lanczos (ours) against ARPACK (scipy eigsh over the HVP): 1e-3 relative; weights and BN statistics untouched."""
    model, op = real
    before = _weights(model)
    assert op.num_parameters == sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    lanczos = top_eigenvalues(op, k=1, seed=0)
    n = op.num_parameters

    def matvec(v):
        vector, start = [], 0
        for var in op.variables:
            size = int(np.prod(var.shape))
            vector.append(v[start : start + size].reshape(var.shape).astype("float32"))
            start += size
        return flat(op.hvp(vector))

    reference = scipy.sparse.linalg.eigsh(
        scipy.sparse.linalg.LinearOperator((n, n), matvec=matvec, dtype=np.float64), k=1, which="LM", tol=1e-4, ncv=8
    )[0]
    assert lanczos.converged
    np.testing.assert_allclose(lanczos.eigenvalues[0], reference[0], rtol=1e-3)
    _assert_unchanged(model, before)


# ---------------------------------------------------------------------------------------------- products
def test_hvp_equals_finite_differences_of_gradients(bert, bert_op):
    """H v against central differences of a plain tape's gradient on the KerasHub BERT (GELU: twice
    differentiable; embeddings, LayerNorm and attention in), by every route: reverse-over-reverse with the
    embedding's IndexedSlices kept sparse, hvp_many (the sparse dot product), forward-over-reverse (dense).
    Not on the ReLU models: across the many ReLU kinks near zero at initialization, differences of
    gradients converge to the distributional Hessian, not to autodiff's almost-everywhere one (measured on
    the transformer: 88% apart below its last ReLU, 1e-3 above it); ARPACK and the exact blocks check those."""
    model, (x, y) = bert
    before = _weights(model)
    embedding = model.backbone.token_embedding.embeddings
    with tf.GradientTape() as tape:
        loss = _loss(y, model(x, training=False))
    assert isinstance(tape.gradient(loss, embedding.value), tf.IndexedSlices)  # the sparse path is taken

    v, v_flat = _unit(bert_op, seed=1)
    want = _finite_difference_hvp(model, x, y, v_flat, eps=1e-2)
    forward = HessianOperator(model, (x, y), LOSS, method="forward_over_reverse")
    routes = {"sparse": bert_op.hvp(v), "hvp_many": bert_op.hvp_many([v, v])[1], "forward": forward.hvp(v)}
    for route, got in routes.items():
        assert np.linalg.norm(flat(got) - want) <= 1e-2 * np.linalg.norm(want), route
    _assert_unchanged(model, before)


def test_embedding_products_sparse_and_dense_routes_agree(transformer):
    """`_sparse.SPARSE` off (the IndexedSlices scattered to dense before the second backward pass) gives
    the same product as the sparse route on the transformer's token embedding."""
    model, data = transformer
    blocks = [[model.get_layer("token_embedding").embeddings]]
    sparse_op = HessianOperator(model, data, LOSS, blocks=blocks)
    v, _ = _unit(sparse_op, seed=2)
    sparse = flat(sparse_op.hvp(v))
    saved = _sparse.SPARSE
    try:
        _sparse.SPARSE = False
        dense = flat(HessianOperator(model, data, LOSS, blocks=blocks).hvp(v))
    finally:
        _sparse.SPARSE = saved
    assert np.abs(sparse).max() > 0
    np.testing.assert_allclose(dense, sparse, rtol=0, atol=1e-5 * np.abs(sparse).max())


def test_gauss_newton_on_embeddings_and_attention(transformer):
    """The Gauss-Newton operator on the transformer (its products take the embedding's IndexedSlices
    too): both autodiff routes agree and v . G v >= 0 (G is positive semi-definite for cross-entropy)."""
    model, data = transformer
    reverse = GaussNewtonOperator(model, data, LOSS, method="reverse_over_reverse")
    forward = GaussNewtonOperator(model, data, LOSS, method="forward_over_reverse")
    v, v_flat = _unit(reverse, seed=5)
    a, b = flat(reverse.hvp(v)), flat(forward.hvp(v))
    assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(a)
    assert float(v_flat @ a) > 0


def test_multiple_inputs_dict_dataset_streamed(bert, bert_op):
    """BERT's three int inputs as a dict: numpy dict and a streamed dict dataset (cache=False) give one operator."""
    model, (x, y) = bert
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    streamed = HessianOperator(model, dataset, LOSS, cache=False)
    v, _ = _unit(bert_op, seed=3)
    a, b = flat(bert_op.hvp(v)), flat(streamed.hvp(v))
    assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(a)
    assert streamed._data.batches is None  # nothing kept but the first batch


def test_batch_norm_inference_mode_by_default_training_mode_leaves_statistics(mobilenet):
    """The default operator's loss is the inference-mode loss (moving statistics, as PyHessian's
    model.eval()); training=True uses batch statistics and leaves the moving statistics bit-identical."""
    model, (x, y) = mobilenet
    before = _weights(model)
    inference = float(_loss(y, model(x, training=False)))
    batch_stats = float(_loss(y, model(x, training=True)))  # this eager call moves the statistics: put back
    model.set_weights(before)
    assert HessianOperator(model, (x, y), LOSS).mean_loss() == pytest.approx(inference, rel=1e-5)
    trained = HessianOperator(model, (x, y), LOSS, training=True)
    assert trained.mean_loss() == pytest.approx(batch_stats, rel=1e-4)
    assert abs(batch_stats - inference) > 1e-3 * abs(inference)  # the two modes do differ here
    _assert_unchanged(model, before)  # (the products' restore in training mode: tests/hessian/operators)


# ---------------------------------------------------------------------------------------------- blocks
def test_layer_blocks_are_named_by_layer_path(transformer_op, bert, mobilenet):
    """blocks="layer": a composite layer's sub-layers are blocks of their own, named by path; the blocks
    partition the trainable weights."""
    names = transformer_op.blocks
    attention = [f"block_0_attention/{part}" for part in ("query", "key", "value", "attention_output")]
    assert names[:6] == ["token_embedding", "position_embedding", *attention]
    assert names[-1] == "logits" and "block_1_ffn_2" in names and len(names) == 19

    model, data = bert
    op = HessianOperator(model, data, LOSS, blocks="layer")
    assert "bert_backbone/transformer_layer_0/self_attention_layer/query" in op.blocks
    assert "bert_backbone/transformer_layer_1/feedforward_output_dense" in op.blocks
    assert op.blocks[0] == "bert_backbone/token_embedding" and op.blocks[-1] == "logits"
    ids = [id(v) for _, group in op._blocks for v in group]
    assert len(ids) == len(set(ids)) and set(ids) == {id(v) for v in model.trainable_variables}

    model, data = mobilenet
    names = HessianOperator(model, data, LOSS, blocks="layer").blocks
    assert names[:3] == ["Conv1", "bn_Conv1", "expanded_conv_depthwise"] and len(names) == 105


def test_estimators_on_exact_blocks(transformer, transformer_op):
    """per_block eigenvalues, trace, diagonal and density of the transformer's blocks against the exact
    Hessian blocks (the last LayerNorm and the classifier: short backward passes for the Jacobian)."""
    model, (x, y) = transformer
    chosen = ["block_1_norm_2", "logits"]
    groups = dict(transformer_op._blocks)
    op = HessianOperator(model, (x, y), LOSS, blocks={name: groups[name] for name in chosen})
    exact = {name: _exact_block(model, x, y, groups[name]) for name in chosen}

    per_block = top_eigenvalues(op, k=1, seed=0)
    assert set(per_block) == set(chosen)
    for name in chosen:
        eigenvalues = np.linalg.eigvalsh(exact[name])
        np.testing.assert_allclose(
            per_block[name].eigenvalues[0], eigenvalues[np.argmax(np.abs(eigenvalues))], rtol=1e-3
        )

    block, hessian = op.block("logits"), exact["logits"]
    trace = hutchinson_trace(block, seed=0, tol=2e-2)
    assert abs(trace.trace - np.trace(hessian)) <= 4 * trace.standard_error + 1e-3 * abs(np.trace(hessian))
    diagonal = flat(hessian_diagonal(block, num_probes=64, seed=0, tol=1e-2).diagonal)
    assert np.linalg.norm(diagonal - np.diag(hessian)) <= 0.5 * np.linalg.norm(np.diag(hessian))
    density = spectral_density(block, n_vectors=4, lanczos_steps=30, seed=0, deflation=0)
    eigenvalues = np.linalg.eigvalsh(hessian)
    mean = float(np.sum(density.nodes * density.weights) / np.sum(density.weights))  # tr(H)/n by quadrature
    assert mean == pytest.approx(np.mean(eigenvalues), abs=0.25 * np.std(eigenvalues))
    assert np.max(density.nodes) == pytest.approx(eigenvalues.max(), rel=1e-2)  # Lanczos reaches the top


# ---------------------------------------------------------------------------------------------- callback
def test_hessian_spectrum_callback_trains_the_keras_hub_classifier(bert, bert_op):
    """HessianSpectrum in model.fit on the KerasHub classifier (dict inputs): a finite top eigenvalue in
    the logs, equal to a fresh measurement (another seed) of the trained model."""
    model, (x, y) = bert
    saved = model.get_weights()
    try:
        model.compile(keras.optimizers.Adam(1e-3), LOSS)
        spectrum = HessianSpectrum((x, y), every_n_epochs=1, top_k=1, seed=0)
        history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[spectrum])
        values = history.history["hessian/top_eigenvalue"]
        assert len(values) == 1 and np.isfinite(values[0]), values
        fresh = top_eigenvalues(bert_op, seed=1).eigenvalues[0]  # the operator reads the current weights
        np.testing.assert_allclose(values[-1], fresh, rtol=2e-3)
        assert not np.allclose(model.get_weights()[0], saved[0])  # it did train
    finally:
        model.set_weights(saved)
