"""Figures of the train_subspace experiment, drawn from its records only."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from gzone import plots
from gzone.plots.common import band, mark_rx, save, title_of


@plots.register("train_subspace")
def subspace_training_figures(run_dir: str, config: dict, arrays: dict, analysis=None) -> list[str]:
    x = arrays["log10_r2_over_rx2"]
    modes = config["derived"]["mode_names"]
    dims = arrays["dims"]
    num_classes = config["derived"]["num_classes"]
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
