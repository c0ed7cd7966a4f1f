"""Figures of the full Hessian's spectral density, from the recorded SLQ quadratures (drawn by the
radius_scan and emergent_geometry figures when their records hold ``density_nodes``).

density_panels   one panel per point: the density of s = asinh(lambda / eps) (mass per unit s, log scale)
                 on an asinh lambda axis, seeds and probes pooled, with 0, the bulk edge and the top Ritz
                 value marked and the masses by sign written in; r_X's panel framed
density_summary  across points: the masses by sign (mass > 0 with its bracket), the top Ritz value, the
                 bulk edge and -bottom, the share of Tr(H) above the edge and the bulk's shift
The statistics are `analysis.spectral_density.summary` (its docstring defines them).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from gzone.analysis import spectral_density
from gzone.plots.common import band, mark_rx, save

WIDTH = 0.08  # the smoothing kernel's std in s = asinh(lambda / eps)
COLUMNS = 4


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
        ax.set_yscale("log")
        ax.axhline(one, color="gray", lw=0.6, ls=":")
        ax.axvline(0.0, color="gray", lw=0.6)
        ax.axvline(mean["edge"][i], color="C0", lw=1, ls="--", label="bulk edge")
        ax.axvline(mean["top"][i], color="C3", lw=1, ls=":", label="top Ritz value")
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


def density_summary(path: str, title: str, x, stats: dict, *, xlabel: str, rx: bool) -> str:
    """The density's statistics across points (bands: min..max over seeds); `rx` marks x = 0 as r_X."""
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    x = np.asarray(x, float)
    (line,) = ax1.plot(x, np.nanmean(stats["mass_pos"], -1), marker="o", ms=3,
                       label=r"mass at $\lambda > 0$ (band: its bracket; seed means)")
    ax1.fill_between(x, np.nanmean(stats["mass_pos_lo"], -1), np.nanmean(stats["mass_pos_hi"], -1),
                     color=line.get_color(), alpha=0.15, lw=0)
    band(ax1, x, stats["mass_pos_eps"], label=r"mass at $\lambda > \epsilon$")
    band(ax1, x, stats["mass_neg_eps"], label=r"mass at $\lambda < -\epsilon$")
    ax1.set_ylabel("spectral mass")
    ax1.set_ylim(0, 1)
    band(ax2, x, stats["top"], label="top Ritz value", log_y=True)
    band(ax2, x, stats["edge"], label="bulk edge (k-th largest)", log_y=True)
    bottom = -np.asarray(stats["bottom"], float)
    band(ax2, x, bottom, label=r"$-\lambda_{min}$ (bottom Ritz value)", log_y=True)
    ax2.set_yscale("log")
    ax2.set_ylabel(r"$\lambda$")
    band(ax3, x, stats["top_trace_share"], label="share of Tr(H) above the bulk edge")
    band(ax3, x, stats["bulk_shift"], label="bulk mean / bulk std")
    ax3.axhline(0.0, color="gray", lw=0.8)
    ax3.set_ylim(-1, 2)  # the share diverges where Tr(H) ~ 0 (deep inside r_X)
    for ax in (ax1, ax2, ax3):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if rx:
            mark_rx(ax)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{title}; eps = {spectral_density.EPS_FRACTION:g} x bulk half-width", fontsize=9)
    return save(fig, path)
