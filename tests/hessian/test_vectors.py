"""Seeded random parameter vectors: every (probe, variable) draw is its own stream (bug 1 of issue 9)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from keras_hessian.hessian import vectors as V


def variables_of(shapes):
    return [tf.Variable(tf.zeros(s)) for s in shapes]


# An MLP's kernel / bias / kernel / bias: probe k's bias must not repeat probe k+1's kernel.
MLP_SHAPES = [(64, 24), (24,), (24, 10), (10,)]
# Four variables of 256 entries each, so any two draws can be compared entry by entry.
EQUAL_SHAPES = [(16, 16), (256,), (4, 64), (256,)]
DRAWS = {"rademacher": V.rademacher_like, "gaussian": V.gaussian_like}


def probes(draw, shapes, count, seed=0):
    variables = variables_of(shapes)
    seeds = V.seed_stream(seed)
    return [[t.numpy().ravel() for t in draw(variables, next(seeds))] for _ in range(count)]


@pytest.mark.parametrize("kind", sorted(DRAWS))
def test_next_probe_does_not_repeat_the_next_variable(kind):
    drawn = probes(DRAWS[kind], MLP_SHAPES, 3)
    for k, i in itertools.product(range(2), range(len(MLP_SHAPES) - 1)):
        a, b = drawn[k][i + 1], drawn[k + 1][i]
        m = min(a.size, b.size)  # >= 10 entries: equal by chance with probability <= 2^-10 (Rademacher)
        assert not np.array_equal(a[:m], b[:m]), f"probe {k} variable {i + 1} repeats probe {k + 1} variable {i}"


@pytest.mark.parametrize("kind", sorted(DRAWS))
def test_no_two_draws_are_correlated(kind):
    """All (probe, variable) draws, 20 probes x 4 variables of s = 256 entries, pairwise.

    Compared by their signs: the signs of independent symmetric entries are independent +-1
    (Rademacher entries are their own signs). For two independent draws, each entry's product of
    signs is then an independent +-1, so their mean r obeys Hoeffding's
    P(|r| > t) <= 2 exp(-s t^2 / 2); over M pairs, t = sqrt(2 ln(2M / delta) / s) with
    delta = 1e-6 bounds all of them at once (0.42 here). Two draws from one stream give r = 1.
    """
    drawn = probes(DRAWS[kind], EQUAL_SHAPES, 20, seed=3)
    signs = np.sign(np.stack([d for probe in drawn for d in probe]))  # (80, 256)
    s = signs.shape[1]
    pairs = signs.shape[0] * (signs.shape[0] - 1) // 2
    bound = np.sqrt(2 * np.log(2 * pairs / 1e-6) / s)
    correlation = signs @ signs.T / s
    off_diagonal = correlation[~np.eye(len(signs), dtype=bool)]
    assert np.max(np.abs(off_diagonal)) < bound


def test_rademacher_entries_are_signs_with_mean_zero():
    drawn = np.concatenate([np.concatenate(p) for p in probes(V.rademacher_like, MLP_SHAPES, 50, seed=5)])
    assert set(np.unique(drawn)) == {-1.0, 1.0}
    # Mean of N independent +-1 entries: standard deviation 1 / sqrt(N); 5 of them is a 1e-6 tail.
    assert abs(drawn.mean()) < 5 / np.sqrt(drawn.size)


def test_same_seed_same_probe_different_seed_different_probe():
    a, b, c = (probes(V.rademacher_like, MLP_SHAPES, 2, seed=s) for s in (7, 7, 8))
    for pa, pb, pc in zip(a, b, c):
        for x, y, z in zip(pa, pb, pc):
            np.testing.assert_array_equal(x, y)
        assert not np.array_equal(np.concatenate(pa), np.concatenate(pc))
