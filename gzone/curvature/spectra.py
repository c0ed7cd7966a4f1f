"""Matrix-free full-space curvature: Lanczos, extreme eigenpairs, SLQ densities, trace estimators.

Everything takes a matrix-vector function ``mv: [D] -> [D]`` of a symmetric matrix A (the
Hessian via `curvature.hvp` or ``jax.linearize``, the Gauss-Newton matrix or the residual from
`gauss_newton.make_curvature_mvs`, a plain matrix in tests):

  lanczos(key, mv, dim=, order=)            alphas [m], betas [m-1], basis [m, D]; full reorth.
  ritz(alphas, betas, basis)                Ritz values [m] (ascending) and vectors [m, D]
  extreme_eigs(key, mv, dim=, k=, order=)   top / bottom / both Ritz pairs
  gauss_quadrature(alphas, betas)           nodes [m], weights [m] of e_1^T f(T) e_1
  slq(key, mv, ...), slq_density(...)       stochastic Lanczos quadrature (Rademacher probes)
  hutchinson, hutch_pp, frobenius_sq        Tr(A), ||A||_F^2 = E|A v|^2
  trace_over_frob(key, mv, ...)             Tr(A)/||A||_F with a delta-method standard error
  ratio_from_samples(t, f)                  the same statistics from given probe samples

Sizes (dim, order, k, num_probes) are static Python ints; the functions are traceable, so jit
the whole computation once at the caller, e.g. ``jax.jit(lambda key: extreme_eigs(key, mv,
dim=D, k=5, order=40))``. Iterations are ``lax.fori_loop``; probes run one at a time through
``lax.map`` (memory of one Krylov basis, not num_probes of them). Arithmetic is in ``dtype``
(default: float64 when jax_enable_x64 is on, else float32); mv's output is cast to it.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
MatVec = Callable[[Array], Array]
WHICH = ("top", "bottom", "both")
PROBES = ("rademacher", "gaussian")


def _float(dtype) -> jnp.dtype:
    """dtype, or the widest enabled float (float64 under jax_enable_x64, else float32)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype)


def _probes(key: Array, shape: tuple[int, ...], *, dist: str, dtype) -> Array:
    if dist not in PROBES:
        raise ValueError(f"probe distribution {dist!r} unknown; allowed: {', '.join(PROBES)}")
    if dist == "rademacher":
        return jax.random.rademacher(key, shape, dtype)
    return jax.random.normal(key, shape, dtype)


def _orthogonalise(basis: Array, w: Array) -> Array:
    """w minus its projection on the rows of basis [m, D], twice (Kahan-Parlett: twice is enough).

    Unfilled (zero) rows of basis contribute nothing.
    """
    w = w - basis.T @ (basis @ w)
    return w - basis.T @ (basis @ w)


# --------------------------------------------------------------------------- Lanczos


