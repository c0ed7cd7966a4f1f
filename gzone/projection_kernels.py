"""The kernels of `gzone.projections`: P z and P^T v as plain jnp, the sparse row-major layout they
read, and the Walsh-Hadamard transform.

Each function takes the projection's arrays (a `projections.Sparse` or `projections.Fastfood`)
and a vector. `SPARSE_ROWS`, `SPARSE_COLUMNS` and `FASTFOOD` pair each P z with its P^T v as a
`linear_op.LinearOp`, the primitive through which `projections.apply` differentiates (its
transpose is the other product, never autodiff's scatter). Why each form: BENCHMARKS.md
(projections) and BUILD_NOTES.md (Performance).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from gzone import linear_op, native, sell

if TYPE_CHECKING:
    from gzone.projections import Fastfood, Sparse

_LOW = 32  # fwht: the lowest log2(_LOW) butterfly stages as one product with the Hadamard matrix H_32
_HIGHEST = jax.lax.Precision.HIGHEST  # products with +-1 matrices must not drop to bf16/TF32 on accelerators


def hadamard(n: int) -> np.ndarray:
    """The n x n Sylvester Hadamard matrix (n a power of two), entries +-1, H H = n I."""
    h = np.ones((1, 1), np.int8)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def fwht(x: jax.Array) -> jax.Array:
    """Unnormalised Walsh-Hadamard transform along the last axis (length L a power of two).

    H is symmetric with H H = L I, and H_L = H_2 (x) ... (x) H_2, one factor per bit of the
    index, applied in any order. On CPU with `gzone.native` enabled: its C++ kernel (two
    cache-sized passes); otherwise `fwht_jnp`. Differentiable (a `linear_op.LinearOp`, its own
    transpose). Cost O(L log L).
    """
    _check_length(x.shape[-1])
    return linear_op.apply(FWHT, (), x)


def _check_length(L: int) -> None:
    if L < 1 or L & (L - 1):
        raise ValueError(f"fwht needs a power-of-two length, got {L}")


def _native_for(dtype) -> bool:
    return native.enabled() and dtype in (jnp.float32, jnp.float64)


def _fwht(x: jax.Array, length: int | None = None, *, plain: bool = False) -> jax.Array:
    """fwht of x zero-padded to `length` (default: x's), without the primitive (inside the
    projections' own ops); `plain`: jnp only (differentiable by autodiff)."""
    L = x.shape[-1] if length is None else length
    if _native_for(x.dtype) and not plain:
        return jax.lax.platform_dependent(x, cpu=functools.partial(native.fwht, length=L),
                                          default=functools.partial(_padded_fwht_jnp, length=L))
    return _padded_fwht_jnp(x, length=L)


def _padded_fwht_jnp(x: jax.Array, *, length: int) -> jax.Array:
    pad = [(0, 0)] * (x.ndim - 1) + [(0, length - x.shape[-1])]
    return fwht_jnp(jnp.pad(x, pad) if length > x.shape[-1] else x)


def _fwht_op(_, x: jax.Array) -> jax.Array:
    return _fwht(x)


def fwht_jnp(x: jax.Array) -> jax.Array:
    """fwht in jnp: the 5 lowest index bits as one product with H_32 (contiguous rows of 32), the
    others as radix-4 butterflies (two stages per pass over x)."""
    L = x.shape[-1]
    _check_length(L)
    batch = x.shape[:-1]
    low = min(L, _LOW)
    if low > 1:
        H = jnp.asarray(hadamard(low), x.dtype)
        x = jnp.matmul(x.reshape(*batch, L // low, low), H, precision=_HIGHEST).reshape(*batch, L)
    h = low
    while h < L:
        r = min(4, L // h)
        y = x.reshape(*batch, L // (r * h), r, h)
        parts = [y[..., i, :] for i in range(r)]
        step = 1
        while step < r:  # butterflies within the radix-r group
            parts = [parts[i] + parts[i + step] if i & step == 0 else parts[i - step] - parts[i]
                     for i in range(r)]
            step *= 2
        x = jnp.stack(parts, axis=-2).reshape(*batch, L)
        h *= r
    return x


# A row gets ELL slots up to the 90 % quantile of its nonzero count: one more slot costs a gather
# for every row, and saves a scatter-add (about 10x a gather on XLA:CPU) for the rows beyond it.
ROW_TAIL = 0.1


def row_slots(*, D: int, d: int, p_row: float) -> tuple[int, int]:
    """(Kr, C): row-major slots per row and overflow capacity when each of the d columns hits a row
    with probability p_row (independently: the count X of a row is Binomial(d, p_row)).

    Kr is the smallest k with P(X > k) <= ROW_TAIL (0: no row layout; P z is then a scatter-add,
    the faster choice when rows are nearly empty). C = mean + 8 std + 8 of the nonzeros beyond
    Kr summed over the D rows (a shortfall has probability below 1e-14).
    """
    return _slots_and_tail(n=d, p=p_row, units=D)


def column_slots(*, D: int, d: int, density: float, K: int) -> tuple[int, int]:
    """(Kq, Ct): the slots P^T v sums by adds and the capacity of the tail list of the nonzeros in
    slots >= Kq, for columns of Binomial(D, density) nonzeros held in K slots; (K, 0) (all slots
    summed, no list) below ADDS_MIN_D, where P^T v does not sum by adds. Kq by `row_slots`' rule:
    K holds a column's count with probability 1 - 1e-14, so most columns end well before slot K
    (at d = 10^4 on the MNIST MLP: K = 624, counts 446 +- 21, Kq = 473)."""
    if d < ADDS_MIN_D:
        return K, 0
    Kq, Ct = _slots_and_tail(n=D, p=density, units=d)
    return (K, 0) if Kq >= K else (Kq, Ct)


def _slots_and_tail(*, n: int, p: float, units: int) -> tuple[int, int]:
    """(k, capacity) for `units` independent counts X ~ Binomial(n, p): k the smallest with
    P(X > k) <= ROW_TAIL, capacity = mean + 8 std + 8 of the summed excess (X - k)+ (0, 0 if k = 0)."""
    from scipy import stats

    p = min(1.0, max(0.0, float(p)))
    X = stats.binom(n, p)
    k0 = int(X.ppf(1.0 - ROW_TAIL))  # the smallest k with P(X <= k) >= 1 - ROW_TAIL
    if k0 == 0:
        return 0, 0
    k = np.arange(k0 + 1, min(n, int(X.isf(1e-16)) + 2) + 1)
    pmf = X.pmf(k)
    excess = k - k0
    m1, m2 = float(np.sum(pmf * excess)), float(np.sum(pmf * excess**2))
    mean, var = units * m1, units * max(0.0, m2 - m1 * m1)
    return k0, int(math.ceil(mean + 8.0 * math.sqrt(var) + 8))


def tail_list(rows: jax.Array, values: jax.Array, *, D: int, d: int, K: int, density: float) -> dict:
    """The `projections.Sparse` fields of the tail list ({} where `column_slots` gives none):
    tail_rows, tail_cols, tail_data [Ct], the nonzeros in slots >= Kq of the slot-major column
    layout (rows, values: [K*d]) in slot-major order, padded with value 0 at row 0, column 0."""
    Kq, Ct = column_slots(D=D, d=d, density=density, K=K)
    if not Ct:
        return {}
    r, v = rows[Kq * d:], values[Kq * d:]
    c = jnp.broadcast_to(jnp.arange(d, dtype=jnp.int32)[None, :], (K - Kq, d)).reshape(-1)
    used = v != 0
    at = jnp.where(used, jnp.cumsum(used) - 1, Ct)
    return dict(tail_rows=jnp.zeros(Ct, jnp.int32).at[at].set(r, mode="drop"),
                tail_cols=jnp.zeros(Ct, jnp.int32).at[at].set(c, mode="drop"),
                tail_data=jnp.zeros(Ct, values.dtype).at[at].set(v, mode="drop"), Kq=Kq, Ct=Ct)


def row_layout(rows: jax.Array, values: jax.Array, *, D: int, d: int, K: int, Kr: int, C: int) -> tuple:
    """The row-major layout of a sparse P from its slot-major column layout (rows, values: [K*d]):
    (row_cols [Kr*D], row_data [Kr*D], over_rows [C], over_cols [C], over_data [C]), by one stable
    sort of the nonzeros by row (at construction)."""
    n = K * d
    cols = jnp.broadcast_to(jnp.arange(d, dtype=jnp.int32)[None, :], (K, d)).reshape(-1)
    valid = values != 0
    key = jnp.where(valid, rows, D)  # unused slots sort last
    order = jnp.argsort(key, stable=True)
    r, c, v, ok = key[order], cols[order], values[order], valid[order]
    count = jnp.zeros(D + 1, jnp.int32).at[r].add(1)
    first = jnp.cumsum(count) - count
    pos = jnp.arange(n, dtype=jnp.int32) - first[r]  # rank of the entry within its row
    in_ell = ok & (pos < Kr)
    slot = jnp.where(in_ell, pos * D + jnp.minimum(r, D - 1), Kr * D)
    row_cols = jnp.zeros(Kr * D, jnp.int32).at[slot].set(c, mode="drop")
    row_data = jnp.zeros(Kr * D, values.dtype).at[slot].set(v, mode="drop")
    over = ok & (pos >= Kr)
    at = jnp.where(over, jnp.cumsum(over) - 1, C)
    over_rows = jnp.full(C, D - 1, jnp.int32).at[at].set(r, mode="drop")
    over_cols = jnp.zeros(C, jnp.int32).at[at].set(c, mode="drop")
    over_data = jnp.zeros(C, values.dtype).at[at].set(v, mode="drop")
    return row_cols, row_data, over_rows, over_cols, over_data


# From d >= SIGNED_MIN_D the row-major layout stores signed columns instead of values (Sparse's
# docstring): P z then reads 2 bytes a slot (uint16) instead of 8, ~2x faster at d = 10^4 on the
# MNIST MLP. Below, the values stay: the two forms round differently (a product and an add against
# one fused multiply-add), and the sparse runs of REPRODUCTION.md (d <= 5000) used the values.
SIGNED_MIN_D = 8192


def signed_columns(row_cols: jax.Array, row_data: jax.Array, values: jax.Array, *, d: int,
                   K: int) -> tuple[jax.Array, jax.Array]:
    """(signed row_cols, col_abs [d]) from the row-major columns and values and the slot-major
    values (a column's nonzeros share one magnitude, col_abs[j]; see `projections.Sparse`)."""
    col_abs = jnp.max(jnp.abs(values.reshape(K, d)), axis=0)
    signed = jnp.where(row_data == 0, 2 * d, jnp.where(row_data > 0, row_cols, row_cols + d))
    return signed.astype(jnp.uint16 if 2 * d < 1 << 16 else jnp.int32), col_abs


def _fwht_by_products(x: jax.Array) -> jax.Array:
    """fwht of a short vector [m] as products with H_32 (or smaller) factors only, one per 5 bits.

    For the small transforms of Fastfood: XLA:CPU would fuse `fwht`'s butterflies into the consumer
    (the length-L gather from the result) and recompute them for every entry (3x slower P z at
    d = 100); a product is never fused into its consumer. Cost O(m log m) with 64 FLOPs per entry
    and factor.
    """
    L, b = x.shape[-1], 1
    y = x
    while b < L:
        f = min(_LOW, L // b)
        H = jnp.asarray(hadamard(f), x.dtype)
        y = jnp.einsum("ij,ajb->aib", H, y.reshape(L // (f * b), f, b), precision=_HIGHEST)
        b *= f
    return y.reshape(L)


def sparse_pz_rows(P: Sparse, z: jax.Array, *, plain: bool = False) -> jax.Array:
    """P z from the row-major layout: sum over the Kr slots of a gather from z, plus the overflow;
    on CPU by the native kernel where P has its layouts (`gzone.sell`) and not ``plain``."""
    if P.sell is not None and not plain and native.enabled():
        return jax.lax.platform_dependent(P, z, cpu=sell.pz, default=sparse_pz_rows_jnp)
    if P.signed:
        return _sparse_pz_signed(P, z)
    dtype = jnp.result_type(P.row_data.dtype, z.dtype)
    z = z.astype(dtype)
    cols = P.row_cols.reshape(P.Kr, P.D)
    vals = P.row_data.reshape(P.Kr, P.D).astype(dtype)
    out = _sum_slots(lambda k: vals[k] * jnp.take(z, cols[k], mode="clip"), P.Kr)
    return _add_overflow(P, z, out)


def _sum_slots(term, Kr: int) -> jax.Array:
    """term(0) + ... + term(Kr - 1), in that order, as adds of [D] vectors: unrolled up to 32 slots,
    a fori_loop beyond. Not a reduction over a slot axis: XLA:CPU reduces a [Kr, D] array over its
    major axis ~20x slower than the adds."""
    out = term(0)
    if Kr <= 32:
        for k in range(1, Kr):
            out = out + term(k)
        return out
    return jax.lax.fori_loop(1, Kr, lambda k, acc: acc + term(k), out)


def _add_overflow(P: Sparse, z: jax.Array, out: jax.Array) -> jax.Array:
    if P.C:
        extra = P.over_data.astype(out.dtype) * jnp.take(z, P.over_cols, mode="clip")
        out = out.at[P.over_rows].add(extra, indices_are_sorted=True)
    return out


def _sparse_pz_signed(P: Sparse, z: jax.Array) -> jax.Array:
    """P z from the signed row layout: sum over the Kr slots of a gather from [|P| z, -|P| z, 0]."""
    dtype = jnp.result_type(P.col_abs.dtype, z.dtype)
    z = z.astype(dtype)
    scaled = z * P.col_abs.astype(dtype)
    table = jnp.concatenate([scaled, -scaled, jnp.zeros(1, dtype)])
    cols = P.row_cols.reshape(P.Kr, P.D)

    out = _sum_slots(lambda k: jnp.take(table, cols[k].astype(jnp.int32), mode="clip"), P.Kr)
    return _add_overflow(P, z, out)


def sparse_pz_columns(P: Sparse, z: jax.Array) -> jax.Array:
    """P z from the column-major layout: a scatter-add of the d*K slot values."""
    values = P.data.reshape(P.K, P.d) * z[None, :]
    return jnp.zeros(P.D, values.dtype).at[P.rows].add(values.reshape(-1))


# P^T v sums its K slots by a loop of adds of [d] gathers (ADDS_UNROLL slots a loop step) from d =
# ADDS_MIN_D on, and by one product with ones below, which needs the [K, d] gather materialised
# (timings and why the switch is not at the measured crossover: BUILD_NOTES.md, Performance).
ADDS_MIN_D = 8192
ADDS_UNROLL = 8


def sparse_ptv(P: Sparse, v: jax.Array, *, by_adds: bool | None = None, plain: bool = False) -> jax.Array:
    """P^T v: a gather from v at every slot, slot-major, summed over slots by one product with ones
    or (``by_adds``; default: from d >= ADDS_MIN_D on) by adds of [d] vectors, slot after slot; by
    default on CPU by the native kernel where P has its layouts (`gzone.sell`) and not ``plain``."""
    if P.sell is not None and by_adds is None and not plain and native.enabled():
        return jax.lax.platform_dependent(P, v, cpu=sell.ptv, default=sparse_ptv_jnp)
    if by_adds is None:
        by_adds = P.d >= ADDS_MIN_D
    if by_adds:
        return _ptv_by_adds(P, v)
    g = (P.data * jnp.take(v, P.rows, mode="clip")).reshape(P.K, P.d)
    return jnp.matmul(jnp.ones(P.K, g.dtype), g, precision=_HIGHEST)


def _ptv_by_adds(P: Sparse, v: jax.Array) -> jax.Array:
    rows, data = P.rows.reshape(P.K, P.d), P.data.reshape(P.K, P.d)
    dtype = jnp.result_type(data.dtype, v.dtype)

    def slot(acc, k):
        return acc + data[k].astype(dtype) * jnp.take(v, rows[k], mode="clip").astype(dtype)

    def step(i, acc):
        for j in range(ADDS_UNROLL):
            acc = slot(acc, ADDS_UNROLL * i + j)
        return acc

    n = P.Kq or P.K  # slots >= Kq: from the tail list
    full = n // ADDS_UNROLL
    acc = jax.lax.fori_loop(0, full, step, jnp.zeros(P.d, dtype))
    for k in range(full * ADDS_UNROLL, n):
        acc = slot(acc, k)
    if P.Ct:
        extra = P.tail_data.astype(dtype) * jnp.take(v, P.tail_rows, mode="clip").astype(dtype)
        acc = acc.at[P.tail_cols].add(extra)
    return acc


def _block(P: Fastfood) -> int:
    """m = the smallest power of two >= d (at most L): z and P^T v live in the first m entries."""
    return min(P.signs.shape[0], 1 << max(0, (P.d - 1).bit_length()))


def fastfood_pz(P: Fastfood, z: jax.Array, *, plain: bool = False) -> jax.Array:
    """P z = scale (H G Pi H B pad_L(z))[:D], with the first H on a vector that is zero beyond m:
    H_L = H_{L/m} (x) H_m and column 0 of H_{L/m} is all ones, so H_L pad_L(y) = tile(H_m y) and
    (tile(w))[perm] = w[perm mod m], a gather from the small w. One transform of length L.
    `plain`: jnp only, no native kernel (differentiable by autodiff)."""
    m = _block(P)
    w = _fwht_by_products(jnp.pad(z, (0, m - P.d)) * P.signs[:m])
    gauss = P.gauss.astype(jnp.result_type(w.dtype, P.gauss.dtype))
    if _native_for(gauss.dtype) and not plain:  # the gather made block by block in the first pass
        y = jax.lax.platform_dependent(w.astype(gauss.dtype), P.perm.astype(jnp.int32), gauss,
                                       cpu=native.gather_fwht, default=_gather_fwht_jnp)
    else:
        y = _gather_fwht_jnp(w, P.perm, gauss)
    return y[: P.D] * P.scale


def _gather_fwht_jnp(w: jax.Array, perm: jax.Array, gauss: jax.Array) -> jax.Array:
    return fwht_jnp(jnp.take(w, perm % w.shape[-1], mode="clip") * gauss)


def fastfood_ptv(P: Fastfood, v: jax.Array, *, plain: bool = False) -> jax.Array:
    """P^T v = scale (B H Pi^T G H pad_L(v))[:d], with the last H needed only at its first m
    outputs: (H_L u)[:m] = H_m (sum of u's L/m blocks of length m), row 0 of H_{L/m} being ones.

    With u = x[inv_perm], entry i of that block sum is the sum of x[t] over the t with perm[t] = i
    mod m: on CPU a scatter-add of x, read in order, into m sums (~2x faster than the gather
    x[inv_perm], which reads a table of L floats at random); elsewhere the gather and a product
    with ones (a scatter-add into few sums serialises on GPU atomics). `plain`: as in fastfood_pz.
    """
    L, m = P.signs.shape[0], _block(P)
    x = _fwht(v, L, plain=plain) * P.gauss
    blocks = jax.lax.platform_dependent(
        x, P.perm, P.inv_perm, cpu=functools.partial(_block_sums_by_scatter, m=m),
        default=functools.partial(_block_sums_by_gather, m=m))
    return (_fwht(blocks, plain=plain) * P.signs[:m])[: P.d] * P.scale


def _block_sums_by_scatter(x: jax.Array, perm: jax.Array, inv_perm: jax.Array, *, m: int) -> jax.Array:
    return jnp.zeros(m, x.dtype).at[perm % m].add(x)


def _block_sums_by_gather(x: jax.Array, perm: jax.Array, inv_perm: jax.Array, *, m: int) -> jax.Array:
    u = jnp.take(x, inv_perm, mode="clip").reshape(x.shape[0] // m, m)
    return jnp.matmul(jnp.ones(u.shape[0], u.dtype), u, precision=_HIGHEST)


fastfood_pz_jnp = functools.partial(fastfood_pz, plain=True)
fastfood_ptv_jnp = functools.partial(fastfood_ptv, plain=True)
FWHT = linear_op.LinearOp("fwht", _fwht_op, _fwht_op)
sparse_pz_rows_jnp = functools.partial(sparse_pz_rows, plain=True)
sparse_ptv_jnp = functools.partial(sparse_ptv, plain=True)


SPARSE_ROWS = linear_op.LinearOp("sparse_rows", sparse_pz_rows, sparse_ptv, sparse_pz_rows_jnp,
                                 sparse_ptv_jnp)
SPARSE_COLUMNS = linear_op.LinearOp("sparse_columns", sparse_pz_columns, sparse_ptv, None, sparse_ptv_jnp)
FASTFOOD = linear_op.LinearOp("fastfood", fastfood_pz, fastfood_ptv, fastfood_pz_jnp, fastfood_ptv_jnp)
