"""Tests for gzone.gauss_newton: G, H and R = H - G against dense jax.jacfwd / jax.hessian."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gzone import flat, models
from gzone.curvature import gauss_newton, spectra

N, C, IN = 5, 3, 4


pytestmark = pytest.mark.usefixtures("x64")  # float64 per test (tests/conftest.py)


@functools.lru_cache  # one FlatModel per activation, so jitted helpers compile once each
def _problem(activation="tanh"):
    module = models.build(models.ModelSpec("mlp", (6,), activation), C)
    k_init, k_x, k_y = jax.random.split(jax.random.key(0), 3)
    params = models.init_params(k_init, module, (IN,), "xavier", jnp.float64)
    theta, fm = flat.flatten(module, params)
    x = jax.random.normal(k_x, (N, IN), jnp.float64)
    y = jax.random.randint(k_y, (N,), 0, C)
    return fm, theta, x, y


@functools.partial(jax.jit, static_argnums=0)
def _dense(fm, theta, x, y):
    """The three curvature matrices [D, D] from make_curvature_mvs, column by column."""
    mvs = gauss_newton.make_curvature_mvs(fm, theta, x, y)
    return {name: jax.vmap(mv)(jnp.eye(fm.D)).T for name, mv in mvs.items()}


@functools.partial(jax.jit, static_argnums=0)
def _reference(fm, theta, x, y):
    """G = J^T H_CE J from jacfwd of the logits and jax.hessian of the CE in logit space; H."""
    z = flat.logits(fm, theta, x)
    jac = jax.jacfwd(lambda th: flat.logits(fm, th, x))(theta)  # [N, C, D]
    h_ce = jax.hessian(lambda zz: jnp.mean(flat.cross_entropy(zz, y)))(z)  # [N, C, N, C]
    g = jnp.einsum("ncd,ncme,mef->df", jac, h_ce, jac)
    h = jax.hessian(flat.loss_fn(fm, x, y))(theta)
    return g, h


def test_ce_hessian_mv_matches_jax_hessian():
    rng = np.random.default_rng(0)
    z, u = jnp.asarray(rng.normal(size=(N, C))), jnp.asarray(rng.normal(size=(N, C)))
    y = jnp.zeros(N, jnp.int32)

    @jax.jit
    def run(z, u):
        h_ce = jax.hessian(lambda zz: jnp.mean(flat.cross_entropy(zz, y)))(z)
        return gauss_newton.ce_hessian_mv(z, u), jnp.einsum("ncme,me->nc", h_ce, u)

    np.testing.assert_allclose(*run(z, u), atol=1e-14)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_curvature_mvs_match_dense_references(activation):
    fm, theta, x, y = _problem(activation)
    g_ref, h_ref = _reference(fm, theta, x, y)
    dense = _dense(fm, theta, x, y)
    g, h, r = (dense[name] for name in ("gauss_newton", "hessian", "residual"))
    assert g.dtype == jnp.float64
    np.testing.assert_allclose(g, g_ref, atol=1e-12)
    np.testing.assert_allclose(h, h_ref, atol=1e-12)
    np.testing.assert_allclose(r, h_ref - g_ref, atol=1e-12)
    # The residual is a real part of H here, not zero (so H != G is being checked).
    assert np.linalg.norm(r) > 1e-2 * np.linalg.norm(h_ref)
    # G is symmetric positive semidefinite; H and R are not definite in general.
    np.testing.assert_allclose(g, g.T, atol=1e-14)
    assert np.linalg.eigvalsh(g).min() >= -1e-10
    assert np.linalg.eigvalsh(r).min() < -1e-6


def test_lanczos_on_gauss_newton_matches_dense_spectrum():
    fm, theta, x, y = _problem()
    g_ref, _ = _reference(fm, theta, x, y)

    @jax.jit
    def run(theta, key):  # the linearisation is traced inside the one jit
        mv = gauss_newton.make_curvature_mvs(fm, theta, x, y)["gauss_newton"]
        return spectra.ritz(*spectra.lanczos(key, mv, dim=fm.D, order=fm.D))[0]

    values = run(theta, jax.random.key(1))
    np.testing.assert_allclose(values, np.linalg.eigvalsh(g_ref), atol=1e-10)
    # G has rank <= N (C - 1) = 10 (softmax rows sum to zero): most eigenvalues are zero.
    assert np.sum(np.abs(values) > 1e-10) <= N * (C - 1)


def test_mvs_cast_inputs_to_theta_dtype():
    fm, theta, x, y = _problem()

    @jax.jit
    def run(theta, v):
        return {k: mv(v) for k, mv in gauss_newton.make_curvature_mvs(fm, theta, x, y).items()}

    for name, out in run(theta.astype(jnp.float32), jnp.ones(fm.D, jnp.float64)).items():
        assert out.dtype == jnp.float32 and out.shape == (fm.D,), name