def lanczos(
    key: Array,
    mv: MatVec,
    *,
    dim: int,
    order: int,
    dtype=None,
    start: Array | None = None,
) -> tuple[Array, Array, Array]:
    """Lanczos tridiagonalisation with full reorthogonalisation: T = Q A Q^T.

    Each new Krylov vector is orthogonalised against all stored ones by two passes of
    classical Gram-Schmidt. On breakdown (the Krylov space is invariant, e.g. A = I or A with
    repeated eigenvalues) the next vector is a fresh random vector orthogonal to the basis and
    the off-diagonal entry is 0, so T splits into blocks and with order = dim its eigenvalues
    are all of A's, multiplicities included. Breakdown is declared when the residual norm is
    at most half its norm after the first pass (the twice-is-enough test: what remains is
    rounding) or at most 10 eps ||A q||; no NaN arises even for A = 0.

    Args:
      mv: v [D] -> A v [D] for a symmetric A.
      key: PRNG key: the start vector (when ``start`` is None) and restarts on breakdown.
      dim: D.
      order: m, the number of Lanczos steps (matrix-vector products), 1 <= m <= D.
      dtype: float dtype of the basis and T (default float64 under x64, else float32).
      start: optional [D] start vector (normalised here); default a Gaussian draw.

    Returns:
      alphas: [m] the diagonal of T.
      betas: [m-1] the off-diagonal of T (>= 0).
      basis: [m, D] Q, orthonormal rows, q_0 = start / |start|.
      Cost: m products with A plus 4 m^2 D flops for reorthogonalisation; memory m D.
    """
    if not 1 <= order <= dim:
        raise ValueError(f"order={order} must be in [1, dim={dim}]")
    dtype = _float(start.dtype if (start is not None and dtype is None) else dtype)
    k_start, k_restart = jax.random.split(key)
    if start is None:
        start = jax.random.normal(k_start, (dim,), dtype)
    start = start.astype(dtype)
    if start.shape != (dim,):
        raise ValueError(f"start has shape {start.shape}, expected ({dim},)")
    eps = jnp.finfo(dtype).eps
    basis = jnp.zeros((order, dim), dtype).at[0].set(start / jnp.linalg.norm(start))

    def step(i, carry):
        basis, alphas, betas, anorm = carry
        q = basis[i]
        w = mv(q).astype(dtype)
        anorm = jnp.maximum(anorm, jnp.linalg.norm(w))
        alphas = alphas.at[i].set(jnp.vdot(q, w))
        w1 = w - basis.T @ (basis @ w)  # removes alpha q_i and beta q_{i-1} too
        w2 = w1 - basis.T @ (basis @ w1)
        beta = jnp.linalg.norm(w2)
        broke = (beta <= 0.5 * jnp.linalg.norm(w1)) | (beta <= 10 * eps * anorm)

        def restart(_):
            r = _orthogonalise(basis, jax.random.normal(jax.random.fold_in(k_restart, i), (dim,), dtype))
            return r / jnp.linalg.norm(r)

        q_next = jax.lax.cond(broke, restart, lambda _: w2 / jnp.where(broke, 1.0, beta), None)
        betas = betas.at[i].set(jnp.where(broke, 0.0, beta))
        return basis.at[i + 1].set(q_next), alphas, betas, anorm

    init = (basis, jnp.zeros(order, dtype), jnp.zeros(max(order - 1, 0), dtype), jnp.zeros((), dtype))
    basis, alphas, betas, _ = jax.lax.fori_loop(0, order - 1, step, init)
    last = basis[order - 1]
    alphas = alphas.at[order - 1].set(jnp.vdot(last, mv(last).astype(dtype)))
    return alphas, betas, basis


def tridiagonal(alphas: Array, betas: Array) -> Array:
    """The symmetric tridiagonal T [m, m] with diagonal alphas [m] and off-diagonal betas [m-1]."""
    return jnp.diag(alphas) + jnp.diag(betas, 1) + jnp.diag(betas, -1)


def ritz(alphas: Array, betas: Array, basis: Array) -> tuple[Array, Array]:
    """Ritz pairs of a Lanczos run.

    Returns:
      values: [m] eigenvalues of T, ascending.
      vectors: [m, D] the Ritz vectors S^T Q (rows, unit norm), S the eigenvectors of T.
      A Ritz pair's residual is |A v - lambda v| = beta_m |S[m-1, j]|; extreme pairs converge
      first.
    """
    values, s = jnp.linalg.eigh(tridiagonal(alphas, betas))
    return values, s.T @ basis


def extreme_eigs(
    key: Array,
    mv: MatVec,
    *,
    dim: int,
    k: int,
    order: int,
    which: str = "top",
    dtype=None,
) -> tuple[Array, Array]:
    """The k extreme eigenpairs of A approximated by Lanczos Ritz pairs.

    Args:
      mv: v [D] -> A v [D], A symmetric.
      key: PRNG key for `lanczos`.
      dim: D.
      k: number of pairs per end.
      order: Lanczos steps m (k <= m <= D; 2k <= m for ``both``). Well-separated outliers
        converge in a few tens of steps; a bulk edge needs more.
      which: ``top`` (largest first), ``bottom`` (smallest first) or ``both`` (the bottom k,
        smallest first, then the top k, largest first).
      dtype: float dtype (see `lanczos`).

    Returns:
      values: [k] (or [2k] for ``both``) Ritz values.
      vectors: [k, D] (or [2k, D]) unit Ritz vectors, row j belongs to values[j].
    """
    if which not in WHICH:
        raise ValueError(f"which={which!r} unknown; allowed: {', '.join(WHICH)}")
    if not 1 <= (2 * k if which == "both" else k) <= order:
        raise ValueError(f"k={k} pairs ({which}) do not fit in order={order}")
    values, vectors = ritz(*lanczos(key, mv, dim=dim, order=order, dtype=dtype))
    top = (values[::-1][:k], vectors[::-1][:k])
    bottom = (values[:k], vectors[:k])
    if which == "top":
        return top
    if which == "bottom":
        return bottom
    return jnp.concatenate([bottom[0], top[0]]), jnp.concatenate([bottom[1], top[1]])


# --------------------------------------------------------------------------- SLQ


