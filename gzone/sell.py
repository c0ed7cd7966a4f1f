"""Sliced-ELL layouts of a sparse P for the native CPU kernel `gzone_sell_sum` (gzone/_native.cc).

A sparse P whose columns each share one magnitude (`projections.Sparse`, ``col_abs``) has
P z = sum over a row's nonzeros of +-(|P| z)_j and P^T v = |P| * (sum over a column's nonzeros of
+-v_i): signed sums of table entries. A `Sell` lays one of them out for the kernel:

  * outputs (rows of P for P z, columns for P^T v) sorted by their number of nonzeros, largest
    first, in groups of C = 8; a group holds width x 8 entries, slot-major (entry k of its 8
    outputs side by side), its width the count of its first output, so padding is rare: the
    widths fall with the group, and summed over the groups the padding is at most 8 x the
    largest count;
  * the table (z for P z, v for P^T v) cut into blocks of ``block`` entries (one block for P z,
    so d < 2^15: z stays in cache; 2^14 rows of v for P^T v, 64 KB of float32, where all of v
    would not), one such layout per block, its sums added in block order;
  * an entry a uint16: bit 15 the sign, bits 0-14 the index within the block (``block``:
    padding, adds 0), 2 bytes a nonzero against 8 for an index and a value.

Each output sums its entries in the order of the slot-major column layout (for P z, the order of
the row-major layout that `projection_kernels.sparse_pz_rows` reads, so both round alike). The
kernel reads about 2 bytes a nonzero and runs every group's 8 sums side by side (timings:
BUILD_NOTES.md, Performance). Built at construction (`layouts`) from d >= MIN_D on, only where
the kernel can run (`gzone.native` enabled, CPU backend); `pz` / `ptv` are the products.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from gzone import native

C = 8  # outputs a group (kSellC in gzone/_native.cc)
MIN_D = 8192  # = projection_kernels.SIGNED_MIN_D: the signed layouts' range
PTV_BLOCK = 1 << 14  # rows of P in one block of v


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Sell:
    """y[r] = sum of +-x[i] over output r's entries; x: [n] cut into blocks of ``block``."""

    idx: jax.Array  # [cap] uint16 entries, group after group, block after block
    off: jax.Array  # [nb * G + 1] int32: group g of block b starts at idx[off[b * G + g]]
    perm: jax.Array  # [nb * G * C] int32: the output of each group slot (R: none)
    n: int = dataclasses.field(metadata=dict(static=True))
    R: int = dataclasses.field(metadata=dict(static=True))
    block: int = dataclasses.field(metadata=dict(static=True))

    def __call__(self, x: jax.Array) -> jax.Array:
        return native.sell_sum(x, self.idx, self.off, self.perm, outputs=self.R, block=self.block)


