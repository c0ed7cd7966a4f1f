"""Seeds: named key streams, seeds as ``vmap`` or ``lax.map``, the seed axis sharded over devices.

SeedKeys.from_seed(seed)         the run's root key split once into named streams
map_seeds(fn, mode, per_seed=)   a single-seed function -> the same over a leading seed axis
shard_seeds(fn, per_seed=, devices=)   a seed-axis function with the axis sharded over a device mesh
make_unit_fn(point_fn, ...)      S seeds of a scan point as one compiled computation, optionally sharded
default_seed_mode(workload=)     vmap or map by backend and workload (BENCHMARKS.md)
pick_examples(key, n_avail, n)   the fixed examples of a measurement
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as PS

Array = jax.Array
SEED_MODES = ("vmap", "map")
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


def shard_seeds(fn: Callable, *, per_seed: int, devices: list | None) -> Callable:
    """A function over a leading seed axis with that axis sharded over `devices` (traceable: jit the caller).

    Args:
      fn: f(*seed_args, *shared) -> pytree, its first `per_seed` arguments (pytrees, None allowed)
        and its outputs carrying the seed axis [S, ...] (e.g. `map_seeds`' result); the shared
        arguments are arrays or pytrees of arrays (close over static values).
      per_seed: how many leading arguments carry the seed axis.
      devices: local devices forming a 1-D mesh named ``seeds`` (``shard_map``); None or one
        device: `fn` itself. S is padded to a multiple of the device count by repeating seeds
        cyclically (the extra seeds are computed and dropped).
    """
    if not devices or len(devices) == 1:
        return fn
    mesh = Mesh(np.asarray(devices), ("seeds",))
    n = len(devices)

    def call(*args):
        seeded, shared = args[:per_seed], args[per_seed:]
        S = next(leaf.shape[0] for leaf in jax.tree_util.tree_leaves(seeded))
        pad = (-S) % n
        if pad:  # repeat seeds cyclically (pad may exceed S, e.g. S = 1 on 4 devices)
            index = jnp.arange(S + pad) % S
            seeded = jax.tree_util.tree_map(lambda a: a[index], seeded)
        specs = (*(PS("seeds"),) * per_seed, *(PS(),) * len(shared))
        out = jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=PS("seeds"))(*seeded, *shared)
        return jax.tree_util.tree_map(lambda a: a[:S], out)

    return call


def make_unit_fn(
    point_fn: Callable, *, seed_mode: str, devices: list | None = None
) -> Callable[..., dict[str, Array]]:
    """S seeds of the radius scan's point function as one jit-compiled computation.

    Args:
      point_fn: the single-seed function of `measure.make_point_fn`.
      seed_mode: ``vmap`` or ``map`` over the seeds on each device.
      devices: local devices to shard the seed axis over (`shard_seeds`); None or one device: none.

    Returns:
      unit_fn(k_init [S], k_proj [S], radius, x, y) -> dict of arrays with leading axis S. It compiles
      once: the radius is data, so every radius of a scan reuses the program (tests/test_scan.py
      guards this with `chex.assert_max_traces`).
    """
    return jax.jit(shard_seeds(map_seeds(point_fn, seed_mode), per_seed=2, devices=devices))


def local_devices_if_several(shard: bool = True) -> list | None:
    """This process's devices when there are several (and `shard`), else None (no mesh)."""
    devices = jax.local_devices()
    return devices if shard and len(devices) > 1 else None


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
