"""Figures of the radius_scan experiment, drawn from its records only."""

from __future__ import annotations

import math
import os

import numpy as np
from matplotlib.figure import Figure

from gzone import plots
from gzone.plots.common import band, mark_rx, radius_axes, save, title_of


@plots.register("radius_scan")
def radius_scan_figures(run_dir: str, config: dict, arrays: dict, analysis=None) -> list[str]:
    x = arrays["log10_r2_over_rx2"]
    dims = arrays["dims"]
    seeds = arrays["frac_pos"].shape[-1]
    conv = config["settings"].get("convention", "")
    proj = config["settings"].get("projection", "")
    out = []

    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    for di, d in enumerate(dims):
        band(ax1, x, arrays["frac_pos"][:, di, :], label=f"d = {d}")
        band(ax2, x, arrays["trace_over_frob"][:, di, :], label=f"d = {d}")
    ax1.axhline(0.5, color="gray", lw=1, ls="--")
    ax2.axhline(0.0, color="gray", lw=1, ls="--")
    ax1.set_ylabel("fraction of positive eigenvalues of $P^T H P$")
    ax2.set_ylabel(r"$\mathrm{Tr}(H) / \|H\|_F$ (subspace)")
    radius_axes((ax1, ax2))
    fig.suptitle(
        f"{title_of(config)}; {conv} points, {proj} subspaces; mean and min-max over {seeds} seeds",
        fontsize=9,
    )
    out.append(save(fig, os.path.join(run_dir, "goldilocks.png")))

    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    loss = arrays["loss"][:, 0, :]
    band(ax1, x, loss, label="loss at the point", log_y=True)
    ax1.set_yscale("log")
    num_classes = config["derived"].get("dataset", {}).get("num_classes", 10)
    ax1.axhline(math.log(num_classes), color="gray", ls="--", lw=1, label=f"log C = log {num_classes}")
    ax1.set_ylabel("cross-entropy loss (fixed examples)")
    band(ax2, x, arrays["accuracy"][:, 0, :], label="accuracy at the point")
    ax2.set_ylabel("accuracy (fixed examples)")
    ax2.set_ylim(0, 1)
    for ax in (ax1, ax2):
        ax.set_xlabel(r"$\log_{10}(r^2 / r_X^2)$")
        ax.grid(alpha=0.3)
        mark_rx(ax)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{title_of(config)}; loss and accuracy at the scan points ({seeds} seeds)", fontsize=9)
    out.append(save(fig, os.path.join(run_dir, "loss_accuracy.png")))
    if "gn_trace_over_frob" in arrays or "full_trace_over_frob" in arrays:
        out.append(curvature_split_figure(run_dir, config, arrays))
    return out


def curvature_split_figure(run_dir: str, config: dict, arrays: dict) -> str:
    """frac+ and Tr/||.||_F of P^T H P, P^T G P, P^T R P per d, and the full-space Tr(H)/||H||_F."""
    x, dims = arrays["log10_r2_over_rx2"], arrays["dims"]
    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    parts = [("", "H", "-"), ("gn_", "G", "--"), ("res_", "R = H - G", ":")]
    for di, d in enumerate(dims):
        for prefix, name, style in parts:
            if f"{prefix}trace_over_frob" not in arrays:
                continue
            for ax, key in ((ax1, "frac_pos"), (ax2, "trace_over_frob")):
                values = np.nanmean(arrays[f"{prefix}{key}"][:, di, :], axis=-1)
                ax.plot(
                    x, values, style, marker="o", ms=3, color=f"C{di}", label=f"$P^T {name[0]} P$, d = {d}"
                )
    if "full_trace_over_frob" in arrays:
        full, se = arrays["full_trace_over_frob"][:, 0, :], arrays["full_trace_over_frob_se"][:, 0, :]
        n = full.shape[-1]
        ax2.errorbar(
            x,
            np.nanmean(full, -1),
            yerr=np.sqrt(np.nansum(se**2, -1)) / n,
            color="k",
            marker="s",
            ms=3,
            capsize=2,
            label="full space $H$ (mean $\\pm$ s.e.)",
        )
    ax1.set_ylabel("fraction of positive eigenvalues")
    ax2.set_ylabel(r"$\mathrm{Tr}/\|\cdot\|_F$")
    radius_axes((ax1, ax2), legend_size=7)
    metric = config.get("derived", {}).get("projection_metric", {})
    fig.suptitle(
        f"{title_of(config)}; Gauss-Newton / residual split, metric {metric.get('name', 'none')}"
        f"{' (renormalised)' if metric.get('renormalise') else ''}",
        fontsize=9,
    )
    return save(fig, os.path.join(run_dir, "curvature_split.png"))