def _groups(cnt: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(perm [nb, G*C], rank [nb, R], off [nb*G + 1]) for the counts cnt [nb, R] of each block's
    outputs: outputs by count, largest first (stable), in groups of C; a group's width its first
    (largest) count."""
    nb, R = cnt.shape
    G = -(-R // C)
    order = jnp.argsort(-cnt, axis=1, stable=True).astype(jnp.int32)  # position -> output
    rank = jnp.zeros((nb, R), jnp.int32).at[jnp.arange(nb)[:, None], order].set(
        jnp.broadcast_to(jnp.arange(R, dtype=jnp.int32), (nb, R)))
    fill = G * C - R
    perm = jnp.concatenate([order, jnp.full((nb, fill), R, jnp.int32)], axis=1)
    width = jnp.concatenate([jnp.take_along_axis(cnt, order, axis=1), jnp.zeros((nb, fill), cnt.dtype)],
                            axis=1)[:, ::C]
    off = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(C * width.reshape(-1)).astype(jnp.int32)])
    return perm, rank, off


def _layout(cnt, b, o, pos, code, valid, *, n: int, block: int, cap: int) -> Sell:
    """The layout of entries (block b, output o, place pos among the output's entries in block b,
    entry code) where valid, for outputs with counts cnt [nb, R]."""
    nb, R = cnt.shape
    G = -(-R // C)
    perm, rank, off = _groups(cnt)
    r = rank[b, o]
    loc = jnp.where(valid, off[b * G + r // C] + pos * C + r % C, cap)
    idx = jnp.full(cap, block, jnp.uint16).at[loc].set(code.astype(jnp.uint16), mode="drop")
    return Sell(idx, off, perm.reshape(-1), n, R, block)


@jax.jit
def _pz_layout(P) -> Sell:
    """P z's layout from the signed row-major layout (slot k of row r: j for +, d + j for -, 2d
    unused) and its overflow list (sorted by row): row r's entries in the row layout's order."""
    D, d, Kr = P.D, P.d, P.Kr
    s = P.row_cols.astype(jnp.int32).reshape(Kr, D)
    used = s < 2 * d
    over_ok = P.over_data != 0
    cnt = jnp.sum(used, axis=0).astype(jnp.int32).at[P.over_rows].add(over_ok.astype(jnp.int32))
    first_over = jnp.searchsorted(P.over_rows, P.over_rows, side="left").astype(jnp.int32)
    b = jnp.zeros(Kr * D + P.C, jnp.int32)
    o = jnp.concatenate([jnp.broadcast_to(jnp.arange(D, dtype=jnp.int32), (Kr, D)).reshape(-1), P.over_rows])
    pos = jnp.concatenate([jnp.broadcast_to(jnp.arange(Kr, dtype=jnp.int32)[:, None], (Kr, D)).reshape(-1),
                           Kr + jnp.arange(P.C, dtype=jnp.int32) - first_over])
    neg = (s >= d).reshape(-1)
    code = jnp.concatenate([jnp.where(neg, s.reshape(-1) - d, s.reshape(-1)) | (neg.astype(jnp.int32) << 15),
                            P.over_cols | ((P.over_data < 0).astype(jnp.int32) << 15)])
    valid = jnp.concatenate([used.reshape(-1), over_ok])
    cap = Kr * D + P.C + C * d
    return _layout(cnt[None, :], b, o, pos, code, valid, n=d, block=d, cap=cap)


@functools.partial(jax.jit, static_argnames=("D", "d", "K", "B"))
def _ptv_layout(rows: jax.Array, values: jax.Array, *, D: int, d: int, K: int, B: int) -> Sell:
    """P^T v's layout from the slot-major column layout (rows ascending within a column): column
    j's entries in block b (rows b B .. b B + B - 1) in slot order."""
    nb = -(-D // B)
    rows_c, vals_c = rows.reshape(K, d).T, values.reshape(K, d).T  # [d, K]
    blk = rows_c // B
    k = jnp.broadcast_to(jnp.arange(K, dtype=jnp.int32), (d, K))
    change = jnp.concatenate([jnp.ones((d, 1), bool), blk[:, 1:] != blk[:, :-1]], axis=1)
    start = jax.lax.cummax(jnp.where(change, k, 0), axis=1)  # the column's first slot in this block
    valid = vals_c != 0
    j = jnp.broadcast_to(jnp.arange(d, dtype=jnp.int32)[:, None], (d, K))
    cnt = jnp.zeros(nb * d, jnp.int32).at[(blk * d + j).reshape(-1)].add(valid.reshape(-1).astype(jnp.int32))
    code = (rows_c - blk * B) | ((vals_c < 0).astype(jnp.int32) << 15)
    cap = K * d + C * nb * min(K, B)
    return _layout(cnt.reshape(nb, d), blk.reshape(-1), j.reshape(-1), (k - start).reshape(-1),
                   code.reshape(-1), valid.reshape(-1), n=D, block=B, cap=cap)


def wanted(d: int) -> bool:
    """Whether `layouts` builds the layouts for a P with d columns."""
    return d >= MIN_D and native.enabled() and jax.default_backend() == "cpu"


def layouts(P) -> tuple[Sell, Sell] | None:
    """(P z's layout, P^T v's layout) of a signed `projections.Sparse` (its row-major layout for
    P z, its column layout for P^T v), or None where not `wanted`."""
    if not (P.signed and wanted(P.d)) or P.d >= 1 << 15:
        return None
    return _pz_layout(P), _ptv_layout(P.rows, P.data, D=P.D, d=P.d, K=P.K, B=min(P.D, PTV_BLOCK))


def pz(P, z: jax.Array) -> jax.Array:
    """P z by the native kernel (P.sell present, CPU)."""
    dtype = jnp.result_type(P.col_abs.dtype, z.dtype)
    return P.sell[0](z.astype(dtype) * P.col_abs.astype(dtype))


def ptv(P, v: jax.Array) -> jax.Array:
    """P^T v by the native kernel (P.sell present, CPU)."""
    dtype = jnp.result_type(P.col_abs.dtype, v.dtype)
    return P.sell[1](v.astype(dtype)) * P.col_abs.astype(dtype)

