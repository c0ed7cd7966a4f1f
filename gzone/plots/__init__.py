"""Figures drawn from a run folder's records only (never recomputed).

``draw(run_dir)`` looks at config.json's experiment and draws that experiment's figures as PNG
files in the run folder, returning their paths. Figures of the radius scan and the training
experiments live here; another experiment NAME keeps its figures in ``gzone/plots_NAME.py``,
registered with `register` and imported on demand. Uses matplotlib's object-oriented API (no
pyplot state, no display needed).
"""

from __future__ import annotations

import importlib
import math
import os
import warnings
from typing import Callable

import numpy as np
from matplotlib.figure import Figure

from gzone.runs import records

DRAWERS: dict[str, Callable[[str, dict, dict], list[str]]] = {}


def register(experiment: str):
    def wrap(fn):
        DRAWERS[experiment] = fn
        return fn

    return wrap


def draw(run_dir: str) -> list[str]:
    """Draws the figures of a completed run; returns the PNG paths."""
    config = records.read_config(run_dir)
    experiment = config.get("experiment")
    if experiment not in DRAWERS and isinstance(experiment, str) and experiment.isidentifier():
        try:
            importlib.import_module(f"gzone.plots.{experiment}")
        except ModuleNotFoundError:
            pass
    if experiment not in DRAWERS:
        raise ValueError(f"no figures defined for experiment {experiment!r}")
    arrays = records.load_arrays(run_dir)
    return DRAWERS[experiment](run_dir, config, arrays)


def save(fig: Figure, path: str, dpi: int = 110) -> str:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def band(ax, x, values, *, label, color=None, axis=-1, log_y=False):
    """Mean over `axis` as a line, min..max over it as a band; NaNs ignored."""
    values = np.asarray(values, float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if log_y:
            mean = np.exp(np.nanmean(np.log(values), axis=axis))
        else:
            mean = np.nanmean(values, axis=axis)
        lo, hi = np.nanmin(values, axis=axis), np.nanmax(values, axis=axis)
    (line,) = ax.plot(x, mean, marker="o", ms=3, label=label, color=color)
    ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color(), lw=0)
    return line


def mark_rx(ax, x=0.0, label="$r_X$"):
    ax.axvline(x, color="k", ls=":", lw=1)
    ymin, ymax = ax.get_ylim()
    ax.text(x, ymax, f" {label}", va="top", ha="left", fontsize=8)


def radius_axes(axes, *, legend_size=8, legend=True) -> None:
    """x label log10(r^2/r_X^2), grid, r_X marked and a legend on each of `axes`."""
    for ax in axes:
        ax.set_xlabel(r"$\log_{10}(r^2 / r_X^2)$")
        ax.grid(alpha=0.3)
        mark_rx(ax)
        if legend:
            ax.legend(fontsize=legend_size, loc="best")


def title_of(config: dict) -> str:
    derived = config.get("derived", {})
    dataset = derived.get("dataset", {}).get("name", config.get("settings", {}).get("dataset", "?"))
    return f"{derived.get('model', '?')} on {dataset}, D = {derived.get('D', '?')}"


# --------------------------------------------------------------------------- radius scan


@register("radius_scan")
def radius_scan_figures(run_dir: str, config: dict, arrays: dict) -> list[str]:
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
    fig.suptitle(f"{title_of(config)}; {conv} points, {proj} subspaces; mean and min-max over {seeds} seeds", fontsize=9)
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
                ax.plot(x, values, style, marker="o", ms=3, color=f"C{di}", label=f"$P^T {name[0]} P$, d = {d}")
    if "full_trace_over_frob" in arrays:
        full, se = arrays["full_trace_over_frob"][:, 0, :], arrays["full_trace_over_frob_se"][:, 0, :]
        n = full.shape[-1]
        ax2.errorbar(x, np.nanmean(full, -1), yerr=np.sqrt(np.nansum(se**2, -1)) / n, color="k", marker="s", ms=3,
                     capsize=2, label="full space $H$ (mean $\\pm$ s.e.)")
    ax1.set_ylabel("fraction of positive eigenvalues")
    ax2.set_ylabel(r"$\mathrm{Tr}/\|\cdot\|_F$")
    radius_axes((ax1, ax2), legend_size=7)
    metric = config.get("derived", {}).get("projection_metric", {})
    fig.suptitle(f"{title_of(config)}; Gauss-Newton / residual split, metric {metric.get('name', 'none')}"
                 f"{' (renormalised)' if metric.get('renormalise') else ''}", fontsize=9)
    return save(fig, os.path.join(run_dir, "curvature_split.png"))


# --------------------------------------------------------------------------- subspace training


