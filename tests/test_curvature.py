"""gzone.curvature: HVP and the subspace Hessian against full Hessians in float64; spectrum metrics."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gzone import curvature, flat, models, projections

d = 5  # not divisible by the chunk size 3


@pytest.fixture(scope="module")
def tiny():
    """A tanh MLP 5-4-3 on 8 examples in float64: (f, theta, full Hessian as numpy)."""
    with jax.enable_x64(True):
        module = models.build(models.ModelSpec("mlp", (4,), "tanh"), 3)
        fm = flat.flat_model(module, (5,), jnp.float64)
        rng = np.random.default_rng(0)
        theta = jnp.asarray(rng.standard_normal(fm.D))
        x = jnp.asarray(rng.standard_normal((8, 5)))
        y = jnp.asarray(rng.integers(0, 3, 8), jnp.int32)
        f = flat.loss_fn(fm, x, y)
        H = np.asarray(jax.jit(jax.hessian(f))(theta))
    assert H.shape == (fm.D, fm.D) and np.linalg.norm(H) > 0.1
    return f, theta, H


@pytest.fixture(scope="module")
def subspaces(tiny):
    """kind -> (P [D, d] float64 projection, its dense matrix as numpy)."""
    D = tiny[1].shape[0]
    make = jax.jit(projections.make, static_argnums=0, static_argnames=("D", "d", "dtype"))
    with jax.enable_x64(True):
        out = {}
        for kind in projections.KINDS:
            P = make(kind, jax.random.key(2), D=D, d=d, dtype=jnp.float64)
            out[kind] = (P, np.asarray(jax.jit(projections.todense)(P)))
        return out


subspace_hessian = jax.jit(
    curvature.subspace_hessian, static_argnums=0, static_argnames=("method", "chunk_size")
)

VARIANTS = (("linearize_map", 1), ("linearize_map", 3), ("vmap", None), ("hessian", None))


@pytest.fixture(scope="module")
def sub_hessians(tiny, subspaces):
    """kind -> {(method, chunk_size): H_sub}, each kind's variants compiled together (one jit)."""
    f, theta, _ = tiny

    @jax.jit
    def all_variants(theta, P):
        return [curvature.subspace_hessian(f, theta, P, method=m, chunk_size=c) for m, c in VARIANTS]

    with jax.enable_x64(True):
        return {
            kind: dict(zip(VARIANTS, map(np.asarray, all_variants(theta, P))))
            for kind, (P, _) in subspaces.items()
        }


