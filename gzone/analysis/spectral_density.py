r"""What is read off the recorded SLQ quadratures of the full Hessian (`studies.spectral_density`).

Every function takes ``nodes, weights`` [..., probe, node] (the records' trailing axes, e.g. one
seed's [probe, node] or a scan's [radius, d, seed, probe, node]) and reduces the last two: the
probes are pooled into their mean measure, mu_hat = mean_p sum_i w_pi delta(theta_pi), an unbiased
estimate of the spectral measure mu = (1/D) sum_j delta(lambda_j) of H.

  moment(nodes, weights, k)        tr(H^k) / D (each probe's value v^T H^k v / D is exact for
                                   k <= 2 order - 1)
  mass_above(nodes, weights, x)    mu(lambda > x) with a Chebyshev-Markov-Stieltjes bracket
  kth_largest(nodes, weights, D=, k=)   the k-th largest eigenvalue read off the counting function
  summary(nodes, weights, D=, k=)  the statistics of one point (`SUMMARY_KEYS`, below)
  smoothed(nodes, weights, grid, scale=, width=)   the smoothed density of s = asinh(lambda / scale)

Brackets (Chebyshev-Markov-Stieltjes): a Gauss quadrature t_1 < ... < t_m, w of a measure nu
satisfies sum_{j<i} w_j <= nu(lambda < t_i) and nu(lambda <= t_i) <= sum_{j<=i} w_j, so for
t_k <= x < t_{k+1}, nu(lambda <= x) lies in [sum_{j<k} w_j, sum_{j<=k+1} w_j]: each probe's own
measure nu_v = sum_j (q_j . v)^2 / D delta(lambda_j) is known to within the weights of the two nodes
next to x. The network Hessians here put ~95 % of mu within 1e-3 of the spectral radius of 0 (the
null space of the Gauss-Newton part, rank <= N C, smeared by the residual), which Gauss quadrature
represents by one or two heavy nodes next to 0: the sign of that mass is not resolved, and the
bracket of mu(lambda > 0) says so. ``mass_pos_eps`` / ``mass_neg_eps`` count the mass beyond
+-eps, eps = EPS_FRACTION of the bulk's half-width, past that cluster.

The bulk edge: ``edge`` = the k-th largest eigenvalue (k = 2 C in the studies, C the classes: twice
the number of outliers expected from the C logits), read off the counting function D mu_hat(lambda
>= t). A bulk of ~D eigenvalues has its k-th largest at its upper edge, to O((k/D)^(2/3)) of its
width; up to ~k outliers lie above it. ``top_over_edge`` ~ 1 means no outlier; >> 1 a top
eigenvalue far above the bulk. ``top_trace_share`` is the share of Tr(H) carried by the
eigenvalues above the edge; ``bulk_shift`` the mean of the rest in units of its standard deviation.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from gzone.curvature import spectra

EPS_FRACTION = 0.01
SUMMARY_KEYS = (
    "trace",  # tr(H) / D
    "trace_over_frob",  # Tr(H) / ||H||_F = sqrt(D) m_1 / sqrt(m_2)
    "mass_pos",  # mu(lambda > 0)
    "mass_pos_lo",
    "mass_pos_hi",  # its bracket
    "mass_pos_eps",  # mu(lambda > eps)
    "mass_neg_eps",  # mu(lambda < -eps)
    "eps",
    "top",  # the largest Ritz value over the probes (a lower bound on lambda_max)
    "bottom",  # the smallest (an upper bound on lambda_min)
    "edge",  # the k-th largest eigenvalue, the bulk's upper edge
    "top_over_edge",
    "top_trace_share",  # share of Tr(H) above the edge
    "bulk_shift",  # mean / std of the measure at or below the edge
)


def _pooled(nodes, weights) -> tuple[np.ndarray, np.ndarray]:
    """[..., P m] nodes and weights / P (the probes' mean measure), sorted ascending by node."""
    nodes, weights = np.asarray(nodes, np.float64), np.asarray(weights, np.float64)
    if nodes.shape != weights.shape or nodes.ndim < 2:
        raise ValueError(f"nodes {nodes.shape} and weights {weights.shape}: need equal [..., probe, node]")
    P = nodes.shape[-2]
    nodes, weights = nodes.reshape(*nodes.shape[:-2], -1), weights.reshape(*weights.shape[:-2], -1) / P
    order = np.argsort(nodes, axis=-1, kind="stable")
    return np.take_along_axis(nodes, order, -1), np.take_along_axis(weights, order, -1)


def moment(nodes, weights, k: int) -> np.ndarray:
    """mean_p sum_i w_pi theta_pi^k: tr(H^k) / D, [...]."""
    return np.mean(np.sum(np.asarray(weights, np.float64) * np.asarray(nodes, np.float64) ** k, -1), -1)


def mass_above(nodes, weights, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mu_hat(lambda > x) and its bracket (lo, hi), each [...]; x broadcasts against [...].

    The bracket is each probe's Chebyshev-Markov-Stieltjes bracket (module docstring) averaged over
    the probes: it holds each probe's own measure nu_v, hence their mean, exactly.
    """
    nodes, weights = np.asarray(nodes, np.float64), np.asarray(weights, np.float64)
    x = np.asarray(x, np.float64)[..., None, None]
    order = np.argsort(nodes, axis=-1, kind="stable")
    t, w = np.take_along_axis(nodes, order, -1), np.take_along_axis(weights, order, -1)
    below = t <= x  # nodes t_1..t_k
    k = np.sum(below, -1, keepdims=True)
    cum = np.concatenate([np.zeros_like(w[..., :1]), np.cumsum(w, -1)], -1)  # cum[i] = sum_{j<=i} w_j
    m = w.shape[-1]
    at = lambda i: np.take_along_axis(cum, np.clip(i, 0, m), -1)[..., 0]  # noqa: E731
    point, lo_cdf, hi_cdf = at(k), at(k - 1), at(k + 1)
    return 1 - point.mean(-1), 1 - hi_cdf.mean(-1), 1 - lo_cdf.mean(-1)


def kth_largest(nodes, weights, *, D: int, k: int) -> np.ndarray:
    """The largest node t with D mu_hat(lambda >= t) >= k: the k-th largest eigenvalue, [...]."""
    t, w = _pooled(nodes, weights)
    count = D * np.cumsum(w[..., ::-1], -1)  # eigenvalues at or above each node, descending
    first = np.argmax(count >= k * (1 - 1e-9), axis=-1)
    return np.take_along_axis(t[..., ::-1], first[..., None], -1)[..., 0]


def summary(nodes, weights, *, D: int, k: int) -> dict[str, np.ndarray]:
    """The statistics of `SUMMARY_KEYS` for each point ([...], the probe and node axes reduced)."""
    t, w = _pooled(nodes, weights)
    m1, m2 = np.sum(w * t, -1), np.sum(w * t**2, -1)
    edge = kth_largest(nodes, weights, D=D, k=k)
    top, bottom = t[..., -1], t[..., 0]
    eps = EPS_FRACTION * np.maximum(edge - bottom, 0.0) / 2
    above = t > edge[..., None]
    rest = np.sum(np.where(above, 0.0, w), -1)
    bulk_mean = np.sum(np.where(above, 0.0, w * t), -1) / rest
    bulk_var = np.sum(np.where(above, 0.0, w * t**2), -1) / rest - bulk_mean**2
    pos, pos_lo, pos_hi = mass_above(nodes, weights, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "trace": m1,
            "trace_over_frob": np.sqrt(D) * m1 / np.sqrt(m2),
            "mass_pos": pos,
            "mass_pos_lo": pos_lo,
            "mass_pos_hi": pos_hi,
            "mass_pos_eps": mass_above(nodes, weights, eps)[0],
            "mass_neg_eps": mass_above(-np.asarray(nodes), weights, eps)[0],
            "eps": eps,
            "top": top,
            "bottom": bottom,
            "edge": edge,
            "top_over_edge": top / edge,
            "top_trace_share": np.sum(np.where(above, w * t, 0.0), -1) / m1,
            "bulk_shift": bulk_mean / np.sqrt(np.maximum(bulk_var, 0.0)),
        }


def smoothed(nodes, weights, grid, *, scale, width: float) -> np.ndarray:
    """The density of s = asinh(lambda / scale) smoothed by a Gaussian of std `width` in s, at grid [G].

    nodes, weights: [probe, node] of one point (or [..., probe, node] pooled over all leading axes).
    scale: lambda's linear width (e.g. ``eps`` of `summary`): |lambda| << scale is linear in s,
      |lambda| >> scale logarithmic, so one axis shows the cluster at 0, the bulk and the outliers.
    Returns [G]: mass per unit s; it integrates to 1 over s (the grid covering the nodes +- 4 width).
    """
    m = np.shape(nodes)[-1]
    s = np.arcsinh(np.asarray(nodes, np.float64).reshape(-1, m) / scale)
    w = np.asarray(weights, np.float64).reshape(-1, m)
    return np.asarray(spectra.smoothed_density(jnp.asarray(s), jnp.asarray(w), jnp.asarray(grid), width))


def edge_rank(num_classes: int) -> int:
    """The k of the bulk edge for C classes: 2 C (twice the C outliers the logits can make)."""
    return 2 * int(num_classes)


def table(labels, stats: dict[str, np.ndarray]) -> str:
    """Rows: points (`labels`); columns: `summary` statistics, means over the leading (seed) axis of each
    row's values ([point, seed] arrays)."""
    mean = {k: np.nanmean(np.asarray(v, np.float64), axis=-1) for k, v in stats.items()}
    head = (f"{'point':>14} {'Tr(H)/D':>10} {'Tr/|H|_F':>8} {'mass>0':>6} {'[bracket]':>13} {'>eps':>6} "
            f"{'<-eps':>6} {'top':>10} {'edge':>10} {'top/edge':>8} {'Tr share':>8} {'bulk shift':>10}")
    lines = ["full Hessian spectral density (SLQ; edge = k-th largest eigenvalue, eps = "
             f"{EPS_FRACTION:g} x bulk half-width)", head, "-" * len(head)]
    for i, label in enumerate(labels):
        m = {k: v[i] for k, v in mean.items()}
        lines.append(
            f"{label:>14} {m['trace']:>10.3e} {m['trace_over_frob']:>8.3f} {m['mass_pos']:>6.3f} "
            f"{'[%.2f, %.2f]' % (m['mass_pos_lo'], m['mass_pos_hi']):>13} {m['mass_pos_eps']:>6.3f} "
            f"{m['mass_neg_eps']:>6.3f} {m['top']:>10.4g} {m['edge']:>10.4g} {m['top_over_edge']:>8.3g} "
            f"{m['top_trace_share']:>8.3f} {m['bulk_shift']:>10.3g}")
    return "\n".join(lines)
