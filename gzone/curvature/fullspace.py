"""Full-space curvature at a scan point, and the Gauss-Newton / residual split of a subspace Hessian.

At a point theta on fixed examples (x, y), with H = G + R (`gauss_newton`: G = J^T H_CE J,
R the residual):

  estimates(key, fm, theta, x, y, spec=)   full-space Tr/||.||_F of H (and of G and R) by
                                           Rademacher probes, with standard errors; the top and
                                           bottom k eigenvalues of H by Lanczos
  subspace_split(fm, theta, x, P, h_sub)   spectra of P^T G P and P^T R P = P^T H P - P^T G P

Fort & Scherlis compare the subspace Tr(H)/||H||_F with the full-space one. For P with i.i.d.
N(0, I/D) columns, E Tr(P^T H P) = d Tr(H)/D and E ||P^T H P||_F^2 = (d Tr(H)^2 + d(d+1)
||H||_F^2)/D^2, so with rho = Tr(H)/||H||_F the subspace ratio is about
`predicted_subspace_ratio` = sqrt(d) rho / sqrt(rho^2 + d + 1): close to rho when d >> rho^2,
saturating at sqrt(d) (the identity's value) when rho^2 >> d.

Everything is traceable (one jit at the caller); probes run one at a time (``lax.map``), each
costing one Hessian-vector product (plus one Gauss-Newton product when ``spec.gn``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from gzone import curvature, flat, projections
from gzone.curvature import gauss_newton, spectra

Array = jax.Array
STREAM = 0x46554C4C  # fold_in constant of the full-space probe stream ("FULL")
STATS = ("trace", "trace_se", "frob", "frob_se", "trace_over_frob", "trace_over_frob_se")
SPLIT_SCALARS = tuple(
    f"{part}_{m}"
    for part in ("gn", "res")
    for m in ("frac_pos", "trace_over_frob", "trace", "frob", "top", "bottom")
)


@dataclasses.dataclass(frozen=True)
class Spec:
    """What to estimate in the full space at each point.

    Attributes:
      num_probes: Rademacher probes for traces and Frobenius norms (0: none; else >= 2).
      top_k: extreme eigenvalues of H per end by Lanczos (0: none).
      order: Lanczos steps (>= 2 top_k when top_k > 0).
      gn: also the Gauss-Newton matrix G and the residual R (same probes).
    """

    num_probes: int = 0
    top_k: int = 0
    order: int = 0
    gn: bool = False

    def __post_init__(self):
        if self.num_probes < 0 or self.num_probes == 1:
            raise ValueError(f"num_probes must be 0 (off) or >= 2, got {self.num_probes}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.top_k and self.order < 2 * self.top_k:
            raise ValueError(f"Lanczos order {self.order} must be >= 2 top_k = {2 * self.top_k}")

    def scalar_names(self) -> tuple[str, ...]:
        """Scalar outputs of `estimates` (``full_*``)."""
        if not self.num_probes:
            return ()
        parts = ("", "gn_", "res_") if self.gn else ("",)
        return tuple(f"full_{p}{s}" for p in parts for s in STATS)

    def array_names(self) -> tuple[str, ...]:
        """[top_k] outputs of `estimates`: ``full_top`` (largest first), ``full_bottom`` (smallest first)."""
        return ("full_top", "full_bottom") if self.top_k else ()


def record_keys(
    *, gn_split: bool, spec: Spec | None
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Keys a scan point adds with these options: (scalars, [d]-vectors, [top_k]-vectors)."""
    scalars, per_d = (SPLIT_SCALARS, ("gn_eigvals", "res_eigvals")) if gn_split else ((), ())
    if spec is None:
        return scalars, per_d, ()
    return scalars + spec.scalar_names(), per_d, spec.array_names()


def predicted_subspace_ratio(rho, d: int):
    """sqrt(d) rho / sqrt(rho^2 + d + 1): the ratio of E Tr(P^T H P) to sqrt(E ||P^T H P||_F^2)
    for Gaussian columns (see the module docstring), from the full-space rho = Tr(H)/||H||_F."""
    return jnp.sqrt(d) * rho / jnp.sqrt(rho**2 + d + 1)


def default_order(top_k: int, D: int) -> int:
    """Lanczos steps for top_k pairs per end: max(30, 4 top_k), at most D."""
    return min(D, max(30, 4 * top_k))


def probe_key(k_init: Array) -> Array:
    """The probe stream of a seed, from its point key (the same probes at every d and metric)."""
    return jax.random.fold_in(k_init, STREAM)


