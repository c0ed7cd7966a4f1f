"""gzone.native (the C++ kernels of gzone/_native.cc) against exact algebra: the Walsh-Hadamard
matrix in float64, the jnp forms, every way vmap batches their operands, and Fastfood's products
and derivatives with the kernels on and off."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gzone import native, projections
from gzone import projection_kernels as kernels

needs_native = pytest.mark.skipif(not native.available(), reason="gzone's native kernels are not built")
native_on = pytest.mark.skipif(not native.enabled(), reason="native kernels not built or switched off")


def test_the_kernels_are_built_where_a_compiler_is():
    """pip builds gzone/_native.cc optionally (no compiler: plain XLA); with one, a failed build
    would silently cost the speed, so it fails here."""
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        pytest.skip("no C++ compiler on PATH")
    assert native.available()


def _H(L: int) -> np.ndarray:
    return kernels.hadamard(L).astype(np.float64)


def _wht(x: np.ndarray) -> np.ndarray:
    """H x along the last axis in float64 numpy, one index bit at a time (H = H_2 (x) ... (x) H_2)."""
    x = np.array(x, np.float64)
    L, h = x.shape[-1], 1
    while h < L:
        y = x.reshape(*x.shape[:-1], L // (2 * h), 2, h)
        x = np.stack([y[..., 0, :] + y[..., 1, :], y[..., 0, :] - y[..., 1, :]], axis=-2).reshape(x.shape)
        h *= 2
    return x


@needs_native
@pytest.mark.parametrize("L", [1, 2, 4, 8, 16, 256, 4096, 8192, 1 << 15])
def test_fwht_is_the_hadamard_matrix(x64, L):
    """Every pass structure: L < 8 (no register stage), one block (L <= 2^12), one tile pass (2^13,
    2^15); a batch of 3 rows; float64 to 1e-12 and float32 to float32 rounding, against the
    matrix (L <= 256) and the butterflies in numpy float64."""
    x = np.random.default_rng(L).standard_normal((3, L))
    ref = x @ _H(L).T if L <= 256 else _wht(x)
    if L == 256:
        np.testing.assert_allclose(_wht(x), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jax.jit(native.fwht)(jnp.asarray(x)), ref, rtol=1e-12, atol=1e-12 * np.sqrt(L))
    y32 = np.asarray(jax.jit(native.fwht)(jnp.asarray(x, jnp.float32)))
    assert np.abs(y32 - ref).max() <= 1e-6 * np.sqrt(L) * np.abs(x).max() * np.log2(2 * L)


@needs_native
def test_fwht_of_two_tile_passes_and_of_a_padded_input(x64):
    """L = 2^21 needs two tile passes after the blocks; `length` pads with zeros."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1 << 21)
    np.testing.assert_allclose(jax.jit(native.fwht)(jnp.asarray(x)), _wht(x), rtol=1e-12, atol=1e-9)
    short = rng.standard_normal((2, 5000))
    padded = jax.jit(lambda v: native.fwht(v, length=8192))(jnp.asarray(short))
    np.testing.assert_allclose(padded, _wht(np.pad(short, ((0, 0), (0, 3192)))), rtol=1e-12, atol=1e-9)


