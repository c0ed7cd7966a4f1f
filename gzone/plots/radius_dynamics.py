"""Figures of the radius_dynamics experiment, drawn from its records only."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from gzone import plots
from gzone.plots.common import band, mark_rx, save, title_of


@plots.register("radius_dynamics")
def radius_dynamics_figures(run_dir: str, config: dict, arrays: dict, analysis=None) -> list[str]:
    from gzone.analysis import dynamics

    derived = config["derived"]
    modes = derived["mode_names"]
    r_x = derived.get("r_ref", derived["r_x"])  # the reference radius of r0 / r_X
    r0s, rel = arrays["r0"], arrays["r0_over_rx"]
    steps = arrays["step"].reshape(-1)
    settings = config["settings"]
    adam = settings.get("optimizer") == "adam" and "lr_per_r0" in derived
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
            if adam and rel[i] < 1:
                lr_walk = dynamics.adam_walk_r2(r0, steps, D=derived["D"], lr=derived["lr_per_r0"][i])
                ax_r.plot(steps, np.sqrt(lr_walk), ls=(0, (1, 2)), lw=1.4, color="k", zorder=5)
        ax_r.plot([], [], ls="--", color="gray", label=r"random walk $\sqrt{r_0^2 + \sum |\delta\theta|^2}$")
        if adam:
            ax_r.plot([], [], ls=(0, (1, 2)), color="k",
                      label=r"random walk, Adam step lr: $\sqrt{r_0^2 + D\,\mathrm{lr}^2 t}$")
        ax_r.axhline(r_x, color="k", ls=":", lw=1)
        ax_r.text(steps[0], r_x, " $r_X$", va="bottom", fontsize=8)
        if derived.get("reference_radius", "xavier") != "xavier":
            ax_r.axhline(derived["r_x"], color="gray", ls=":", lw=1)
            ax_r.text(steps[-1], derived["r_x"], "Xavier radius ", va="bottom", ha="right", fontsize=8)
        ax_r.set_xscale("log")
        ax_r.set_yscale("log")
        ax_r.set_xlabel("step")
        ax_r.set_ylabel(r"radius $|\theta(t)|$ (free training)")
        ax_r.legend(fontsize=7, loc="upper left")
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
    num_classes = config["derived"]["num_classes"]
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
    if derived.get("reference_radius", "xavier") != "xavier":
        ax_r.set_title(f"$r_X$ = {r_x:.4g} ({derived['reference_radius']}); "
                       f"Xavier radius {derived['r_x']:.4g}", fontsize=8)
    power = settings.get("lr_radius_power", 0.0)
    lr = f"lr {settings['lr']}" + (f" (r0/r_X)^-{power:g}" if power else "")
    batch = "full batch" if settings.get("full_batch") else f"batch {settings['batch_size']}"
    fig.suptitle(f"{title_of(config)}; {settings['optimizer']} {lr}, "
                 f"{batch}, {len(epochs)} epochs; {arrays['radius'].shape[2]} seed(s)",
                 fontsize=9)
    return [save(fig, os.path.join(run_dir, "radius_dynamics.png"))]
