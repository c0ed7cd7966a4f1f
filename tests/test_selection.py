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
