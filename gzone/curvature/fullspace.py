"""Full-space curvature at a scan point, and the Gauss-Newton / residual split of a subspace Hessian.

At a point theta on fixed examples (x, y), with H = G + R (`gauss_newton`: G = J^T H_CE J,
R the residual):

  estimates(key, fm, theta, x, y, spec=)   full-space Tr/||.||_F of H (and of G and R) by
                                           Rademacher probes, with standard errors; the top and
                                           bottom k eigenvalues of H by Lanczos; the SLQ
                                           quadrature of H's spectral density (nodes, weights)
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
DENSITY_STREAM = 0x534C51  # fold_in constant of the density probes within it ("SLQ")
DENSITY_KEYS = ("density_nodes", "density_weights")  # [probe, node] each
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
      density_probes: Rademacher probes of the SLQ spectral density of H (0: none).
      density_order: Lanczos steps per density probe (>= 1 with density_probes).
    """

    num_probes: int = 0
    top_k: int = 0
    order: int = 0
    gn: bool = False
    density_probes: int = 0
    density_order: int = 0

    def __post_init__(self):
        if self.num_probes < 0 or self.num_probes == 1:
            raise ValueError(f"num_probes must be 0 (off) or >= 2, got {self.num_probes}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.top_k and self.order < 2 * self.top_k:
            raise ValueError(f"Lanczos order {self.order} must be >= 2 top_k = {2 * self.top_k}")
        if self.density_probes < 0 or (self.density_probes and self.density_order < 1):
            raise ValueError(
                f"density_probes must be >= 0 and density_order >= 1 with probes, got "
                f"{self.density_probes}, {self.density_order}"
            )

    def scalar_names(self) -> tuple[str, ...]:
        """Scalar outputs of `estimates` (``full_*``)."""
        if not self.num_probes:
            return ()
        parts = ("", "gn_", "res_") if self.gn else ("",)
        return tuple(f"full_{p}{s}" for p in parts for s in STATS)

    def array_names(self) -> tuple[str, ...]:
        """[top_k] outputs of `estimates`: ``full_top`` (largest first), ``full_bottom`` (smallest first)."""
        return ("full_top", "full_bottom") if self.top_k else ()

    def density_names(self) -> tuple[str, ...]:
        """[density_probes, density_order] outputs of `estimates`: `DENSITY_KEYS`."""
        return DENSITY_KEYS if self.density_probes else ()


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
      converging first; with density_probes, ``density_nodes`` and ``density_weights``
      [density_probes, density_order]: the Gauss quadrature of each probe's Lanczos run
      (`spectra.slq`, probes from fold_in(key, DENSITY_STREAM): adding them leaves the other
      estimates' probes as they were). Memory: one [density_order, D] Krylov basis at a time.
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
    if spec.density_probes:
        out["density_nodes"], out["density_weights"] = spectra.slq(
            jax.random.fold_in(key, DENSITY_STREAM),
            mvs["hessian"],
            dim=fm.D,
            order=spec.density_order,
            num_probes=spec.density_probes,
            dtype=theta.dtype,
        )
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
