"""gzone.curvature.logits against exact algebra: Jacobians and Gram matrices vs jax.jacrev, grouped cosines
vs a loop over pairs, overlaps of known vectors (float64)."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gzone import flat, models
from gzone.curvature import logits

C = 3


@pytest.fixture
def tiny(x64):
    """MLP 4-5-3 (D = 43), 6 examples of 3 classes, a point theta (float64)."""
    module = models.build(models.ModelSpec("mlp", (5,), "tanh"), C)
    fm = flat.flat_model(module, (4,), jnp.float64)
    theta = flat.sample_fn(module, (4,), "xavier", jnp.float64)(jax.random.key(0)) * 2.0
    x = jax.random.normal(jax.random.key(1), (6, 4), jnp.float64)
    y = jnp.asarray([0, 1, 2, 0, 1, 2])
    return fm, theta, x, y


@functools.partial(jax.jit, static_argnums=(0, 3))
def _gram(fm, theta, x, chunk):
    return logits.logit_gradient_gram(fm, theta, x, chunk=chunk)


def _jacobian(fm, theta, x):
    """[N, C, D] by one jacrev of all logits (the reference)."""
    return jax.jacrev(lambda th: flat.logits(fm, th, x))(theta)


def test_logit_jacobian_and_gram_equal_the_dense_jacobian(tiny):
    fm, theta, x, _ = tiny
    ref = np.asarray(_jacobian(fm, theta, x))
    assert ref.shape == (6, C, fm.D)
    np.testing.assert_allclose(logits.logit_jacobian(fm, theta, x), ref, rtol=1e-12, atol=1e-12)
    j = ref.reshape(6 * C, fm.D)
    gram = _gram(fm, theta, x, 2)  # 3 x 3 blocks: 6 computed, 3 filled in by symmetry
    np.testing.assert_allclose(gram, j @ j.T, rtol=1e-11, atol=1e-12)
    with pytest.raises(ValueError, match="multiple of chunk"):
        logits.logit_gradient_gram(fm, theta, x, chunk=4)


def _groups_by_loop(gram, y, C):
    """Grouped cosines by an explicit loop over ordered pairs of rows (n, k), (m, l), n != m."""
    g = np.asarray(gram)
    cos = g / np.sqrt(np.outer(np.diag(g), np.diag(g)))
    pools = {name: [] for name in logits.GROUPS}
    blocks = {}
    rows = range(g.shape[0])
    for r, s in itertools.product(rows, rows):
        (n, k), (m, l) = divmod(r, C), divmod(s, C)
        if n == m:
            continue
        same_class = y[n] == y[m]
        blocks.setdefault((k, y[n], l, y[m]), []).append(cos[r, s])
        if k == l:
            pools["sl"].append(cos[r, s])
            pools["slsc" if same_class else "sldc"].append(cos[r, s])
        else:
            pools["dl"].append(cos[r, s])
    return pools, blocks


def test_cosine_groups_equal_a_loop_over_pairs(x64):
    rng = np.random.default_rng(0)
    y = np.asarray([0, 0, 1, 2, 2, 1, 0])
    vectors = (
        rng.normal(size=(len(y) * C, 11)) + 0.7 * rng.normal(size=(C, 11))[np.tile(np.arange(C), len(y))]
    )
    gram = jnp.asarray(vectors @ vectors.T)
    got = logits.cosine_groups(gram, jnp.asarray(y), num_classes=C)
    pools, blocks = _groups_by_loop(gram, y, C)
    for name, values in pools.items():
        assert got[f"n_{name}"] == len(values)
        np.testing.assert_allclose(got[f"q_{name}"], np.mean(values), rtol=1e-12)
        np.testing.assert_allclose(got[f"q_{name}_std"], np.std(values), rtol=1e-9)
    assert got["block_mean"].shape == (C, C, C, C)
    for index in itertools.product(range(C), repeat=4):
        if index in blocks:
            np.testing.assert_allclose(got["block_mean"][index], np.mean(blocks[index]), rtol=1e-12)
            assert got["block_count"][index] == len(blocks[index])
        else:
            assert np.isnan(got["block_mean"][index]) and got["block_count"][index] == 0


def test_cosine_groups_of_perfectly_clustered_gradients(x64):
    """Every example's logit-k gradient is the same unit vector e_k (+ a class-specific tilt for class 0)."""
    y = np.asarray([0, 1, 1, 2])
    e = np.eye(C + 1)
    vectors = np.stack([e[k] for _ in y for k in range(C)])
    got = logits.cosine_groups(jnp.asarray(vectors @ vectors.T), jnp.asarray(y), num_classes=C)
    for name, value in (("slsc", 1.0), ("sl", 1.0), ("sldc", 1.0), ("dl", 0.0)):
        assert float(got[f"q_{name}"]) == pytest.approx(value, abs=1e-12)
        assert float(got[f"q_{name}_std"]) == pytest.approx(0.0, abs=1e-6)
    vectors[0] = (e[0] + e[C]) / np.sqrt(
        2
    )  # example 0 (class 0), logit 0 tilted: class 0 has one example only
    got = logits.cosine_groups(jnp.asarray(vectors @ vectors.T), jnp.asarray(y), num_classes=C)
    assert float(got["q_slsc"]) == pytest.approx(1.0)  # its same-class pairs: none (the only class-0 example)
    assert float(got["q_sldc"]) < 1.0 and float(got["q_sl"]) < 1.0
    # A zero gradient gives cosine 0, not NaN.
    assert np.all(np.isfinite(logits.cosines(jnp.zeros((3, 3)))))


def test_gradient_overlap_of_known_vectors(x64):
    q = np.linalg.qr(np.random.default_rng(1).normal(size=(8, 8)))[0].T  # orthonormal rows
    g = 3.0 * q[0] + 4.0 * q[2] + 12.0 * q[5]  # |g|^2 = 169
    got = logits.gradient_overlap(jnp.asarray(q[:6]), jnp.asarray(g))
    np.testing.assert_allclose(got, np.asarray([9, 9, 25, 25, 25, 169]) / 169, rtol=1e-12)
    np.testing.assert_allclose(logits.logit_variance(jnp.asarray([[0.0, 2.0], [1.0, 4.0]])), (1.0 + 2.25) / 2)
