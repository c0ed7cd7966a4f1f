"""The quadratic well at a solution, measured matrix-free: what `analysis.gordon` needs to predict the
threshold training dimension from the Hessian.

    out = well_spectrum(key, fm, theta_star, x, y, starts, top_k=20, order=80, probes=8)

At theta* on the examples (x, y), with H the loss Hessian there (`curvature.loss_hvp`):
  ``top``              [top_k]           the largest Ritz values of H (Lanczos, `order` steps)
  ``nodes, weights``   [probes, order]   SLQ quadrature of H's spectral density (`spectra.slq`)
  ``start_nodes, start_weights`` [k, order]  H's spectral measure seen from b = start - theta* for each
                                         of the k start points: Gauss quadrature of a Lanczos run
                                         started at b (`gordon.cone_terms` reads it)
  ``start_sq``         [k]               |b|^2
  ``loss``             []                L(theta*) on (x, y)

Cost: order (1 + probes + k) Hessian-vector products; memory order vectors of size D at a time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gzone import curvature, flat
from gzone.curvature import spectra

Array = jax.Array


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
) -> dict[str, Array]:
    """See the module docstring; traceable (jit it at the caller), starts: [k, D]."""
    mv = curvature.loss_hvp(fm, theta_star, x, y)
    k_top, k_slq = jax.random.split(key)
    top, _ = spectra.extreme_eigs(
        k_top, mv, dim=fm.D, k=top_k, order=order, which="top", dtype=theta_star.dtype
    )
    nodes, weights = spectra.slq(k_slq, mv, dim=fm.D, order=order, num_probes=probes, dtype=theta_star.dtype)

    def seen_from(start):
        b = (start - theta_star).astype(theta_star.dtype)
        alphas, betas, _ = spectra.lanczos(k_top, mv, dim=fm.D, order=order, dtype=theta_star.dtype, start=b)
        return (*spectra.gauss_quadrature(alphas, betas), jnp.vdot(b, b))

    start_nodes, start_weights, start_sq = jax.lax.map(seen_from, starts)
    return {
        "top": top,
        "nodes": nodes,
        "weights": weights,
        "start_nodes": start_nodes,
        "start_weights": start_weights,
        "start_sq": start_sq,
        "loss": flat.loss(fm, theta_star, x, y),
    }
