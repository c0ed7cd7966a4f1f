"""Tests for gzone.emergent against exact algebra: Jacobians and Gram matrices vs jax.jacrev, grouped
cosines vs a loop over pairs, overlaps of known vectors, outlier rules on planted spectra, and one whole
measurement vs a dense Hessian (float64)."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gzone import flat, models
from gzone.analysis import emergent
from gzone.curvature import spectra

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
    return emergent.logit_gradient_gram(fm, theta, x, chunk=chunk)


def _jacobian(fm, theta, x):
    """[N, C, D] by one jacrev of all logits (the reference)."""
    return jax.jacrev(lambda th: flat.logits(fm, th, x))(theta)


def test_logit_jacobian_and_gram_equal_the_dense_jacobian(tiny):
    fm, theta, x, _ = tiny
    ref = np.asarray(_jacobian(fm, theta, x))
    assert ref.shape == (6, C, fm.D)
    np.testing.assert_allclose(emergent.logit_jacobian(fm, theta, x), ref, rtol=1e-12, atol=1e-12)
    j = ref.reshape(6 * C, fm.D)
    gram = _gram(fm, theta, x, 2)  # 3 x 3 blocks: 6 computed, 3 filled in by symmetry
    np.testing.assert_allclose(gram, j @ j.T, rtol=1e-11, atol=1e-12)
    with pytest.raises(ValueError, match="multiple of chunk"):
        emergent.logit_gradient_gram(fm, theta, x, chunk=4)


def _groups_by_loop(gram, y, C):
    """Grouped cosines by an explicit loop over ordered pairs of rows (n, k), (m, l), n != m."""
    g = np.asarray(gram)
    cos = g / np.sqrt(np.outer(np.diag(g), np.diag(g)))
    pools = {name: [] for name in emergent.GROUPS}
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
    vectors = rng.normal(size=(len(y) * C, 11)) + 0.7 * rng.normal(size=(C, 11))[np.tile(np.arange(C), len(y))]
    gram = jnp.asarray(vectors @ vectors.T)
    got = emergent.cosine_groups(gram, jnp.asarray(y), num_classes=C)
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
    got = emergent.cosine_groups(jnp.asarray(vectors @ vectors.T), jnp.asarray(y), num_classes=C)
    for name, value in (("slsc", 1.0), ("sl", 1.0), ("sldc", 1.0), ("dl", 0.0)):
        assert float(got[f"q_{name}"]) == pytest.approx(value, abs=1e-12)
        assert float(got[f"q_{name}_std"]) == pytest.approx(0.0, abs=1e-6)
    vectors[0] = (e[0] + e[C]) / np.sqrt(2)  # example 0 (class 0), logit 0 tilted: class 0 has one example only
    got = emergent.cosine_groups(jnp.asarray(vectors @ vectors.T), jnp.asarray(y), num_classes=C)
    assert float(got["q_slsc"]) == pytest.approx(1.0)  # its same-class pairs: none (the only class-0 example)
    assert float(got["q_sldc"]) < 1.0 and float(got["q_sl"]) < 1.0
    # A zero gradient gives cosine 0, not NaN.
    assert np.all(np.isfinite(emergent.cosines(jnp.zeros((3, 3)))))


def test_gradient_overlap_of_known_vectors(x64):
    q = np.linalg.qr(np.random.default_rng(1).normal(size=(8, 8)))[0].T  # orthonormal rows
    g = 3.0 * q[0] + 4.0 * q[2] + 12.0 * q[5]  # |g|^2 = 169
    got = emergent.gradient_overlap(jnp.asarray(q[:6]), jnp.asarray(g))
    np.testing.assert_allclose(got, np.asarray([9, 9, 25, 25, 25, 169]) / 169, rtol=1e-12)
    np.testing.assert_allclose(emergent.logit_variance(jnp.asarray([[0.0, 2.0], [1.0, 4.0]])), (1.0 + 2.25) / 2)


def _planted(rng, spikes, *, n=200, bulk_scale=1.0):
    """A symmetric matrix with the given spike eigenvalues above a Marchenko-Pastur bulk (edge ~ 2.9 bulk_scale)."""
    w = rng.normal(size=(n, 2 * n))
    bulk = np.sort(np.linalg.eigvalsh(w @ w.T / (2 * n)))[::-1] * bulk_scale
    eigs = np.concatenate([np.asarray(spikes, float), bulk[len(spikes):]])
    q = np.linalg.qr(rng.normal(size=(n, n)))[0]
    return (q * eigs) @ q.T, np.sort(eigs)[::-1]


@jax.jit
def _top_ritz(a, key):
    return spectra.extreme_eigs(key, lambda v: a @ v, dim=a.shape[0], k=20, order=60, which="top")[0]


@pytest.mark.parametrize("m", [0, 1, 3, 10])
def test_count_outliers_finds_planted_spikes(m, x64):
    """Spikes from 9 to 40 (ratios between them <= 1.2) above a bulk with edge ~2.9: both rules find m,
    from the exact top-20 eigenvalues and from Lanczos Ritz values."""
    rng = np.random.default_rng(m)
    spikes = np.geomspace(40.0, 9.0, m) if m else []
    a, eigs = _planted(rng, spikes)
    ritz = np.asarray(_top_ritz(jnp.asarray(a), jax.random.key(m)))
    np.testing.assert_allclose(ritz[:m], eigs[:m], rtol=1e-6)  # outliers converge
    for values in (eigs[:20], ritz):
        for rule in emergent.OUTLIER_RULES:
            assert emergent.count_outliers(values, min_ratio=1.5, rule=rule) == m, (rule, values[: m + 3])


def test_count_outliers_rules_differ_on_hierarchical_spikes(x64):
    """A dominant eigenvalue (a gap of 10 inside the outliers, 3.3 below them) over a bulk reaching 0.1
    (ratios up to 2.8 deep in it, not searched): `last` counts all 5, `largest` (Ahn-Horenstein) stops
    after the first; shuffled input, non-finite input, the searched range."""
    spikes = [100.0, 10.0, 9.5, 9.0, 8.5]
    bulk = np.linspace(2.6, 0.1, 15)
    values = np.concatenate([spikes, bulk])
    assert emergent.count_outliers(values, rule="last") == 5
    assert emergent.count_outliers(values, rule="largest") == 1
    assert emergent.count_outliers(np.random.default_rng(0).permutation(values)) == 5
    assert emergent.count_outliers(values, min_ratio=4.0) == 1  # only the gap of 10 counts
    assert emergent.count_outliers(values, min_ratio=20.0) == 0
    assert emergent.count_outliers([1.0, np.nan, 0.5]) == 0
    assert emergent.count_outliers([5.0, 1.0, -1.0, -2.0]) == 1  # ratios over positive values only
    assert emergent.count_outliers([5.0, 4.0, 3.9, 1.0]) == 0  # the gap at j = 3 > k // 2 is not searched
    assert emergent.count_outliers([5.0, 4.0, 3.9, 1.0, 0.9, 0.8]) == 3
    np.testing.assert_allclose(emergent.outlier_ratios([4.0, 1.0, 2.0]), [2.0, 2.0])
    with pytest.raises(ValueError):
        emergent.count_outliers(values, rule="median")
    with pytest.raises(ValueError):
        emergent.count_outliers(values, min_ratio=1.0)


def test_balanced_examples():
    y = np.asarray([0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2])
    index = emergent.balanced_examples(jax.random.key(0), y, per_class=3, num_classes=3)
    assert index.shape == (9,) and len(set(index.tolist())) == 9
    np.testing.assert_array_equal(y[index], np.repeat([0, 1, 2], 3))
    again = emergent.balanced_examples(jax.random.key(0), y, per_class=3, num_classes=3)
    np.testing.assert_array_equal(index, again)
    with pytest.raises(ValueError, match="class 1 has 3 examples"):
        emergent.balanced_examples(jax.random.key(0), y, per_class=4, num_classes=3)


def test_measure_equals_dense_references(tiny):
    """Lanczos with order = D is exact: top eigenvalues and the gradient overlap against eigh of the dense
    Hessian; the grouped cosines against the loop over the dense Jacobian; loss, |g|, |theta|, logit var."""
    fm, theta, x, y = tiny
    spec = emergent.Spec(num_classes=C, top_k=6, order=fm.D, chunk=2)
    out = jax.jit(emergent.make_measure_fn(fm, spec=spec))(jax.random.key(3), theta, x, y, x, y)
    f = flat.loss_fn(fm, x, y)
    h = np.asarray(jax.hessian(f)(theta))
    eigval, eigvec = np.linalg.eigh(h)
    np.testing.assert_allclose(out["top_eigs"], eigval[::-1][:6], rtol=1e-8, atol=1e-10)
    g = np.asarray(jax.grad(f)(theta))
    expected = np.cumsum((eigvec[:, ::-1][:, :6].T @ g) ** 2) / (g @ g)
    np.testing.assert_allclose(out["overlap"], expected, rtol=1e-6, atol=1e-10)
    j = np.asarray(_jacobian(fm, theta, x)).reshape(-1, fm.D)
    pools, _ = _groups_by_loop(j @ j.T, np.asarray(y), C)
    for name, values in pools.items():
        np.testing.assert_allclose(out[f"q_{name}"], np.mean(values), rtol=1e-10)
    logits = np.asarray(flat.logits(fm, theta, x))
    np.testing.assert_allclose(out["logit_var"], np.mean(np.var(logits, axis=1)), rtol=1e-12)
    np.testing.assert_allclose(out["loss"], f(theta), rtol=1e-12)
    np.testing.assert_allclose(out["grad_norm"], np.linalg.norm(g), rtol=1e-10)
    np.testing.assert_allclose(out["radius"], np.linalg.norm(np.asarray(theta)), rtol=1e-12)
    assert set(emergent.SCALARS) <= set(out)
    with pytest.raises(ValueError):
        emergent.Spec(num_classes=C, top_k=7, order=6)
