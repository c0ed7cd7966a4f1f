"""The quadratic well at a solution, measured matrix-free: what `analysis.gordon` needs to predict the
threshold training dimension from the Hessian.

    out = well_spectrum(key, fm, theta_star, x, y, starts, top_k=20, order=80, probes=8,
                        matrix="gauss_newton")

At theta* on the examples (x, y), with H the well's curvature there: the Gauss-Newton matrix G
(``matrix="gauss_newton"``, `gauss_newton.make_gauss_newton_mv`) or the loss Hessian
(``"hessian"``, `curvature.loss_hvp`):
  ``top``              [top_k]           the largest Ritz values of H (Lanczos, `order` steps)
  ``nodes, weights``   [probes, order]   SLQ quadrature of H's spectral density (`spectra.slq`)
  ``start_nodes, start_weights`` [k, order]  H's spectral measure seen from b = start - theta* for each
                                         of the k start points: Gauss quadrature of a Lanczos run
                                         started at b (`gordon.cone_terms` reads it)
  ``start_sq``         [k]               |b|^2
  ``line_loss``        [k, len(FRACTIONS)]  L(theta* + s b) at the fractions s of the way to each start
                                         (the quadratic model says L* + s^2 b^T H b / 2 there)
  ``loss``             []                L(theta*) on (x, y)

Why G by default: the predictions (`analysis.gordon`) integrate functions of the spectrum that
change over a scale c = 2 eps / R^2 (~1e-2) next to 0, where nearly all of a network's eigenvalues
sit. On a positive semidefinite G these functions are rational with their pole at -c, outside the
spectrum, and Gauss quadrature converges like conjugate gradients (error ~ exp(-4 order sqrt(c /
lambda_max))). The Hessian away from an exact minimum has a negative part around 0 (its residual
term); the quadratic well clips it to 0, a kink right where the eigenvalues crowd, and the
quadrature then does not converge in the order (at an MNIST solution the predictions doubled from
order 40 to 80). G is also the quadratic model's own curvature: the Hessian of the loss of the
linearised network, L(f(theta*) + J x).

Cost: order (1 + probes + k) matrix-vector products and 5 k losses (a Gauss-Newton product costs about two
gradients, a Hessian product about three); memory order vectors of size D at a time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gzone import curvature, flat
from gzone.curvature import gauss_newton, spectra

Array = jax.Array
MATRICES = ("gauss_newton", "hessian")
FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)  # points of the segment theta* -> start where the loss is taken


def well_spectrum(
    key: Array,
    fm: flat.FlatModel,
    theta_star: Array,
    x: Array,
    y: Array,
    starts: Array,
    *,
    top_k: int,
    order: int,
    probes: int,
    matrix: str = "gauss_newton",
) -> dict[str, Array]:
    """See the module docstring; traceable (jit it at the caller), starts: [k, D]."""
    if matrix not in MATRICES:
        raise ValueError(f"matrix {matrix!r} unknown; allowed: {', '.join(MATRICES)}")
    if matrix == "hessian":
        mv = curvature.loss_hvp(fm, theta_star, x, y)
    else:
        mv = gauss_newton.make_gauss_newton_mv(fm, theta_star, x)
    k_top, k_slq = jax.random.split(key)
    top, _ = spectra.extreme_eigs(
        k_top, mv, dim=fm.D, k=top_k, order=order, which="top", dtype=theta_star.dtype
    )
    nodes, weights = spectra.slq(k_slq, mv, dim=fm.D, order=order, num_probes=probes, dtype=theta_star.dtype)

    def seen_from(start):
        b = (start - theta_star).astype(theta_star.dtype)
        alphas, betas, _ = spectra.lanczos(k_top, mv, dim=fm.D, order=order, dtype=theta_star.dtype, start=b)
        line = jnp.stack([flat.loss(fm, theta_star + s * b, x, y) for s in FRACTIONS])
        return (*spectra.gauss_quadrature(alphas, betas), jnp.vdot(b, b), line)

    start_nodes, start_weights, start_sq, line_loss = jax.lax.map(seen_from, starts)
    return {
        "top": top,
        "nodes": nodes,
        "weights": weights,
        "start_nodes": start_nodes,
        "start_weights": start_weights,
        "start_sq": start_sq,
        "line_loss": line_loss,
        "loss": flat.loss(fm, theta_star, x, y),
    }
