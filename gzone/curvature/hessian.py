"""The exact subspace Hessian and spectrum metrics of symmetric matrices.

  subspace_hessian(f, theta, P)      H_sub = P^T H P  [d, d], exact (no sampling)
  subspace_matrix(mv, P)             P^T A P [d, d] for any symmetric A given by its products
  spectrum_metrics(H_sub)            eigenvalues, fraction positive, Tr(H)/||H||_F, ...

Strategies for H_sub (``method``), all exact and equal to rounding:
  * ``linearize_map`` (default): `products.linearized_hvp` (grad f linearised once), then
    ``lax.map`` over P's columns e_j -> P^T hvp_fn(P e_j), ``chunk_size`` columns at a time
    (vmapped inside a chunk). Memory: one HVP's activations per column of the chunk, plus the
    [d, d] result; bounded at d = 1000, D = 656,810. Fastest on a 2-core CPU at every d
    measured (see BENCHMARKS.md); a GPU may prefer a larger ``chunk_size``.
  * ``vmap``: all d HVPs vmapped at once; memory grows as d x (one HVP): avoid for large d.
  * ``hessian``: ``jax.hessian`` of z -> f(theta + P z) at z = 0 (jacfwd of jacrev).

P must be passed to jitted callers as an argument, never closed over: a closed-over array
becomes a compiled-in constant (slow compiles, a copy per trace).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gzone import projections
from gzone.curvature import products

Array = jax.Array
METHODS = ("linearize_map", "vmap", "hessian")


def subspace_hessian(
    f: Callable[[Array], Array],
    theta: Array,
    P: projections.Projection,
    *,
    method: str = "linearize_map",
    chunk_size: int | None = None,
) -> Array:
    """The exact Hessian of z -> f(theta + P z) at z = 0: H_sub = P^T H P, shape [d, d].

    Args:
      f: scalar function of theta [D] (e.g. the loss on a fixed batch).
      theta: [D] the point.
      P: projection [D, d].
      method: one of METHODS (see the module docstring).
      chunk_size: columns per vmapped chunk for ``linearize_map`` (1 = strictly sequential);
        None picks `default_chunk_size(P)`.

    Returns:
      [d, d] symmetric matrix (symmetrised: (H + H^T)/2 removes rounding asymmetry).
      Cost: d Hessian-vector products (about 2-3 gradients each) plus d applications of P, P^T.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r} unknown; allowed: {', '.join(METHODS)}")
    d = P.shape[1]
    if method == "hessian":
        h = jax.hessian(lambda z: f(theta + projections.apply(P, z)))(jnp.zeros(d, theta.dtype))
    else:
        index = jnp.arange(d)
        if method == "vmap":
            col = lambda j: projections.apply_T(P, products.hvp(f, theta, projections.column(P, j)))
            rows = jax.vmap(col)(index)
        else:
            hvp_fn = products.linearized_hvp(f, theta)
            col = lambda j: projections.apply_T(P, hvp_fn(projections.column(P, j)))
            chunk = default_chunk_size(P) if chunk_size is None else int(chunk_size)
            rows = jax.lax.map(col, index, batch_size=chunk if chunk > 1 else None)
        h = rows.T
    return 0.5 * (h + h.T)


def subspace_matrix(
    mv: Callable[[Array], Array], P: projections.Projection, *, chunk_size: int | None = None
) -> Array:
    """P^T A P [d, d] for a symmetric A given by its product mv: [D] -> [D].

    Computed like `subspace_hessian`'s ``linearize_map``: ``lax.map`` over P's columns e_j ->
    P^T mv(P e_j), ``chunk_size`` columns vmapped at a time (None: `default_chunk_size`), then
    symmetrised. Used for the Gauss-Newton part P^T G P (`gauss_newton.make_gauss_newton_mv`).
    Cost: d products with A.
    """
    col = lambda j: projections.apply_T(P, mv(projections.column(P, j)))  # noqa: E731
    chunk = default_chunk_size(P) if chunk_size is None else int(chunk_size)
    h = jax.lax.map(col, jnp.arange(P.shape[1]), batch_size=chunk if chunk > 1 else None).T
    return 0.5 * (h + h.T)


def default_chunk_size(P: projections.Projection) -> int:
    """Columns per chunk measured fastest on a 2-core CPU (BENCHMARKS.md).

    Sparse and Fastfood columns are cheap to form and to pull back, so one column at a time
    wins; a dense P^T v reads all of P (D d numbers) per column, so dense P goes in chunks of
    16 columns, turning those reads into one matrix product per chunk.
    """
    base = P.base if isinstance(P, projections.Scaled) else P
    return min(16, P.shape[1]) if isinstance(base, projections.Dense) else 1


def spectrum_metrics(h: Array) -> dict[str, Array]:
    """Metrics of a symmetric matrix h [d, d].

    Returns a dict of:
      eigvals [d] ascending; frac_pos: fraction of eigenvalues > 0; trace; frob: ||h||_F;
      trace_over_frob: Tr(h)/||h||_F (sqrt(d) for the identity, ~0 for a random symmetric
      matrix, in [-sqrt(d), sqrt(d)]); top, bottom: the largest and smallest eigenvalues.
    Non-finite input gives NaN metrics rather than an error.
    """
    finite = jnp.all(jnp.isfinite(h))
    safe = jnp.where(finite, h, jnp.zeros_like(h))
    eig = jnp.linalg.eigvalsh(safe)
    eig = jnp.where(finite, eig, jnp.nan)
    trace = jnp.where(finite, jnp.trace(safe), jnp.nan)
    # ||h||_F of the matrix scaled by its largest entry: squares of entries ~1e-23 underflow in
    # float32 (a saturated softmax's Gauss-Newton part), which would give ||h||_F = 0 < |Tr(h)|
    scale = jnp.max(jnp.abs(safe))
    unit = safe / jnp.where(scale > 0, scale, 1)
    frob_unit = jnp.linalg.norm(unit)
    frob = jnp.where(finite, scale * frob_unit, jnp.nan)
    return {
        "eigvals": eig,
        "frac_pos": jnp.where(finite, jnp.mean(eig > 0), jnp.nan),
        "trace": trace,
        "frob": frob,
        "trace_over_frob": jnp.where(finite, jnp.trace(unit) / frob_unit, jnp.nan),  # 0/0 = NaN for h = 0
        "top": eig[-1],
        "bottom": eig[0],
    }
