"""The Hessian of the loss split into Gauss-Newton and residual parts.

For the mean loss L(theta) = (1/N) sum_n l(u_n(theta), y_n) of the logits it sees, u = z / T
(z = f(theta) [N, C], T the temperature, `flat.logits`):

  H = G + R,   G = J_u^T H_out J_u,   R = sum_{n,c} (dL/du_nc) d^2 u_nc / d theta^2,

J_u = du/dtheta = J / T [N C, D] and H_out the loss's own Hessian in u (`flat.output_hessian_mv`):

  cross_entropy   H_out = blockdiag_n (diag(p_n) - p_n p_n^T) / N,  p_n = softmax(z_n / T)
  mse             H_out = 2 I / (N C)

so in the raw logits G = J^T (H_out / T^2) J. G is positive semidefinite (each H_out block is a
covariance matrix, or a positive multiple of I) and does not depend on the labels for cross
entropy; R carries the model's own curvature and vanishes where the logits are linear in theta.

    mvs = gauss_newton.make_curvature_mvs(fm, theta, x, y)
    spectra.extreme_eigs(key, mvs["gauss_newton"], dim=fm.D, k=5, order=40)

The matrix-vector functions take and return [D] vectors in theta's dtype (inputs are cast).
"""

from __future__ import annotations

from typing import Callable

import jax

from gzone import flat
from gzone.curvature import products

Array = jax.Array
MatVec = Callable[[Array], Array]


ce_hessian_mv = flat.cross_entropy_hessian_mv  # H_CE u (logits [N, C], u [N, C]) -> [N, C]


def make_gauss_newton_mv(fm: flat.FlatModel, theta: Array, x: Array) -> MatVec:
    """v [D] -> G v = J_u^T H_out J_u v at theta on inputs x [N, ...] (fm's loss and temperature).

    The logits are linearised once (``jax.linearize``: one forward pass, its residuals kept);
    each product is then a jvp (J v) and its transpose (J^T u), about the cost of one gradient.
    Build it inside the jitted computation that uses it, so that the linearisation is traced
    once rather than closed over as a constant.
    """
    z, jvp_fn = jax.linearize(lambda th: flat.logits(fm, th, x), theta)
    vjp_fn = jax.linear_transpose(jvp_fn, theta)

    def mv(v: Array) -> Array:
        return vjp_fn(flat.output_hessian_mv(fm, z, jvp_fn(v.astype(theta.dtype))))[0]

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
