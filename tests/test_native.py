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
native_on = pytest.mark.skipif(not native.enabled(), reason="native kernels not built or off (GZONE_NATIVE=0)")


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
