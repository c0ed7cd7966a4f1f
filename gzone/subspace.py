"""Low-dimensional parameterisations of theta with z in R^d, and radial/tangent projections.

  * hyperplane:  theta(z) = a + P z                          (theta(0) = a)
  * hypersphere: theta(z) = r0 (a + T z) / |a + T z|,  T = (I - a_hat a_hat^T) P
    the tangent-space form: T's columns have no radial component at a, so theta(0) = r0 a_hat
    and d theta / dz at z = 0 is (r0/|a|) T, a map onto the sphere's tangent space.
    ``tangent=False`` uses P itself (the plain normalised hyperplane).

Points at radius r (`point_at_radius`), by convention:
  * ``xavier_rescaled``: a Xavier-normal sample (zero biases) scaled to |theta| = r;
  * ``isotropic``: a Gaussian over all D coordinates scaled to |theta| = r;
  * ``scaled_init``: alpha times an init sample with alpha = r / r_X, so |theta| ~ r.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gzone import projections

Array = jax.Array
POINT_CONVENTIONS = ("xavier_rescaled", "isotropic", "scaled_init")


def norm(v: Array) -> Array:
    """|v| without overflow or underflow: max|v_i| times the norm of v / max|v_i| (right at 1e-30 and 1e30
    in float32, where the squares leave the range). 0 for v = 0; inf / NaN when v holds them."""
    m = jnp.max(jnp.abs(v))
    scale = jnp.where(m > 0, m, jnp.ones_like(m))
    return jnp.where(m > 0, scale * jnp.linalg.norm(v / scale), jnp.zeros_like(m))


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


def point_at_radius(
    key: Array,
    radius: Array,
    *,
    convention: str,
    sample_fn: Callable[[Array], Array],
    D: int,
    r_x: float,
    dtype=jnp.float32,
) -> Array:
    """A point theta [D] at radius `radius` by a named convention (see module docstring).

    Args:
      key: PRNG key of the direction (the same key gives the same direction at every radius).
      radius: target radius r (scalar, data).
      convention: one of POINT_CONVENTIONS.
      sample_fn: key -> flat init sample [D] (Xavier for ``xavier_rescaled``; the chosen
        init for ``scaled_init``).
      D: number of parameters.
      r_x: the Xavier radius, for ``scaled_init``'s alpha = r / r_X.
    """
    if convention == "isotropic":
        g = jax.random.normal(key, (D,), dtype)
        return radius * g / jnp.linalg.norm(g)
    sample = sample_fn(key).astype(dtype)
    if convention == "xavier_rescaled":
        return radius * sample / jnp.linalg.norm(sample)
    if convention == "scaled_init":
        return (radius / r_x) * sample
    raise ValueError(f"point convention {convention!r} unknown; allowed: {', '.join(POINT_CONVENTIONS)}")
