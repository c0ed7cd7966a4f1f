"""Hessian-vector products, in one place: forward-over-reverse (jvp of grad).

  hvp(f, theta, v)              H v at theta for one v
  linearized_hvp(f, theta)      v -> H v, with grad f linearised once at theta (reuse for many v)
  loss_hvp(fm, theta, x, y)     v -> H v of the mean loss on a fixed batch (x, y)

Every curvature computation of the library (subspace Hessians, Lanczos, SLQ, trace estimators,
the Gauss-Newton split) takes its products from here.
"""

from __future__ import annotations

from typing import Callable

import jax

from gzone import flat

Array = jax.Array
MatVec = Callable[[Array], Array]


def hvp(f: Callable[[Array], Array], theta: Array, v: Array) -> Array:
    """H v with H = d^2 f / d theta^2 at theta. theta, v: [D] -> [D]."""
    return jax.jvp(jax.grad(f), (theta,), (v,))[1]


def linearized_hvp(f: Callable[[Array], Array], theta: Array) -> MatVec:
    """v [D] -> H v at theta: ``jax.linearize(jax.grad(f), theta)`` once, then one linear map per v.

    Build it inside the jitted computation that uses it, so the linearisation is traced once
    rather than closed over as a constant. Inputs are cast to theta's dtype.
    """
    _, hvp_fn = jax.linearize(jax.grad(f), theta)
    return lambda v: hvp_fn(v.astype(theta.dtype))


def loss_hvp(fm: flat.FlatModel, theta: Array, x: Array, y: Array) -> MatVec:
    """v [D] -> H v for the mean loss on (x [N, ...], y [N]) at theta (`linearized_hvp`)."""
    return linearized_hvp(flat.loss_fn(fm, x, y), theta)
