r"""Convexity-selected initialisations (Fort & Scherlis 2019, on initialisation): scores at a point,
the selection, and the two-sample comparison of what training from them gives.

  order_by(values, higher_is_better=)               indices best first (stable)
  select(values, num=, against=, key=)               the top-scored inits and a comparison group
  mann_whitney(a, b)                                 two-sided Mann-Whitney U, p-value, rank-biserial r
  spearman(a, b)                                     Spearman's rho and its p-value (None when undefined)
  welch(a, b, confidence=)                           mean difference a - b, Welch t-test and its interval
  variance_components(values)                        between-init and init x order variances [G, M, S]
  t_test_power(effect=, sd=, n=) / t_test_size(...)  power of the two-sample t-test, and n for a power

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


def welch(a, b, *, confidence: float = 0.95) -> dict:
    """Welch's two-sample t-test of mean(a) - mean(b) and its confidence interval.

    diff = mean(a) - mean(b), se^2 = s_a^2 / n_a + s_b^2 / n_b, df by Welch-Satterthwaite
    (se^4 / (s_a^4 / (n_a^2 (n_a - 1)) + s_b^4 / (n_b^2 (n_b - 1)))), t = diff / se, the two-sided p
    from Student's t with df, and diff -+ t_{df, (1 + confidence) / 2} se (scipy.stats.ttest_ind with
    ``equal_var=False`` computes the same).

    Returns:
      dict: ``difference``, ``low``, ``high``, ``se``, ``t``, ``df``, ``p_value``, ``confidence``,
      ``n_a``, ``n_b``, ``sd_a``, ``sd_b``.
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size < 2 or b.size < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("welch needs two samples of at least 2 finite values each")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = float(np.sqrt(va + vb))
    diff = float(a.mean() - b.mean())
    df = float((va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))) if se > 0 else np.inf
    t = diff / se if se > 0 else np.copysign(np.inf, diff) if diff else np.nan
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df)) * se
    return {"difference": diff, "low": diff - half, "high": diff + half, "se": se, "t": float(t), "df": df,
            "p_value": float(2.0 * stats.t.sf(abs(t), df)) if np.isfinite(t) else (0.0 if diff else 1.0),
            "confidence": confidence, "n_a": int(a.size), "n_b": int(b.size),
            "sd_a": float(a.std(ddof=1)), "sd_b": float(b.std(ddof=1))}


def variance_components(values) -> dict:
    """Between-init and init x order variances of a [group, member, seed] outcome (two-way layout).

    Within each group, with S batch orders shared by its M inits: the interaction variance
    s_int^2 = sum (v_ms - v_m. - v_.s + v_..)^2 / ((M - 1)(S - 1)) (pooled over groups), the variance
    of the per-init means v_m. (pooled), and the between-init variance s_b^2 = var(v_m.) - s_int^2 / S
    (method of moments, clipped at 0), so that a per-init mean over S' orders has variance about
    s_b^2 + s_int^2 / S'. (The orders' main effect is shared by every init and cancels in a difference
    of group means.)

    Returns:
      dict: ``interaction_var``, ``init_mean_var``, ``between_var``, ``M``, ``S``.
    """
    v = np.asarray(values, np.float64)
    G, M, S = v.shape
    if M < 2 or S < 2:
        raise ValueError(f"need at least 2 inits and 2 orders per group, got {M} and {S}")
    res = v - v.mean(2, keepdims=True) - v.mean(1, keepdims=True) + v.mean((1, 2), keepdims=True)
    interaction = float((res**2).sum() / (G * (M - 1) * (S - 1)))
    init_mean = float(v.mean(2).var(axis=1, ddof=1).mean())
    return {"interaction_var": interaction, "init_mean_var": init_mean,
            "between_var": max(init_mean - interaction / S, 0.0), "M": M, "S": S}


def t_test_power(*, effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided two-sample t-test (n per group, common sd) at a true difference `effect`.

    With df = 2 n - 2, the noncentrality lambda = effect / (sd sqrt(2 / n)) and c = t_{df, 1 - alpha/2}:
    power = P(|T'| > c) = 1 - F_nct(c; df, lambda) + F_nct(-c; df, lambda) (scipy.stats.nct).
    """
    if n < 2 or not sd > 0:
        raise ValueError(f"need n >= 2 and sd > 0, got {n}, {sd}")
    df, ncp = 2 * n - 2, abs(effect) / (sd * np.sqrt(2.0 / n))
    c = stats.t.ppf(1.0 - alpha / 2.0, df)
    return float(stats.nct.sf(c, df, ncp) + stats.nct.cdf(-c, df, ncp))


def t_test_size(*, effect: float, sd: float, power: float = 0.8, alpha: float = 0.05,
                n_max: int = 100_000) -> int:
    """The smallest n per group at which `t_test_power` reaches `power`."""
    n = 2
    while t_test_power(effect=effect, sd=sd, n=n, alpha=alpha) < power:
        n += 1
        if n > n_max:
            raise ValueError(f"power {power} needs more than {n_max} per group")
    return n
