r"""What is read off the recorded SLQ quadratures of the full Hessian (`studies.spectral_density`).

Every function takes ``nodes, weights`` [..., probe, node] (the records' trailing axes, e.g. one
seed's [probe, node] or a scan's [radius, d, seed, probe, node]) and reduces the last two: the
probes are pooled into their mean measure, mu_hat = mean_p sum_i w_pi delta(theta_pi), an unbiased
estimate of the spectral measure mu = (1/D) sum_j delta(lambda_j) of H.

  moment(nodes, weights, k)        tr(H^k) / D (each probe's value v^T H^k v / D is exact for
                                   k <= 2 order - 1)
  mass_above(nodes, weights, x)    mu(lambda > x) with a Chebyshev-Markov-Stieltjes bracket
  ritz_largest(nodes, j)           lower bounds on the j largest eigenvalues from the Ritz values
  summary(nodes, weights, D=, k=)  the statistics of one point (`SUMMARY_KEYS`, below)
  smoothed(nodes, weights, grid, scale=, width=)   the smoothed density of s = asinh(lambda / scale)

Brackets (Chebyshev-Markov-Stieltjes): a Gauss quadrature t_1 < ... < t_m, w of a measure nu
satisfies sum_{j<i} w_j <= nu(lambda < t_i) and nu(lambda <= t_i) <= sum_{j<=i} w_j, so for
t_k <= x < t_{k+1}, nu(lambda <= x) lies in [sum_{j<k} w_j, sum_{j<=k+1} w_j]: each probe's own
measure nu_v = sum_j (q_j . v)^2 / D delta(lambda_j) is known to within the weights of the two nodes
next to x. The network Hessians here put most of mu (91-97 % for the MNIST MLP) within 1 % of the
bulk's half-width of 0 (the null space of the Gauss-Newton part, rank <= N (C - 1), smeared by the
residual), which Gauss quadrature represents by one or two heavy nodes next to 0: the sign of that
mass is not resolved, and the bracket of mu(lambda > 0) says so. ``mass_pos_eps`` /
``mass_neg_eps`` count the mass beyond +-eps, eps = EPS_FRACTION of the bulk's half-width
(edge - bottom) / 2, past that cluster, and ``pos_share_eps`` the positive share of it (the
full-space analogue of a fraction of positive eigenvalues).

The extremes come from the nodes themselves, which are Ritz values: by Cauchy interlacing the j-th
largest node of any probe is <= lambda_j, so the largest over the probes is the best lower bound,
and the top ones converge to the top eigenvalues within a few tens of steps (equal across probes).
``top`` = lambda_1, ``bottom`` = lambda_min, ``edge`` = lambda_k, the bulk's upper edge, with k =
2 C in the studies (C classes: twice the C outliers the logits can make; NaN when order < k, and
with it the trace share and the bulk shift; eps then uses the top instead): a
bulk of ~D eigenvalues has its k-th largest at its edge, and up to k - 1 outliers lie above it.
``top_over_edge`` ~ 1 means no outlier, >> 1 a top eigenvalue far above the bulk. Each probe's
quadrature splits at the edge into the nodes above it (converged top eigenvalues, weights
(q_j . v)^2 / D, chi-squared noisy) and the rest (the bulk, ~D eigenvalues, well averaged):
``top_trace_share`` = 1 - (the rest's share of sum_i w_i theta_i), the share of Tr(H) above the edge
(a ratio of the same probes' sums, so it can pass 1 where the bulk's net trace is <= 0), and
``bulk_shift`` = the rest's mean over its standard deviation: how far the bulk sits off 0.
"""

from __future__ import annotations

import warnings

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
    "pos_share_eps",  # mass_pos_eps / (mass_pos_eps + mass_neg_eps): the positive share past the cluster at 0
    "eps",
    "top",  # lambda_1 (the largest Ritz value over the probes)
    "bottom",  # lambda_min (the smallest)
    "edge",  # lambda_k, the bulk's upper edge
    "top_over_edge",
    "top_trace_share",  # the share of Tr(H) above the edge
    "bulk_shift",  # mean / std of the measure at or below the edge
)


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


def ritz_largest(nodes, j: int) -> np.ndarray:
    """[..., j]: the j largest nodes of each probe, the largest over the probes at each rank (descending):
    lower bounds on lambda_1 >= ... >= lambda_j (Cauchy interlacing); NaN beyond the order."""
    nodes = np.sort(np.asarray(nodes, np.float64), axis=-1)[..., ::-1]
    m = nodes.shape[-1]
    out = np.max(nodes[..., : min(j, m)], axis=-2)
    pad = np.full((*out.shape[:-1], max(j - m, 0)), np.nan)
    return np.concatenate([out, pad], -1)


