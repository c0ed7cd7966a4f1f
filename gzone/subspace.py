"""Low-dimensional parameterisations of theta with z in R^d, and radial/tangent projections.

  * hyperplane:  theta(z) = a + P z                          (theta(0) = a)
  * hypersphere: theta(z) = r0 (a + T z) / |a + T z|,  T = (I - a_hat a_hat^T) P
    the tangent-space form: T's columns have no radial component at a, so theta(0) = r0 a_hat
    and d theta / dz at z = 0 is (r0/|a|) T, a map onto the sphere's tangent space.
    ``tangent=False`` uses P itself (the plain normalised hyperplane).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gzone import projections

Array = jax.Array


def unit(theta: Array) -> Array:
    """theta / |theta| (zero stays zero)."""
    norm = jnp.linalg.norm(theta)
    return theta / jnp.where(norm > 0, norm, 1.0)


def radial(theta: Array, v: Array) -> Array:
    """Radial part of v at theta: (v . theta_hat) theta_hat. theta, v: [D]."""
    u = unit(theta)
    return jnp.vdot(u, v) * u


def tangent(theta: Array, v: Array) -> Array:
    """Tangent part of v at theta: v - (v . theta_hat) theta_hat, orthogonal to theta."""
    return v - radial(theta, v)


def radial_scalar(theta: Array, v: Array) -> Array:
    """v . theta_hat (signed length of the radial part)."""
    return jnp.vdot(unit(theta), v)


def hyperplane(a: Array, P: projections.Projection) -> Callable[[Array], Array]:
    """z [d] -> a + P z [D]."""
    return lambda z: a + projections.apply(P, z)


def hypersphere(
    a: Array, P: projections.Projection, r0: Array | float, *, tangent_space: bool = True
) -> Callable[[Array], Array]:
    """z [d] -> r0 (a + T z)/|a + T z| [D], on the sphere of radius r0.

    With ``tangent_space`` T z = tangent(a, P z) (the radial component at a removed), else P z.
    """

    def theta_fn(z):
        step = projections.apply(P, z)
        if tangent_space:
            step = tangent(a, step)
        x = a + step
        return r0 * x / jnp.linalg.norm(x)

    return theta_fn
