r"""Emergent local geometry (Fort & Ganguli 2019): logit-gradient clustering, Hessian outliers,
gradient confinement to the top Hessian subspace, logit variance.

At a point theta [D] of a classifier with C logits z_k(x):

  logit_jacobian(fm, theta, x)          J [N, C, D], J[n, k] = d z_k(x_n) / d theta
  logit_gradient_gram(fm, theta, x, chunk=)
                                        the Gram matrix G = J J^T [N C, N C] (row n C + k),
                                        built block by block: J is never held whole
  cosine_groups(G, y, num_classes=)     cosine similarities grouped by (logit, class) pairs:
                                        q_SLSC, q_SL, q_SLDC, q_DL with their spreads
  gradient_overlap(vectors, g)          fraction of |g|^2 inside the span of the top-j vectors
  logit_variance(logits)                mean over examples of the variance across the C logits
  count_outliers(values, min_ratio=, rule=)
                                        outliers above the bulk by a gap-ratio rule (below)
  make_measure_fn(fm, spec=)            all of it at one theta, one jit-able function
  balanced_examples(key, y, per_class=) the same number of examples of every class

Groups of logit-gradient pairs (rows (n, k) and (m, l) of G, n != m: pairs of one example with
itself are left out of every group; y_n is the class of example n):

  SLSC  same logit, same class:        k = l, y_n = y_m
  SL    same logit, any class:         k = l
  SLDC  same logit, different class:   k = l, y_n != y_m
  DL    different logits, any class:   k != l

q_* is the mean cosine over the group's pairs and q_*_std their standard deviation. Fort & Ganguli's
model has logit gradients clustered by logit and, within a logit, by class: q_SLSC > q_SL > q_DL ~ 0.

Outlier rules (`count_outliers`, stated and tested on planted spectra): with the top-k eigenvalues
sorted descending, l_1 >= ... >= l_k, the gap ratios r_j = l_j / l_{j+1} (l_{j+1} > 0) are searched
over j <= k // 2 only: the lower half of the list is the bulk's reference and is not itself searched
(deep in a bulk that reaches towards 0, neighbouring ratios grow without any separation). Then

  ``last`` (default): the number of outliers is the LAST such j with r_j >= min_ratio (0 if none):
      the deepest wide gap separates the outliers from the bulk, whose neighbouring eigenvalues (and
      Lanczos Ritz values near its edge) are close, r ~ 1. Wide gaps among the outliers themselves
      (a dominant top eigenvalue, hierarchical outliers) do not matter.
  ``largest``: the j with the largest r_j if it reaches min_ratio, else 0 (the eigenvalue-ratio
      estimator of Ahn & Horenstein 2013, k_max = k // 2); it undercounts when a gap between
      outliers is the widest.

So take k at least twice the expected count (k = 2C) and enough Lanczos steps for the top k Ritz
values to sit at the bulk's upper edge; `outlier_ratios` gives the ratios to check the separation.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gzone import curvature, flat
from gzone.curvature import spectra

Array = jax.Array
GROUPS = ("slsc", "sl", "sldc", "dl")
OUTLIER_RULES = ("last", "largest")
SCALARS = ("loss", "accuracy", "grad_norm", "radius", "logit_var") + tuple(
    f"q_{g}{s}" for g in GROUPS for s in ("", "_std")
)


# --------------------------------------------------------------------------- logit gradients


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
            return jax.lax.cond(j >= i, lambda: j_i @ jac(j).T, lambda: jnp.zeros((rows_i, rows_i), j_i.dtype))

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
    masks = {"slsc": same_logit & same_class, "sl": same_logit, "sldc": same_logit & ~same_class, "dl": ~same_logit}
    out = {}
    for name, mask in masks.items():
        n = jnp.sum(jnp.where(mask, cnt, 0.0))
        mean = jnp.sum(jnp.where(mask, s1, 0.0)) / n
        var = jnp.sum(jnp.where(mask, s2, 0.0)) / n - mean**2
        out[f"q_{name}"], out[f"q_{name}_std"], out[f"n_{name}"] = mean, jnp.sqrt(jnp.clip(var, 0.0, None)), n
    out["block_mean"] = jnp.where(cnt > 0, s1 / jnp.where(cnt > 0, cnt, 1.0), jnp.nan).reshape(C, C, C, C)
    out["block_count"] = cnt.reshape(C, C, C, C)
    return out


# --------------------------------------------------------------------------- Hessian top subspace


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


def outlier_ratios(values) -> np.ndarray:
    """[k-1] ratios l_j / l_{j+1} of descending values (NaN where l_{j+1} <= 0)."""
    v = np.sort(np.asarray(values, np.float64))[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v[1:] > 0, v[:-1] / v[1:], np.nan)


def count_outliers(values, *, min_ratio: float = 1.5, rule: str = "last") -> int:
    """Number of eigenvalues separated from the bulk by a gap-ratio rule (module docstring).

    Args:
      values: the top-k eigenvalues (any order; k >= 2), e.g. Lanczos Ritz values.
      min_ratio: a gap counts when l_j / l_{j+1} >= min_ratio (> 1).
      rule: ``last`` or ``largest`` (OUTLIER_RULES).

    Returns:
      m in [0, k // 2]. Non-finite input gives 0.
    """
    if rule not in OUTLIER_RULES:
        raise ValueError(f"outlier rule {rule!r} unknown; allowed: {', '.join(OUTLIER_RULES)}")
    if not min_ratio > 1:
        raise ValueError(f"min_ratio must be > 1, got {min_ratio}")
    values = np.asarray(values, np.float64)
    if values.size < 2 or not np.all(np.isfinite(values)):
        return 0
    ratios = np.nan_to_num(outlier_ratios(values)[: values.size // 2], nan=0.0)
    wide = np.flatnonzero(ratios >= min_ratio)
    if wide.size == 0:
        return 0
    return int(wide[-1] if rule == "last" else np.argmax(ratios)) + 1


# --------------------------------------------------------------------------- one point


@dataclasses.dataclass(frozen=True)
class Spec:
    """Static settings of `make_measure_fn`.

    Attributes:
      num_classes: C.
      top_k: Hessian eigenpairs by Lanczos (largest first); take k > C to see the bulk edge.
      order: Lanczos steps (>= top_k; outliers converge in a few tens, 3-4 top_k is ample).
      chunk: examples per Jacobian block of the Gram matrix (divides the Gram examples).
    """

    num_classes: int
    top_k: int = 20
    order: int = 60
    chunk: int = 10

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if not 2 <= self.top_k <= self.order:
            raise ValueError(f"need 2 <= top_k <= order, got top_k={self.top_k}, order={self.order}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")


def make_measure_fn(fm: flat.FlatModel, *, spec: Spec) -> Callable[..., dict[str, Array]]:
    """Single-point measurement (jit it, or map it over seeds with `seeds.map_seeds`).

    Returns:
      measure(key, theta, xg, yg, xh, yh) -> dict. (xg [N, ...], yg [N]): the examples of the
      logit-gradient Gram matrix (N a multiple of spec.chunk); (xh, yh): the examples of loss,
      gradient, Hessian and logits; key: Lanczos' start vector. Entries: the `SCALARS`
      (loss, accuracy, grad_norm = |g|, radius = |theta|, logit_var, q_*), ``top_eigs`` [k]
      (Ritz values of H, largest first), ``overlap`` [k] (`gradient_overlap` of g with the Ritz
      vectors), ``n_*`` pair counts and ``block_mean`` [C, C, C, C] (`cosine_groups`).
      Cost: order Hessian-vector products on xh, the Gram matrix on xg (see
      `logit_gradient_gram`); memory top_k + order vectors of size D.
    """

    def measure(key, theta, xg, yg, xh, yh):
        f = flat.loss_fn(fm, xh, yh)
        value, grad = jax.value_and_grad(f)(theta)
        logits_ = flat.logits(fm, theta, xh)
        mv = curvature.loss_hvp(fm, theta, xh, yh)
        eigs, vectors = spectra.extreme_eigs(key, mv, dim=fm.D, k=spec.top_k, order=spec.order, which="top",
                                             dtype=theta.dtype)
        groups = cosine_groups(logit_gradient_gram(fm, theta, xg, chunk=spec.chunk), yg, num_classes=spec.num_classes)
        return {
            "loss": value,
            "accuracy": jnp.mean(jnp.argmax(logits_, -1) == yh),
            "grad_norm": jnp.linalg.norm(grad),
            "radius": jnp.linalg.norm(theta),
            "logit_var": logit_variance(logits_),
            "top_eigs": eigs,
            "overlap": gradient_overlap(vectors, grad),
            **groups,
        }

    return measure


def balanced_examples(key: Array, y: np.ndarray, *, per_class: int, num_classes: int) -> np.ndarray:
    """Indices of `per_class` examples of each class, drawn without replacement, grouped by class.

    Raises:
      ValueError: a class has fewer than `per_class` examples.
    """
    y = np.asarray(y)
    out = []
    for c, k in zip(range(num_classes), jax.random.split(key, num_classes)):
        pool = np.flatnonzero(y == c)
        if pool.size < per_class:
            raise ValueError(f"class {c} has {pool.size} examples, fewer than {per_class} asked for")
        out.append(np.sort(pool[np.asarray(jax.random.permutation(k, pool.size))[:per_class]]))
    return np.concatenate(out)
