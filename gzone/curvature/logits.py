r"""Logit gradients at a point (Fort & Ganguli 2019): per-example Jacobians, their Gram matrix,
cosine similarities grouped by logit and class, the gradient's overlap with a subspace, logit variance.

  logit_jacobian(fm, theta, x)          J [N, C, D], J[n, k] = d z_k(x_n) / d theta
  logit_gradient_gram(fm, theta, x, chunk=)
                                        the Gram matrix G = J J^T [N C, N C] (row n C + k),
                                        built block by block: J is never held whole
  cosine_groups(G, y, num_classes=)     cosine similarities grouped by (logit, class) pairs:
                                        q_SLSC, q_SL, q_SLDC, q_DL with their spreads
  gradient_overlap(vectors, g)          fraction of |g|^2 inside the span of the top-j vectors
  logit_variance(logits)                mean over examples of the variance across the C logits

Groups of logit-gradient pairs (rows (n, k) and (m, l) of G, n != m: pairs of one example with
itself are left out of every group; y_n is the class of example n):

  SLSC  same logit, same class:        k = l, y_n = y_m
  SL    same logit, any class:         k = l
  SLDC  same logit, different class:   k = l, y_n != y_m
  DL    different logits, any class:   k != l

q_* is the mean cosine over the group's pairs and q_*_std their standard deviation. Fort & Ganguli's
model has logit gradients clustered by logit and, within a logit, by class: q_SLSC > q_SL > q_DL ~ 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gzone import flat

Array = jax.Array
GROUPS = ("slsc", "sl", "sldc", "dl")


def logit_jacobian(fm: flat.FlatModel, theta: Array, x: Array) -> Array:
    """Per-example logit gradients J [N, C, D]: one reverse pass per (example, logit), vmapped.

    Memory N C D numbers: call it on chunks of examples (`logit_gradient_gram` does).
    """

    def one(xi):
        return jax.jacrev(lambda th: flat.logits(fm, th, xi[None])[0])(theta)  # [C, D]

    return jax.vmap(one)(x)


def logit_gradient_gram(fm: flat.FlatModel, theta: Array, x: Array, *, chunk: int) -> Array:
    """G = J J^T [N C, N C] with rows ordered (n, k) -> n C + k; J = `logit_jacobian`.

    Built by blocks of `chunk` examples: block (i, j) = J_i J_j^T for j >= i (the other half by
    symmetry), J_j recomputed for every i, so memory is two [chunk C, D] Jacobians plus G, never
    J whole. Cost: (N C)^2 D multiply-adds for the products (about half of them computed) plus
    b (b + 1) / 2 Jacobians of `chunk` examples, b = N / chunk. Under `jax.vmap` (seeds vmapped) the
    `lax.cond` that skips the lower blocks becomes a select and all b^2 blocks are computed.

    Args:
      fm: the flat model.
      theta: [D] the point.
      x: [N, ...] inputs; N must be a multiple of `chunk`.
      chunk: examples per block.
    """
    n = x.shape[0]
    if chunk < 1 or n % chunk:
        raise ValueError(f"the number of examples {n} must be a positive multiple of chunk={chunk}")
    b = n // chunk
    xs = x.reshape(b, chunk, *x.shape[1:])
    jac = lambda i: logit_jacobian(fm, theta, xs[i]).reshape(-1, fm.D)  # noqa: E731  [chunk C, D]

    def row(i):
        j_i = jac(i)
        rows_i = j_i.shape[0]

        def col(j):
            return jax.lax.cond(
                j >= i, lambda: j_i @ jac(j).T, lambda: jnp.zeros((rows_i, rows_i), j_i.dtype)
            )

        return jax.lax.map(col, jnp.arange(b))  # [b, rows, rows]

    blocks = jax.lax.map(row, jnp.arange(b))  # [b(i), b(j), rows, rows]
    rows = blocks.shape[-1]
    g = blocks.transpose(0, 2, 1, 3).reshape(b * rows, b * rows)
    block = jnp.arange(b * rows) // rows
    return jnp.where(block[None, :] >= block[:, None], g, g.T)


def cosines(gram: Array) -> Array:
    """Cosine similarities G_rs / sqrt(G_rr G_ss) from a Gram matrix (0 where a norm is 0)."""
    norms = jnp.sqrt(jnp.clip(jnp.diag(gram), 0.0, None))
    denom = norms[:, None] * norms[None, :]
    return jnp.where(denom > 0, gram / jnp.where(denom > 0, denom, 1.0), 0.0)


def cosine_groups(gram: Array, y: Array, *, num_classes: int) -> dict[str, Array]:
    """Cosine similarities of logit gradients grouped by logit and class (module docstring).

    Args:
      gram: [N C, N C] from `logit_gradient_gram` (rows n C + k).
      y: [N] class of each example.
      num_classes: C.

    Returns:
      dict: ``q_<g>``, ``q_<g>_std``, ``n_<g>`` (pairs) for g in GROUPS; ``block_mean`` [C, C, C, C]
      indexed (k, c, l, c'): the mean cosine over pairs (n, k), (m, l) with y_n = c, y_m = c',
      n != m (NaN where no pair); ``block_count`` the same shape.
    """
    C = num_classes
    cos = cosines(gram)
    rows = jnp.arange(gram.shape[0])
    example, logit = rows // C, rows % C
    cls = y[example]
    keep = (example[:, None] != example[None, :]).astype(cos.dtype)
    onehot = jax.nn.one_hot(logit * C + cls, C * C, dtype=cos.dtype)  # [N C, C^2], column k C + c
    pool = lambda m: onehot.T @ (m * keep) @ onehot  # noqa: E731  [C^2, C^2] sums over pairs
    s1, s2, cnt = pool(cos), pool(cos**2), pool(jnp.ones_like(cos))
    k_of = jnp.arange(C * C) // C
    c_of = jnp.arange(C * C) % C
    same_logit = k_of[:, None] == k_of[None, :]
    same_class = c_of[:, None] == c_of[None, :]
    masks = {
        "slsc": same_logit & same_class,
        "sl": same_logit,
        "sldc": same_logit & ~same_class,
        "dl": ~same_logit,
    }
    out = {}
    for name, mask in masks.items():
        n = jnp.sum(jnp.where(mask, cnt, 0.0))
        mean = jnp.sum(jnp.where(mask, s1, 0.0)) / n
        var = jnp.sum(jnp.where(mask, s2, 0.0)) / n - mean**2
        out[f"q_{name}"], out[f"q_{name}_std"], out[f"n_{name}"] = mean, jnp.sqrt(jnp.clip(var, 0.0, None)), n
    out["block_mean"] = jnp.where(cnt > 0, s1 / jnp.where(cnt > 0, cnt, 1.0), jnp.nan).reshape(C, C, C, C)
    out["block_count"] = cnt.reshape(C, C, C, C)
    return out


def gradient_overlap(vectors: Array, g: Array) -> Array:
    """[k] cumulative fraction of |g|^2 inside span(vectors[:j]), j = 1..k.

    Args:
      vectors: [k, D] orthonormal rows (e.g. the top-k Ritz vectors of H, largest first).
      g: [D] the gradient.
    """
    proj = (vectors @ g) ** 2
    return jnp.cumsum(proj) / jnp.vdot(g, g)


def logit_variance(logits_: Array) -> Array:
    """Mean over examples of the variance of the C logits of each example (Fort & Ganguli, Fig. 4)."""
    return jnp.mean(jnp.var(logits_, axis=-1))