@needs_native
def test_gather_fwht_under_every_batching(x64):
    """H (w[perm mod m] gauss) with w, perm and gauss each batched or shared, by one vmap and by two
    nested vmaps over different operands (the kernel's broadcast of size-1 batch axes)."""
    L, m, S, V = 8192, 64, 2, 3  # one block pass and one tile pass
    rng = np.random.default_rng(1)
    W = jnp.asarray(rng.standard_normal((S, V, m)))
    perm = jnp.asarray(np.stack([rng.permutation(L) for _ in range(S)]).astype(np.int32))
    gauss = jnp.asarray(rng.standard_normal((S, L)))

    def ref(w, p, g):
        return _wht(np.asarray(w)[np.asarray(p) % m] * np.asarray(g))

    f = native.gather_fwht
    np.testing.assert_allclose(jax.jit(f)(W[0, 0], perm[0], gauss[0]), ref(W[0, 0], perm[0], gauss[0]),
                               rtol=1e-12, atol=1e-10)
    got = jax.jit(jax.vmap(f, in_axes=(0, None, None)))(W[0], perm[1], gauss[1])
    for v in range(V):
        np.testing.assert_allclose(got[v], ref(W[0, v], perm[1], gauss[1]), rtol=1e-12, atol=1e-10)
    got = jax.jit(jax.vmap(f, in_axes=(None, 0, 0)))(W[1, 2], perm, gauss)
    for s in range(S):
        np.testing.assert_allclose(got[s], ref(W[1, 2], perm[s], gauss[s]), rtol=1e-12, atol=1e-10)
    # seeds outside (P and w batched), vectors inside (w only): w [S, V, m], perm and gauss [S, 1, L]
    nested = jax.vmap(jax.vmap(f, in_axes=(0, None, None)), in_axes=(0, 0, 0))
    got = jax.jit(nested)(W, perm, gauss)
    for s in range(S):
        for v in range(V):
            np.testing.assert_allclose(got[s, v], ref(W[s, v], perm[s], gauss[s]), rtol=1e-12, atol=1e-10)
    # the other nesting: vectors outside, seeds inside
    nested = jax.vmap(jax.vmap(f, in_axes=(0, 0, 0)), in_axes=(1, None, None))
    got = jax.jit(nested)(W, perm, gauss)
    for s in range(S):
        for v in range(V):
            np.testing.assert_allclose(got[v, s], ref(W[s, v], perm[s], gauss[s]), rtol=1e-12, atol=1e-10)


@needs_native
def test_kernels_reject_bad_shapes():
    with pytest.raises(Exception, match="power of two"):
        jax.block_until_ready(jax.jit(native.fwht)(jnp.zeros(12)))
    with pytest.raises(Exception, match="gzone_gather_fwht"):
        bad = jax.jit(native.gather_fwht)(jnp.zeros(8), jnp.zeros(16, jnp.int32), jnp.zeros(8))
        jax.block_until_ready(bad)
    with pytest.raises(ValueError, match="power-of-two"):
        projections.fwht(jnp.zeros(12))


@native_on
@pytest.mark.parametrize("D, d", [(300, 1), (5000, 16), pytest.param(70_000, 700, marks=pytest.mark.slow)])
def test_fastfood_with_and_without_the_kernels(x64, D, d):
    """P z, P^T v, the vjp and the jvp of P z, and a Hessian through P (forward over reverse) with
    the kernels equal the plain-jnp route (impl="jnp", autodiff) and the explicit matrix in
    float64. L = 512, 8192 (one tile pass) and 2^17."""
    P = projections.make("fastfood", jax.random.key(d), D=D, d=d, dtype=jnp.float64)
    assert native.enabled()
    rng = np.random.default_rng(2)
    z, v = jnp.asarray(rng.standard_normal(d)), jnp.asarray(rng.standard_normal(D))
    pz = jax.jit(projections.apply)(P, z)
    plain_pz = jax.jit(lambda P, z: projections.apply(P, z, impl="jnp"))(P, z)
    np.testing.assert_allclose(pz, plain_pz, rtol=1e-10, atol=1e-12)
    ptv = jax.jit(projections.apply_T)(P, v)
    plain_ptv = jax.jit(lambda P, v: projections.apply_T(P, v, impl="jnp"))(P, v)
    np.testing.assert_allclose(ptv, plain_ptv, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jnp.vdot(v, pz), jnp.vdot(ptv, z), rtol=1e-10)  # <v, P z> = <P^T v, z>
    if D <= 5000:
        M = np.asarray(projections.todense(P))
        np.testing.assert_allclose(pz, M @ np.asarray(z), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ptv, M.T @ np.asarray(v), rtol=1e-10, atol=1e-12)
    _, vjp = jax.vjp(lambda z: projections.apply(P, z), z)
    np.testing.assert_allclose(vjp(v)[0], ptv, rtol=1e-10, atol=1e-12)
    _, tangent = jax.jvp(lambda z: projections.apply(P, z), (z,), (z,))
    np.testing.assert_allclose(tangent, pz, rtol=1e-10, atol=1e-12)
    loss = lambda z: jnp.sum(jnp.sin(projections.apply(P, z)))  # noqa: E731
    zs = z[: min(d, 16)]
    pad = lambda s: jnp.concatenate([s, z[s.shape[0]:]])  # noqa: E731
    hess = jax.jit(jax.hessian(lambda s: loss(pad(s))))(zs)
    plain = lambda s: jnp.sum(jnp.sin(projections.apply(P, pad(s), impl="jnp")))  # noqa: E731
    np.testing.assert_allclose(hess, jax.jit(jax.hessian(plain))(zs), rtol=1e-9, atol=1e-11)


