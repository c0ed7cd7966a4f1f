"""Random projections P: R^d -> R^D and their transposes P^T: R^D -> R^d.

Three kinds, each a pytree (so a projection can be built inside jit/vmap from a key and passed
as an argument to jitted functions, never closed over as a compiled-in constant):

  * `Dense`: a Gaussian [D, d] matrix with orthonormalised columns (reduced QR).
    Memory O(D d): 25 GB at D = 656,810, d = 10^4 in float32; use it for small d.
  * `Sparse`: in `jax.experimental.sparse.BCOO` layout [D, d] (``P.mat`` is the BCOO). ``make_sparse``: each entry
    is nonzero with probability 1/sqrt(D) (the Chang / Li et al. convention), value +-1, then
    each column divided by its norm (exactly unit columns). ``make_sparse_fixed``: exactly k
    nonzeros per column. Memory O(d sqrt(D)).
  * `Fastfood`: P = scale * S H G Pi H B (Le et al.; Li et al. 2018) with H the Walsh-Hadamard
    transform (O(L log L), jnp ops), B random signs, Pi a permutation, G Gaussian, inputs
    zero-padded to L = 2^ceil(log2 D) and outputs truncated to D rows (S). Columns have unit
    norm in expectation. Memory O(D).

`apply(P, z)` computes P z ([d] -> [D]); `apply_T(P, v)` computes P^T v ([D] -> [d]).
`Scaled` wraps any of them as diag(row_scale) P diag(col_scale) (per-layer metrics).

`jax.experimental.sparse` is experimental and no longer actively developed; it stays behind
this module. The sparse products are computed from the BCOO's own index/data arrays by a
gather (P^T v) and a scatter-add (P z), which `BCOO @` is tested against (`impl='bcoo'`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

KINDS = ("sparse", "sparse_fixed", "dense", "fastfood")
# Signs and rows are drawn in float32 whatever jax_enable_x64 says, so a key gives the same sparse
# pattern and signs in a float32 and a float64 process (a bare 0.5 would draw float64 under x64).
SIGN_P = np.float32(0.5)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Dense:
    """P as a dense matrix. matrix: [D, d] with orthonormal columns."""

    matrix: jax.Array

    @property
    def shape(self):
        return self.matrix.shape


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Sparse:
    """P in BCOO layout [D, d]: nonzeros stored column by column, K slots per column.

    Slot k of column j is entry ``j*K + k`` of ``data``/``rows``; unused slots hold the value 0
    (at a valid row), so the matrix is exact as it stands. ``mat`` gives the
    `jax.experimental.sparse.BCOO` view. The arrays are stored rather than a BCOO object
    because a BCOO's shape is static metadata that includes vmapped batch dimensions: a BCOO
    built under `vmap` cannot be sliced back per seed by `lax.map` or a second `vmap`.
    """

    data: jax.Array  # [d*K] values
    rows: jax.Array  # [d*K] int32 row of each value
    D: int = dataclasses.field(metadata=dict(static=True))
    d: int = dataclasses.field(metadata=dict(static=True))
    K: int = dataclasses.field(metadata=dict(static=True))

    @property
    def shape(self):
        return (self.D, self.d)

    @property
    def mat(self) -> sparse.BCOO:
        cols = jnp.repeat(jnp.arange(self.d, dtype=jnp.int32), self.K)
        return sparse.BCOO((self.data, jnp.stack([self.rows, cols], axis=-1)), shape=(self.D, self.d))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Fastfood:
    """P z = scale * (H G Pi H B pad_L(z))[:D].

    signs: [L] B's diagonal (+-1); perm: [L] Pi as an index array (x -> x[perm]);
    inv_perm: [L] its inverse; gauss: [L] G's diagonal; scale: [] 1/sqrt(D |G|^2).
    """

    signs: jax.Array
    perm: jax.Array
    inv_perm: jax.Array
    gauss: jax.Array
    scale: jax.Array
    D: int = dataclasses.field(metadata=dict(static=True))
    d: int = dataclasses.field(metadata=dict(static=True))

    @property
    def shape(self):
        return (self.D, self.d)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Scaled:
    """diag(row_scale) P diag(col_scale). row_scale: [D]; col_scale: [d]."""

    base: Union[Dense, Sparse, Fastfood]
    row_scale: jax.Array
    col_scale: jax.Array

    @property
    def shape(self):
        return self.base.shape


Projection = Union[Dense, Sparse, Fastfood, Scaled]


# --------------------------------------------------------------------------- construction


def make(kind: str, key: jax.Array, *, D: int, d: int, dtype=jnp.float32) -> Projection:
    """Builds a projection of a named kind (one of KINDS). Works under jit and vmap over key."""
    if kind not in KINDS:
        raise ValueError(f"projection kind {kind!r} unknown; allowed: {', '.join(KINDS)}")
    if not 1 <= d <= D:
        raise ValueError(f"subspace dimension d={d} must be in [1, D={D}]")
    if kind == "dense":
        return make_dense(key, D=D, d=d, dtype=dtype)
    if kind == "sparse":
        return make_sparse(key, D=D, d=d, dtype=dtype)
    if kind == "sparse_fixed":
        return make_sparse_fixed(key, D=D, d=d, dtype=dtype)
    return make_fastfood(key, D=D, d=d, dtype=dtype)


def make_dense(key: jax.Array, *, D: int, d: int, dtype=jnp.float32) -> Dense:
    """Gaussian [D, d] then reduced QR: exactly orthonormal columns. Cost O(D d^2)."""
    gauss = jax.random.normal(key, (D, d), dtype)
    q, r = jnp.linalg.qr(gauss, mode="reduced")
    # Fix QR's sign ambiguity so the result is a deterministic function of the Gaussian draw.
    q = q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(dtype)[None, :]
    return Dense(q)


def sparse_capacity(D: int, density: float) -> int:
    """Slots per column for Bernoulli(density) columns: mean + 8 std + 8.

    The chance that a column needs more (and is cut short) is below 1e-14.
    """
    mean = D * density
    return int(min(D, math.ceil(mean + 8.0 * math.sqrt(mean * (1.0 - density)) + 8)))


def make_sparse(
    key: jax.Array, *, D: int, d: int, density: float | None = None, dtype=jnp.float32
) -> Sparse:
    """Each entry nonzero with probability `density` (default 1/sqrt(D)), +-1, unit columns.

    The nonzero rows of a column are drawn as a Bernoulli process: gaps between successive
    nonzero rows are i.i.d. Geometric(density), so each row is nonzero independently with
    probability `density`, with no duplicates, in fixed-size arrays (jit/vmap friendly).
    A column left empty (probability (1 - density)^D, e.g. e^-446 at D = 199,210) stays zero.
    """
    p = 1.0 / math.sqrt(D) if density is None else float(density)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {p}")
    K = sparse_capacity(D, p)
    k_gap, k_sign = jax.random.split(key)
    if p < 1.0:
        u = jax.random.uniform(k_gap, (d, K), jnp.float32, minval=jnp.finfo(jnp.float32).tiny)
        gaps = jnp.floor(jnp.log(u) / math.log1p(-p)).astype(jnp.int32) + 1
        gaps = jnp.minimum(gaps, D + 1)  # keep the cumulative sum far from int32 overflow
    else:
        gaps = jnp.ones((d, K), jnp.int32)
    rows = jnp.cumsum(gaps, axis=1) - 1  # [d, K], strictly increasing per column
    valid = rows < D
    count = jnp.sum(valid, axis=1, keepdims=True)
    signs = jnp.where(jax.random.bernoulli(k_sign, SIGN_P, (d, K)), 1.0, -1.0).astype(dtype)
    values = jnp.where(valid, signs / jnp.sqrt(jnp.maximum(count, 1)).astype(dtype), 0.0)
    return _sparse_from_columns(jnp.where(valid, rows, D - 1), values, D=D)


def make_sparse_fixed(
    key: jax.Array, *, D: int, d: int, nnz_per_column: int | None = None, dtype=jnp.float32
) -> Sparse:
    """Exactly k = `nnz_per_column` (default round(sqrt(D))) nonzeros +-1/sqrt(k) per column.

    Rows are stratified: the i-th nonzero is uniform in the i-th of k equal blocks of rows, so
    rows are distinct and each row is hit with probability ~k/D (not a uniform k-subset: two
    nonzeros never share a block).
    """
    k = int(round(math.sqrt(D))) if nnz_per_column is None else int(nnz_per_column)
    if not 1 <= k <= D:
        raise ValueError(f"nnz_per_column must be in [1, D={D}], got {k}")
    k_row, k_sign = jax.random.split(key)
    bounds = (np.arange(k + 1, dtype=np.int64) * D) // k  # static: D and k are Python ints
    lo = jnp.asarray(bounds[:-1], jnp.int32)
    width = jnp.asarray(bounds[1:] - bounds[:-1], jnp.float32)
    u = jax.random.uniform(k_row, (d, k), jnp.float32)
    rows = jnp.minimum(lo[None, :] + jnp.floor(u * width[None, :]).astype(jnp.int32), D - 1)
    signs = jnp.where(jax.random.bernoulli(k_sign, SIGN_P, (d, k)), 1.0, -1.0).astype(dtype)
    return _sparse_from_columns(rows, signs / jnp.sqrt(jnp.asarray(k, dtype)), D=D)


def _sparse_from_columns(rows: jax.Array, values: jax.Array, *, D: int) -> Sparse:
    """rows, values: [d, K] -> Sparse with a column-major BCOO."""
    d, K = rows.shape
    return Sparse(values.reshape(-1), rows.reshape(-1).astype(jnp.int32), D, d, K)


def make_fastfood(key: jax.Array, *, D: int, d: int, dtype=jnp.float32) -> Fastfood:
    """Fastfood projection; memory O(D), cost O(D log D) per product."""
    L = 1 << max(0, math.ceil(math.log2(D)))
    k_sign, k_perm, k_gauss = jax.random.split(key, 3)
    signs = jnp.where(jax.random.bernoulli(k_sign, SIGN_P, (L,)), 1.0, -1.0).astype(dtype)
    perm = jax.random.permutation(k_perm, L).astype(jnp.int32)
    inv_perm = jnp.zeros(L, jnp.int32).at[perm].set(jnp.arange(L, dtype=jnp.int32))
    gauss = jax.random.normal(k_gauss, (L,), dtype)
    scale = 1.0 / jnp.sqrt(D * jnp.sum(gauss**2))
    return Fastfood(signs, perm, inv_perm, gauss, scale.astype(dtype), D, d)


# --------------------------------------------------------------------------- products


def fwht(x: jax.Array) -> jax.Array:
    """Unnormalised Walsh-Hadamard transform along the last axis (length a power of two).

    H is symmetric with H H = L I. log2(L) butterfly stages, each O(L).
    """
    L = x.shape[-1]
    if L & (L - 1):
        raise ValueError(f"fwht needs a power-of-two length, got {L}")
    batch = x.shape[:-1]
    h = 1
    while h < L:
        y = x.reshape(*batch, L // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        x = jnp.stack([a + b, a - b], axis=-2).reshape(*batch, L)
        h *= 2
    return x


def apply(P: Projection, z: jax.Array, *, impl: str = "gather") -> jax.Array:
    """P z. z: [d] -> [D]. ``impl`` ('gather' | 'bcoo') picks the sparse kernel."""
    if isinstance(P, Dense):
        return P.matrix @ z
    if isinstance(P, Sparse):
        if impl == "bcoo":
            return P.mat @ z
        values = P.data.reshape(P.d, P.K) * z[:, None]
        return jnp.zeros(P.D, values.dtype).at[P.rows].add(values.reshape(-1))
    if isinstance(P, Fastfood):
        L = P.signs.shape[0]
        x = jnp.zeros(L, z.dtype).at[: P.d].set(z) * P.signs
        x = fwht(x)[P.perm] * P.gauss
        return fwht(x)[: P.D] * P.scale
    if isinstance(P, Scaled):
        return P.row_scale * apply(P.base, P.col_scale * z, impl=impl)
    raise TypeError(f"not a projection: {type(P).__name__}")


def apply_T(P: Projection, v: jax.Array, *, impl: str = "gather") -> jax.Array:
    """P^T v. v: [D] -> [d]."""
    if isinstance(P, Dense):
        return P.matrix.T @ v
    if isinstance(P, Sparse):
        if impl == "bcoo":
            return P.mat.T @ v
        rows = P.rows.reshape(P.d, P.K)
        return jnp.sum(P.data.reshape(P.d, P.K) * v[rows], axis=1)
    if isinstance(P, Fastfood):
        L = P.signs.shape[0]
        x = jnp.zeros(L, v.dtype).at[: P.D].set(v)
        x = fwht(x) * P.gauss
        x = fwht(x[P.inv_perm]) * P.signs
        return x[: P.d] * P.scale
    if isinstance(P, Scaled):
        return P.col_scale * apply_T(P.base, P.row_scale * v, impl=impl)
    raise TypeError(f"not a projection: {type(P).__name__}")


def column(P: Projection, j: jax.Array) -> jax.Array:
    """P e_j, the j-th column [D], without a [D, d] product for dense and sparse kinds."""
    if isinstance(P, Dense):
        return jax.lax.dynamic_index_in_dim(P.matrix, j, axis=1, keepdims=False)
    if isinstance(P, Sparse):
        start = j * P.K
        rows = jax.lax.dynamic_slice_in_dim(P.rows, start, P.K)
        values = jax.lax.dynamic_slice_in_dim(P.data, start, P.K)
        return jnp.zeros(P.D, values.dtype).at[rows].add(values)
    if isinstance(P, Scaled):
        return P.row_scale * column(P.base, j) * P.col_scale[j]
    e = jax.nn.one_hot(j, P.shape[1], dtype=_dtype(P))
    return apply(P, e)


def todense(P: Projection) -> jax.Array:
    """The [D, d] matrix (for tests and small problems only): P applied to the identity."""
    if isinstance(P, Dense):
        return P.matrix
    if isinstance(P, Sparse):
        return P.mat.todense()
    D, d = P.shape
    eye = jnp.eye(d, dtype=_dtype(P))
    return jax.vmap(lambda e: apply(P, e), out_axes=1)(eye)


def column_sq_norms(P: Projection) -> jax.Array:
    """[d] squared norm of each column, without forming P for sparse/dense kinds."""
    if isinstance(P, Dense):
        return jnp.sum(P.matrix**2, axis=0)
    if isinstance(P, Sparse):
        return jnp.sum(P.data.reshape(P.d, P.K) ** 2, axis=1)
    if isinstance(P, Scaled) and isinstance(P.base, Dense):
        return jnp.sum((P.row_scale[:, None] * P.base.matrix) ** 2, axis=0) * P.col_scale**2
    if isinstance(P, Scaled) and isinstance(P.base, Sparse):
        B = P.base
        values = B.data.reshape(B.d, B.K) * P.row_scale[B.rows.reshape(B.d, B.K)]
        return jnp.sum(values**2, axis=1) * P.col_scale**2
    d = P.shape[1]
    eye = jnp.eye(d, dtype=_dtype(P))
    return jax.lax.map(lambda e: jnp.sum(apply(P, e) ** 2), eye)


def nbytes(P: Projection) -> int:
    """Bytes held by the projection's arrays."""
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(P)))


def _dtype(P: Projection):
    if isinstance(P, Dense):
        return P.matrix.dtype
    if isinstance(P, Sparse):
        return P.data.dtype
    if isinstance(P, Fastfood):
        return P.gauss.dtype
    return _dtype(P.base)