@register("train_subspace")
def subspace_training_figures(run_dir: str, config: dict, arrays: dict) -> list[str]:
    x = arrays["log10_r2_over_rx2"]
    modes = config["derived"]["mode_names"]
    dims = arrays["dims"]
    num_classes = config["derived"]["dataset"]["num_classes"]
    settings = config["settings"]
    fig = Figure(figsize=(5.5 * len(modes), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(modes), sharey=True))
    for mi, (ax, mode) in enumerate(zip(axes, modes)):
        for di, d in enumerate(dims):
            band(ax, x, arrays["final_test_accuracy"][mi, di], label=f"d = {d}")
        ax.axhline(1.0 / num_classes, color="gray", ls="--", lw=1, label="chance")
        ax.set_title(f"training in random {mode}s", fontsize=10)
        ax.set_xlabel(r"$\log_{10}(r^2 / r_X^2)$ of the starting point")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        mark_rx(ax)
        ax.legend(fontsize=8, loc="best")
    axes[0].set_ylabel("test accuracy after training")
    seeds = arrays["final_test_accuracy"].shape[-1]
    fig.suptitle(
        f"{title_of(config)}; {settings['optimizer']} lr {settings['lr']}, {settings['epochs']} epochs, "
        f"batch {settings['batch_size']}; mean and min-max over {seeds} seeds",
        fontsize=9,
    )
    return [save(fig, os.path.join(run_dir, "subspace_training.png"))]


# --------------------------------------------------------------------------- radius dynamics


@register("radius_dynamics")
def radius_dynamics_figures(run_dir: str, config: dict, arrays: dict) -> list[str]:
    from gzone.analysis import dynamics

    modes = config["derived"]["mode_names"]
    r_x = config["derived"]["r_x"]
    r0s, rel = arrays["r0"], arrays["r0_over_rx"]
    steps = arrays["step"].reshape(-1)
    settings = config["settings"]
    colors = [f"C{i}" for i in range(len(r0s))]
    fig = Figure(figsize=(16, 4.6))
    ax_r, ax_acc, ax_final = fig.subplots(1, 3)
    if "free" in modes:
        mi = modes.index("free")
        for i, r0 in enumerate(r0s):
            radius = arrays["radius"][mi, i].reshape(arrays["radius"].shape[2], -1)
            band(ax_r, steps, radius.T, label=f"$r_0$ = {rel[i]:g} $r_X$", color=colors[i], log_y=True)
            upd = arrays["update_sq"][mi, i].reshape(radius.shape).mean(axis=0)
            walk = dynamics.random_walk_r2(r0, steps, upd)
            ax_r.plot(steps, np.sqrt(walk["cumulative"]), ls="--", lw=1, color=colors[i])
        ax_r.plot([], [], ls="--", color="gray", label=r"random walk $\sqrt{r_0^2 + \sum |\delta\theta|^2}$")
        ax_r.axhline(r_x, color="k", ls=":", lw=1)
        ax_r.text(steps[0], r_x, " $r_X$", va="bottom", fontsize=8)
        ax_r.set_xscale("log")
        ax_r.set_yscale("log")
        ax_r.set_xlabel("step")
        ax_r.set_ylabel(r"radius $|\theta(t)|$ (free training)")
        ax_r.legend(fontsize=7, loc="best")
        ax_r.grid(alpha=0.3, which="both")
    epochs = np.arange(1, arrays["test_accuracy"].shape[-1] + 1)
    styles = {"free": "-", "fixed": "--"}
    for mi, mode in enumerate(modes):
        for i in range(len(r0s)):
            acc = arrays["test_accuracy"][mi, i].mean(axis=0)
            ax_acc.plot(epochs, acc, styles.get(mode, "-"), color=colors[i], marker="o", ms=3,
                        label=f"{mode}, $r_0$ = {rel[i]:g} $r_X$")
        final = arrays["test_accuracy"][mi, :, :, -1]
        band(ax_final, rel, final, label=f"{mode} radius")
    num_classes = config["derived"]["dataset"]["num_classes"]
    for ax in (ax_acc, ax_final):
        ax.axhline(1.0 / num_classes, color="gray", ls=":", lw=1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("test accuracy")
    ax_final.set_xscale("log")
    ax_final.set_xlabel(r"initial radius $r_0 / r_X$")
    ax_final.set_ylabel(f"test accuracy after {len(epochs)} epochs")
    mark_rx(ax_final, 1.0)
    fig.suptitle(f"{title_of(config)}; {settings['optimizer']} lr {settings['lr']}, batch {settings['batch_size']}, "
                 f"{len(epochs)} epochs; {arrays['radius'].shape[2]} seed(s)", fontsize=9)
    return [save(fig, os.path.join(run_dir, "radius_dynamics.png"))]