def gauss_quadrature(alphas: Array, betas: Array) -> tuple[Array, Array]:
    """Gauss quadrature of a Lanczos run started at v: v^T f(A) v / |v|^2 ~ sum_i w_i f(theta_i).

    Exact for polynomials f of degree <= 2m - 1 (m = len(alphas)).

    Returns:
      nodes: [m] theta_i, the eigenvalues of T.
      weights: [m] w_i = (first component of T's i-th eigenvector)^2; they sum to 1.
    """
    nodes, s = jnp.linalg.eigh(tridiagonal(alphas, betas))
    return nodes, s[0] ** 2


def slq(
    key: Array, mv: MatVec, *, dim: int, order: int, num_probes: int, dtype=None
) -> tuple[Array, Array]:
    """Stochastic Lanczos quadrature nodes and weights, one Lanczos run per Rademacher probe.

    With Rademacher v (|v|^2 = D), E_v sum_i w_i theta_i^k = E v^T A^k v / D = tr(A^k)/D for
    k <= 2 order - 1, and the mixture of point masses is an unbiased estimate of the spectral
    density (Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019).

    Returns:
      nodes: [num_probes, order].
      weights: [num_probes, order], each row sums to 1.
      Probes run sequentially (lax.map): memory of one [order, D] basis.
    """
    dtype = _float(dtype)

    def one(k):
        k_probe, k_lanczos = jax.random.split(k)
        v = _probes(k_probe, (dim,), dist="rademacher", dtype=dtype)
        alphas, betas, _ = lanczos(k_lanczos, mv, dim=dim, order=order, dtype=dtype, start=v)
        return gauss_quadrature(alphas, betas)

    return jax.lax.map(one, jax.random.split(key, num_probes))


def smoothed_density(nodes: Array, weights: Array, grid: Array, sigma: float) -> Array:
    """Gaussian-smoothed density mean_p sum_i w_pi N(t; theta_pi, sigma^2) at grid points t.

    Args:
      nodes, weights: [P, m] from `slq`.
      grid: [G] points.
      sigma: the Gaussian's standard deviation (> 0).

    Returns:
      [G] density values; the density integrates to 1 over the real line (over the grid when
      it extends a few sigma beyond the nodes).
    """
    z = (grid[None, None, :] - nodes[..., None]) / sigma
    gauss = jnp.exp(-0.5 * z**2) / (sigma * jnp.sqrt(2 * jnp.pi))
    return jnp.einsum("pm,pmg->g", weights, gauss) / nodes.shape[0]


def slq_density(
    key: Array,
    mv: MatVec,
    *,
    dim: int,
    order: int,
    num_probes: int,
    grid: Array,
    sigma: float,
    dtype=None,
) -> tuple[Array, Array, Array]:
    """Smoothed spectral density of A by SLQ: `slq` then `smoothed_density`.

    Returns:
      density: [G] on grid [G], integrating to 1.
      nodes, weights: [num_probes, order], the raw quadrature per probe.
    """
    nodes, weights = slq(key, mv, dim=dim, order=order, num_probes=num_probes, dtype=dtype)
    return smoothed_density(nodes, weights, jnp.asarray(grid, nodes.dtype), sigma), nodes, weights


# --------------------------------------------------------------------------- traces


def probe_quadratics(
    key: Array,
    mv: MatVec,
    *,
    dim: int,
    num_probes: int,
    dist: str = "rademacher",
    dtype=None,
) -> tuple[Array, Array]:
    """Per-probe samples t_p = v_p^T A v_p and f_p = |A v_p|^2, one product with A per probe.

    For probes with E v v^T = I (Rademacher or Gaussian, ``dist``): E t = Tr(A),
    E f = Tr(A^T A) = ||A||_F^2. Rademacher probes give the lower variance for the trace:
    Var t = 2 (||A||_F^2 - sum_i A_ii^2) versus 2 ||A||_F^2 for Gaussian.

    Returns:
      t: [num_probes]; f: [num_probes].
    """
    dtype = _float(dtype)
    v = _probes(key, (num_probes, dim), dist=dist, dtype=dtype)

    def one(vi):
        avi = mv(vi).astype(dtype)
        return jnp.vdot(vi, avi), jnp.vdot(avi, avi)

    return jax.lax.map(one, v)


def _mean_se(x: Array) -> tuple[Array, Array]:
    """Mean of samples x [P] and its standard error (sample std, ddof=1, over sqrt(P))."""
    if x.shape[0] < 2:
        raise ValueError(f"a standard error needs num_probes >= 2, got {x.shape[0]}")
    return jnp.mean(x), jnp.std(x, ddof=1) / jnp.sqrt(x.shape[0])


