"""Figures drawn from a run folder's records only (never recomputed).

``draw(run_dir)`` looks at config.json's experiment and draws that experiment's figures as PNG
files in the run folder, returning their paths. Uses matplotlib's object-oriented API (no
pyplot state, no display needed).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Callable

import numpy as np
from matplotlib.figure import Figure

from gzone import records

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
    for ax in (ax1, ax2):
        ax.set_xlabel(r"$\log_{10}(r^2 / r_X^2)$")
        ax.grid(alpha=0.3)
        mark_rx(ax)
        ax.legend(fontsize=8, loc="best")
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
    return out
