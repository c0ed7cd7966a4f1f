"""gzone.subspace: radial/tangent split, hyperplanes and hyperspheres, in float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gzone import projections, subspace

D, d = 60, 5
pytestmark = pytest.mark.usefixtures("x64")


def _vectors(seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(3.0 * rng.standard_normal(D)), jnp.asarray(rng.standard_normal(D))


def _projection(kind="dense"):
    return projections.make(kind, jax.random.key(1), D=D, d=d, dtype=jnp.float64)


def test_tangent_removes_the_radial_component_exactly():
    theta, v = _vectors()
    t = subspace.tangent(theta, v)
    assert abs(float(jnp.vdot(t, theta))) < 1e-13 * float(jnp.linalg.norm(theta) * jnp.linalg.norm(v))
    assert float(jnp.linalg.norm(t)) > 0.5 * float(jnp.linalg.norm(v))  # not trivially zero


def test_radial_plus_tangent_is_v_and_radial_is_along_theta():
    theta, v = _vectors(1)
    r, t = subspace.radial(theta, v), subspace.tangent(theta, v)
    np.testing.assert_allclose(r + t, v, rtol=1e-14, atol=1e-14)
    u = np.asarray(theta) / np.linalg.norm(theta)
    c = float(subspace.radial_scalar(theta, v))
    assert c == pytest.approx(float(np.dot(u, v)), rel=1e-13)
    np.testing.assert_allclose(r, c * u, rtol=1e-13, atol=1e-15)


def test_unit():
    theta, _ = _vectors(2)
    assert float(jnp.linalg.norm(subspace.unit(theta))) == pytest.approx(1.0, rel=1e-15)
    np.testing.assert_array_equal(subspace.unit(jnp.zeros(D)), np.zeros(D))


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_hyperplane(kind):
    a, _ = _vectors(3)
    P = _projection(kind)
    theta_fn = subspace.hyperplane(a, P)
    np.testing.assert_array_equal(theta_fn(jnp.zeros(d)), a)
    z = jnp.asarray(np.random.default_rng(4).standard_normal(d))
    expected = np.asarray(a) + np.asarray(projections.todense(P)) @ np.asarray(z)
    np.testing.assert_allclose(theta_fn(z), expected, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("tangent_space", [True, False])
def test_hypersphere_stays_on_the_sphere(kind, tangent_space):
    a, _ = _vectors(5)
    r0 = 2.5
    P = _projection(kind)
    theta_fn = jax.jit(subspace.hypersphere(a, P, r0, tangent_space=tangent_space))
    np.testing.assert_allclose(theta_fn(jnp.zeros(d)), r0 * np.asarray(a) / np.linalg.norm(a), rtol=1e-14)
    rng = np.random.default_rng(6)
    M = np.asarray(projections.todense(P))
    for scale in (1e-3, 1.0, 1e3):
        z = scale * rng.standard_normal(d)
        theta = np.asarray(theta_fn(jnp.asarray(z)))
        assert np.linalg.norm(theta) == pytest.approx(r0, rel=1e-14)
        step = M @ z
        if tangent_space:
            u = np.asarray(a) / np.linalg.norm(a)
            step = step - np.dot(u, step) * u
        x = np.asarray(a) + step
        np.testing.assert_allclose(theta, r0 * x / np.linalg.norm(x), rtol=1e-12, atol=1e-14)


def test_hypersphere_derivative_at_zero_is_the_scaled_tangent_map():
    a, _ = _vectors(7)
    r0 = 0.7
    P = _projection("dense")
    jac = jax.jacfwd(subspace.hypersphere(a, P, r0))(jnp.zeros(d))
    u = np.asarray(a) / np.linalg.norm(a)
    T = (np.eye(D) - np.outer(u, u)) @ np.asarray(projections.todense(P))
    np.testing.assert_allclose(jac, (r0 / np.linalg.norm(a)) * T, rtol=1e-12, atol=1e-14)