def hutchinson(
    key: Array, mv: MatVec, *, dim: int, num_probes: int, dtype=None
) -> tuple[Array, Array]:
    """Hutchinson's estimate of Tr(A) with Rademacher probes, and its standard error.

    Returns:
      (estimate, stderr): scalars; stderr = sample std of v^T A v (ddof=1) / sqrt(num_probes).
    """
    t, _ = probe_quadratics(key, mv, dim=dim, num_probes=num_probes, dtype=dtype)
    return _mean_se(t)


def frobenius_sq(
    key: Array,
    mv: MatVec,
    *,
    dim: int,
    num_probes: int,
    dist: str = "rademacher",
    dtype=None,
) -> tuple[Array, Array]:
    """Estimate of ||A||_F^2 = E |A v|^2 and its standard error (scalars)."""
    _, f = probe_quadratics(key, mv, dim=dim, num_probes=num_probes, dist=dist, dtype=dtype)
    return _mean_se(f)


def hutch_pp(key: Array, mv: MatVec, *, dim: int, num_matvecs: int, dtype=None) -> Array:
    """Hutch++ estimate of Tr(A) (Meyer, Musco, Musco & Woodruff 2021, Algorithm 1).

    With r = num_matvecs / 3 Rademacher sketches S [D, r] and probes G [D, r]:
    Q = orth(A S), Tr(A) ~ Tr(Q^T A Q) + Tr(G^T P A P G) / r with P = I - Q Q^T. Unbiased for
    any A; its variance is much lower than Hutchinson's at the same number of products when
    A has a few dominant eigenvalues (the low-rank part is captured exactly).

    Args:
      num_matvecs: products with A in total, a positive multiple of 3.

    Returns:
      scalar estimate. (No standard error: the low-rank part's randomness has no cheap one.)
    """
    if num_matvecs < 3 or num_matvecs % 3:
        raise ValueError(f"num_matvecs={num_matvecs} must be a positive multiple of 3")
    r = num_matvecs // 3
    dtype = _float(dtype)
    k_s, k_g = jax.random.split(key)
    apply = lambda rows: jax.lax.map(lambda v: mv(v).astype(dtype), rows)  # noqa: E731
    sketch = apply(_probes(k_s, (r, dim), dist="rademacher", dtype=dtype))  # [r, D] = (A S)^T
    q = jnp.linalg.qr(sketch.T, mode="reduced")[0].T  # [r, D] orthonormal rows
    low_rank = jnp.sum(q * apply(q))
    g = _probes(k_g, (r, dim), dist="rademacher", dtype=dtype)
    g = g - (g @ q.T) @ q
    return low_rank + jnp.sum(g * apply(g)) / r


def trace_over_frob(
    key: Array,
    mv: MatVec,
    *,
    dim: int,
    num_probes: int,
    dtype=None,
) -> dict[str, Array]:
    """Full-space Tr(A), ||A||_F^2 and Tr(A)/||A||_F from the same Rademacher probes.

    The ratio R = mean(t) / sqrt(mean(f)) (t, f from `probe_quadratics`) has a delta-method
    standard error: with g = (1/sqrt(F), -T / (2 F^{3/2})) and Sigma the sample covariance of
    (t, f), se(R)^2 = g^T Sigma g / P. R is consistent, biased by O(1/P).

    Returns:
      dict of scalars: trace, trace_se, frob_sq, frob_sq_se, frob (sqrt(frob_sq)), ratio,
      ratio_se.
    """
    t, f = probe_quadratics(key, mv, dim=dim, num_probes=num_probes, dtype=dtype)
    return ratio_from_samples(t, f)


def ratio_from_samples(t: Array, f: Array) -> dict[str, Array]:
    """`trace_over_frob`'s statistics from per-probe samples t = v^T A v, f = |A v|^2 ([P] each)."""
    trace, trace_se = _mean_se(t)
    frob_sq, frob_sq_se = _mean_se(f)
    grad = jnp.stack([1.0 / jnp.sqrt(frob_sq), -0.5 * trace / frob_sq**1.5])
    cov = jnp.cov(jnp.stack([t, f])) / t.shape[0]
    return {
        "trace": trace,
        "trace_se": trace_se,
        "frob_sq": frob_sq,
        "frob_sq_se": frob_sq_se,
        "frob": jnp.sqrt(frob_sq),
        "ratio": trace / jnp.sqrt(frob_sq),
        "ratio_se": jnp.sqrt(grad @ cov @ grad),
    }
