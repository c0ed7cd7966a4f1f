"""One point measurement: loss, accuracy, gradient and the exact subspace Hessian's spectrum.

For one seed, `make_point_fn` gives a pure function

    point_fn(k_init, k_proj, radius, x, y) -> metrics

that draws a point theta with |theta| = radius by a named convention (`subspace.point_at_radius`),
a random d-dimensional subspace through it, and measures loss, accuracy, gradient norm and radial
part, and the exact subspace Hessian's spectrum on the fixed examples (x, y). Radii and keys are
data; d, the model, the projection kind are static (one compile per d).

Options of `make_point_fn` (off by default): a per-layer metric on P (`layer_metric`), the
Gauss-Newton / residual split of the subspace Hessian and full-space estimates (`fullspace`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gzone import curvature, flat, layer_metric, projections, subspace
from gzone.curvature import fullspace

Array = jax.Array
SCALAR_METRICS = (
    "loss",
    "accuracy",
    "grad_norm",
    "grad_radial",
    "radius",
    "frac_pos",
    "trace_over_frob",
    "trace",
    "frob",
    "top",
    "bottom",
)


def make_point_fn(
    fm: flat.FlatModel,
    *,
    d: int,
    projection: str,
    convention: str,
    sample_fn: Callable[[Array], Array],
    r_x: float,
    dtype=jnp.float32,
    hessian_method: str = "linearize_map",
    chunk_size: int | None = None,
    metric: str = "none",
    renormalise: bool = False,
    gn_split: bool = False,
    fullspace_spec: fullspace.Spec | None = None,
) -> Callable[..., dict[str, Array]]:
    """Single-seed measurement at one radius.

    Args:
      metric, renormalise: the per-layer metric on P (`layer_metric.apply`; ``none`` and False
        leave P as `projections.make` draws it).
      gn_split: also the Gauss-Newton and residual parts of P^T H P (`fullspace.subspace_split`).
      fullspace_spec: also full-space estimates at the point (`fullspace.estimates`), probes
        from `fullspace.probe_key` (k_init): the same at every d and metric.

    Returns:
      point_fn(k_init, k_proj, radius, x, y) -> dict with the SCALAR_METRICS (scalars) and
      ``eigvals`` [d]; x: [n, ...] and y: [n] are the fixed examples of the loss. With the
      options: ``gn_*``/``res_*`` (`fullspace.SPLIT_SCALARS`, ``gn_eigvals``, ``res_eigvals``
      [d]) and ``full_*`` (`fullspace.Spec.scalar_names`, ``full_top``/``full_bottom`` [k]).
    """
    if convention not in subspace.POINT_CONVENTIONS:
        raise ValueError(f"point convention {convention!r} unknown; allowed: {', '.join(subspace.POINT_CONVENTIONS)}")
    if projection not in projections.KINDS:
        raise ValueError(f"projection {projection!r} unknown; allowed: {', '.join(projections.KINDS)}")
    if not 1 <= d <= fm.D:
        raise ValueError(f"d={d} must be in [1, D={fm.D}]")
    make_P = layer_metric.make_projection_fn(
        fm, d=d, kind=projection, metric=metric, renormalise=renormalise, dtype=dtype
    )

    def point_fn(k_init, k_proj, radius, x, y):
        theta = subspace.point_at_radius(
            k_init, radius, convention=convention, sample_fn=sample_fn, D=fm.D, r_x=r_x, dtype=dtype
        )
        P = make_P(k_proj)
        f = flat.loss_fn(fm, x, y)
        value, grad = jax.value_and_grad(f)(theta)
        h = curvature.subspace_hessian(f, theta, P, method=hessian_method, chunk_size=chunk_size)
        spec = curvature.spectrum_metrics(h)
        norm = jnp.linalg.norm(theta)
        out = {
            "loss": value,
            "accuracy": flat.accuracy(fm, theta, x, y),
            "grad_norm": jnp.linalg.norm(grad),
            "grad_radial": jnp.vdot(grad, theta) / norm,
            "radius": norm,
            **{k: spec[k] for k in ("frac_pos", "trace_over_frob", "trace", "frob", "top", "bottom")},
            "eigvals": spec["eigvals"],
        }
        if gn_split:
            out.update(fullspace.subspace_split(fm, theta, x, P, h, chunk_size=chunk_size))
        if fullspace_spec is not None:
            out.update(fullspace.estimates(fullspace.probe_key(k_init), fm, theta, x, y, spec=fullspace_spec))
        return out

    return point_fn