def test_hvp_equals_the_full_hessian_times_v(x64, tiny):
    f, theta, H = tiny
    v = np.random.default_rng(1).standard_normal(theta.shape[0])
    hv = jax.jit(curvature.hvp, static_argnums=0)(f, theta, jnp.asarray(v))
    np.testing.assert_allclose(hv, H @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", projections.KINDS)
@pytest.mark.parametrize("method,chunk_size", VARIANTS)
def test_subspace_hessian_equals_PT_H_P(tiny, subspaces, sub_hessians, kind, method, chunk_size):
    _, _, H = tiny
    _, M = subspaces[kind]
    h = sub_hessians[kind][(method, chunk_size)]
    assert h.shape == (d, d) and h.dtype == np.float64
    np.testing.assert_allclose(h, h.T, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(h, M.T @ H @ M, rtol=1e-10, atol=1e-12)


def test_default_chunk_size_matches_an_explicit_one(x64, tiny, subspaces, sub_hessians):
    f, theta, _ = tiny
    P, _ = subspaces["sparse_fixed"]  # default: one column at a time
    expected = sub_hessians["sparse_fixed"][("linearize_map", 1)]
    np.testing.assert_array_equal(subspace_hessian(f, theta, P), expected)


def test_every_method_is_covered():
    assert set(curvature.METHODS) == {"linearize_map", "vmap", "hessian"}
    with pytest.raises(ValueError, match="method"):
        P = projections.Dense(jnp.eye(3))
        curvature.subspace_hessian(lambda t: jnp.sum(t**2), jnp.ones(3), P, method="lanczos")


def test_default_chunk_size():
    dense = projections.Dense(jnp.zeros((40, 20)))
    assert curvature.default_chunk_size(dense) == 16
    assert curvature.default_chunk_size(projections.Dense(jnp.zeros((40, 5)))) == 5
    sparse = projections.Sparse(jnp.zeros(40), jnp.zeros(40, jnp.int32), D=40, d=20, K=2)
    assert curvature.default_chunk_size(sparse) == 1
    scaled = projections.Scaled(dense, jnp.ones(40), jnp.ones(20))
    assert curvature.default_chunk_size(scaled) == 16


DQ = 39  # the quadratic's dimension: the tiny MLP's D, so it takes the same projections (no new compiles)


@jax.jit
def _quadratic_hessian(A, theta, P):
    """H_sub of f(theta) = theta^T A theta / 2, with A as data (one compile per kind of P)."""
    return curvature.subspace_hessian(lambda t: 0.5 * t @ A @ t, theta, P)


@pytest.fixture(scope="module")
def quadratic_subspaces(subspaces):
    """kind -> (P [DQ, d], its dense matrix) for the dense and sparse kinds."""
    assert all(M.shape == (DQ, d) for _, M in subspaces.values())
    return {kind: subspaces[kind] for kind in ("dense", "sparse")}


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_quadratic_gives_the_exact_spectrum_of_PT_A_P(x64, quadratic_subspaces, kind):
    rng = np.random.default_rng(3)
    B = rng.standard_normal((DQ, DQ))
    A = B @ B.T / DQ - np.eye(DQ)  # indefinite: eigenvalues from -1 to about 3
    theta = jnp.asarray(rng.standard_normal(DQ))  # a quadratic's Hessian is A everywhere
    P, M = quadratic_subspaces[kind]
    h = _quadratic_hessian(jnp.asarray(A), theta, P)
    np.testing.assert_allclose(h, M.T @ A @ M, rtol=1e-12, atol=1e-13)
    spec = curvature.spectrum_metrics(h)
    eig = np.linalg.eigvalsh(M.T @ A @ M)
    assert eig[0] < 0 < eig[-1]
    np.testing.assert_allclose(spec["eigvals"], eig, rtol=1e-11, atol=1e-12)


def test_quadratic_closed_forms(x64, quadratic_subspaces):
    P, M = quadratic_subspaces["dense"]
    theta = jnp.zeros(DQ)
    # A = c I: P^T A P = c I for orthonormal columns, so every eigenvalue is c.
    h = _quadratic_hessian(3.0 * jnp.eye(DQ), theta, P)
    np.testing.assert_allclose(curvature.spectrum_metrics(h)["eigvals"], 3.0, rtol=1e-13)
    # A = u u^T: rank one, eigenvalues {0 (d-1 times), |P^T u|^2}.
    u = np.random.default_rng(6).standard_normal(DQ)
    h = _quadratic_hessian(jnp.asarray(np.outer(u, u)), theta, P)
    eig = np.asarray(curvature.spectrum_metrics(h)["eigvals"])
    np.testing.assert_allclose(eig[:-1], 0.0, atol=1e-13)
    assert eig[-1] == pytest.approx(np.sum((M.T @ u) ** 2), rel=1e-12)


# --------------------------------------------------------------------------- spectrum metrics


# Sizes shared with the tests above (d x d float64, 4 x 4 float32): spectrum_metrics runs op by op
# here, and each new shape compiles its ~20 primitives again.


def test_metrics_of_the_identity_and_its_negative(x64):
    n = d
    spec = curvature.spectrum_metrics(jnp.eye(n))
    assert float(spec["frac_pos"]) == 1.0
    assert float(spec["trace_over_frob"]) == pytest.approx(math.sqrt(n), rel=1e-14)
    assert float(spec["trace"]) == n and float(spec["frob"]) == pytest.approx(math.sqrt(n), rel=1e-14)
    assert float(spec["top"]) == pytest.approx(1.0) and float(spec["bottom"]) == pytest.approx(1.0)
    spec = curvature.spectrum_metrics(-2.0 * jnp.eye(n))
    assert float(spec["frac_pos"]) == 0.0
    assert float(spec["trace_over_frob"]) == pytest.approx(-math.sqrt(n), rel=1e-14)
    spec = curvature.spectrum_metrics(jnp.diag(jnp.array([0.0, 0.0, 3.0, -1.0])))
    assert float(spec["frac_pos"]) == 0.25  # zero is not positive
    np.testing.assert_array_equal(spec["eigvals"], [-1.0, 0.0, 0.0, 3.0])
    assert float(spec["trace_over_frob"]) == pytest.approx(2 / math.sqrt(10), rel=1e-14)


def test_metrics_of_a_random_symmetric_matrix_match_numpy(x64):
    a = np.random.default_rng(7).standard_normal((d, d))
    h = a + a.T
    spec = curvature.spectrum_metrics(jnp.asarray(h))
    eig = np.linalg.eigvalsh(h)
    np.testing.assert_allclose(spec["eigvals"], eig, rtol=1e-12, atol=1e-12)
    assert float(spec["frac_pos"]) == pytest.approx(np.mean(eig > 0), rel=1e-7)
    assert float(spec["trace"]) == pytest.approx(np.trace(h), rel=1e-12, abs=1e-12)
    assert float(spec["frob"]) == pytest.approx(np.linalg.norm(h), rel=1e-12)
    ratio = np.trace(h) / np.linalg.norm(h)
    assert float(spec["trace_over_frob"]) == pytest.approx(ratio, rel=1e-10, abs=1e-12)
    assert float(spec["top"]) == pytest.approx(eig[-1]) and float(spec["bottom"]) == pytest.approx(eig[0])


def test_metrics_of_GOE_matrices():
    # GOE: H = (G + G^T)/sqrt(2); H and -H are equally likely, so E frac_pos = 1/2; Tr H ~ N(0, 2n)
    # and ||H||_F^2 ~ n^2 + n, so Tr/||H||_F has mean 0 and variance ~ 2/(n + 1).
    n, m = 20, 400
    g = np.random.default_rng(8).standard_normal((m, n, n))
    h = jnp.asarray((g + np.swapaxes(g, 1, 2)) / math.sqrt(2), jnp.float32)
    spec = jax.jit(jax.vmap(curvature.spectrum_metrics))(h)
    frac, ratio = np.asarray(spec["frac_pos"], np.float64), np.asarray(spec["trace_over_frob"], np.float64)
    # frac_pos: eigenvalue repulsion makes it far less variable than n independent coins.
    assert abs(frac.mean() - 0.5) < 5 * math.sqrt(0.25 / n / m)
    assert abs(ratio.mean()) < 5 * math.sqrt(2 / (n + 1) / m)
    assert ratio.var() == pytest.approx(2 / (n + 1), rel=0.3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_gives_nan_metrics(bad):
    h = np.eye(4, dtype=np.float32)
    h[1, 2] = h[2, 1] = bad
    for fn in (curvature.spectrum_metrics, jax.jit(curvature.spectrum_metrics)):
        spec = fn(jnp.asarray(h))
        for key, value in spec.items():
            assert np.all(np.isnan(np.asarray(value))), key


def test_metrics_of_tiny_and_zero_matrices_in_float32():
    # entries ~1e-23 square to below float32's smallest number: ||h||_F must still be right
    a = np.random.default_rng(9).standard_normal((4, 4))
    h = (a + a.T).astype(np.float32)
    ref = curvature.spectrum_metrics(jnp.asarray(h))
    for scale in (1e-23, 1e-30, 1e25):
        spec = curvature.spectrum_metrics(jnp.asarray(h * np.float32(scale)))
        assert float(spec["trace_over_frob"]) == pytest.approx(float(ref["trace_over_frob"]), rel=1e-5)
        assert float(spec["frob"]) == pytest.approx(float(ref["frob"]) * scale, rel=1e-5)
    zero = curvature.spectrum_metrics(jnp.zeros((4, 4), jnp.float32))
    assert float(zero["frob"]) == 0.0 and float(zero["frac_pos"]) == 0.0 and np.isnan(zero["trace_over_frob"])
