"""Tests of gzone.dynamics: power-law fits, their confidence intervals, the random-walk model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from gzone.analysis import dynamics


def test_fit_power_law_exact_on_clean_power_law():
    t = np.arange(1, 60, dtype=float)
    for alpha, c in ((0.7, 3.0), (1.0, 0.02), (-0.5, 10.0), (2.3, 1e-4)):
        fit = dynamics.fit_power_law(t, c * t**alpha)
        assert fit.alpha == pytest.approx(alpha, abs=1e-12)
        assert fit.log_c == pytest.approx(math.log(c), abs=1e-10)
        assert fit.r2 == pytest.approx(1.0, abs=1e-12)
        assert fit.ci_low == pytest.approx(alpha, abs=1e-10)
        assert fit.ci_high == pytest.approx(alpha, abs=1e-10)
        assert fit.n == t.size
    assert set(fit.as_dict()) == {"alpha", "ci_low", "ci_high", "log_c", "n", "r2"}


def test_fit_power_law_drops_nonpositive_points_and_honours_t_min():
    t = np.arange(0, 40, dtype=float)  # t = 0 must be dropped
    y = 2.0 * t**1.5
    y[5] = -1.0  # y <= 0 dropped (r^2 - r0^2 can be negative early on)
    y[6] = np.nan
    y[7] = 1e6  # an outlier, removed by t_min below
    fit = dynamics.fit_power_law(t, y)
    assert fit.n == 40 - 3
    assert abs(fit.alpha - 1.5) > 1e-3  # the outlier is in
    fit = dynamics.fit_power_law(t, y, t_min=8)
    assert fit.n == 32
    assert fit.alpha == pytest.approx(1.5, abs=1e-12)
    # 2-D inputs are flattened (seed x time grids)
    fit2 = dynamics.fit_power_law(t[8:].reshape(4, 8), y[8:].reshape(4, 8))
    assert fit2.alpha == pytest.approx(1.5, abs=1e-12)


def test_fit_power_law_too_few_points_is_nan():
    fit = dynamics.fit_power_law([1.0, 2.0, 3.0], [1.0, -1.0, 0.0])
    assert fit.n == 1 and math.isnan(fit.alpha) and math.isnan(fit.ci_low) and math.isnan(fit.r2)
    assert dynamics.fit_power_law([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).n == 3


def test_fit_power_law_confidence_interval_coverage():
    """With i.i.d. log-normal noise the 95 % interval covers the true alpha in ~95 % of draws.

    Only 10 points per fit, so a normal quantile (1.96) instead of Student's t (2.31 at 8 dof)
    would cover ~91 % and fail; 1000 draws give a binomial sd of 0.7 %.
    """
    rng = np.random.default_rng(0)
    t = np.geomspace(1, 1000, 10)
    alpha, draws = 0.8, 1000
    covered, estimates = 0, []
    for _ in range(draws):
        y = 5.0 * t**alpha * np.exp(0.3 * rng.normal(size=t.size))
        fit = dynamics.fit_power_law(t, y)
        covered += fit.ci_low <= alpha <= fit.ci_high
        estimates.append(fit.alpha)
    assert 0.93 <= covered / draws <= 0.97, covered / draws
    assert np.mean(estimates) == pytest.approx(alpha, abs=0.01)  # unbiased


def _random_walks(rng, *, walks, D, steps, sigma, r0):
    """Gaussian random walks theta_{t+1} = theta_t + sigma_t xi_t, |theta_0| = r0.

    Returns radii [walks, steps + 1] and squared updates |theta_{t+1} - theta_t|^2 [walks, steps].
    """
    theta = rng.normal(size=(walks, D))
    theta *= r0 / np.linalg.norm(theta, axis=1, keepdims=True)
    sigma = np.broadcast_to(np.asarray(sigma, float), (steps,))
    radius, sq = np.empty((walks, steps + 1)), np.empty((walks, steps))
    radius[:, 0] = np.linalg.norm(theta, axis=1)
    for t in range(steps):
        step = sigma[t] * rng.normal(size=(walks, D))
        theta += step
        sq[:, t] = np.sum(step**2, axis=1)
        radius[:, t + 1] = np.linalg.norm(theta, axis=1)
    return radius, sq


def test_random_walk_gives_alpha_one_and_matches_model():
    rng = np.random.default_rng(1)
    D, steps, sigma, r0, block = 20, 1000, 0.1, 1.0, 20
    radius, sq = _random_walks(rng, walks=400, D=D, steps=steps, sigma=sigma, r0=r0)
    record_steps = np.arange(block, steps + 1, block)  # the record blocks' last steps
    r2 = np.mean(radius[:, record_steps] ** 2, axis=0)  # <r^2> over walks
    fit = dynamics.fit_power_law(record_steps, r2 - r0**2)
    assert fit.alpha == pytest.approx(1.0, abs=0.03), fit
    assert fit.r2 > 0.99
    # update_sq as the trainer records it: the mean |dtheta|^2 per step over each block
    update_sq = np.mean(sq, axis=0).reshape(-1, block).mean(axis=1)
    walk = dynamics.random_walk_r2(r0, record_steps, update_sq)
    assert float(walk["D_sigma2"]) == pytest.approx(D * sigma**2, rel=0.01)
    expected = r0**2 + D * sigma**2 * record_steps  # the closed form <r^2>
    np.testing.assert_allclose(walk["constant"], expected, rtol=0.01)
    np.testing.assert_allclose(walk["cumulative"], expected, rtol=0.01)
    np.testing.assert_allclose(r2, walk["cumulative"], rtol=0.05)
    # Control: the radius itself grows like sqrt(t), not like t.
    assert dynamics.fit_power_law(record_steps, np.sqrt(r2 - r0**2)).alpha == pytest.approx(0.5, abs=0.02)


def test_random_walk_decaying_step_cumulative_tracks_constant_does_not():
    """Step size halving over the run: the cumulative model follows <r^2>, the constant one bends away."""
    rng = np.random.default_rng(2)
    D, steps, r0, block = 40, 1000, 0.5, 10
    sigma = 0.1 / np.sqrt(1 + np.arange(steps) / 100.0)
    radius, sq = _random_walks(rng, walks=300, D=D, steps=steps, sigma=sigma, r0=r0)
    record_steps = np.arange(block, steps + 1, block)
    r2 = np.mean(radius[:, record_steps] ** 2, axis=0)
    walk = dynamics.random_walk_r2(r0, record_steps, np.mean(sq, axis=0).reshape(-1, block).mean(axis=1))
    np.testing.assert_allclose(walk["cumulative"], r2, rtol=0.05)
    assert np.max(np.abs(walk["constant"] / r2 - 1)) > 0.2
    # both models agree at the last step (the constant rate is fitted to the whole run)
    assert walk["constant"][-1] == pytest.approx(walk["cumulative"][-1], rel=1e-12)


def test_random_walk_r2_exact_algebra_with_uneven_blocks():
    steps = np.array([5, 10, 20, 40])
    update_sq = np.array([1.0, 2.0, 0.5, 0.25])
    walk = dynamics.random_walk_r2(2.0, steps, update_sq)
    sums = np.cumsum([5 * 1.0, 5 * 2.0, 10 * 0.5, 20 * 0.25])
    np.testing.assert_allclose(walk["cumulative"], 4.0 + sums, rtol=1e-15)
    assert float(walk["D_sigma2"]) == pytest.approx(sums[-1] / 40, rel=1e-15)
    np.testing.assert_allclose(walk["constant"], 4.0 + sums[-1] / 40 * steps, rtol=1e-15)


def test_mean_interval_matches_scipy():
    rng = np.random.default_rng(3)
    for n in (2, 5, 30):
        values = rng.normal(1.0, 0.2, size=n)
        mean, lo, hi = dynamics.mean_interval(values)
        ref_lo, ref_hi = stats.t.interval(0.95, n - 1, loc=np.mean(values), scale=stats.sem(values))
        assert mean == pytest.approx(np.mean(values), rel=1e-14)
        assert lo == pytest.approx(ref_lo, rel=1e-12) and hi == pytest.approx(ref_hi, rel=1e-12)
    # NaNs (failed fits) are dropped
    values = np.array([1.0, np.nan, 2.0, 4.0])
    expected = dynamics.mean_interval([1.0, 2.0, 4.0])
    np.testing.assert_allclose(dynamics.mean_interval(values), expected, rtol=1e-15)
    mean, lo, hi = dynamics.mean_interval([3.0])
    assert mean == 3.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in dynamics.mean_interval([]))
    assert all(math.isnan(v) for v in dynamics.mean_interval([np.nan]))


def test_summarise_reads_exact_power_laws_and_random_walks_off_synthetic_records():
    """Records whose r(t)^2 - r0^2 = c_s t^alpha exactly and whose steps have a constant |dtheta|^2: the
    summary's alpha, per-seed alphas and random-walk ratios are known in closed form."""
    r_x, alpha, E, R, S = 2.0, 1.5, 3, 4, 2
    step = (np.arange(E)[:, None] * 8 + (np.arange(R) + 1) * 2).astype(np.int32)  # blocks of 2 steps
    t = step.reshape(-1).astype(float)
    r0_over_rx = np.array([0.1, 1.0, 10.0])
    r0 = r_x * r0_over_rx
    c = np.array([1e-3, 3e-3])  # per seed
    radius = np.empty((2, 3, S, E, R))
    radius[0] = np.sqrt(r0[:, None, None, None] ** 2 + (c[:, None] * t**alpha).reshape(1, S, E, R))
    radius[1] = r0[:, None, None, None]  # fixed radius
    update_sq = np.full(radius.shape, 0.25)
    accuracy = np.linspace(0.1, 0.5, 2 * 3 * S * E).reshape(2, 3, S, E)
    arrays = {"radius": radius, "update_sq": update_sq, "test_accuracy": accuracy, "step": step, "r0": r0,
              "r0_over_rx": r0_over_rx}
    summary = dynamics.summarise(arrays, modes=("free", "fixed"), r_x=r_x)
    assert summary["r_x"] == r_x and [(row["mode"], row["r0_over_rx"]) for row in summary["rows"]] == [
        (m, r) for m in ("free", "fixed") for r in r0_over_rx]
    first = summary["rows"][0]  # the only free run from r0 < r_X
    assert first["alpha"]["alpha"] == pytest.approx(alpha, abs=1e-10)
    np.testing.assert_allclose(first["alpha_per_seed"], alpha, atol=1e-10)
    assert first["D_sigma2"] == pytest.approx(0.25)  # sum(update_sq * block) / t_end
    growth = c.mean() * t[-1] ** alpha  # seed-mean r^2 - r0^2 at the end
    assert first["rw_ratio_constant"] == pytest.approx(growth / (0.25 * t[-1]), rel=1e-10)
    assert first["rw_ratio_cumulative"] == pytest.approx(first["rw_ratio_constant"], rel=1e-10)
    assert all("alpha" not in row for row in summary["rows"][1:])
    for row, (mi, i) in zip(summary["rows"], [(m, i) for m in range(2) for i in range(3)]):
        assert row["final_radius_over_rx"] == pytest.approx(radius[mi, i, :, -1, -1].mean() / r_x, rel=1e-12)
        assert row["final_test_accuracy_seeds"] == accuracy[mi, i, :, -1].tolist()
        assert row["best_test_accuracy"] == pytest.approx(accuracy[mi, i].max(axis=1).mean())
