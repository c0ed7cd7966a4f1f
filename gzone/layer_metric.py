"""Per-layer metrics on random projections (Fort & Scherlis 2019) and the layer split of directions.

Fort & Scherlis map the projection M -> eta M, eta diagonal with "eta_ii proportional to 1/r_i",
to account for the layers' different initialisation radii; the paper does not say what r_i is.
The named variants (`METRICS`) give eta one value per parameter array, from the Xavier-normal
initialisation of the layer l owning it (kernel of n_l entries, fans from `models.fans`):

  none               eta = 1
  inv_layer_radius   1 / R_l       R_l = sqrt(n_l * 2 / (fan_in + fan_out)), the layer's Xavier
  layer_radius       R_l           radius (`models.layer_xavier_radii`)
  inv_std            1 / sigma_l   sigma_l = sqrt(2 / (fan_in + fan_out)), the per-parameter
  std                sigma_l       Xavier std (`models.xavier_std_tree`)
  sqrt_layer_radius  sqrt(R_l)

Biases are initialised to zero (Xavier std 0, so 1/sigma is undefined there): a bias takes its
own layer's kernel value. Normalisation: eta is scaled so that mean_i eta_i^2 = 1 over the D
coordinates, so a column spread evenly over theta keeps its expected squared length (eta = 1
exactly for ``none``). frac+ and Tr(H)/||H||_F of P^T H P do not change under P -> c P, so only
eta's shape matters for them. ``renormalise`` then divides each column of diag(eta) P by its
length: P_eta = diag(eta) P diag(1 / |diag(eta) P e_j|), unit columns.

The layer split of a projection: for each column, the fraction of |P e_j|^2 in each parameter
array (segment of theta), `column_segment_fractions` [d, S]; its mean over the columns,
`segment_fractions` [S], is what the radius scan records.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from gzone import flat, models, projections

Array = jax.Array
METRICS = ("none", "inv_layer_radius", "layer_radius", "inv_std", "std", "sqrt_layer_radius")


def _kernel_value(name: str, shape: tuple[int, ...]) -> float:
    fan_in, fan_out = models.fans(shape)
    std = math.sqrt(2.0 / (fan_in + fan_out))
    radius = std * math.sqrt(float(np.prod(shape)))
    return {
        "none": 1.0,
        "inv_layer_radius": 1.0 / radius,
        "layer_radius": radius,
        "inv_std": 1.0 / std,
        "std": std,
        "sqrt_layer_radius": math.sqrt(radius),
    }[name]


def segment_scales(fm: flat.FlatModel, name: str) -> np.ndarray:
    """eta's value on each parameter array of theta (`fm.segments` order), normalised.

    Args:
      fm: the flat model (its segments name the layers and shapes).
      name: one of METRICS.

    Returns:
      [num_segments] float64 with sum_s size_s eta_s^2 = D (mean eta_i^2 = 1 over theta).

    Raises:
      ValueError: unknown name, or (for a metric other than ``none``) a layer without a ``kernel``
        array (e.g. a LayerNorm or BatchNorm layer: its scales and offsets have no Xavier scale).
    """
    if name not in METRICS:
        raise ValueError(f"projection metric {name!r} unknown; allowed: {', '.join(METRICS)}")
    if name == "none":
        return np.ones(len(fm.segments), np.float64)
    kernels = {s.layer: s.shape for s in fm.segments if s.name.endswith("/kernel")}
    missing = sorted({s.layer for s in fm.segments} - set(kernels))
    if missing:
        raise ValueError(f"layers without a kernel have no Xavier scale: {', '.join(missing)}")
    values = np.array([_kernel_value(name, kernels[s.layer]) for s in fm.segments], np.float64)
    sizes = np.array([s.size for s in fm.segments], np.float64)
    return values * math.sqrt(fm.D / np.sum(sizes * values**2))


def row_scale(fm: flat.FlatModel, name: str, dtype=jnp.float32) -> Array:
    """eta [D], constant on each parameter array.

    Built as a concatenation of broadcast scalars, which XLA leaves alone (``jnp.repeat`` makes a
    [D] index constant that XLA spends seconds constant-folding at D ~ 2e5).
    """
    values = segment_scales(fm, name)
    return jnp.concatenate([jnp.full((s.size,), v, dtype) for s, v in zip(fm.segments, values)])


def apply(
    P: projections.Projection, fm: flat.FlatModel, *, metric: str, renormalise: bool
) -> projections.Projection:
    """diag(eta) P, with unit columns when ``renormalise``; P itself for ``none`` without it.

    Returns:
      A `projections.Scaled` (row_scale eta [D], col_scale 1 or 1/|diag(eta) P e_j| [d]), or P
      unchanged when there is nothing to do (so default runs are bitwise what they were).
    """
    if metric == "none" and not renormalise:
        segment_scales(fm, metric)  # validates the name
        return P
    dtype = next(a.dtype for a in jax.tree_util.tree_leaves(P) if jnp.issubdtype(a.dtype, jnp.floating))
    eta = row_scale(fm, metric, dtype)
    scaled = projections.Scaled(P, eta, jnp.ones(P.shape[1], dtype))
    if not renormalise:
        return scaled
    norms = jnp.sqrt(projections.column_sq_norms(scaled))
    return projections.Scaled(P, eta, 1.0 / jnp.where(norms > 0, norms, 1.0))


def make_projection_fn(
    fm: flat.FlatModel,
    *,
    d: int,
    kind: str,
    metric: str = "none",
    renormalise: bool = False,
    dtype=jnp.float32,
):
    """key -> the scan's projection: `projections.make` then `apply` (one definition for both uses)."""
    segment_scales(fm, metric)  # fail early on a bad name

    def fn(key: Array) -> projections.Projection:
        P = projections.make(kind, key, D=fm.D, d=d, dtype=dtype)
        return apply(P, fm, metric=metric, renormalise=renormalise)

    return fn


def column_segment_fractions(P: projections.Projection, fm: flat.FlatModel) -> Array:
    """[d, S]: fraction of |P e_j|^2 in each parameter array (rows sum to 1; NaN for a zero column).

    Cost: d columns of [D] formed one at a time (``lax.map``), static slices per segment.
    """

    def one(j):
        c = projections.column(P, j)
        sq = jnp.stack([jnp.sum(jax.lax.dynamic_slice_in_dim(c, s.start, s.size) ** 2) for s in fm.segments])
        return sq / jnp.sum(sq)

    return jax.lax.map(one, jnp.arange(P.shape[1]))


def segment_fractions(P: projections.Projection, fm: flat.FlatModel) -> Array:
    """[S]: the mean over P's columns of `column_segment_fractions` (sums to 1)."""
    return jnp.mean(column_segment_fractions(P, fm), axis=0)


def seed_fractions(
    k_proj: Array, fm: flat.FlatModel, *, d: int, kind: str, metric: str, renormalise: bool, dtype=jnp.float32
) -> np.ndarray:
    """[S, num_segments] `segment_fractions` of the projections drawn from keys k_proj [S]
    (`make_projection_fn`, so exactly the scan's P of each seed). One jit per call; seeds one
    after another (``lax.map``: one P in memory, e.g. 80 MB for a dense P at D = 2e5, d = 100)."""
    make_P = make_projection_fn(fm, d=d, kind=kind, metric=metric, renormalise=renormalise, dtype=dtype)
    return np.asarray(
        jax.jit(lambda keys: jax.lax.map(lambda k: segment_fractions(make_P(k), fm), keys))(k_proj)
    )