def _stats(t: Array, f: Array, prefix: str) -> dict[str, Array]:
    r = spectra.ratio_from_samples(t, f)
    return {
        f"{prefix}trace": r["trace"],
        f"{prefix}trace_se": r["trace_se"],
        f"{prefix}frob": r["frob"],
        f"{prefix}frob_se": r["frob_sq_se"] / (2.0 * r["frob"]),  # delta method for sqrt
        f"{prefix}trace_over_frob": r["ratio"],
        f"{prefix}trace_over_frob_se": r["ratio_se"],
    }


def estimates(
    key: Array, fm: flat.FlatModel, theta: Array, x: Array, y: Array, *, spec: Spec
) -> dict[str, Array]:
    """Full-space curvature statistics at theta on (x [N, ...], y [N]).

    Per probe v (Rademacher, E v v^T = I): t = v^T A v (E t = Tr A), f = |A v|^2
    (E f = ||A||_F^2) for A = H, and with ``spec.gn`` also A = G and A = R = H - G from the same
    two products H v, G v. `spectra.ratio_from_samples` gives means, standard errors and the
    delta-method error of Tr/||.||_F (consistent, biased by O(1/num_probes)).

    Returns:
      dict: `Spec.scalar_names` scalars (``full_trace``, ``full_trace_over_frob_se``, ...,
      ``full_gn_*``, ``full_res_*``) and, with top_k, ``full_top`` [k] (largest first) and
      ``full_bottom`` [k] (smallest first): Ritz values, inside the spectrum, extreme ones
      converging first.
    """
    mvs = gauss_newton.make_curvature_mvs(fm, theta, x, y)
    k_probe, k_lanczos = jax.random.split(key)
    out = {}
    if spec.num_probes:

        def one(k):
            v = jax.random.rademacher(k, (fm.D,), theta.dtype)
            hv = mvs["hessian"](v)
            s = [jnp.vdot(v, hv), jnp.vdot(hv, hv)]
            if spec.gn:
                gv = mvs["gauss_newton"](v)
                rv = hv - gv
                s += [jnp.vdot(v, gv), jnp.vdot(gv, gv), jnp.vdot(v, rv), jnp.vdot(rv, rv)]
            return jnp.stack(s)

        samples = jax.lax.map(one, jax.random.split(k_probe, spec.num_probes))  # [P, 2 or 6]
        out.update(_stats(samples[:, 0], samples[:, 1], "full_"))
        if spec.gn:
            out.update(_stats(samples[:, 2], samples[:, 3], "full_gn_"))
            out.update(_stats(samples[:, 4], samples[:, 5], "full_res_"))
    if spec.top_k:
        values, _ = spectra.extreme_eigs(
            k_lanczos,
            mvs["hessian"],
            dim=fm.D,
            k=spec.top_k,
            order=spec.order,
            which="both",
            dtype=theta.dtype,
        )
        out["full_bottom"], out["full_top"] = values[: spec.top_k], values[spec.top_k :]
    return out


def subspace_split(
    fm: flat.FlatModel,
    theta: Array,
    x: Array,
    P: projections.Projection,
    h_sub: Array,
    *,
    chunk_size: int | None = None,
) -> dict[str, Array]:
    """Spectra of the Gauss-Newton and residual parts of the subspace Hessian h_sub = P^T H P.

    P^T G P is computed like P^T H P (`curvature.subspace_matrix` over the Gauss-Newton product,
    exact); P^T R P = h_sub - P^T G P.

    Returns:
      dict: ``gn_*`` and ``res_*`` for * in frac_pos, trace_over_frob, trace, frob, top, bottom
      (scalars; `SPLIT_SCALARS`) and ``gn_eigvals``, ``res_eigvals`` [d] ascending.
    """
    g_sub = curvature.subspace_matrix(
        gauss_newton.make_gauss_newton_mv(fm, theta, x), P, chunk_size=chunk_size
    )
    return split_metrics(h_sub, g_sub)


def split_metrics(h_sub: Array, g_sub: Array) -> dict[str, Array]:
    """`subspace_split`'s metrics of given P^T H P and P^T G P [d, d] (e.g. sums over example chunks)."""
    out = {}
    for part, m in (("gn", g_sub), ("res", h_sub - g_sub)):
        spec = curvature.spectrum_metrics(m)
        out.update({
            f"{part}_{k}": spec[k] for k in ("frac_pos", "trace_over_frob", "trace", "frob", "top", "bottom")
        })
        out[f"{part}_eigvals"] = spec["eigvals"]
    return out
