"""Figures of the full Hessian's spectral density, from the recorded SLQ quadratures (drawn by the
radius_scan and emergent_geometry figures when their records hold ``density_nodes``).

density_panels   one panel per point: the density of s = asinh(lambda / eps) (mass per unit s, log scale)
                 on an asinh lambda axis, seeds and probes pooled, with 0, the bulk edge and the top Ritz
                 value marked and the masses by sign written in; r_X's panel framed
density_summary  across points: the masses by sign (mass > 0 with its bracket), the top eigenvalue, the
                 bulk edge and -bottom, the share of Tr(H) above the edge and the bulk's shift,
                 Tr(H)/||H||_F (and, given them, the subspace's frac+ and Tr/||.||_F at the same points)
The statistics are `analysis.spectral_density.summary` (its docstring defines them).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from matplotlib.figure import Figure

from gzone.analysis import spectral_density
from gzone.curvature import fullspace
from gzone.plots.common import band, mark_rx, save

WIDTH = 0.12  # the smoothing kernel's std in s = asinh(lambda / eps)
COLUMNS = 4


def _ticks(eps: float, lo: float, hi: float) -> list[float]:
    """0 and +-10^p for the powers between 10 eps and the range (every other one when there are many)."""
    first = math.ceil(math.log10(10 * eps))
    out = [0.0]
    for sign, end in ((1, hi), (-1, -lo)):
        if end > 10 * eps:
            powers = list(range(first, math.floor(math.log10(end)) + 1))
            out += [sign * 10.0**p for p in powers[:: 1 + len(powers) // 4]]
    return sorted(out)


def rx_index(x) -> int | None:
    """The index of x = log10(r^2/r_X^2) = 0 (r_X's point) in a grid, or None when r_X is not on it."""
    x = np.abs(np.asarray(x, float))
    return int(np.argmin(x)) if x.size and np.min(x) < 1e-9 else None


def density_panels(path: str, title: str, labels, nodes, weights, stats: dict, *, D: int,
                   highlight: int | None = None) -> str:
    """Small multiples of the smoothed density per point.

    Args:
      labels: [point] panel titles; nodes, weights: [point, seed, probe, node]; stats: the `summary`
        of the same arrays ([point, seed] each); D: the number of parameters; highlight: the point
        to frame (r_X's), or None.
    """
    n = len(labels)
    rows = math.ceil(n / COLUMNS)
    fig = Figure(figsize=(3.3 * min(n, COLUMNS), 2.7 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, min(n, COLUMNS), sharey=True, squeeze=False)).reshape(-1)
    one = 1.0 / (D * WIDTH * math.sqrt(2 * math.pi))  # the peak of one eigenvalue's bump
    with warnings.catch_warnings():  # an all-NaN statistic (an edge beyond the order) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = {k: np.nanmean(np.asarray(v, float), axis=-1) for k, v in stats.items()}
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_visible(False)
            continue
        eps = float(mean["eps"][i])
        if not (np.isfinite(eps) and eps > 0 and np.all(np.isfinite(nodes[i]))):
            ax.set_title(f"{labels[i]}: not finite", fontsize=8)
            continue
        s = np.arcsinh(np.asarray(nodes[i], float) / eps)
        grid = np.linspace(s.min() - 4 * WIDTH, s.max() + 4 * WIDTH, 1200)
        density = spectral_density.smoothed(nodes[i], weights[i], grid, scale=eps, width=WIDTH)
        lam = eps * np.sinh(grid)
        floor = np.maximum(density, one * 1e-3)
        ax.fill_between(lam, floor, one * 1e-3, where=lam > 0, color="C3", alpha=0.25, lw=0)
        ax.plot(lam, floor, color="k", lw=0.8)
        ax.set_xscale("asinh", linear_width=eps)
        ax.set_xticks(_ticks(eps, lam[0], lam[-1]))
        ax.set_yscale("log")
        ax.axhline(one, color="gray", lw=0.6, ls=":")
        ax.axvline(0.0, color="gray", lw=0.6)
        for key, style, name in (("edge", dict(color="C0", ls="--"), "bulk edge"),
                                 ("top", dict(color="C3", ls=":"), "top eigenvalue")):
            if np.isfinite(mean[key][i]):
                ax.axvline(mean[key][i], lw=1, label=name, **style)
        ax.text(0.02, 0.97, f"mass>0 {mean['mass_pos'][i]:.2f} [{mean['mass_pos_lo'][i]:.2f}, "
                f"{mean['mass_pos_hi'][i]:.2f}]\n>eps {mean['mass_pos_eps'][i]:.3f}, <-eps "
                f"{mean['mass_neg_eps'][i]:.3f}\ntop/edge {mean['top_over_edge'][i]:.3g}, "
                f"Tr share {mean['top_trace_share'][i]:.2f}", transform=ax.transAxes, va="top", fontsize=6)
        ax.set_title(labels[i], fontsize=8, fontweight="bold" if i == highlight else "normal")
        ax.tick_params(labelsize=6)
        if i == highlight:
            for spine in ax.spines.values():
                spine.set_color("C3")
                spine.set_linewidth(2)
        if i % COLUMNS == 0:
            ax.set_ylabel(r"mass per unit asinh($\lambda/\epsilon$)", fontsize=7)
        if i >= n - COLUMNS:
            ax.set_xlabel(r"$\lambda$ (asinh scale, linear within $\pm\epsilon$)", fontsize=7)
    axes[0].set_ylim(bottom=one * 1e-2)
    axes[0].legend(fontsize=6, loc="upper right")
    fig.suptitle(f"{title}; dotted grey: the height of one eigenvalue (1/D); red: lambda > 0", fontsize=9)
    return save(fig, path)


def density_summary(path: str, title: str, x, stats: dict, *, xlabel: str, rx: bool,
                    subspace: dict | None = None) -> str:
    """The density's statistics across points (bands: min..max over seeds); `rx` marks x = 0 as r_X.

    subspace: optionally the same points' subspace measurements, {"d": d, "frac_pos": [point, seed],
      "trace_over_frob": [point, seed]}, drawn beside their full-space counterparts, with the subspace
      Tr/||H||_F predicted from the full-space one (`fullspace.predicted_subspace_ratio`).
    """
    fig = Figure(figsize=(12, 8), layout="constrained")
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    x = np.asarray(x, float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mass = [np.nanmean(stats[k], -1) for k in ("mass_pos", "mass_pos_lo", "mass_pos_hi")]
    (line,) = ax1.plot(x, mass[0], marker="o", ms=3,
                       label=r"mass at $\lambda > 0$ (band: its bracket; seed means)")
    ax1.fill_between(x, mass[1], mass[2], color=line.get_color(), alpha=0.15, lw=0)
    band(ax1, x, stats["pos_share_eps"], label=r"positive share of the mass beyond $\pm\epsilon$")
    beyond = np.asarray(stats["mass_pos_eps"]) + stats["mass_neg_eps"]
    band(ax1, x, beyond, label=r"mass beyond $\pm\epsilon$")
    if subspace is not None:
        band(ax1, x, subspace["frac_pos"], label=f"frac+ of $P^T H P$, d = {subspace['d']}", color="k")
    ax1.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax1.set_ylabel("spectral mass / fraction")
    ax1.set_ylim(0, 1)
    band(ax2, x, stats["top"], label="top eigenvalue (Ritz)", log_y=True)
    band(ax2, x, stats["edge"], label="bulk edge (k-th largest)", log_y=True)
    bottom = -np.asarray(stats["bottom"], float)
    band(ax2, x, bottom, label=r"$-\lambda_{min}$", log_y=True)
    ax2.set_yscale("log")
    ax2.set_ylabel(r"$\lambda$")
    band(ax3, x, stats["top_trace_share"], label="share of Tr(H) above the bulk edge")
    ax3.axhline(0.0, color="gray", lw=0.8)
    ax3.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax3.set_ylim(-0.5, 1.5)  # the share diverges where Tr(H) ~ 0 (deep inside r_X)
    twin = ax3.twinx()
    band(twin, x, stats["bulk_shift"], label="bulk mean / bulk std (right axis)", color="C3")
    twin.set_ylabel("bulk mean / bulk std", color="C3")
    twin.legend(fontsize=7, loc="lower right")
    band(ax4, x, stats["trace_over_frob"], label=r"full space Tr$(H)/\|H\|_F$ (same probes)")
    if subspace is not None:
        d = subspace["d"]
        band(ax4, x, subspace["trace_over_frob"], label=f"subspace, d = {d}", color="k")
        predicted = np.asarray(fullspace.predicted_subspace_ratio(np.asarray(stats["trace_over_frob"]), d))
        band(ax4, x, predicted, label=f"subspace, d = {d}, predicted from the full space", color="C2")
    ax4.axhline(0.0, color="gray", lw=0.8)
    ax4.set_ylabel(r"Tr$(H)/\|H\|_F$")
    for ax in (ax1, ax2, ax3, ax4):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if rx:
            mark_rx(ax)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{title}; eps = {spectral_density.EPS_FRACTION:g} x bulk half-width", fontsize=9)
    return save(fig, path)