@needs_native
def test_switching_the_kernels_off_gives_the_jnp_transform(x64):
    x = jnp.asarray(np.random.default_rng(3).standard_normal(1 << 14))
    was = native.enabled()
    try:
        native.use(False)
        assert not native.enabled()
        off = jax.jit(projections.fwht)(x)
        np.testing.assert_array_equal(off, jax.jit(kernels.fwht_jnp)(x))  # the same operations
        native.use(True)
        on = jax.jit(projections.fwht)(x)
    finally:
        native.use(was)
    assert not np.array_equal(on, off)  # another rounding: the kernel ran
    np.testing.assert_allclose(on, off, rtol=1e-12, atol=1e-10)


@native_on
def test_code_lowered_for_an_accelerator_has_no_native_call():
    """platform_dependent keeps the kernels out of code lowered for GPU (lowered here without one):
    the CUDA module holds no gzone custom call, the CPU module (alone or with CUDA) does."""
    P = projections.make("fastfood", jax.random.key(0), D=3000, d=10)
    for fn, x, target in ((projections.apply, jnp.ones(10), "gzone_gather_fwht"),
                          (projections.apply_T, jnp.ones(3000), "gzone_fwht")):
        traced = jax.jit(fn).trace(P, x)
        assert "gzone_" not in traced.lower(lowering_platforms=("cuda",)).as_text()
        assert target in traced.lower(lowering_platforms=("cpu",)).as_text()
        assert target in traced.lower(lowering_platforms=("cpu", "cuda")).as_text()


# ------------------------------------------------------------------ sparse products (gzone.sell)


@pytest.fixture
def small_signed(monkeypatch):
    """The signed layouts and the native ones from d >= 64 (normally 8192), P^T v's table in blocks
    of 512 rows: small problems with several blocks. Sizes here are used by no other test (jit
    caches are keyed by shapes, not by these constants)."""
    from gzone import sell

    monkeypatch.setattr(kernels, "SIGNED_MIN_D", 64)
    monkeypatch.setattr(sell, "MIN_D", 64)
    monkeypatch.setattr(sell, "PTV_BLOCK", 512)
    return sell


# jitted: one compile, a fraction of the op-by-op construction's (most of an eager make is compiles)
_make = jax.jit(projections.make, static_argnames=("kind", "D", "d", "dtype"))


