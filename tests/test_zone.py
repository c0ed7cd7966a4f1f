"""Goldilocks-zone summary: peak, extent rule, values at r_X on planted scans."""

import numpy as np
import pytest

from gzone.analysis import zone


def planted(x, centre, width, height, base):
    return base + height * np.exp(-0.5 * ((x - centre) / width) ** 2)


def test_extent_is_contiguous_run_around_peak():
    x = np.arange(-4, 4.5, 0.5)
    mean = np.full_like(x, 0.5)
    mean[[2]] = 0.7  # an isolated bump far from the peak must not join the zone
    mean[8:12] = [0.6, 0.9, 0.8, 0.56]  # x = 0.0 .. 1.5
    assert zone.extent(x, mean, baseline=0.5, threshold=0.05) == (0.0, 1.5)
    assert zone.extent(x, np.full_like(x, 0.5), baseline=0.5, threshold=0.05) is None
    assert zone.extent(x, np.full_like(x, np.nan), baseline=0.5, threshold=0.05) is None


def test_summarise_on_planted_scan():
    x = np.linspace(-4, 4, 17)
    rng = np.random.default_rng(0)
    S = 6
    frac = np.stack([planted(x, 0.5, 0.8, 0.4, 0.5)] * 2, axis=1)[..., None] + 0.01 * rng.standard_normal((
        17,
        2,
        S,
    ))
    tof = np.stack([planted(x, 0.0, 1.0, 3.0, 0.0), planted(x, 0.0, 1.0, 5.0, 0.0)], axis=1)[
        ..., None
    ] + np.zeros((17, 2, S))
    rows = zone.summarise({
        "log10_r2_over_rx2": x,
        "dims": np.array([10, 50]),
        "frac_pos": frac,
        "trace_over_frob": tof,
    })
    by = {(r["d"], r["metric"]): r for r in rows}
    r = by[(10, "frac_pos")]
    assert r["peak_x"] == 0.5 and r["peak"] == pytest.approx(frac[9, 0].mean())
    assert r["peak_std"] == pytest.approx(frac[9, 0].std())
    assert r["at_rx_x"] == 0.0 and r["at_rx"] == pytest.approx(frac[8, 0].mean())
    # 0.4 exp(-u^2/2) > 0.05 for |u| < 2.04, i.e. |x - 0.5| < 1.63 -> grid points -1.0 .. 2.0
    assert r["extent"] == (-1.0, 2.0)
    t = by[(50, "trace_over_frob")]
    assert t["peak"] == pytest.approx(5.0) and t["peak_std"] == pytest.approx(0.0)
    # 5 exp(-x^2/2) > 1 for |x| < 1.79 -> grid points -1.5 .. 1.5
    assert t["extent"] == (-1.5, 1.5)
    assert "zone x-range" in zone.table(rows)


def test_loss_power_law_recovers_planted_exponent():
    x = np.linspace(-4, 4, 17)
    radii = 23.0 * 10 ** (x / 2)
    loss = np.where(x < 0, np.log(10.0), np.log(10.0) + 0.7 * (radii / 23.0) ** 3)[:, None, None] * np.ones((
        17,
        2,
        3,
    ))
    fit = zone.loss_power_law({"log10_r2_over_rx2": x, "radii": radii, "loss": loss}, x_min=2.0)
    assert fit["p"] == pytest.approx(3.0, abs=2e-3) and fit["n"] == 5
    assert fit["inside_mean"] == pytest.approx(np.log(10.0))
