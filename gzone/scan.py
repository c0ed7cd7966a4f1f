"""Radius scans (Fort & Scherlis 2019): points at radius r, the exact subspace Hessian there.

For one seed, `make_point_fn` gives a pure function

    point_fn(k_init, k_proj, radius, x, y) -> metrics

that draws a point theta with |theta| = radius by a named convention, a random d-dimensional
subspace through it, and measures loss, accuracy, gradient norm and radial part, and the exact
subspace Hessian's spectrum on the fixed examples (x, y). `make_unit_fn` runs S seeds as one
compiled computation (``vmap`` or ``lax.map`` over seeds) and can shard the seed axis over all
devices. Radii and keys are data; d, the model, the projection kind are static (one compile
per d).

Options of `make_point_fn` (off by default): a per-layer metric on P (`layer_metric`), the
Gauss-Newton / residual split of the subspace Hessian and full-space estimates (`fullspace`).

Point conventions:
  * ``xavier_rescaled``: a Xavier-normal sample (zero biases) scaled to |theta| = r;
  * ``isotropic``: a Gaussian over all D coordinates scaled to |theta| = r;
  * ``scaled_init``: alpha times an init sample with alpha = r / r_X, so |theta| ~ r.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as PS

from gzone import curvature, flat, fullspace, layer_metric, projections

Array = jax.Array
POINT_CONVENTIONS = ("xavier_rescaled", "isotropic", "scaled_init")
SEED_MODES = ("vmap", "map")
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


SEED_WORKLOADS = ("train", "scan")


def default_seed_mode(backend: str | None = None, workload: str = "train") -> str:
    """How seeds run by default: ``vmap`` on GPU/TPU (one small problem cannot fill them).

    On CPU it depends on the workload (BENCHMARKS.md, section 6, timed calls interleaved):
    training (``train``: a `lax.scan` of small-batch steps per seed) runs ~2.3x faster with the
    seeds mapped one after another (``map``); a radius-scan unit (``scan``: gradient, d HVPs and
    an eigendecomposition per seed) ran 1.05-1.19x faster vmapped at three sizes and 4 % slower at
    one, so it vmaps there too.
    """
    if workload not in SEED_WORKLOADS:
        raise ValueError(f"workload {workload!r} unknown; allowed: {', '.join(SEED_WORKLOADS)}")
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu":
        return "vmap"
    return "vmap" if workload == "scan" else "map"


def point_at_radius(
    key: Array,
    radius: Array,
    *,
    convention: str,
    sample_fn: Callable[[Array], Array],
    D: int,
    r_x: float,
    dtype=jnp.float32,
) -> Array:
    """A point theta [D] at radius `radius` by a named convention (see module docstring).

    Args:
      key: PRNG key of the direction (the same key gives the same direction at every radius).
      radius: target radius r (scalar, data).
      convention: one of POINT_CONVENTIONS.
      sample_fn: key -> flat init sample [D] (Xavier for ``xavier_rescaled``; the chosen
        init for ``scaled_init``).
      D: number of parameters.
      r_x: the Xavier radius, for ``scaled_init``'s alpha = r / r_X.
    """
    if convention == "isotropic":
        g = jax.random.normal(key, (D,), dtype)
        return radius * g / jnp.linalg.norm(g)
    sample = sample_fn(key).astype(dtype)
    if convention == "xavier_rescaled":
        return radius * sample / jnp.linalg.norm(sample)
    if convention == "scaled_init":
        return (radius / r_x) * sample
    raise ValueError(f"point convention {convention!r} unknown; allowed: {', '.join(POINT_CONVENTIONS)}")


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
    if convention not in POINT_CONVENTIONS:
        raise ValueError(f"point convention {convention!r} unknown; allowed: {', '.join(POINT_CONVENTIONS)}")
    if projection not in projections.KINDS:
        raise ValueError(f"projection {projection!r} unknown; allowed: {', '.join(projections.KINDS)}")
    if not 1 <= d <= fm.D:
        raise ValueError(f"d={d} must be in [1, D={fm.D}]")
    make_P = layer_metric.make_projection_fn(
        fm, d=d, kind=projection, metric=metric, renormalise=renormalise, dtype=dtype
    )

    def point_fn(k_init, k_proj, radius, x, y):
        theta = point_at_radius(
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


def map_seeds(fn: Callable, mode: str, per_seed: int = 2) -> Callable:
    """fn(*seed_args, *shared) for one seed -> the same over a leading seed axis.

    The first `per_seed` arguments (pytrees: keys, states, subspaces) carry the seed axis;
    the rest are shared. ``vmap`` batches the seeds; ``map`` runs them one after another
    inside one compiled computation (`lax.map`).
    """
    if mode not in SEED_MODES:
        raise ValueError(f"seed mode {mode!r} unknown; allowed: {', '.join(SEED_MODES)}")

    def over_seeds(*args):
        seeded, shared = args[:per_seed], args[per_seed:]
        if mode == "vmap":
            return jax.vmap(lambda *s: fn(*s, *shared))(*seeded)
        return jax.lax.map(lambda s: fn(*s, *shared), seeded)

    return over_seeds


def make_unit_fn(
    point_fn: Callable, *, seed_mode: str, devices: list | None = None
) -> Callable[..., dict[str, Array]]:
    """S seeds as one jit-compiled computation.

    Args:
      point_fn: the single-seed function of `make_point_fn`.
      seed_mode: ``vmap`` or ``map`` over the seeds on each device.
      devices: devices to shard the seed axis over (``shard_map``); None or one device: no
        sharding. The seed count is padded to a multiple of the device count (extra seeds are
        computed and dropped).

    Returns:
      unit_fn(k_init [S], k_proj [S], radius, x, y) -> dict of arrays with leading axis S.
    """
    local = map_seeds(point_fn, seed_mode)
    if not devices or len(devices) == 1:
        return jax.jit(local)
    mesh = Mesh(np.asarray(devices), ("seeds",))
    sharded = jax.jit(
        jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(PS("seeds"), PS("seeds"), PS(), PS(), PS()),
            out_specs=PS("seeds"),
        )
    )
    n = len(devices)

    def unit_fn(k_init, k_proj, radius, x, y):
        S = k_init.shape[0]
        pad = (-S) % n
        if pad:  # repeat seeds cyclically (pad may exceed S, e.g. S = 1 on 4 devices)
            index = jnp.arange(S + pad) % S
            k_init, k_proj = k_init[index], k_proj[index]
        seeds = NamedSharding(mesh, PS("seeds"))
        k_init, k_proj = jax.device_put(k_init, seeds), jax.device_put(k_proj, seeds)
        out = sharded(k_init, k_proj, radius, x, y)
        return jax.tree_util.tree_map(lambda a: a[:S], out)

    return unit_fn


@dataclasses.dataclass(frozen=True)
class SeedKeys:
    """Named key streams of a scan, derived once from the root key.

    Seed s draws its point direction from fold_in(k_init, s) (the same at every radius and d)
    and its d-dimensional subspace from fold_in(fold_in(k_proj, d), s) (the same at every
    radius). k_data picks the fixed examples; seed s of a training run orders its batches
    with fold_in(k_train, s).
    """

    k_init: Array
    k_proj: Array
    k_data: Array
    k_train: Array

    @classmethod
    def from_seed(cls, seed: int) -> "SeedKeys":
        k_init, k_proj, k_data, k_train = jax.random.split(jax.random.key(seed), 4)
        return cls(k_init, k_proj, k_data, k_train)

    def train_keys(self, num_seeds: int) -> Array:
        return jax.vmap(lambda s: jax.random.fold_in(self.k_train, s))(jnp.arange(num_seeds))

    def init_keys(self, num_seeds: int) -> Array:
        return jax.vmap(lambda s: jax.random.fold_in(self.k_init, s))(jnp.arange(num_seeds))

    def proj_keys(self, d: int, num_seeds: int) -> Array:
        k_d = jax.random.fold_in(self.k_proj, d)
        return jax.vmap(lambda s: jax.random.fold_in(k_d, s))(jnp.arange(num_seeds))


def pick_examples(key: Array, n_available: int, n: int) -> np.ndarray:
    """Indices of the fixed examples used for loss and Hessian (sorted, without replacement)."""
    if not 1 <= n <= n_available:
        raise ValueError(f"number of examples {n} must be in [1, {n_available}]")
    return np.sort(np.asarray(jax.random.permutation(key, n_available)[:n]))