def _decode(L) -> np.ndarray:
    """The layout as a dense [R, n] matrix of signs, from its arrays alone (numpy)."""
    idx, off, perm = np.asarray(L.idx).astype(np.int64), np.asarray(L.off), np.asarray(L.perm)
    nb = -(-L.n // L.block)
    G = (off.size - 1) // nb
    M = np.zeros((L.R, L.n))
    for b in range(nb):
        m = min(L.block, L.n - b * L.block)
        for g in range(G):
            lo, hi = off[b * G + g], off[b * G + g + 1]
            entries = idx[lo:hi].reshape(-1, 8)  # [width, 8]
            for c in range(8):
                r = perm[(b * G + g) * 8 + c]
                for u in entries[:, c]:
                    local = u & 0x7FFF
                    if local >= m:
                        continue  # padding
                    assert r < L.R, "an entry in a group slot with no output"
                    M[r, b * L.block + local] += -1.0 if u & 0x8000 else 1.0
    return M


@native_on
@pytest.mark.parametrize("kind, D, d", [("sparse", 3001, 203), ("sparse_fixed", 2503, 131)])
def test_sell_layouts_hold_every_nonzero_once_with_its_sign(small_signed, kind, D, d):
    """Decoded in numpy, P z's layout is sign(P) and P^T v's is sign(P)^T; the entries fit their
    capacity (none dropped), group widths fall within a block and the padding is at most 8 x the
    largest count; every output sits in exactly one group slot per block."""
    P = _make(kind, jax.random.key(5), D=D, d=d)
    assert P.signed and P.sell is not None
    rows, values = (np.asarray(a) for a in P.by_column())  # [d, K]
    S = np.zeros((D, d))
    for j in range(d):
        nz = values[j] != 0
        S[rows[j, nz], j] = np.sign(values[j, nz])
    pz, ptv = P.sell
    assert (pz.n, pz.R, pz.block) == (d, D, d) and (ptv.n, ptv.R, ptv.block) == (D, d, 512)
    np.testing.assert_array_equal(_decode(pz), S)
    np.testing.assert_array_equal(_decode(ptv), S.T)
    for L in (pz, ptv):
        off, perm = np.asarray(L.off), np.asarray(L.perm)
        nb = -(-L.n // L.block)
        G = (off.size - 1) // nb
        assert off[-1] <= L.idx.shape[0]
        widths = np.diff(off).reshape(nb, G) // 8
        assert np.all(np.diff(widths, axis=1) <= 0)
        counts = np.abs(_decode(L)).reshape(L.R, nb, -1).sum(axis=2) if L.n % L.block == 0 else None
        if counts is not None:
            assert 8 * widths.sum() - counts.sum() <= 8 * nb * counts.max()
        for b in range(nb):
            slots = perm[b * G * 8:(b + 1) * G * 8]
            np.testing.assert_array_equal(np.sort(slots[slots < L.R]), np.arange(L.R))


@native_on
@pytest.mark.parametrize("kind, D, d, dtype", [("sparse", 3001, 203, jnp.float64),
                                               ("sparse_fixed", 2503, 131, jnp.float32)])
def test_sparse_products_by_the_kernel_equal_float64_and_the_jnp_route(x64, small_signed, kind, D, d, dtype):
    """With the kernel (float64: the scalar loop; float32: AVX2 gathers where the CPU has them): P z
    equals the signed jnp route bitwise (the same adds in the same order) and both P z and P^T v
    the float64 products; vjp and a Hessian-vector product through P equal the plain-jnp route;
    under vmap over seeds (one kernel call per seed) each seed equals its own P."""
    import scipy.sparse

    tol = dict(rtol=1e-11, atol=1e-12) if dtype == jnp.float64 else dict(rtol=2e-5, atol=2e-6)
    P = _make(kind, jax.random.key(6), D=D, d=d, dtype=dtype)
    rows, values = (np.asarray(a, np.float64) for a in P.by_column())
    nz = values != 0
    M = scipy.sparse.coo_matrix((values[nz], (rows[nz].astype(int), np.nonzero(nz)[0])), shape=(D, d)).tocsr()
    rng = np.random.default_rng(4)
    z, v = jnp.asarray(rng.standard_normal(d), dtype), jnp.asarray(rng.standard_normal(D), dtype)
    pz = jax.jit(projections.apply)(P, z)
    assert "gzone_sell_sum" in jax.jit(projections.apply).lower(P, z).as_text()
    np.testing.assert_array_equal(pz, jax.jit(kernels.sparse_pz_rows_jnp)(P, z))
    np.testing.assert_allclose(pz, M @ np.asarray(z, np.float64), **tol)
    ptv = jax.jit(projections.apply_T)(P, v)
    np.testing.assert_allclose(ptv, M.T @ np.asarray(v, np.float64), **tol)
    np.testing.assert_allclose(ptv, jax.jit(kernels.sparse_ptv_jnp)(P, v), **tol)
    vjp = jax.jit(lambda P, z, v: jax.vjp(lambda z: projections.apply(P, z), z)[1](v)[0])
    np.testing.assert_array_equal(vjp(P, z, v), ptv)

    def hvp(impl, P, z, t):
        loss = lambda z: jnp.sum(jnp.sin(projections.apply(P, z, impl=impl)) ** 2)  # noqa: E731
        return jax.jvp(jax.grad(loss), (z,), (t,))[1]

    hvp = jax.jit(hvp, static_argnums=0)
    t = jnp.asarray(rng.standard_normal(d), dtype)
    np.testing.assert_allclose(hvp("auto", P, z, t), hvp("jnp", P, z, t), **tol)
    keys = jax.random.split(jax.random.key(7), 2)
    Ps = jax.jit(jax.vmap(lambda k: projections.make(kind, k, D=D, d=d, dtype=dtype)))(keys)
    Z = jnp.asarray(rng.standard_normal((2, d)), dtype)
    V = jnp.asarray(rng.standard_normal((2, D)), dtype)
    got_pz = jax.jit(jax.vmap(projections.apply))(Ps, Z)
    got_ptv = jax.jit(jax.vmap(projections.apply_T))(Ps, V)
    for s in range(2):
        Ps_ = _make(kind, keys[s], D=D, d=d, dtype=dtype)
        np.testing.assert_array_equal(got_pz[s], projections.apply(Ps_, Z[s]))
        np.testing.assert_array_equal(got_ptv[s], projections.apply_T(Ps_, V[s]))


@native_on
def test_sparse_code_lowered_for_an_accelerator_has_no_native_call(small_signed):
    P = _make("sparse", jax.random.key(9), D=3001, d=203)
    for fn, x in ((projections.apply, jnp.ones(203)), (projections.apply_T, jnp.ones(3001))):
        traced = jax.jit(fn).trace(P, x)
        assert "gzone_" not in traced.lower(lowering_platforms=("cuda",)).as_text()
        assert "gzone_sell_sum" in traced.lower(lowering_platforms=("cpu",)).as_text()


@native_on
def test_sell_layouts_only_where_the_kernel_runs(small_signed, monkeypatch):
    """No native layouts with the kernels off or below MIN_D (the products are then the jnp ones)."""
    assert _make("sparse", jax.random.key(8), D=701, d=67).sell is not None
    assert _make("sparse", jax.random.key(8), D=701, d=60).sell is None
    monkeypatch.setattr(native, "enabled", lambda: False)  # as GZONE_NATIVE=0, without clearing caches
    P = _make("sparse", jax.random.key(8), D=703, d=67)  # a new shape: traced with the kernels off
    assert P.signed and P.sell is None


@needs_native
def test_sell_kernel_on_a_hand_made_layout_and_bad_input():
    """One group of width 1: slot c holds x[c] = c + 1, negated for odd c, for output 7 - c (slot 7:
    none, 9 >= 9 outputs); outputs in no slot (0 and 8) are 0."""
    x = jnp.arange(1.0, 17.0)
    idx = jnp.asarray([c | (0x8000 if c % 2 else 0) for c in range(8)], jnp.uint16)
    off, perm = jnp.asarray([0, 8], jnp.int32), jnp.asarray([7, 6, 5, 4, 3, 2, 1, 9], jnp.int32)
    got = jax.jit(lambda x: native.sell_sum(x, idx, off, perm, outputs=9, block=16))(x)
    np.testing.assert_array_equal(got, [0.0, 7.0, -6.0, 5.0, -4.0, 3.0, -2.0, 1.0, 0.0])
    for bad in (dict(block=0), dict(block=1 << 15), dict(block=4)):  # block 4: 4 blocks, 1 group offset
        with pytest.raises(Exception, match="gzone_sell_sum"):
            jax.block_until_ready(jax.jit(lambda x: native.sell_sum(x, idx, off, perm, outputs=9, **bad))(x))
