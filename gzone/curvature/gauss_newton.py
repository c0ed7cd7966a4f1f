"""The Hessian of the softmax cross-entropy split into Gauss-Newton and residual parts.

For the mean loss L(theta) = (1/N) sum_n CE(z_n(theta), y_n) with logits z = f(theta) [N, C]:

  H = G + R,   G = J^T H_CE J,   H_CE = blockdiag_n (diag(p_n) - p_n p_n^T) / N,
               R = sum_{n,c} (dL/dz_nc) d^2 z_nc / d theta^2,

J = dz/dtheta [N C, D], p_n = softmax(z_n). G is positive semidefinite (H_CE is: each block is
a covariance matrix) and does not depend on the labels; R carries the model's own curvature
and vanishes where the logits are linear in theta.

    mvs = gauss_newton.make_curvature_mvs(fm, theta, x, y)
    spectra.extreme_eigs(key, mvs["gauss_newton"], dim=fm.D, k=5, order=40)

The matrix-vector functions take and return [D] vectors in theta's dtype (inputs are cast).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gzone import flat
from gzone.curvature import products

Array = jax.Array
MatVec = Callable[[Array], Array]


def ce_hessian_mv(logits_: Array, u: Array) -> Array:
    """H_CE u for the mean cross-entropy over N examples: (p * u - p (p . u)) / N per example.

    Args:
      logits_: [N, C] logits z.
      u: [N, C] a logit-space direction.

    Returns:
      [N, C].
    """
    p = jax.nn.softmax(logits_, axis=-1)
    return (p * u - p * jnp.sum(p * u, axis=-1, keepdims=True)) / logits_.shape[0]


def make_gauss_newton_mv(fm: flat.FlatModel, theta: Array, x: Array) -> MatVec:
    """v [D] -> G v = J^T H_CE J v at theta on inputs x [N, ...].

    The logits are linearised once (``jax.linearize``: one forward pass, its residuals kept);
    each product is then a jvp (J v) and its transpose (J^T u), about the cost of one gradient.
    Build it inside the jitted computation that uses it, so that the linearisation is traced
    once rather than closed over as a constant.
    """
    z, jvp_fn = jax.linearize(lambda th: flat.logits(fm, th, x), theta)
    vjp_fn = jax.linear_transpose(jvp_fn, theta)

    def mv(v: Array) -> Array:
        return vjp_fn(ce_hessian_mv(z, jvp_fn(v.astype(theta.dtype))))[0]

    return mv


def make_curvature_mvs(
    fm: flat.FlatModel, theta: Array, x: Array, y: Array
) -> dict[str, MatVec]:
    """The three curvature products at theta on the batch (x [N, ...], y [N]).

    Returns:
      dict of [D] -> [D] functions: ``hessian`` (H v), ``gauss_newton`` (G v) and
      ``residual`` (R v = H v - G v, two products).
    """
    hessian = products.loss_hvp(fm, theta, x, y)
    gauss_newton = make_gauss_newton_mv(fm, theta, x)
    return {
        "hessian": hessian,
        "gauss_newton": gauss_newton,
        "residual": lambda v: hessian(v) - gauss_newton(v),
    }
