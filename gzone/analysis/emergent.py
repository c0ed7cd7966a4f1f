r"""Emergent local geometry (Fort & Ganguli 2019), what is read off the measurements: Hessian outliers
above the bulk, and the balanced examples of the logit-gradient Gram matrix.

  count_outliers(values, min_ratio=, rule=)   outliers above the bulk by a gap-ratio rule (below)
  outlier_ratios(values)                      the gap ratios l_j / l_{j+1}
  balanced_examples(key, y, per_class=)       the same number of examples of every class
  log_spaced(n, num)                          which of n snapshots to measure, log-spaced in step

The point measurements themselves (logit-gradient clustering, top Hessian eigenvalues, gradient
overlap, logit variance) are options of `gzone.measure` built on `gzone.curvature.logits`.

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

import jax
import numpy as np

Array = jax.Array
OUTLIER_RULES = ("last", "largest")


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


def log_spaced(n: int, num: int) -> np.ndarray:
    """`num` distinct indices in 1..n, log-spaced, first 1 and last n (all of 1..n when num is 0 or >= n)."""
    if num == 0 or num >= n:
        return np.arange(1, n + 1)
    if num == 1:
        return np.asarray([n])
    idx = np.rint(np.geomspace(1, n, num)).astype(int)
    for i in range(1, num):  # strictly increasing, leaving room for the rest below n
        idx[i] = max(idx[i], idx[i - 1] + 1)
    for i in range(num - 1, -1, -1):
        idx[i] = min(idx[i], n - (num - 1 - i))
    return idx