def summary(nodes, weights, *, D: int, k: int) -> dict[str, np.ndarray]:
    """The statistics of `SUMMARY_KEYS` for each point ([...], the probe and node axes reduced)."""
    m1, m2 = moment(nodes, weights, 1), moment(nodes, weights, 2)
    top_k = ritz_largest(nodes, k)
    edge = top_k[..., -1]
    bottom = np.min(np.asarray(nodes, np.float64), axis=(-2, -1))
    upper = np.where(np.isfinite(edge), edge, top_k[..., 0])  # the top where order < k
    eps = EPS_FRACTION * np.maximum(upper - bottom, 0.0) / 2
    t, w = np.asarray(nodes, np.float64), np.asarray(weights, np.float64)
    high = t > upper[..., None, None]  # each probe's nodes above the edge: converged top eigenvalues
    part = lambda f: np.mean(np.sum(np.where(high, 0.0, w * f), -1), -1)  # noqa: E731  the rest
    bulk_mean = part(t) / part(1.0)
    bulk_var = part(t**2) / part(1.0) - bulk_mean**2
    pos, pos_lo, pos_hi = mass_above(nodes, weights, 0.0)
    pos_eps, neg_eps = mass_above(nodes, weights, eps)[0], mass_above(-t, weights, eps)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "trace": m1,
            "trace_over_frob": np.sqrt(D) * m1 / np.sqrt(m2),
            "mass_pos": pos,
            "mass_pos_lo": pos_lo,
            "mass_pos_hi": pos_hi,
            "mass_pos_eps": pos_eps,
            "mass_neg_eps": neg_eps,
            "pos_share_eps": pos_eps / (pos_eps + neg_eps),
            "eps": eps,
            "top": top_k[..., 0],
            "bottom": bottom,
            "edge": edge,
            "top_over_edge": top_k[..., 0] / edge,
            "top_trace_share": np.where(np.isfinite(edge), 1 - part(t) / m1, np.nan),
            "bulk_shift": np.where(np.isfinite(edge), bulk_mean / np.sqrt(np.maximum(bulk_var, 0.0)), np.nan),
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
    """Rows: points (`labels`); columns: `summary` statistics, the mean over the last (seed) axis of each
    row's values ([point, seed] arrays), +- the seed standard deviation for Tr/||H||_F, top/edge and the
    trace share."""
    values = {k: np.asarray(v, np.float64) for k, v in stats.items()}
    with warnings.catch_warnings():  # all-NaN rows (an edge beyond the order, non-finite points) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = {k: np.nanmean(v, axis=-1) for k, v in values.items()}
        spread = {k: np.nanstd(v, axis=-1, ddof=1) if v.shape[-1] > 1 else np.full(v.shape[:-1], np.nan)
                  for k, v in values.items()}
    head = (f"{'point':>14} {'Tr(H)/D':>10} {'Tr/|H|_F':>13} {'mass>0':>6} {'[bracket]':>13} {'>eps':>6} "
            f"{'<-eps':>6} {'share+':>6} {'top':>9} {'edge':>9} {'top/edge':>13} {'Tr share':>13} "
            f"{'bulk shift':>10}")
    lines = [f"full Hessian spectral density (SLQ; edge = the k-th largest eigenvalue, eps = "
             f"{EPS_FRACTION:g} x bulk half-width; +- seed std)", head, "-" * len(head)]

    def pm(key, i, f):
        return f"{mean[key][i]:{f}} +- {spread[key][i]:.2f}"

    for i, label in enumerate(labels):
        m = {k: v[i] for k, v in mean.items()}
        lines.append(
            f"{label:>14} {m['trace']:>10.3e} {pm('trace_over_frob', i, '.2f'):>13} {m['mass_pos']:>6.3f} "
            f"{'[%.2f, %.2f]' % (m['mass_pos_lo'], m['mass_pos_hi']):>13} {m['mass_pos_eps']:>6.3f} "
            f"{m['mass_neg_eps']:>6.3f} {m['pos_share_eps']:>6.3f} {m['top']:>9.4g} {m['edge']:>9.4g} "
            f"{pm('top_over_edge', i, '.2f'):>13} {pm('top_trace_share', i, '.2f'):>13} "
            f"{m['bulk_shift']:>10.3g}")
    return "\n".join(lines)
