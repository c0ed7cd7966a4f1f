"""The Goldilocks zone read off a radius scan: peak values and radial extent (numpy).

A scan gives, per radius r (axis 0), subspace dimension d (axis 1) and seed (axis 2), the
fraction of positive eigenvalues ``frac_pos`` and ``trace_over_frob`` of the subspace Hessian.
Far from the zone a random-matrix-like Hessian gives frac_pos ~ 1/2 and Tr/||H||_F ~ 0.

Rule for the zone's extent (stated so results are comparable): take the seed-mean curve of a
metric against x = log10(r^2/r_X^2), find its peak, and grow the contiguous run of scanned
radii around the peak whose mean exceeds ``baseline + threshold`` (frac_pos: 0.5 + 0.05;
Tr/||H||_F: 0 + 1). The extent is reported as the first and last scanned x inside that run, so
its resolution is the grid spacing.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULTS = {"frac_pos": (0.5, 0.05), "trace_over_frob": (0.0, 1.0)}


def extent(x, mean, *, baseline: float, threshold: float) -> tuple[float, float] | None:
    """(x_lo, x_hi) of the contiguous run around the peak with mean > baseline + threshold."""
    x, mean = np.asarray(x, float), np.asarray(mean, float)
    if not np.isfinite(mean).any():
        return None
    peak = int(np.nanargmax(mean))
    above = np.nan_to_num(mean, nan=-np.inf) > baseline + threshold
    if not above[peak]:
        return None
    lo = hi = peak
    while lo > 0 and above[lo - 1]:
        lo -= 1
    while hi < len(x) - 1 and above[hi + 1]:
        hi += 1
    return float(x[lo]), float(x[hi])


def summarise(arrays: dict) -> list[dict]:
    """Per d and metric: peak of the seed mean, its x, seed std there, value at r_X, extent.

    Args:
      arrays: a radius scan's arrays.npz contents (``log10_r2_over_rx2`` [R], ``dims`` [n_d],
        ``frac_pos`` and ``trace_over_frob`` [R, n_d, S]).
    """
    x = np.asarray(arrays["log10_r2_over_rx2"], float)
    at_rx = int(np.argmin(np.abs(x)))
    rows = []
    for di, d in enumerate(np.asarray(arrays["dims"])):
        for metric, (baseline, threshold) in DEFAULTS.items():
            values = np.asarray(arrays[metric][:, di, :], float)
            with np.errstate(all="ignore"):
                mean = np.nanmean(values, axis=1)
                std = np.nanstd(values, axis=1)
            peak = int(np.nanargmax(mean))
            rows.append({
                "d": int(d),
                "metric": metric,
                "peak": float(mean[peak]),
                "peak_std": float(std[peak]),
                "peak_x": float(x[peak]),
                "at_rx": float(mean[at_rx]),
                "at_rx_std": float(std[at_rx]),
                "at_rx_x": float(x[at_rx]),
                "extent": extent(x, mean, baseline=baseline, threshold=threshold),
                "far_inside": float(mean[0]),
                "far_outside": float(mean[-1]),
            })
    return rows


def table(rows: list[dict]) -> str:
    """The summary as a fixed-width text table (x[0], x[-1]: the mean at the smallest and largest
    radius)."""
    head = (f"{'d':>5} {'metric':<16} {'peak':>13} {'at x':>6} {'at r_X':>13} {'zone x-range':>14} "
            f"{'x[0]':>7} {'x[-1]':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ext = "none" if r["extent"] is None else f"[{r['extent'][0]:+.1f}, {r['extent'][1]:+.1f}]"
        lines.append(
            f"{r['d']:>5} {r['metric']:<16} {r['peak']:>6.3f}+-{r['peak_std']:<5.3f} {r['peak_x']:>+6.1f} "
            f"{r['at_rx']:>6.3f}+-{r['at_rx_std']:<5.3f} {ext:>14} {r['far_inside']:>7.3f} "
            f"{r['far_outside']:>7.3f}"
        )
    return "\n".join(lines)


def loss_power_law(arrays: dict, *, x_min: float = 1.0) -> dict:
    """Fit of loss ~ c r^p over the scan points with log10(r^2/r_X^2) >= x_min.

    Returns {'p', 'ci_low', 'ci_high', 'n', 'inside_mean', 'inside_std'} where the inside
    statistics are the seed-mean loss over the points with x <= -1 (well inside r_X), to compare
    with log C (the loss of uniform predictions).
    """
    from gzone.analysis import dynamics

    x = np.asarray(arrays["log10_r2_over_rx2"], float)
    radii = np.asarray(arrays["radii"], float)
    loss = np.asarray(arrays["loss"], float)[:, 0, :]  # the loss does not depend on d
    with np.errstate(all="ignore"):
        mean = np.nanmean(loss, axis=1)
    keep = x >= x_min
    fit = dynamics.fit_power_law(radii[keep], mean[keep])
    inside = mean[x <= -1]
    return {
        "p": fit.alpha,
        "ci_low": fit.ci_low,
        "ci_high": fit.ci_high,
        "n": fit.n,
        "inside_mean": float(np.mean(inside)) if inside.size else float("nan"),
        "inside_std": float(np.std(inside)) if inside.size else float("nan"),
    }


def fmt(value) -> str:
    """A table cell: 3 decimals, or nan."""
    return "nan" if value is None or not math.isfinite(value) else f"{value:.3f}"


def summary_table(arrays: dict, dims) -> str:
    """Rows: radii; columns: loss, accuracy and per d mean frac+ and Tr/||H||_F over seeds."""
    head = f"{'log10 r2/rX2':>12} {'radius':>10} {'loss':>10} {'acc':>6}"
    for d in dims:
        head += f" | d={d:<4} {'frac+':>6} {'Tr/|H|':>7}"
    lines = [head, "-" * len(head)]
    with np.errstate(all="ignore"):
        for ri, rel in enumerate(arrays["log10_r2_over_rx2"]):
            row = (
                f"{rel:>12.2f} {arrays['radii'][ri]:>10.4g} {np.nanmean(arrays['loss'][ri]):>10.4g} "
                f"{np.nanmean(arrays['accuracy'][ri]):>6.3f}"
            )
            for di, _ in enumerate(dims):
                row += (
                    f" | {'':6} {fmt(np.nanmean(arrays['frac_pos'][ri, di])):>6} "
                    f"{fmt(np.nanmean(arrays['trace_over_frob'][ri, di])):>7}"
                )
            lines.append(row)
    return "\n".join(lines)


def extra_table(arrays: dict, dims) -> str:
    """Per radius and d, means over seeds: subspace H, G, R = H - G (frac+, Tr/||.||_F) and full space."""
    labels = {
        "frac_pos": "H frac+",
        "trace_over_frob": "H Tr/F",
        "gn_trace_over_frob": "G Tr/F",
        "res_frac_pos": "R frac+",
        "res_trace_over_frob": "R Tr/F",
        "full_trace_over_frob": "full H Tr/F",
        "full_trace_over_frob_se": "+- se",
        "full_gn_trace_over_frob": "full G Tr/F",
        "full_res_trace_over_frob": "full R Tr/F",
    }
    cols = [(k, label) for k, label in labels.items() if k in arrays]
    head = f"{'log10 r2/rX2':>12} {'d':>5} " + " ".join(f"{label:>11}" for _, label in cols)
    lines = [head, "-" * len(head)]
    with np.errstate(all="ignore"):
        for ri, rel in enumerate(arrays["log10_r2_over_rx2"]):
            for di, d in enumerate(dims):
                lines.append(
                    f"{rel:>12.2f} {d:>5} "
                    + " ".join(f"{fmt(np.nanmean(arrays[k][ri, di])):>11}" for k, _ in cols)
                )
    return "\n".join(lines)
