"""gzone's CPU kernels in C++ (gzone/_native.cc), called from jitted code through the XLA FFI.

XLA:CPU compiles the Walsh-Hadamard transform as one pass over x per radix-4 stage (9 passes at
length 2^20, each out of cache). The native kernel does it in two cache-sized passes (timings:
BUILD_NOTES.md, Performance). `gzone.projection_kernels` uses it on CPU when it is built and
enabled, through `lax.platform_dependent`, so code lowered for an accelerator never sees it;
elsewhere and otherwise it runs its plain-jnp form.

  available()      the extension is built and importable
  enabled()        available() and not switched off (GZONE_NATIVE=0 in the environment, or
                   `use(False)`); read when a function is traced
  use(flag)        switch the kernels on or off (and clear JAX's caches, so jitted functions
                   are traced again)
  fwht(x, length), gather_fwht(w, perm, gauss), sell_sum(x, idx, off, perm, outputs, block)
                   the kernels (CPU only; float32 or float64), as in gzone/_native.cc and
                   gzone/sell.py

They round differently from the jnp transform (another butterfly order; the same algebra).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

try:
    from gzone import _native
except ImportError:  # not built (no C++ compiler at install time)
    _native = None

_switch = os.environ.get("GZONE_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def available() -> bool:
    return _native is not None


def enabled() -> bool:
    return _switch and available()


def use(flag: bool) -> None:
    """Switch the native kernels on or off. Clears JAX's compilation caches (`jax.clear_caches`),
    so that jitted functions are traced again with the new choice."""
    global _switch
    if bool(flag) != _switch:
        _switch = bool(flag)
        jax.clear_caches()


@functools.lru_cache(maxsize=None)
def _registered() -> bool:
    for name, capsule in _native.targets().items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    return True


def _call(name: str, out: jax.ShapeDtypeStruct, *args, vmap_method: str = "expand_dims",
          **attrs) -> jax.Array:
    if not available():
        raise RuntimeError("gzone's native kernels are not built (reinstall with a C++17 compiler)")
    _registered()
    return jax.ffi.ffi_call(name, out, vmap_method=vmap_method)(*args, **attrs)


def fwht(x: jax.Array, length: int | None = None) -> jax.Array:
    """Unnormalised Walsh-Hadamard transform along the last axis of x zero-padded to `length` (a
    power of two, default x's length): H pad(x)."""
    L = x.shape[-1] if length is None else int(length)
    return _call("gzone_fwht", jax.ShapeDtypeStruct((*x.shape[:-1], L), x.dtype), x)


def gather_fwht(w: jax.Array, perm: jax.Array, gauss: jax.Array) -> jax.Array:
    """H u with u[t] = w[perm[t] mod m] gauss[t] (w: [m], m a power of two; perm int32 and gauss:
    [L]); leading axes broadcast."""
    batch = jnp.broadcast_shapes(w.shape[:-1], perm.shape[:-1], gauss.shape[:-1])
    return _call("gzone_gather_fwht", jax.ShapeDtypeStruct((*batch, perm.shape[-1]), w.dtype), w, perm, gauss)


def sell_sum(x: jax.Array, idx: jax.Array, off: jax.Array, perm: jax.Array, *, outputs: int,
             block: int) -> jax.Array:
    """y [outputs] from x [n] and a `gzone.sell.Sell` layout (idx uint16, off and perm int32);
    under vmap, one call per batch element."""
    return _call("gzone_sell_sum", jax.ShapeDtypeStruct((int(outputs),), x.dtype), x,
                 idx.astype(jnp.uint16), off.astype(jnp.int32), perm.astype(jnp.int32),
                 vmap_method="sequential", block=np.int64(block))
