"""Radius dynamics r(t): power-law fits and the random-walk model (numpy, on recorded curves).

A random walk with i.i.d. steps of per-coordinate variance sigma^2 in D dimensions has
<|theta(t)|^2> = r0^2 + D sigma^2 t, so r(t)^2 - r0^2 ~ t^alpha with alpha = 1 (r ~ sqrt(t) once
r >> r0). `fit_power_law` measures alpha by log-log least squares; `random_walk_r2` gives the
model's r^2(t) with D sigma^2 estimated from the measured squared update sizes |dtheta|^2;
`adam_walk_r2` the same model with sigma = Adam's per-coordinate step scale, the learning rate
(each of the D coordinates moves by about lr per step: D sigma^2 = D lr^2); `summarise` is the
radius-dynamics experiment's analysis of its records (analysis.json).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """y ~ c t^alpha fitted on log-log axes.

    Attributes:
      alpha: slope of log y against log t.
      ci_low, ci_high: 95 % t-interval of the slope from the regression's standard error
        (optimistic when residuals are autocorrelated, as along one trajectory).
      log_c: intercept (natural log).
      n: number of points used (those with y > 0 and t > 0).
      r2: coefficient of determination of the log-log fit.
    """

    alpha: float
    ci_low: float
    ci_high: float
    log_c: float
    n: int
    r2: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def fit_power_law(t, y, *, t_min: float | None = None) -> PowerLawFit:
    """Least squares of log y = log c + alpha log t over points with t, y > 0 (and t >= t_min).

    Returns NaNs when fewer than 3 points qualify.
    """
    t, y = np.asarray(t, float).ravel(), np.asarray(y, float).ravel()
    keep = (t > 0) & (y > 0) & np.isfinite(y)
    if t_min is not None:
        keep &= t >= t_min
    n = int(keep.sum())
    if n < 3:
        return PowerLawFit(math.nan, math.nan, math.nan, math.nan, n, math.nan)
    lx, ly = np.log(t[keep]), np.log(y[keep])
    res = stats.linregress(lx, ly)
    half = stats.t.ppf(0.975, n - 2) * res.stderr
    slope, half = float(res.slope), float(half)
    return PowerLawFit(slope, slope - half, slope + half, float(res.intercept), n, float(res.rvalue**2))


def mean_interval(values) -> tuple[float, float, float]:
    """(mean, low, high) 95 % t-interval over independent values (e.g. per-seed alphas)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
    return mean, mean - half, mean + half


def random_walk_r2(r0: float, steps, update_sq) -> dict[str, np.ndarray]:
    """Random-walk predictions of r^2 at the recorded steps.

    Args:
      r0: initial radius.
      steps: [n] recorded global step numbers, increasing (the record blocks' last steps).
      update_sq: [n] mean |theta_{t+1} - theta_t|^2 per step over each record block.

    Returns:
      ``constant``: r0^2 + D sigma^2 t with D sigma^2 = the mean of update_sq over the run
      (the closed-form model with one sigma); ``cumulative``: r0^2 + sum of the measured
      |dtheta|^2 up to t (the same model with the step size allowed to change over time, e.g.
      a decaying Adam step); ``D_sigma2``: the constant-rate estimate.
    """
    steps = np.asarray(steps, float).ravel()
    update_sq = np.asarray(update_sq, float).ravel()
    block = np.diff(np.concatenate([[0.0], steps]))
    cumulative = r0**2 + np.cumsum(update_sq * block)
    d_sigma2 = float(np.sum(update_sq * block) / steps[-1]) if steps.size else math.nan
    return {"constant": r0**2 + d_sigma2 * steps, "cumulative": cumulative, "D_sigma2": np.asarray(d_sigma2)}


def adam_walk_r2(r0: float, steps, *, D: int, lr: float) -> np.ndarray:
    """r0^2 + D lr^2 t at the recorded steps t: the random walk whose D coordinates each move by lr per
    step (Adam's update lr m_hat / (sqrt(v_hat) + eps) has per-coordinate size ~ lr)."""
    return r0**2 + float(D) * float(lr) ** 2 * np.asarray(steps, float).ravel()


def summarise(arrays: dict, *, modes, r_x: float, D: int | None = None, adam_lr=None) -> dict:
    """The radius-dynamics summary (analysis.json) of its records (`schema.radius_dynamics_axes`).

    Args:
      arrays: ``radius``, ``update_sq`` [mode, r0, seed, epoch, record], ``test_accuracy``
        [mode, r0, seed, epoch], ``step`` [epoch, record], ``r0``, ``r0_over_rx`` [r0].
      modes: the mode names along the mode axis (``free``, ``fixed``).
      r_x: the reference radius that r0 and the final radius are measured in (the Xavier radius, or
        the study's other reference).
      D, adam_lr: the number of parameters and the learning rate per r0 of an Adam run: then the
        rows with an alpha fit add the lr walk (`adam_walk_r2`): ``D_lr2`` = D lr^2 and
        ``rw_lr_ratio``, measured over predicted r^2 - r0^2 at the end. None: left out.

    Returns:
      ``{"r_x", "rows"}``, a row per (mode, r0): final radius / r_X, final and best test accuracy
      (means over seeds) and the final accuracy per seed; free runs from r0 < r_X add the fit of
      alpha in r(t)^2 - r0^2 ~ t^alpha to the seed-mean curve (``alpha``), per seed
      (``alpha_per_seed``, their mean and 95 % interval ``alpha_seed_mean``), D sigma^2 of the
      random-walk model and the measured over predicted r^2 - r0^2 at the end (``rw_ratio_*``).
    """
    steps = arrays["step"].reshape(-1)
    rows = []
    for mi, mode in enumerate(modes):
        for i, r0 in enumerate(arrays["r0"]):
            radius = arrays["radius"][mi, i].reshape(arrays["radius"].shape[2], -1)  # [S, T]
            upd = arrays["update_sq"][mi, i].reshape(radius.shape)
            acc = arrays["test_accuracy"][mi, i]
            row = {"mode": mode, "r0_over_rx": float(arrays["r0_over_rx"][i]),
                   "final_radius_over_rx": float(np.mean(radius[:, -1]) / r_x),
                   "final_test_accuracy": float(np.mean(acc[:, -1])),
                   "best_test_accuracy": float(np.mean(acc.max(axis=1))),
                   "final_test_accuracy_seeds": acc[:, -1].tolist()}
            if mode == "free" and r0 < r_x:
                growth = np.mean(radius**2, axis=0) - r0**2
                fit = fit_power_law(steps, growth)
                per_seed = [fit_power_law(steps, r**2 - r0**2).alpha for r in radius]
                mean, lo, hi = mean_interval(per_seed)
                walk = random_walk_r2(r0, steps, np.mean(upd, axis=0))
                row.update(alpha=fit.as_dict(), alpha_per_seed=per_seed, alpha_seed_mean=[mean, lo, hi],
                           D_sigma2=float(walk["D_sigma2"]),
                           rw_ratio_constant=float(growth[-1] / (walk["constant"][-1] - r0**2)),
                           rw_ratio_cumulative=float(growth[-1] / (walk["cumulative"][-1] - r0**2)))
                if adam_lr is not None:
                    lr_walk = adam_walk_r2(r0, steps, D=D, lr=adam_lr[i])
                    row.update(D_lr2=float(D) * float(adam_lr[i]) ** 2,
                               rw_lr_ratio=float(growth[-1] / (lr_walk[-1] - r0**2)))
            rows.append(row)
    return {"r_x": r_x, "rows": rows}
