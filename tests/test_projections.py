"""gzone.projections: unit columns, near-orthogonality, both sparse layouts vs BCOO vs dense, adjoints,
derivatives through the explicit transposes (gzone.linear_op) against the dense route, fwht."""

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


def test_fastfood_is_its_definition_as_a_matrix(x64, p64):
    """P = scale * (H G Pi H B)[:D, :d] with explicit matrices (H: scipy's Hadamard, (Pi x)_i = x_perm[i])."""
    P, M = p64["fastfood"]
    L = P.signs.shape[0]
    H = scipy.linalg.hadamard(L).astype(np.float64)
    Pi = np.zeros((L, L))
    Pi[np.arange(L), np.asarray(P.perm)] = 1.0
    full = float(P.scale) * H @ np.diag(np.asarray(P.gauss)) @ Pi @ H @ np.diag(np.asarray(P.signs))
    np.testing.assert_allclose(M, full[:D, :d], rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(np.asarray(P.perm)[np.asarray(P.inv_perm)], np.arange(L))


@pytest.mark.parametrize("d_", [1, 16, 300])
def test_fastfood_block_sums_by_scatter_and_by_gather_equal_the_transpose(x64, d_):
    """Fastfood's P^T v sums (Pi^T x)'s L/m blocks by a scatter-add on CPU and by a gather elsewhere:
    both routes, alone and inside P^T v, against the explicit matrices in float64 (d_ = 300: m = L)."""
    from gzone import projection_kernels as kernels

    P = make("fastfood", jax.random.key(5), D=D, d=d_, dtype=jnp.float64)
    L, m = P.signs.shape[0], kernels._block(P)
    assert m == min(L, 1 << max(0, (d_ - 1).bit_length()))
    x = np.random.default_rng(2).standard_normal(L)
    u = x[np.asarray(P.inv_perm)]  # Pi^T x
    expected = u.reshape(L // m, m).sum(axis=0)
    for route in (kernels._block_sums_by_scatter, kernels._block_sums_by_gather):
        got = jax.jit(lambda x, P, f=route: f(x, P.perm, P.inv_perm, m=m))(jnp.asarray(x), P)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    M = np.asarray(todense(P))
    v = np.random.default_rng(4).standard_normal(D)
    np.testing.assert_allclose(apply_T(P, jnp.asarray(v)), M.T @ v, rtol=1e-10, atol=1e-12)
    # The route taken off CPU, whole: scale (B H (block sums by gather) of G H pad(v))[:d]
    xv = jnp.asarray(kernels.fwht(jnp.pad(jnp.asarray(v), (0, L - D))) * P.gauss)
    other = kernels.fwht(kernels._block_sums_by_gather(xv, P.perm, P.inv_perm, m=m)) * P.signs[:m]
    np.testing.assert_allclose(other[:d_] * P.scale, M.T @ v, rtol=1e-10, atol=1e-12)


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
def test_every_impl_equals_dense(p64, kind):
    P, M = p64[kind]
    assert P.Kr > 0 and P.C > 0  # D = 300, d = 16: both layouts held, the overflow list in use
    with jax.enable_x64(True):
        np.testing.assert_array_equal(np.asarray(P.mat.todense()), M)
        z, v = _rng_vectors(1)
        z, v = jnp.asarray(z), jnp.asarray(v)
        for impl in projections.IMPLS:
            np.testing.assert_allclose(apply(P, z, impl=impl), M @ np.asarray(z), rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(apply_T(P, v, impl=impl), M.T @ np.asarray(v), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("D_, d_", [(300, 16), (8250, 8200)])
def test_ptv_by_a_product_with_ones_and_by_adds_equal_the_transpose(x64, D_, d_):
    """Both ways P^T v sums its slots (d_ = 8200: past ADDS_MIN_D, with a remainder of the unrolled
    loop as K is no multiple of 8), alone, as the vjp of P z and under vmap, against numpy's sum
    over P's nonzeros in float64 (and against the dense P^T where it is small)."""
    from gzone import projection_kernels as kernels

    P = make("sparse", jax.random.key(7), D=D_, d=d_, dtype=jnp.float64)
    rows, values = (np.asarray(a) for a in P.by_column())  # [d, K]
    V = np.random.default_rng(3).standard_normal((3, D_))
    expected = np.stack([np.sum(values * v[rows], axis=1) for v in V])
    if D_ * d_ < 10**6:
        np.testing.assert_allclose(expected, V @ np.asarray(todense(P)), rtol=1e-12, atol=1e-13)
    assert (P.d >= kernels.ADDS_MIN_D) == (d_ == 8200) and (P.Kq or P.K) % kernels.ADDS_UNROLL
    assert (P.Ct > 0 and np.count_nonzero(np.asarray(P.tail_data)) > 0) == (d_ == 8200)  # the tail list
    for by_adds in (False, True):
        got = kernels.sparse_ptv(P, jnp.asarray(V[0]), by_adds=by_adds)
        np.testing.assert_allclose(got, expected[0], rtol=1e-12, atol=1e-13)
        batched = jax.vmap(lambda v: kernels.sparse_ptv(P, v, by_adds=by_adds))(jnp.asarray(V))
        np.testing.assert_allclose(batched, expected, rtol=1e-12, atol=1e-13)
    _, vjp = jax.vjp(lambda z: apply(P, z), jnp.zeros(d_))  # the default route, through linear_op
    np.testing.assert_allclose(vjp(jnp.asarray(V[1]))[0], expected[1], rtol=1e-12, atol=1e-13)


def _row_major(P) -> np.ndarray:
    """The [D, d] matrix from the row-major layout alone (ELL slots and overflow list)."""
    return _row_major_sparse(P).toarray()


def _row_major_sparse(P):
    """_row_major as a scipy CSR matrix; a signed layout decoded by its own definition (column j:
    +col_abs[j], d + j: -col_abs[j], 2d: an empty slot)."""
    import scipy.sparse

    if P.signed:
        sc = np.asarray(P.row_cols).astype(np.int64).reshape(P.Kr, P.D)
        table = np.concatenate([np.asarray(P.col_abs), -np.asarray(P.col_abs), [0.0]])
        cols, vals = np.where(sc == 2 * P.d, 0, sc % P.d), table[sc]
    else:
        cols, vals = np.asarray(P.row_cols).reshape(P.Kr, P.D), np.asarray(P.row_data).reshape(P.Kr, P.D)
    r = np.concatenate([np.tile(np.arange(P.D), P.Kr), np.asarray(P.over_rows)])
    c = np.concatenate([cols.reshape(-1), np.asarray(P.over_cols)])
    x = np.concatenate([vals.reshape(-1), np.asarray(P.over_data)])
    return scipy.sparse.coo_matrix((x, (r, c)), shape=P.shape).tocsr()  # duplicates summed


@pytest.mark.parametrize("D_, d_", [(300, 16), (2000, 600)])
def test_row_layout_holds_every_entry_once(x64, D_, d_):
    P = make("sparse", jax.random.key(5), D=D_, d=d_, dtype=jnp.float64)
    M = np.asarray(todense(P))
    np.testing.assert_array_equal(_row_major(P), M)  # each nonzero exactly once, in the ELL or the list
    over = np.asarray(P.over_data) != 0
    assert 0 < over.sum() < P.C  # the overflow list is used and its capacity was not reached
    rows = np.asarray(P.over_rows)
    assert np.all(np.diff(rows) >= 0)  # sorted (the scatter-add is told so)
    counts = (M != 0).sum(axis=1)
    assert np.all(np.bincount(rows[over], minlength=D_) == np.maximum(counts - P.Kr, 0))


@pytest.mark.parametrize("kind, D_, d_", [("sparse", 8250, 8200), ("sparse_fixed", 8300, 8200),
                                          ("sparse_density", 8250, 8200)])
def test_signed_row_layout_holds_every_entry_and_every_impl_is_the_transpose_pair(x64, kind, D_, d_):
    """From d >= SIGNED_MIN_D the row layout holds signed columns (uint16) and no values: decoded,
    it is P (against the column layout's entries); P z by every impl, P^T v and the vjp of P z
    against scipy's float64 sparse products. Kr = 102 (a loop of slots) and, at density 0.002,
    Kr = 21 (unrolled adds)."""
    import scipy.sparse

    from gzone import projection_kernels as kernels

    if kind == "sparse_density":
        kind = "sparse"
        build = jax.jit(projections.make_sparse, static_argnames=("D", "d", "density", "dtype"))
        P = build(jax.random.key(11), D=D_, d=d_, density=0.002, dtype=jnp.float64)
        assert P.Kr <= 32
    else:
        P = make(kind, jax.random.key(11), D=D_, d=d_, dtype=jnp.float64)
        assert P.Kr > 32
    assert P.signed and P.row_data is None and P.row_cols.dtype == jnp.uint16 and P.C > 0
    assert d_ >= kernels.SIGNED_MIN_D
    # P^T v: slots >= Kq from the tail list for random column counts, none for fixed ones
    assert (0 < P.Kq < P.K and 0 < np.count_nonzero(np.asarray(P.tail_data)) < P.Ct) == (kind == "sparse")
    rows, values = (np.asarray(a) for a in P.by_column())  # [d, K]
    nz = values != 0
    np.testing.assert_array_equal(np.asarray(P.col_abs), np.abs(values).max(axis=1))
    assert np.all(np.abs(values[nz]) == np.repeat(np.asarray(P.col_abs), nz.sum(axis=1)))
    M = scipy.sparse.coo_matrix((values[nz], (rows[nz], np.nonzero(nz)[0])), shape=(D_, d_)).tocsr()
    assert (_row_major_sparse(P) != M).nnz == 0  # every entry once, in the ELL or the list
    rng = np.random.default_rng(8)
    z, v = rng.standard_normal(d_), rng.standard_normal(D_)
    for impl in ("auto", "rows", "columns", "jnp"):
        np.testing.assert_allclose(apply(P, jnp.asarray(z), impl=impl), M @ z, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(apply_T(P, jnp.asarray(v)), M.T @ v, rtol=1e-11, atol=1e-12)
    _, vjp = jax.vjp(lambda z: apply(P, z), jnp.asarray(z))
    np.testing.assert_allclose(vjp(jnp.asarray(v))[0], M.T @ v, rtol=1e-11, atol=1e-12)
    Z = rng.standard_normal((2, d_))
    batched = jax.vmap(lambda z: projections.apply(P, z))(jnp.asarray(Z))
    np.testing.assert_allclose(batched, (M @ Z.T).T, rtol=1e-11, atol=1e-12)


def test_row_slots_follow_the_quantile_rule():
    from scipy import stats

    for D_, d_ in [(199_210, 10), (199_210, 100), (199_210, 10_000), (656_810, 1000)]:
        p = 1 / math.sqrt(D_)
        Kr, C = projections.row_slots(D=D_, d=d_, p_row=p)
        X = stats.binom(d_, p)
        tail = projections.ROW_TAIL
        assert X.sf(Kr) <= tail and (Kr == 0 or X.sf(Kr - 1) > tail)
        if Kr:  # capacity: far above the mean overflow D E[(X - Kr)+]
            k = np.arange(Kr + 1, d_ + 1)[: 2000]
            mean = D_ * np.sum(X.pmf(k) * (k - Kr))
            assert mean + 6 * math.sqrt(mean) < C < 3 * mean + 100
    assert projections.row_slots(D=199_210, d=10, p_row=1 / math.sqrt(199_210)) == (0, 0)  # nearly empty rows


def test_sparse_without_row_layout_uses_the_scatter():
    P = make("sparse", KEYS[0], D=D, d=1)  # one column: rows hold 0 or 1 nonzeros, no row layout
    assert P.Kr == 0 and P.C == 0 and P.row_cols is None
    z = jnp.ones(1)
    np.testing.assert_allclose(apply(P, z), np.asarray(todense(P))[:, 0], rtol=1e-6)
    with pytest.raises(ValueError, match="no row-major layout"):
        projections.apply(P, z, impl="rows")
    with pytest.raises(ValueError, match="impl"):
        projections.apply(P, z, impl="gather")


def test_sparse_density_values_and_rows():
    Dbig, dbig = 10_000, 50
    P = jax.jit(projections.make_sparse, static_argnames=("D", "d"))(jax.random.key(7), D=Dbig, d=dbig)
    rows, data = (np.asarray(a) for a in P.by_column())
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
    rows = np.asarray(P.by_column()[0])
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


# --------------------------------------------------------------------------- derivatives (gzone.linear_op)


def _f(theta):
    """A smooth nonlinear scalar of theta [D] (not quadratic, so the Hessian depends on the point)."""
    return jnp.sum(jnp.sin(theta)) + 0.5 * jnp.sum(theta[:7] ** 2)


def _f_grad_hess(theta):
    g = np.cos(theta) + np.pad(theta[:7], (0, theta.shape[0] - 7))
    h = -np.sin(theta) + np.pad(np.ones(7), (0, theta.shape[0] - 7))
    return g, h


IMPL_CASES = [*(("sparse", i) for i in projections.IMPLS), ("sparse_fixed", "auto"), ("dense", "auto"),
              ("fastfood", "auto"), ("fastfood", "jnp")]


@pytest.mark.parametrize("kind, impl", IMPL_CASES)
def test_derivatives_of_f_of_a_plus_Pz_equal_the_dense_route(x64, p64, kind, impl):
    P, M = p64[kind]
    rng = np.random.default_rng(6)
    a, v = rng.standard_normal(D), rng.standard_normal(D)
    z, dz = rng.standard_normal(d), rng.standard_normal(d)
    theta = a + M @ z
    g_theta, h_theta = _f_grad_hess(theta)

    def g(z, P):
        return _f(jnp.asarray(a) + projections.apply(P, z, impl=impl))

    derivs = jax.jit(lambda z, dz, v, P: (
        jax.grad(g)(z, P),
        jax.jvp(lambda z: projections.apply(P, z, impl=impl), (z,), (dz,))[1],
        jax.vjp(lambda z: projections.apply(P, z, impl=impl), z)[1](v)[0],
        jax.linear_transpose(lambda z: projections.apply(P, z, impl=impl), z)(v)[0],
        jax.vjp(lambda v: projections.apply_T(P, v, impl=impl), v)[1](dz)[0],
        jax.hessian(g)(z, P),
        jax.jvp(lambda z: jax.grad(g)(z, P), (z,), (dz,))[1],  # forward over reverse (the HVP)
    ))
    grad, jvp, vjp, lt, vjp_T, hess, hvp = (np.asarray(x) for x in derivs(z, dz, v, P))
    H = M.T @ (h_theta[:, None] * M)
    tol = dict(rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(grad, M.T @ g_theta, **tol)
    np.testing.assert_allclose(jvp, M @ dz, **tol)
    np.testing.assert_allclose(vjp, M.T @ v, **tol)
    np.testing.assert_allclose(lt, M.T @ v, **tol)
    np.testing.assert_allclose(vjp_T, M @ dz, **tol)
    np.testing.assert_allclose(hess, H, **tol)
    np.testing.assert_allclose(hvp, H @ dz, **tol)
    assert np.dot(M @ dz, v) == pytest.approx(np.dot(dz, lt), rel=1e-12)  # <P z, v> = <z, P^T v>


def _jaxpr_text(fn, *args) -> str:
    """fn's jaxpr as text, nested jaxprs included (the primitive shows its op, not its kernels)."""
    return str(jax.make_jaxpr(fn)(*args))


@pytest.mark.parametrize("kind, op", [("sparse", "sparse_rows"), ("fastfood", "fastfood")])
def test_the_gradient_uses_the_explicit_transpose_not_a_scatter(p64, kind, op):
    with jax.enable_x64(True):
        P, _ = p64[kind]
        z = jnp.ones(d)
        fast = _jaxpr_text(jax.grad(lambda z: _f(projections.apply(P, z))), z)
        plain = _jaxpr_text(jax.grad(lambda z: _f(projections.apply(P, z, impl="jnp"))), z)
    assert fast.count("gzone_linear[") == 2  # P z forward, P^T g backward
    assert f"name='{op}'" in fast and f"name='{op}_T'" in fast
    assert "scatter" not in fast, fast
    assert "scatter-add" in plain  # autodiff's own transpose of a gather: the check can fail


@pytest.mark.parametrize("kind", ["sparse", "fastfood"])
def test_vmap_over_seeds_and_shared_operands_and_scan(x64, kind):
    keys = KEYS[:3]
    Ms = np.stack([np.asarray(todense(make(kind, k, D=D, d=d, dtype=jnp.float64))) for k in keys])
    rng = np.random.default_rng(7)
    a, zs = rng.standard_normal(D), rng.standard_normal((3, d))
    g = lambda z, P: _f(jnp.asarray(a) + projections.apply(P, z))  # noqa: E731

    def descend(z0, P):  # 5 gradient steps in lax.scan, P an argument
        return jax.lax.scan(lambda z, _: (z - 0.1 * jax.grad(g)(z, P), None), z0, None, length=5)[0]

    @jax.jit
    def routes(keys, zs):
        Ps = jax.vmap(lambda k: projections.make(kind, k, D=D, d=d, dtype=jnp.float64))(keys)
        P0 = jax.tree_util.tree_map(lambda x: x[0], Ps)
        return (
            jax.vmap(jax.grad(g))(zs, Ps),  # per seed: vmap outside grad
            jax.grad(lambda zs: jnp.sum(jax.vmap(g)(zs, Ps)))(zs),  # grad outside vmap: transpose under vmap
            jax.grad(lambda z: jnp.sum(jax.vmap(g, in_axes=(None, 0))(z, Ps)))(zs[0]),  # z shared: sums
            jax.vmap(jax.grad(g), in_axes=(0, None))(zs, P0),  # P shared (e.g. the Hessian's columns)
            jax.vmap(jax.vmap(jax.grad(g), in_axes=(0, None)), in_axes=(None, 0))(zs, Ps)[2, 1],  # nested
            jax.vmap(descend)(zs, Ps),
        )

    per_seed, total, shared, one_P, nested, descended = routes(keys, zs)
    grad = lambda z, M: M.T @ _f_grad_hess(a + M @ z)[0]  # noqa: E731
    tol = dict(rtol=1e-11, atol=1e-12)
    expected = np.stack([grad(z, M) for M, z in zip(Ms, zs)])
    np.testing.assert_allclose(per_seed, expected, **tol)
    np.testing.assert_allclose(total, expected, **tol)
    np.testing.assert_allclose(shared, sum(grad(zs[0], M) for M in Ms), **tol)
    np.testing.assert_allclose(one_P, np.stack([grad(z, Ms[0]) for z in zs]), **tol)
    np.testing.assert_allclose(nested, grad(zs[1], Ms[2]), **tol)
    for z, M, got in zip(zs, Ms, descended):
        for _ in range(5):
            z = z - 0.1 * grad(z, M)
        np.testing.assert_allclose(got, z, **tol)


@pytest.mark.parametrize("kind", ["sparse", "fastfood"])
def test_derivative_in_the_projections_values_equals_autodiff(x64, p64, kind):
    """P's values moved together (both sparse layouts hold them) by a scalar s: d/ds of f(P(s) z) and of
    f(P(s)^T v) through the primitive's operand tangents equal plain autodiff's."""
    P, _ = p64[kind]
    rng = np.random.default_rng(8)
    z, v = jnp.asarray(rng.standard_normal(d)), jnp.asarray(rng.standard_normal(D))

    def scaled(s):
        return jax.tree_util.tree_map(lambda x: x * s if jnp.issubdtype(x.dtype, jnp.floating) else x, P)

    def derivs(impl):
        fwd = jax.grad(lambda s: _f(projections.apply(scaled(s), z, impl=impl)))(1.3)
        back = jax.grad(lambda s: jnp.sum(jnp.cos(projections.apply_T(scaled(s), v, impl=impl))))(1.3)
        return fwd, back

    fast, plain = jax.jit(lambda: derivs("auto"))(), jax.jit(lambda: derivs("jnp"))()
    assert abs(float(plain[0])) > 1e-3 and abs(float(plain[1])) > 1e-3
    np.testing.assert_allclose(fast, plain, rtol=1e-11)


# --------------------------------------------------------------------------- fwht


@pytest.mark.parametrize("L", [1, 2, 8, 32, 64, 512, 2048])
def test_fwht_equals_the_hadamard_matrix(x64, L):
    from gzone import projection_kernels

    x = np.random.default_rng(L).standard_normal((3, L))
    H = scipy.linalg.hadamard(L)
    np.testing.assert_allclose(fwht(jnp.asarray(x)), x @ H.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fwht(jnp.asarray(x[0])), H @ x[0], rtol=1e-12, atol=1e-12)
    by_products = jax.jit(projection_kernels._fwht_by_products)  # Fastfood's small transforms
    np.testing.assert_allclose(by_products(jnp.asarray(x[1])), H @ x[1], rtol=1e-12, atol=1e-11)


def test_hadamard_is_orthogonal_up_to_L():
    for n in (1, 2, 32, 64):
        H = projections.hadamard(n).astype(np.int64)
        np.testing.assert_array_equal(H @ H, n * np.eye(n, dtype=np.int64))
        np.testing.assert_array_equal(H, scipy.linalg.hadamard(n))


def test_fwht_rejects_other_lengths():
    with pytest.raises(ValueError, match="power-of-two"):
        fwht(jnp.zeros(12))
