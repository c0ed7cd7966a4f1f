"""Figures of the radius_scan experiment, drawn from its records only.

A scan with a temperature axis gets the (radius, temperature) zone map (``zone_map.png``: frac+
and Tr(H)/||H||_F per d over the grid) and the figures of a scan without one at the temperature
closest to 1 (titled with it). A scan with density probes gets ``spectral_density.png`` (the full
Hessian's smoothed density per radius) and ``spectral_density_summary.png`` (its statistics across
radii beside the first d's subspace frac+ and Tr/||.||_F): `plots.spectral_density`.
"""

from __future__ import annotations

import math
import os

import numpy as np
from matplotlib.figure import Figure

from gzone import plots
from gzone.analysis import spectral_density as analysis_density
from gzone.plots import spectral_density as density_plots
from gzone.plots.common import band, mark_rx, radius_axes, save, title_of
from gzone.runs import schema


@plots.register("radius_scan")
def radius_scan_figures(run_dir: str, config: dict, arrays: dict, analysis=None) -> list[str]:
    if "temperatures" not in arrays:
        return _figures(run_dir, config, arrays)
    temps = np.asarray(arrays["temperatures"], float)
    ti = int(np.argmin(np.abs(np.log(temps))))
    at = schema.take(arrays, config["axes"], "temperature", ti)
    return [zone_map_figure(run_dir, config, arrays), *_figures(run_dir, config, at, f"; T = {temps[ti]:g}")]


def zone_map_figure(run_dir: str, config: dict, arrays: dict) -> str:
    """Seed means of frac+ and Tr(H)/||H||_F over (log10 T, log10(r^2/r_X^2)), a row of panels per d."""
    x, dims = np.asarray(arrays["log10_r2_over_rx2"], float), arrays["dims"]
    logt = np.log10(np.asarray(arrays["temperatures"], float))
    xo, to = np.argsort(x), np.argsort(logt)  # the grids as given may be in any order
    fig = Figure(figsize=(10, 3.8 * len(dims)), layout="constrained")
    axes = np.asarray(fig.subplots(len(dims), 2, squeeze=False))
    for di, d in enumerate(dims):
        for ax, key, label, norm in (
            (axes[di, 0], "frac_pos", "frac+", dict(vmin=0.0, vmax=1.0, cmap="RdBu_r")),
            (axes[di, 1], "trace_over_frob", r"Tr$(H)/\|H\|_F$", dict(cmap="viridis")),
        ):
            with np.errstate(all="ignore"):
                values = np.nanmean(arrays[key][:, di], axis=-1)[np.ix_(xo, to)].T  # [temperature, radius]
            mesh = ax.pcolormesh(_edges(x[xo]), _edges(logt[to]), values, shading="flat", **norm)
            fig.colorbar(mesh, ax=ax, label=label)
            ax.set_xlabel(r"$\log_{10}(r^2 / r_X^2)$")
            ax.set_ylabel(r"$\log_{10} T$")
            ax.set_title(f"{label}, d = {d}", fontsize=9)
    fig.suptitle(f"{title_of(config)}; zone map over radius and temperature (seed means)", fontsize=9)
    return save(fig, os.path.join(run_dir, "zone_map.png"))


def _edges(centres) -> np.ndarray:
    """Cell edges around sorted centres (midpoints; the end cells as wide as their neighbours)."""
    c = np.asarray(centres, float)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


def _figures(run_dir: str, config: dict, arrays: dict, at: str = "") -> list[str]:
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
        f"{title_of(config)}; {conv} points, {proj} subspaces; mean and min-max over {seeds} seeds{at}",
        fontsize=9,
    )
    out.append(save(fig, os.path.join(run_dir, "goldilocks.png")))

    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    loss = arrays["loss"][:, 0, :]
    band(ax1, x, loss, label="loss at the point", log_y=True)
    ax1.set_yscale("log")
    num_classes = config["derived"].get("dataset", {}).get("num_classes", 10)
    if config["settings"].get("loss", "cross_entropy") == "cross_entropy":
        ax1.axhline(math.log(num_classes), color="gray", ls="--", lw=1, label=f"log C = log {num_classes}")
        ax1.set_ylabel("cross-entropy loss (fixed examples)")
    else:
        ax1.set_ylabel(f"{config['settings']['loss']} loss (fixed examples)")
    band(ax2, x, arrays["accuracy"][:, 0, :], label="accuracy at the point")
    ax2.set_ylabel("accuracy (fixed examples)")
    ax2.set_ylim(0, 1)
    for ax in (ax1, ax2):
        ax.set_xlabel(r"$\log_{10}(r^2 / r_X^2)$")
        ax.grid(alpha=0.3)
        mark_rx(ax)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{title_of(config)}; loss and accuracy at the scan points ({seeds} seeds){at}", fontsize=9)
    out.append(save(fig, os.path.join(run_dir, "loss_accuracy.png")))
    if "gn_trace_over_frob" in arrays or "full_trace_over_frob" in arrays:
        out.append(curvature_split_figure(run_dir, config, arrays))
    if "density_nodes" in arrays:
        out += density_figures(run_dir, config, arrays, at)
    return out


def density_figures(run_dir: str, config: dict, arrays: dict, at: str = "") -> list[str]:
    """The full Hessian's spectral density per radius and its statistics across radii (the first d's
    records: the density does not depend on d)."""
    derived, x = config["derived"], np.asarray(arrays["log10_r2_over_rx2"], float)
    nodes, weights = arrays["density_nodes"][:, 0], arrays["density_weights"][:, 0]
    stats = analysis_density.summary(nodes, weights, D=derived["D"],
                                     k=analysis_density.edge_rank(derived["num_classes"]))
    probes, order = nodes.shape[-2:]
    what = f"{title_of(config)}; full Hessian, SLQ {probes} probes x {order} steps x {nodes.shape[1]} seeds"
    labels = [f"$r^2/r_X^2 = 10^{{{v:+.1f}}}$ (r = {r:.3g})" for v, r in zip(x, arrays["radii"])]
    rx = density_plots.rx_index(x)
    subspace = {"d": int(arrays["dims"][0]), "frac_pos": arrays["frac_pos"][:, 0],
                "trace_over_frob": arrays["trace_over_frob"][:, 0]}  # the first d's, like the density
    panels = os.path.join(run_dir, "spectral_density.png")
    summary = os.path.join(run_dir, "spectral_density_summary.png")
    return [
        density_plots.density_panels(panels, what + at, labels, nodes, weights, stats, D=derived["D"],
                                     highlight=rx),
        density_plots.density_summary(summary, what + at, x, stats, xlabel=r"$\log_{10}(r^2 / r_X^2)$",
                                      rx=True, subspace=subspace),
    ]


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
