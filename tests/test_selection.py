"""Tests for gzone.selection: the Mann-Whitney test and rank-biserial effect size against hand-computed
cases, ordering and selection, and the scores against a dense Hessian (float64)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from gzone.analysis import selection


def test_mann_whitney_separated_samples_exact():
    """a < b everywhere: U_a = 0, r = -1; exact two-sided p = 2 / C(6, 3) = 0.1."""
    out = selection.mann_whitney([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert out["U"] == 0.0 and out["rank_biserial"] == -1.0
    assert out["p_value"] == pytest.approx(0.1, rel=1e-12)
    assert (out["n_a"], out["n_b"], out["median_a"], out["median_b"]) == (3, 3, 2.0, 5.0)
    swapped = selection.mann_whitney([4.0, 5.0, 6.0], [1.0, 2.0, 3.0])
    assert (
        swapped["U"] == 9.0 and swapped["rank_biserial"] == 1.0 and swapped["p_value"] == pytest.approx(0.1)
    )


def test_mann_whitney_interleaved_samples_exact():
    """a = {1, 4}, b = {2, 3}: U_a = 2 (4 > 2, 4 > 3), r = 0; the exact null of U for 2 + 2 is
    {0, 1, 2, 2, 3, 4} / 6, so p = min(1, 2 P(U <= 2)) = 1."""
    out = selection.mann_whitney([1.0, 4.0], [2.0, 3.0])
    assert out["U"] == 2.0 and out["rank_biserial"] == 0.0 and out["p_value"] == pytest.approx(1.0)


def test_mann_whitney_ties_normal_approximation():
    """a = {1, 2, 2}, b = {2, 3, 3}: ranks 1, 3, 3 | 3, 5.5, 5.5, R_a = 7, U_a = 7 - 6 = 1, r = 2/9 - 1.
    E U = 4.5; tie-corrected Var U = (9/12)(7 - (24 + 6)/30) = 4.5; with the continuity correction
    z = (3.5 - 0.5)/sqrt(4.5) = sqrt(2), p = 2 (1 - Phi(sqrt 2)) = erfc(1) = 0.157299..."""
    out = selection.mann_whitney([1.0, 2.0, 2.0], [2.0, 3.0, 3.0])
    assert out["U"] == 1.0
    assert out["rank_biserial"] == pytest.approx(2.0 / 9.0 - 1.0, rel=1e-12)
    assert out["p_value"] == pytest.approx(math.erfc(1.0), rel=1e-9)
    with pytest.raises(ValueError):
        selection.mann_whitney([], [1.0])
    with pytest.raises(ValueError):
        selection.mann_whitney([np.nan, 1.0], [1.0])


def test_order_and_select():
    values = np.asarray([0.3, 0.9, np.nan, 0.1, 0.9, 0.5])
    np.testing.assert_array_equal(selection.order_by(values, higher_is_better=True), [1, 4, 5, 0, 3, 2])
    np.testing.assert_array_equal(selection.order_by(values, higher_is_better=False), [3, 0, 5, 1, 4, 2])
    top, other = selection.select(values, num=2, against="bottom", higher_is_better=True)
    np.testing.assert_array_equal(top, [1, 4])
    np.testing.assert_array_equal(other, [2, 3])  # worst first: NaN, then 0.1
    top, other = selection.select(values, num=2, against="bottom", higher_is_better=False)
    np.testing.assert_array_equal(top, [3, 0])
    key = jax.random.key(0)
    top, other = selection.select(values, num=2, against="random", higher_is_better=True, key=key)
    assert set(other) <= {0, 2, 3, 5} and len(set(other)) == 2
    again = selection.select(values, num=2, against="random", higher_is_better=True, key=key)[1]
    np.testing.assert_array_equal(other, again)
    drawn = {
        tuple(
            selection.select(values, num=2, against="random", higher_is_better=True, key=jax.random.key(s))[1]
        )
        for s in range(20)
    }
    assert len(drawn) > 1  # the key matters
    with pytest.raises(ValueError):
        selection.select(values, num=4, against="bottom", higher_is_better=True)
    with pytest.raises(ValueError):
        selection.select(values, num=2, against="random", higher_is_better=True)


def test_welch_matches_the_closed_form_and_scipy():
    """a = {1, 2, 3, 4}, b = {2, 4, 6}: diff = -1.5, s_a^2 = 5/3, s_b^2 = 4, se^2 = 5/12 + 4/3 = 7/4,
    df = (7/4)^2 / ((5/12)^2 / 3 + (4/3)^2 / 2) = 3.4603...; interval and p as scipy's Welch test."""
    from scipy import stats

    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]
    out = selection.welch(a, b, confidence=0.95)
    assert out["difference"] == pytest.approx(-1.5, rel=1e-14)
    assert out["se"] == pytest.approx(math.sqrt(7 / 4), rel=1e-14)
    df = (7 / 4) ** 2 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2)
    assert out["df"] == pytest.approx(df, rel=1e-12)
    half = stats.t.ppf(0.975, df) * math.sqrt(7 / 4)
    assert (out["low"], out["high"]) == pytest.approx((-1.5 - half, -1.5 + half), rel=1e-12)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert out["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert out["t"] == pytest.approx(ref.statistic, rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert (out["low"], out["high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    wide = selection.welch(a, b, confidence=0.99)
    assert wide["low"] < out["low"] and wide["high"] > out["high"]
    with pytest.raises(ValueError):
        selection.welch([1.0], [1.0, 2.0])


def test_variance_components_of_an_exact_two_way_layout():
    """v = mu + a_m + c_s + e_ms with e centred over m and s: the interaction variance is
    sum e^2 / ((M-1)(S-1)), the per-init means vary as a_m, and s_b^2 = var(a) - s_int^2 / S."""
    rng = np.random.default_rng(0)
    G, M, S = 2, 5, 4
    a = rng.normal(size=(G, M, 1))
    c = rng.normal(size=(G, 1, S))
    e = rng.normal(size=(G, M, S))
    e = e - e.mean(2, keepdims=True) - e.mean(1, keepdims=True) + e.mean((1, 2), keepdims=True)
    out = selection.variance_components(3.0 + a + c + 0.1 * e)
    interaction = float((0.01 * e**2).sum() / (G * (M - 1) * (S - 1)))
    init_mean = float(np.mean([np.var(a[g, :, 0], ddof=1) for g in range(G)]))
    assert out["interaction_var"] == pytest.approx(interaction, rel=1e-10)
    assert out["init_mean_var"] == pytest.approx(init_mean, rel=1e-10)
    assert out["between_var"] == pytest.approx(init_mean - interaction / S, rel=1e-10)
    assert selection.variance_components(np.zeros((1, 3, 2)) + e[:1, :3, :2])["between_var"] >= 0.0


def test_t_test_power_and_size_give_cohens_table():
    """Two-sided alpha = 0.05, power 0.8: Cohen's d = 0.5 needs 64 per group, 0.8 needs 26, 1.0 needs 17
    (the noncentral-t values of standard tables); at effect 0 the power is alpha."""
    assert selection.t_test_size(effect=0.5, sd=1.0) == 64
    assert selection.t_test_size(effect=0.8, sd=1.0) == 26
    assert selection.t_test_size(effect=2.0, sd=2.0) == 17  # only effect / sd matters
    assert selection.t_test_power(effect=0.5, sd=1.0, n=64) == pytest.approx(0.8015, abs=5e-4)
    assert selection.t_test_power(effect=0.0, sd=1.0, n=10) == pytest.approx(0.05, rel=1e-9)
    assert selection.t_test_power(effect=-0.5, sd=1.0, n=64) == selection.t_test_power(effect=0.5, sd=1.0,
                                                                                         n=64)
