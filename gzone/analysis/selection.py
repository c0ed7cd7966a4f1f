r"""Convexity-selected initialisations (Fort & Scherlis 2019, on initialisation): scores at a point,
the selection, and the two-sample comparison of what training from them gives.

  order_by(values, higher_is_better=)               indices best first (stable)
  select(values, num=, against=, key=)               the top-scored inits and a comparison group
  mann_whitney(a, b)                                 two-sided Mann-Whitney U, p-value, rank-biserial r
  spearman(a, b)                                     Spearman's rho and its p-value (None when undefined)

Scores (`SCORES`; all on fixed examples at the initial point theta):
  * ``trace_over_frob``: Tr(H_sub)/||H_sub||_F of the exact subspace Hessian H_sub = P^T H P of a random
    d-dimensional subspace (higher: more convex);
  * ``frac_pos``: the fraction of H_sub's d eigenvalues that are positive (``n_pos`` = d frac_pos);
  * ``full_trace_over_frob``: full-space Tr(H)/||H||_F by Rademacher probes (`curvature.fullspace.estimates`);
  * ``loss``: the initial loss (lower is better).

Rank-biserial correlation of samples a, b (sizes n_a, n_b) from the Mann-Whitney U of a
(U_a = #{(i, j): a_i > b_j} + #{a_i = b_j} / 2): r = 2 U_a / (n_a n_b) - 1 = P(a > b) - P(a < b), in
[-1, 1]; r > 0 when a tends to be larger.
"""

from __future__ import annotations

import jax
import numpy as np
from scipy import stats

Array = jax.Array
SCORES = ("trace_over_frob", "frac_pos", "full_trace_over_frob", "loss")
HIGHER_IS_BETTER = {"trace_over_frob": True, "frac_pos": True, "full_trace_over_frob": True, "loss": False}
AGAINST = ("bottom", "random")


def order_by(values, *, higher_is_better: bool) -> np.ndarray:
    """Indices of `values` best first; ties keep index order; NaN last."""
    v = np.asarray(values, np.float64)
    key = np.where(np.isnan(v), np.inf, -v if higher_is_better else v)
    return np.argsort(key, kind="stable")


def select(values, *, num: int, against: str, higher_is_better: bool,
           key: Array | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The `num` best-scored indices and a comparison group of `num` others.

    Args:
      values: [K] scores.
      num: group size (2 num <= K).
      against: ``bottom`` (the num worst-scored, worst first) or ``random`` (num drawn without
        replacement from the K - num not in the top group, by `key`).
      higher_is_better: the score's direction.

    Returns:
      (top [num], other [num]) integer indices into values.
    """
    ranked = order_by(values, higher_is_better=higher_is_better)
    if not 1 <= 2 * num <= ranked.size:
        raise ValueError(f"two groups of {num} do not fit in {ranked.size} scores")
    if against not in AGAINST:
        raise ValueError(f"against={against!r} unknown; allowed: {', '.join(AGAINST)}")
    top = ranked[:num]
    if against == "bottom":
        return top, ranked[::-1][:num]
    if key is None:
        raise ValueError("against='random' needs a key")
    rest = ranked[num:]
    return top, rest[np.asarray(jax.random.permutation(key, rest.size))[:num]]


def mann_whitney(a, b) -> dict:
    """Two-sided Mann-Whitney U test of samples a and b, with the rank-biserial effect size.

    scipy.stats.mannwhitneyu (``alternative='two-sided'``, ``method='auto'``: the exact distribution
    when both samples are smaller than 8 and there are no ties, else the normal approximation with the
    tie correction and a continuity correction).

    Returns:
      dict: ``U`` (of a), ``p_value``, ``rank_biserial`` (module docstring), ``n_a``, ``n_b``,
      ``median_a``, ``median_b``, ``mean_a``, ``mean_b``.
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size < 1 or b.size < 1 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("mann_whitney needs non-empty samples of finite values")
    res = stats.mannwhitneyu(a, b, alternative="two-sided")
    u = float(res.statistic)
    return {"U": u, "p_value": float(res.pvalue), "rank_biserial": 2.0 * u / (a.size * b.size) - 1.0,
            "n_a": int(a.size), "n_b": int(b.size), "median_a": float(np.median(a)),
            "median_b": float(np.median(b)),
            "mean_a": float(np.mean(a)), "mean_b": float(np.mean(b))}


def spearman(a, b) -> dict:
    """Spearman's rho of paired samples a, b and its p-value (scipy.stats.spearmanr); None for both when
    either sample is constant (rho undefined)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"rho": None, "p_value": None}
    res = stats.spearmanr(a, b)
    return {"rho": float(res.statistic), "p_value": float(res.pvalue)}
