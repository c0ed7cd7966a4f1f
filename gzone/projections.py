"""Random projections P: R^d -> R^D and their transposes P^T: R^D -> R^d.

Three kinds, each a pytree (so a projection can be built inside jit/vmap from a key and passed
as an argument to jitted functions, never closed over as a compiled-in constant):

  * `Dense`: a Gaussian [D, d] matrix with orthonormalised columns (reduced QR).
    Memory O(D d): 25 GB at D = 656,810, d = 10^4 in float32; use it for small d.
  * `Sparse`: each entry nonzero with probability 1/sqrt(D) (``make_sparse``: the Chang / Li et
    al. convention), value +-1, then each column divided by its norm (exactly unit columns), or
    exactly k nonzeros per column (``make_sparse_fixed``). Stored twice: column-major (for P^T v,
    a gather from v) and, where a row holds nonzeros often enough to pay, row-major (for P z, a
    gather from z); ``P.mat`` is the `jax.experimental.sparse.BCOO` view. Memory O(d sqrt(D)).
  * `Fastfood`: P = scale * S H G Pi H B (Le et al.; Li et al. 2018) with H the Walsh-Hadamard
    transform (O(L log L)), B random signs, Pi a permutation, G Gaussian, inputs zero-padded to
    L = 2^ceil(log2 D) and outputs truncated to D rows (S). Columns have unit norm in
    expectation. Memory O(D).

`apply(P, z)` computes P z ([d] -> [D]); `apply_T(P, v)` computes P^T v ([D] -> [d]).
`Scaled` wraps any of them as diag(row_scale) P diag(col_scale) (per-layer metrics).

Derivatives: for sparse and Fastfood P both products are one primitive (`gzone.linear_op`) whose
transpose is the other product's own fast form, so grad, vjp and `jax.linear_transpose` of P z
use the gather of P^T v (and the inverse permutation), never the scatter that autodiff of a
gather would give; jvp, jax.hessian and vmap work as for any JAX function. ``impl`` picks the
kernels: 'auto' (the fastest layout held), 'rows' / 'columns' (P z from the row-major layout /
by a scatter-add from the column-major one), 'jnp' (the same column kernels as plain jnp, with
autodiff's transposes: the reference the explicit transposes are tested against), 'bcoo'
(`BCOO @`). `jax.experimental.sparse` is experimental; it stays behind this module.
Measured speeds of each: BENCHMARKS.md (projections and steps).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from gzone import linear_op, sell
from gzone import projection_kernels as kernels

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
    """P [D, d] with few nonzeros, in two layouts of the same entries.

    Column-major, slot-major order (for P^T v): K slots per column, slot k of column j is entry
    ``k*d + j`` of ``data``/``rows``; unused slots hold the value 0 (at a valid row), so the
    matrix is exact as it stands. Reading slot k of every column at once walks v in row order
    (the k-th nonzero of each column lies near row k sqrt(D)), which keeps the gather cached.

    Row-major (for P z; None when ``Kr == 0``): ``Kr`` slots per row, slot k of row r is entry
    ``k*D + r`` of ``row_cols``/``row_data`` (value 0 where unused), so P z gathers from z, a
    vector that stays in cache; the nonzeros of rows holding more than Kr (few, by the choice of
    Kr: `row_slots`) are listed in ``over_*`` (sorted by row, C slots, padded with value 0).
    From d >= `projection_kernels.SIGNED_MIN_D` on (``signed``), the slots hold no values:
    ``row_cols`` is a signed column, j for +|P_j|, d + j for -|P_j|, 2d for an unused slot
    (uint16 while 2d < 2^16), ``row_data`` is None and ``col_abs`` [d] the magnitude shared by
    column j's nonzeros (every construction here gives a column one magnitude), so that P z
    gathers from [|P| z, -|P| z, 0] with no value to read per slot. Where P^T v sums its slots by
    adds (d >= ADDS_MIN_D) and columns have random counts (``make_sparse``), it sums the first
    ``Kq`` slots and adds the ``tail_*`` list of the nonzeros beyond (`column_slots`). ``sell``:
    both products' layouts for the native CPU kernel, where it runs (`gzone.sell`), else None.

    The arrays are stored rather than a BCOO object because a BCOO's shape is static metadata
    that includes vmapped batch dimensions: a BCOO built under `vmap` cannot be sliced back per
    seed by `lax.map` or a second `vmap`. ``mat`` gives the `jax.experimental.sparse.BCOO` view.
    """

    data: jax.Array  # [K*d] values, slot-major
    rows: jax.Array  # [K*d] int32 row of each value
    D: int = dataclasses.field(metadata=dict(static=True))
    d: int = dataclasses.field(metadata=dict(static=True))
    K: int = dataclasses.field(metadata=dict(static=True))
    row_cols: jax.Array | None = None  # [Kr*D] int32 column of each row-major value
    row_data: jax.Array | None = None  # [Kr*D] row-major values
    over_rows: jax.Array | None = None  # [C] int32, ascending
    over_cols: jax.Array | None = None  # [C] int32
    over_data: jax.Array | None = None  # [C]
    Kr: int = dataclasses.field(default=0, metadata=dict(static=True))
    C: int = dataclasses.field(default=0, metadata=dict(static=True))
    col_abs: jax.Array | None = None  # [d] |value| of column j's nonzeros (signed row layout only)
    signed: bool = dataclasses.field(default=False, metadata=dict(static=True))
    tail_rows: jax.Array | None = None  # [Ct] int32: the nonzeros in column slots >= Kq, for P^T v
    tail_cols: jax.Array | None = None  # [Ct] int32
    tail_data: jax.Array | None = None  # [Ct]
    Kq: int = dataclasses.field(default=0, metadata=dict(static=True))  # 0: P^T v sums all K slots
    Ct: int = dataclasses.field(default=0, metadata=dict(static=True))
    sell: tuple | None = None  # (P z's, P^T v's) `gzone.sell.Sell`

    @property
    def shape(self):
        return (self.D, self.d)

    def by_column(self) -> tuple[jax.Array, jax.Array]:
        """(rows [d, K], values [d, K]): the column-major layout, column by column."""
        return self.rows.reshape(self.K, self.d).T, self.data.reshape(self.K, self.d).T

    @property
    def mat(self) -> sparse.BCOO:
        cols = jnp.broadcast_to(jnp.arange(self.d, dtype=jnp.int32)[None, :], (self.K, self.d)).reshape(-1)
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
    return _sparse_from_columns(jnp.where(valid, rows, D - 1), values, D=D, p_row=p, density=p)


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
    # Row r lies in a block of width >= D // k rows, so a column hits it with probability <= 1/(D // k).
    return _sparse_from_columns(rows, signs / jnp.sqrt(jnp.asarray(k, dtype)), D=D, p_row=1.0 / (D // k))


def _sparse_from_columns(
    rows: jax.Array, values: jax.Array, *, D: int, p_row: float, density: float | None = None
) -> Sparse:
    """rows, values: [d, K] (column j's slots, value 0 where unused) -> Sparse with both layouts;
    `density`: columns hold Binomial(D, density) nonzeros (None: a fixed count)."""
    d, K = rows.shape
    rows = rows.T.reshape(-1).astype(jnp.int32)  # slot-major
    values = values.T.reshape(-1)
    tail = {} if density is None else kernels.tail_list(rows, values, D=D, d=d, K=K, density=density)
    Kr, C = kernels.row_slots(D=D, d=d, p_row=p_row)
    if Kr == 0:
        return Sparse(values, rows, D, d, K, **tail)
    row_cols, row_data, *over = kernels.row_layout(rows, values, D=D, d=d, K=K, Kr=Kr, C=C)
    if d < kernels.SIGNED_MIN_D:
        return Sparse(values, rows, D, d, K, row_cols, row_data, *over, Kr, C, **tail)
    signed_cols, col_abs = kernels.signed_columns(row_cols, row_data, values, d=d, K=K)
    P = Sparse(values, rows, D, d, K, signed_cols, None, *over, Kr, C, col_abs, True, **tail)
    return dataclasses.replace(P, sell=sell.layouts(P))


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


ROW_TAIL = kernels.ROW_TAIL
row_slots = kernels.row_slots
IMPLS = ("auto", "rows", "columns", "jnp", "bcoo")
fwht = kernels.fwht
hadamard = kernels.hadamard


def _op(P: Union[Sparse, Fastfood], impl: str) -> linear_op.LinearOp | None:
    """The primitive's op for P under ``impl`` (None: plain jnp)."""
    if impl not in IMPLS:
        raise ValueError(f"impl {impl!r} unknown; allowed: {', '.join(IMPLS)}")
    if impl == "jnp":
        return None
    if isinstance(P, Fastfood):
        return kernels.FASTFOOD
    if impl == "rows" and P.Kr == 0:
        raise ValueError(f"impl='rows': this sparse P (D={P.D}, d={P.d}) has no row-major layout "
                         "(too few nonzeros per row)")
    return kernels.SPARSE_COLUMNS if impl == "columns" or P.Kr == 0 else kernels.SPARSE_ROWS


# --------------------------------------------------------------------------- products


def apply(P: Projection, z: jax.Array, *, impl: str = "auto") -> jax.Array:
    """P z. z: [d] -> [D]. ``impl`` picks the sparse / Fastfood kernels (module docstring)."""
    if isinstance(P, Dense):
        return P.matrix @ z
    if isinstance(P, Sparse) and impl == "bcoo":
        return P.mat @ z
    if isinstance(P, (Sparse, Fastfood)):
        op = _op(P, impl)
        if op is None:  # plain jnp, differentiated by autodiff
            return kernels.sparse_pz_columns(P, z) if isinstance(P, Sparse) else kernels.fastfood_pz_jnp(P, z)
        return linear_op.apply(op, P, z)
    if isinstance(P, Scaled):
        return P.row_scale * apply(P.base, P.col_scale * z, impl=impl)
    raise TypeError(f"not a projection: {type(P).__name__}")


def apply_T(P: Projection, v: jax.Array, *, impl: str = "auto") -> jax.Array:
    """P^T v. v: [D] -> [d]."""
    if isinstance(P, Dense):
        return P.matrix.T @ v
    if isinstance(P, Sparse) and impl == "bcoo":
        return P.mat.T @ v
    if isinstance(P, (Sparse, Fastfood)):
        op = _op(P, impl)
        if op is None:
            return kernels.sparse_ptv_jnp(P, v) if isinstance(P, Sparse) else kernels.fastfood_ptv_jnp(P, v)
        return linear_op.apply(op.adjoint, P, v)
    if isinstance(P, Scaled):
        return P.col_scale * apply_T(P.base, P.row_scale * v, impl=impl)
    raise TypeError(f"not a projection: {type(P).__name__}")


def column(P: Projection, j: jax.Array) -> jax.Array:
    """P e_j, the j-th column [D], without a [D, d] product for dense and sparse kinds."""
    if isinstance(P, Dense):
        return jax.lax.dynamic_index_in_dim(P.matrix, j, axis=1, keepdims=False)
    if isinstance(P, Sparse):
        rows = jax.lax.dynamic_index_in_dim(P.rows.reshape(P.K, P.d), j, axis=1, keepdims=False)
        values = jax.lax.dynamic_index_in_dim(P.data.reshape(P.K, P.d), j, axis=1, keepdims=False)
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
        return jnp.sum(P.data.reshape(P.K, P.d) ** 2, axis=0)
    if isinstance(P, Scaled) and isinstance(P.base, Dense):
        return jnp.sum((P.row_scale[:, None] * P.base.matrix) ** 2, axis=0) * P.col_scale**2
    if isinstance(P, Scaled) and isinstance(P.base, Sparse):
        B = P.base
        values = B.data * P.row_scale[B.rows]
        return jnp.sum(values.reshape(B.K, B.d) ** 2, axis=0) * P.col_scale**2
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
