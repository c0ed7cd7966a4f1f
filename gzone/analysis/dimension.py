r"""Degrees of freedom of training: success probability, threshold training dimension, intrinsic
dimension, burn-in and lottery subspaces (Li et al. 2018; Larsen, Fort, Becker & Ganguli 2021).

Training in a d-dimensional affine subspace theta = a + P z through a start point a:

  * success probability P_s(d): the fraction of n random subspaces (n seeds) whose training reaches
    a target (test accuracy >= target, or training loss <= target), with a binomial interval
    (`binomial_interval`: Wilson or Clopper-Pearson);
  * threshold training dimension d*: the smallest d with P_s(d) >= 1 - delta, found by
    `threshold_search` (bracket by galloping, then bisect, on a log grid of d: O(log m) training
    units for a grid of m values, against m for a sweep);
  * intrinsic dimension d_int90 (Li et al.): the smallest d whose mean test accuracy reaches 90 % of
    the full-space baseline's (`intrinsic_dimension`, with a paired bootstrap over seeds);
  * start points: a random initialisation, a burn-in point (t0 full-space steps first; see
    `train.make_step_runner`), or the lottery subspace of a full-space trajectory (`lottery_basis`:
    top right singular vectors of the displacements theta_t - theta_0) through the initialisation.

Both thresholds are read off the evaluated points by one rule, `crossing`: the smallest evaluated d
such that every evaluated d' >= d passes. For the points a search evaluates this is exactly the
search's answer (it ends on an adjacent failing/passing pair with only passes above), and extra
sweep points can only make it more conservative. Everything here is numpy analysis on recorded
arrays; the subspaces themselves (random, lottery) are in `analysis.subspaces`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Sequence

import jax
import numpy as np
from scipy import stats

Array = jax.Array
INTERVALS = ("wilson", "clopper_pearson")
METRICS = ("test_accuracy", "train_loss")


# --------------------------------------------------------------------------- success and intervals


def binomial_interval(
    successes, trials, *, method: str = "wilson", confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided interval of a binomial proportion k / n (elementwise over arrays).

    Wilson: (k + z^2/2) / (n + z^2) +- z / (n + z^2) sqrt(k (n - k) / n + z^2 / 4), z the normal
    quantile at 1 - alpha/2. Clopper-Pearson (exact): [Beta_{alpha/2}(k, n - k + 1),
    Beta_{1-alpha/2}(k + 1, n - k)], 0 at k = 0 and 1 at k = n.

    Returns:
      (low, high), arrays of the broadcast shape of k and n (NaN where n = 0).
    """
    if method not in INTERVALS:
        raise ValueError(f"interval method {method!r} unknown; allowed: {', '.join(INTERVALS)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    k, n = np.broadcast_arrays(np.asarray(successes, float), np.asarray(trials, float))
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("successes must lie in [0, trials]")
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "wilson":
            z = stats.norm.ppf(1.0 - alpha / 2.0)
            centre = (k + z * z / 2.0) / (n + z * z)
            half = z / (n + z * z) * np.sqrt(k * (n - k) / n + z * z / 4.0)
            low, high = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
            low, high = np.where(k == 0, 0.0, low), np.where(k == n, 1.0, high)  # exact ends, not 1 - 1e-16
        else:
            low = np.where(k > 0, stats.beta.ppf(alpha / 2.0, k, n - k + 1), 0.0)
            high = np.where(k < n, stats.beta.ppf(1.0 - alpha / 2.0, k + 1, n - k), 1.0)
    bad = n <= 0
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


def reached(values, target: float, metric: str) -> np.ndarray:
    """Whether each run reached the target: accuracy >= target, or loss <= target (NaN: no)."""
    values = np.asarray(values, float)
    if metric == "test_accuracy":
        return np.nan_to_num(values, nan=-np.inf) >= target
    if metric == "train_loss":
        return np.nan_to_num(values, nan=np.inf) <= target
    raise ValueError(f"metric {metric!r} unknown; allowed: {', '.join(METRICS)}")


def success_curve(
    values, target: float, metric: str, *, method: str = "wilson", confidence: float = 0.95
) -> dict:
    """P_s over the last axis (the n trials) of values [..., n]: successes, trials, p, low, high."""
    hits = reached(values, target, metric)
    k = hits.sum(-1)
    n = np.full(k.shape, hits.shape[-1])
    low, high = binomial_interval(k, n, method=method, confidence=confidence)
    return {"successes": k, "trials": n, "p": k / n, "low": low, "high": high}


# --------------------------------------------------------------------------- adaptive search


def log_grid(d_min: int, d_max: int, per_decade: int) -> np.ndarray:
    """Distinct integers from d_min to d_max (both included), about `per_decade` per factor of 10."""
    if not 1 <= d_min <= d_max or per_decade < 1:
        raise ValueError(f"need 1 <= d_min <= d_max and per_decade >= 1, got {d_min}, {d_max}, {per_decade}")
    n = int(math.ceil(per_decade * math.log10(d_max / d_min))) + 1
    values = np.round(d_min * (d_max / d_min) ** (np.arange(n) / max(n - 1, 1))).astype(np.int64)
    return np.unique(np.clip(values, d_min, d_max))


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Outcome of a grid search for the first passing d.

    Attributes:
      threshold: the smallest passing grid value (None: even the largest fails).
      below: the largest failing grid value under it (None: the smallest grid value passes).
      evaluated: the grid values in the order they were evaluated (each once).
      outcomes: whether each of them passed.
      counts: (successes, trials) of each, for `threshold_search`; empty otherwise.
    """

    threshold: int | None
    below: int | None
    evaluated: tuple[int, ...]
    outcomes: tuple[bool, ...]
    counts: tuple[tuple[int, int], ...] = ()


def search_grid(
    passes: Callable[[int], bool], grid: Sequence[int], *, start: int | None = None
) -> SearchResult:
    """The smallest d of `grid` (ascending) with passes(d), for passes monotone in d.

    Gallops from `start` (default grid[0]): steps of 1, 2, 4, ... grid positions up while failing
    (down while passing) bracket the change, then bisection on grid positions (the geometric
    midpoint on a log grid) closes it. At most about 2 log2(m) + 2 calls for m grid values; no d
    is evaluated twice. Deterministic: replaying with the same outcomes evaluates the same d.
    """
    grid = [int(g) for g in grid]
    if not grid or any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError("grid must be a non-empty increasing sequence")
    m = len(grid)
    order: list[int] = []
    seen: dict[int, bool] = {}

    def ok(i: int) -> bool:
        if i not in seen:
            seen[i] = bool(passes(grid[i]))
            order.append(i)
        return seen[i]

    i = 0 if start is None else int(np.clip(np.searchsorted(grid, start), 0, m - 1))
    lo, hi, step = -1, m, 1  # grid[lo] fails, grid[hi] passes (virtual ends -1 and m)
    if ok(i):
        hi = i
        while hi > 0:
            j = max(hi - step, 0)
            if not ok(j):
                lo = j
                break
            hi, step = j, 2 * step
    else:
        lo = i
        while lo < m - 1:
            j = min(lo + step, m - 1)
            if ok(j):
                hi = j
                break
            lo, step = j, 2 * step
    while hi - lo > 1 and hi < m:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return SearchResult(
        threshold=grid[hi] if hi < m else None,
        below=grid[lo] if lo >= 0 else None,
        evaluated=tuple(grid[i] for i in order),
        outcomes=tuple(seen[i] for i in order),
    )


def threshold_search(
    success_fn: Callable[[int], tuple[int, int]],
    grid: Sequence[int],
    *,
    delta: float = 0.5,
    start: int | None = None,
) -> SearchResult:
    """Threshold training dimension: the smallest grid d with P_s(d) = k/n >= 1 - delta.

    Args:
      success_fn: d -> (successes k, trials n), e.g. training n random subspaces of dimension d
        (or reading them back from a run folder).
      grid: candidate dimensions, ascending (`log_grid`).
      delta: allowed failure probability, in (0, 1).
      start: where the bracketing starts (default the smallest d).
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    counts: dict[int, tuple[int, int]] = {}

    def passes(d: int) -> bool:
        k, n = (int(v) for v in success_fn(d))
        counts[d] = (k, n)
        return n > 0 and k >= (1.0 - delta) * n - 1e-9

    result = search_grid(passes, grid, start=start)
    return dataclasses.replace(result, counts=tuple(counts[d] for d in result.evaluated))


def crossing(dims, passes) -> tuple[float, float]:
    """(threshold, below) from evaluated points: the smallest d with every evaluated d' >= d passing,
    and the largest failing d under it; NaN where there is none."""
    dims, passes = np.asarray(dims, float), np.asarray(passes, bool)
    order = np.argsort(dims)
    dims, passes = dims[order], passes[order]
    failing = np.flatnonzero(~passes)
    if failing.size == 0:
        return (float(dims[0]) if dims.size else math.nan), math.nan
    last = failing[-1]
    return (float(dims[last + 1]) if last + 1 < dims.size else math.nan), float(dims[last])


def success_table(
    dims,
    values,
    evaluated,
    *,
    targets: Sequence[float],
    metric: str,
    delta: float = 0.5,
    method: str = "wilson",
    confidence: float = 0.95,
) -> dict[str, np.ndarray]:
    """P_s and thresholds of a table of runs, for each target.

    Args:
      dims: [n_d] subspace dimensions.
      values: [n_start, n_d, n] final metric of each run (NaN where not run).
      evaluated: [n_start, n_d] which (start point, d) were run.

    Returns:
      ``successes``, ``p_success``, ``p_low``, ``p_high``: [n_target, n_start, n_d] (NaN where not
      evaluated); ``threshold``, ``threshold_below``: [n_target, n_start], the `crossing` of
      P_s >= 1 - delta over each start point's evaluated d.
    """
    dims, evaluated = np.asarray(dims), np.asarray(evaluated, bool)
    shape = (len(targets), *evaluated.shape)
    out = {k: np.full(shape, np.nan) for k in ("successes", "p_success", "p_low", "p_high")}
    out["threshold"], out["threshold_below"] = np.full(shape[:2], np.nan), np.full(shape[:2], np.nan)
    for ti, target in enumerate(targets):
        curve = success_curve(values, target, metric, method=method, confidence=confidence)
        for key, name in (
            ("successes", "successes"),
            ("p", "p_success"),
            ("low", "p_low"),
            ("high", "p_high"),
        ):
            out[name][ti] = np.where(evaluated, curve[key], np.nan)
        for si, ev in enumerate(evaluated):
            passes = curve["p"][si][ev] >= 1.0 - delta - 1e-9
            out["threshold"][ti, si], out["threshold_below"][ti, si] = crossing(dims[ev], passes)
    return out


# --------------------------------------------------------------------------- intrinsic dimension


def intrinsic_dimension(
    dims, accuracy, baseline, *, fraction: float = 0.9, interpolate: bool = False
) -> float:
    """d_int (Li et al.): the crossing of mean accuracy [n_d, S] over seeds >= fraction * mean baseline [S_b].

    With ``interpolate`` the crossing is refined log-linearly between the largest failing d under
    it (b) and it (t): log d = log b + (goal - m_b) / (m_t - m_b) (log t - log b), m the mean
    accuracies, so it varies continuously with them (a bootstrap interval finer than the grid).
    NaN when the largest evaluated d does not reach the goal.
    """
    dims = np.asarray(dims, float)
    goal = fraction * float(np.mean(baseline))
    means = np.mean(np.asarray(accuracy, float), axis=-1)
    top, below = crossing(dims, means >= goal)
    if not interpolate or math.isnan(top) or math.isnan(below):
        return top
    m_top, m_below = means[dims == top][0], means[dims == below][0]
    t = (goal - m_below) / (m_top - m_below)
    return float(np.exp(np.log(below) + t * (np.log(top) - np.log(below))))


class Interval(NamedTuple):
    """A point estimate with a bootstrap interval [low, high]."""

    estimate: float
    low: float
    high: float
    found: float  # fraction of bootstrap resamples with a crossing inside the evaluated range


def bootstrap_intrinsic_dimension(
    key: Array,
    dims,
    accuracy,
    baseline,
    *,
    fraction: float = 0.9,
    interpolate: bool = False,
    num_resamples: int = 1000,
    confidence: float = 0.95,
) -> Interval:
    """d_int with a percentile bootstrap interval over seeds.

    Seeds are resampled with replacement; when the baseline has as many seeds as the subspace runs
    (seed s shares its initialisation) one resample of seed indices serves all d and the baseline
    (a paired bootstrap), else the baseline's seeds are resampled on their own. A resample whose
    crossing lies beyond the evaluated d counts as +inf (so `high` can be inf).
    """
    accuracy, baseline = np.asarray(accuracy, float), np.asarray(baseline, float)
    S, Sb = accuracy.shape[-1], baseline.shape[-1]
    k_acc, k_base = jax.random.split(key)
    idx = np.asarray(jax.random.randint(k_acc, (num_resamples, S), 0, S))
    idx_b = idx if Sb == S else np.asarray(jax.random.randint(k_base, (num_resamples, Sb), 0, Sb))
    samples = np.array([
        intrinsic_dimension(dims, accuracy[:, i], baseline[j], fraction=fraction, interpolate=interpolate)
        for i, j in zip(idx, idx_b)
    ])
    samples = np.where(np.isnan(samples), np.inf, samples)
    alpha = 1.0 - confidence
    low, high = np.quantile(samples, [alpha / 2.0, 1.0 - alpha / 2.0], method="inverted_cdf")
    estimate = intrinsic_dimension(dims, accuracy, baseline, fraction=fraction, interpolate=interpolate)
    return Interval(estimate, float(low), float(high), float(np.mean(np.isfinite(samples))))


def table(analysis: dict) -> str:
    """A threshold_dimension run's summary (its analysis.json): rows of start point and target with d*,
    its bracket and the search's units; then d_int."""
    lines = [f"threshold training dimension d* (P_s >= {analysis['level']:.2f}, {analysis['metric']}); "
             f"full-space baseline test accuracy {analysis['baseline_test_accuracy']:.4f}",
             f"{'start':<10} {'target':>8} {'d*':>8} {'bracket':>16} {'units':>6}", "-" * 52]
    for row in analysis["thresholds"]:
        bracket = f"({row['below']:g}, {row['threshold']:g}]"
        units = len(row["search"]["evaluated"]) if row["search"] else 0
        lines.append(f"{row['start']:<10} {row['target']:>8g} {row['threshold']:>8g} {bracket:>16} "
                     f"{units:>6}")
    if "d_int" in analysis:
        di, grid, interp = analysis["d_int"], analysis["d_int"]["grid"], analysis["d_int"]["interpolated"]
        lines.append(f"d_int{round(100 * di['fraction'])} = {grid['estimate']:g} on the grid (bootstrap "
                     f"[{grid['low']:g}, {grid['high']:g}]), {interp['estimate']:.4g} interpolated "
                     f"(bootstrap [{interp['low']:.4g}, {interp['high']:.4g}]); goal test accuracy "
                     f"{di['goal']:.4f}")
    return "\n".join(lines)
