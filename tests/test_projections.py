"""gzone.projections: unit columns, near-orthogonality, BCOO vs gather vs dense, adjoints, fwht."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from gzone import projections

D, d = 300, 16  # D not a power of two: Fastfood pads to L = 512 and truncates
NUM_KEYS = 64  # projections per kind for the statistical checks
KEYS = jax.random.split(jax.random.key(42), NUM_KEYS)

# Jitted once here: eager jax compiles every primitive separately, which is slow for fwht.
apply = jax.jit(projections.apply, static_argnames="impl")
apply_T = jax.jit(projections.apply_T, static_argnames="impl")
column = jax.jit(projections.column)
todense = jax.jit(projections.todense)
column_sq_norms = jax.jit(projections.column_sq_norms)
fwht = jax.jit(projections.fwht)
make = jax.jit(projections.make, static_argnums=0, static_argnames=("D", "d", "dtype"))


@pytest.fixture(scope="module")
def p64():
    """kind -> (P, its dense [D, d] matrix as numpy), float64, from KEYS[0]."""
    with jax.enable_x64(True):
        out = {}
        for kind in projections.KINDS:
            P = make(kind, KEYS[0], D=D, d=d, dtype=jnp.float64)
            out[kind] = (P, np.asarray(todense(P)))
        return out


@pytest.fixture(scope="module")
def batched():
    """kind -> [NUM_KEYS, D, d] float64 projections, built by vmap over KEYS."""
    with jax.enable_x64(True):
        out = {}
        for kind in projections.KINDS:
            def build(key, kind=kind):
                return projections.todense(projections.make(kind, key, D=D, d=d, dtype=jnp.float64))

            out[kind] = np.asarray(jax.jit(jax.vmap(build))(KEYS))
        return out


@pytest.fixture(scope="module")
def grams(batched):
    """kind -> [NUM_KEYS, d, d] Gram matrices P^T P."""
    return {kind: np.einsum("kai,kaj->kij", m, m) for kind, m in batched.items()}


def _rng_vectors(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(d), rng.standard_normal(D)


# --------------------------------------------------------------------------- columns


@pytest.mark.parametrize("kind", ["dense", "sparse", "sparse_fixed"])
def test_columns_have_exactly_unit_norm(x64, p64, kind):
    P, M = p64[kind]
    assert M.shape == (D, d) and M.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(M, axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(column_sq_norms(P), np.sum(M**2, axis=0), rtol=1e-12)


def test_fastfood_columns_have_unit_norm_in_expectation(grams):
    per_key = np.diagonal(grams["fastfood"], axis1=1, axis2=2).mean(axis=1)
    se = per_key.std(ddof=1) / math.sqrt(NUM_KEYS)
    assert se > 0 and abs(per_key.mean() - 1.0) < 4 * se
    assert se < 0.02  # sharp enough to catch a wrong scale


def test_fastfood_columns_are_exactly_unit_when_D_is_a_power_of_two():
    # No truncation: |H G Pi H B e_j|^2 = L |G|^2, so scale 1/sqrt(D |G|^2) makes every column unit.
    P = jax.jit(projections.make_fastfood, static_argnames=("D", "d"))(jax.random.key(0), D=256, d=9)
    np.testing.assert_allclose(column_sq_norms(P), 1.0, rtol=1e-5)


def test_dense_columns_are_orthonormal(x64, p64):
    _, M = p64["dense"]
    np.testing.assert_allclose(M.T @ M, np.eye(d), atol=1e-13)


@pytest.mark.parametrize("kind", ["sparse", "sparse_fixed", "fastfood"])
def test_near_orthogonality_like_random_unit_vectors(grams, kind):
    g = grams[kind]
    off = ~np.eye(g.shape[1], dtype=bool)
    per_key = D * np.mean(g[:, off] ** 2, axis=1)  # D <p_i, p_j>^2 averaged over pairs
    mean, se = per_key.mean(), per_key.std(ddof=1) / math.sqrt(NUM_KEYS)
    if kind == "fastfood":
        # Columns share G and Pi: correlated, but still |<p_i,p_j>| ~ 1/sqrt(D) (about 1.6/D here).
        assert 0.5 < mean < 3.0
    else:
        # Sparse: E <p_i,p_j>^2 = E[#shared rows] / (c_i c_j) = 1/D exactly given the counts.
        # Fixed: shared rows per block with prob 1/width_b: E = sum_b (1/width_b) / k^2.
        if kind == "sparse":
            expected = 1.0
        else:
            k = int(round(math.sqrt(D)))
            widths = np.diff((np.arange(k + 1) * D) // k)
            expected = D * np.sum(1.0 / widths) / k**2
        assert abs(mean - expected) < 5 * se, (mean, expected, se)
    assert np.max(np.abs(g[:, off])) < 8 / math.sqrt(D)


# --------------------------------------------------------------------------- sparse layouts


@pytest.mark.parametrize("kind", ["sparse", "sparse_fixed"])
def test_bcoo_equals_dense_and_gather(p64, kind):
    P, M = p64[kind]
    with jax.enable_x64(True):
        np.testing.assert_array_equal(np.asarray(P.mat.todense()), M)
        z, v = _rng_vectors(1)
        z, v = jnp.asarray(z), jnp.asarray(v)
        for impl in ("gather", "bcoo"):
            np.testing.assert_allclose(apply(P, z, impl=impl), M @ np.asarray(z), rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(apply_T(P, v, impl=impl), M.T @ np.asarray(v), rtol=1e-12, atol=1e-14)


def test_sparse_density_values_and_rows():
    Dbig, dbig = 10_000, 50
    P = jax.jit(projections.make_sparse, static_argnames=("D", "d"))(jax.random.key(7), D=Dbig, d=dbig)
    data = np.asarray(P.data).reshape(dbig, P.K)
    rows = np.asarray(P.rows).reshape(dbig, P.K)
    nonzero = data != 0
    p = 1 / math.sqrt(Dbig)
    n, mean = Dbig * dbig, Dbig * dbig * p
    assert abs(nonzero.sum() - mean) < 5 * math.sqrt(n * p * (1 - p))
    counts = nonzero.sum(axis=1)
    assert counts.max() < P.K  # capacity never cut a column short
    for j in range(dbig):
        r, vals = rows[j][nonzero[j]], data[j][nonzero[j]]
        assert len(np.unique(r)) == len(r)
        np.testing.assert_allclose(np.abs(vals), 1 / math.sqrt(counts[j]), rtol=1e-6)
    # Rows and signs are uniform: half of the nonzeros in each half of the rows, half positive.
    total = nonzero.sum()
    upper = (rows[nonzero] >= Dbig // 2).sum()
    positive = (data[nonzero] > 0).sum()
    assert abs(upper - total / 2) < 5 * math.sqrt(total / 4)
    assert abs(positive - total / 2) < 5 * math.sqrt(total / 4)


@pytest.mark.parametrize("k", [None, 7])
def test_sparse_fixed_has_k_distinct_rows_per_column(k):
    make = jax.jit(projections.make_sparse_fixed, static_argnames=("D", "d", "nnz_per_column"))
    P = make(jax.random.key(3), D=D, d=d, nnz_per_column=k)
    k = int(round(math.sqrt(D))) if k is None else k
    M = np.asarray(todense(P))
    assert P.K == k
    np.testing.assert_array_equal((M != 0).sum(axis=0), k)
    np.testing.assert_allclose(np.abs(M[M != 0]), 1 / math.sqrt(k), rtol=1e-6)
    rows = np.asarray(P.rows).reshape(d, k)
    bounds = (np.arange(k + 1) * D) // k
    assert np.all((rows >= bounds[:-1]) & (rows < bounds[1:]))  # one nonzero per block of rows


def test_make_validates_its_arguments():
    with pytest.raises(ValueError, match="kind"):
        projections.make("gaussian", jax.random.key(0), D=10, d=2)
    with pytest.raises(ValueError, match="d=11"):
        projections.make("dense", jax.random.key(0), D=10, d=11)
    with pytest.raises(ValueError, match="d=0"):
        projections.make("sparse", jax.random.key(0), D=10, d=0)


# --------------------------------------------------------------------------- products


@pytest.mark.parametrize("kind", projections.KINDS)
def test_transpose_is_the_adjoint(x64, p64, kind):
    P, M = p64[kind]
    z, v = _rng_vectors(2)
    Pz = np.asarray(apply(P, jnp.asarray(z)))
    PTv = np.asarray(apply_T(P, jnp.asarray(v)))
    assert Pz.shape == (D,) and PTv.shape == (d,)
    assert np.dot(Pz, v) == pytest.approx(np.dot(z, PTv), rel=1e-12)
    np.testing.assert_allclose(Pz, M @ z, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(PTv, M.T @ v, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", projections.KINDS)
def test_column_is_P_e_j(x64, p64, kind):
    P, M = p64[kind]
    for j in (0, 5, d - 1):
        np.testing.assert_allclose(column(P, j), M[:, j], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(apply(P, jnp.eye(d)[j]), M[:, j], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_scaled_is_diag_P_diag(x64, p64, kind):
    P, M = p64[kind]
    rng = np.random.default_rng(4)
    row, col = rng.uniform(0.5, 2.0, D), rng.uniform(0.5, 2.0, d)
    S = projections.Scaled(P, jnp.asarray(row), jnp.asarray(col))
    expected = row[:, None] * M * col[None, :]
    np.testing.assert_allclose(todense(S), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(column(S, 3), expected[:, 3], rtol=1e-12, atol=1e-14)
    z, v = _rng_vectors(5)
    np.testing.assert_allclose(apply_T(S, jnp.asarray(v)), expected.T @ v, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(column_sq_norms(S), np.sum(expected**2, 0), rtol=1e-12)


@pytest.mark.parametrize("kind", projections.KINDS)
def test_vmap_over_keys_equals_a_loop(x64, p64, batched, kind):
    np.testing.assert_allclose(batched[kind][0], p64[kind][1], rtol=1e-12, atol=1e-15)
    for i in (1, NUM_KEYS - 1):
        P = make(kind, KEYS[i], D=D, d=d, dtype=jnp.float64)
        np.testing.assert_allclose(batched[kind][i], todense(P), rtol=1e-12, atol=1e-15)
    assert not np.allclose(batched[kind][0], batched[kind][1])


def test_nbytes_of_dense():
    P = projections.Dense(jnp.zeros((50, 4), jnp.float32))
    assert projections.nbytes(P) == 50 * 4 * 4


# --------------------------------------------------------------------------- fwht


@pytest.mark.parametrize("L", [1, 2, 8, 64, 512])
def test_fwht_equals_the_hadamard_matrix(x64, L):
    x = np.random.default_rng(L).standard_normal((3, L))
    H = scipy.linalg.hadamard(L)
    np.testing.assert_allclose(fwht(jnp.asarray(x)), x @ H.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fwht(jnp.asarray(x[0])), H @ x[0], rtol=1e-12, atol=1e-12)


def test_fwht_rejects_other_lengths():
    with pytest.raises(ValueError, match="power-of-two"):
        fwht(jnp.zeros(12))
