"""Figures of the trajectories experiment, drawn from its records only (registered with `plots.register`).

pca.png           the joint trajectories of each group on their PC1-PC2 plane, and the explained-variance
                  ratios of the top components (centred and uncentred);
loss_surface.png  the training loss on the PC1-PC2 plane around each group's paths, paths drawn on it;
interpolation.png loss along straight lines start -> solution and between solutions, with barriers;
distances.png     distances between final solutions, from their start and from the origin, per group;
radius.png        radius along the training trajectories and along the straight lines, test accuracy.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from gzone import plots
from gzone.analysis import dynamics

LABELS = {"single": "(a) one model", "inits": "(b) different inits", "orders": "(c) same init, orders",
          "clones": "(d) clones"}


def _groups(config: dict) -> list[str]:
    return list(config["settings"]["groups"])


def _suptitle(fig, config: dict, what: str) -> None:
    s = config["settings"]
    fig.suptitle(f"{plots.title_of(config)}; {s['optimizer']} lr {s['lr']}, batch {s['batch_size']}, "
                 f"{s['epochs']} epochs, S = {s['num_models']}; {what}", fontsize=9)


def _paths(ax, arrays: dict, g: str, scores_key: str = "scores_centred") -> None:
    """Each model's path on the PC1-PC2 plane: start circle, end star; the clones' parent in black."""
    scores, model = arrays[f"{g}_{scores_key}"], arrays[f"{g}_traj_model"]
    for m in np.unique(model):
        xy = scores[model == m, :2]
        if xy.shape[1] < 2:
            continue
        color = "k" if m < 0 else f"C{m % 10}"
        if g == "clones" and m >= 0:  # a clone leaves from the parent's last point
            xy = np.concatenate([scores[model == -1, :2][-1:], xy])
        ax.plot(xy[:, 0], xy[:, 1], "-", color=color, lw=1.2, marker=".", ms=3,
                label="parent" if m < 0 else (f"model {m}" if g != "single" else "trajectory"))
        ax.plot(xy[0, 0], xy[0, 1], "o", color=color, ms=6, mfc="none")
        ax.plot(xy[-1, 0], xy[-1, 1], "*", color=color, ms=10)


def _ratio_note(arrays: dict, g: str) -> str:
    r = arrays[f"{g}_pca_ratio_centred"]
    return f"PC1-2 {r[:2].sum():.3f}, top {min(10, r.size)} {r[:10].sum():.3f}"


@plots.register("trajectories")
def trajectory_figures(run_dir: str, config: dict, arrays: dict, analysis=None) -> list[str]:
    return [draw_pca(run_dir, config, arrays), draw_surface(run_dir, config, arrays),
            draw_interpolation(run_dir, config, arrays), draw_distances(run_dir, config, arrays),
            draw_radius(run_dir, config, arrays)]


def draw_pca(run_dir: str, config: dict, arrays: dict) -> str:
    groups = _groups(config)
    fig = Figure(layout="constrained", figsize=(4.2 * len(groups), 12))
    axes = np.asarray(fig.subplots(3, len(groups), squeeze=False))
    for col, g in enumerate(groups):
        for row, key, what in ((0, "scores_centred", "centred"), (1, "scores_uncentred", "uncentred")):
            ax = axes[row, col]
            _paths(ax, arrays, g, key)
            uncentred = f"PC1-2 {arrays[f'{g}_pca_ratio_uncentred'][:2].sum():.3f}"
            note = _ratio_note(arrays, g) if row == 0 else uncentred
            ax.set_title(f"{LABELS[g]}, {what}: {note}", fontsize=9)
            ax.set_xlabel(f"PC1 ({what})")
            ax.set_ylabel(f"PC2 ({what})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        ax = axes[2, col]
        k = np.arange(1, arrays[f"{g}_random_walk_ratio"].shape[1] + 1)
        for m, ratio in enumerate(arrays[f"{g}_pca_ratio_per_model"]):
            ax.plot(k, ratio, "-", color="gray", lw=0.8, alpha=0.6,
                    label="each model's own path" if m == 0 else None)
        ax.plot(k, arrays[f"{g}_random_walk_ratio"][0], "k:", lw=1.5,
                label="random walk, same steps (one path)")
        for key, style, label in (("pca_ratio_centred", "o-", "centred"),
                                  ("pca_ratio_uncentred", "s--", "uncentred")):
            ratio = arrays[f"{g}_{key}"]
            k = np.arange(1, ratio.size + 1)
            line = ax.plot(k, ratio, style, ms=4, label=f"{label}: component")[0]
            ax.plot(k, np.cumsum(ratio), style, ms=3, alpha=0.5, color=line.get_color(),
                    label=f"{label}: cumulative")
        ax.set_yscale("log")
        ax.set_ylim(top=1.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("principal component")
        ax.set_ylabel("explained variance ratio")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower left")
    _suptitle(fig, config,
              "PCA of the joint trajectories (T x T Gram matrix of the snapshots; o start, * end)")
    return plots.save(fig, os.path.join(run_dir, "pca.png"))


def draw_surface(run_dir: str, config: dict, arrays: dict) -> str:
    groups = _groups(config)
    fig = Figure(layout="constrained", figsize=(4.8 * len(groups), 4.4))
    axes = np.atleast_1d(fig.subplots(1, len(groups)))
    for ax, g in zip(axes, groups):
        a, b = arrays[f"{g}_grid_alpha"], arrays[f"{g}_grid_beta"]
        loss = np.log10(np.maximum(arrays[f"{g}_grid_loss"], 1e-12))
        filled = ax.contourf(a, b, loss.T, levels=20, cmap="viridis")
        ax.contour(a, b, loss.T, levels=10, colors="w", linewidths=0.4, alpha=0.6)
        fig.colorbar(filled, ax=ax, label=r"$\log_{10}$ training loss (eval batch)")
        _paths(ax, arrays, g)
        off = arrays[f"{g}_offplane"]
        ax.set_title(f"{LABELS[g]}\n{_ratio_note(arrays, g)}; max distance off the plane {off.max():.3g}",
                     fontsize=8)
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
        ax.set_xlim(a[0], a[-1])
        ax.set_ylim(b[0], b[-1])
    _suptitle(fig, config, "loss on the plane through the mean spanned by PC1, PC2 (paths projected onto it)")
    return plots.save(fig, os.path.join(run_dir, "loss_surface.png"))


def draw_interpolation(run_dir: str, config: dict, arrays: dict) -> str:
    groups = _groups(config)
    fig = Figure(layout="constrained", figsize=(4.4 * len(groups), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(groups), sharey=True))
    for ax, g in zip(axes, groups):
        t = arrays[f"{g}_interp_t"]
        for m, row in enumerate(arrays[f"{g}_start_loss"]):
            ax.plot(t, row, "-", color=f"C{m % 10}", lw=1.2, label="start -> solution" if m == 0 else None)
        for p, row in enumerate(arrays[f"{g}_pair_loss"]):
            ax.plot(t, row, "--", color="gray", lw=1, label="solution <-> solution" if p == 0 else None)
        for x in (0.0, 1.0):
            ax.axvline(x, color="k", ls=":", lw=0.8)
        note = [f"start barrier {np.mean(arrays[f'{g}_start_barrier']):.3g}"]
        if arrays[f"{g}_pair_barrier"].size:
            note.append(f"pair barrier {np.mean(arrays[f'{g}_pair_barrier']):.3g}")
        ax.set_title(f"{LABELS[g]}\n" + ", ".join(note) + " (means)", fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel(r"$t$ in $(1 - t)\,\theta_A + t\,\theta_B$")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="best")
    axes[0].set_ylabel("training loss (eval batch)")
    _suptitle(fig, config,
              "straight lines (Goodfellow et al. 2015); barrier = max bump over the linear mix of end losses")
    return plots.save(fig, os.path.join(run_dir, "interpolation.png"))


def draw_distances(run_dir: str, config: dict, arrays: dict) -> str:
    groups = _groups(config)
    kinds = (("pairwise", "between final solutions"), ("start", "solution from its start"),
             ("init", "solution from its initialisation"), ("origin", "solution from the origin"))
    fig = Figure(layout="constrained", figsize=(15, 4.2))
    axes = fig.subplots(1, len(kinds))
    x = np.arange(len(groups))
    for ax, (kind, title) in zip(axes, kinds):
        top = 1.0
        for i, g in enumerate(groups):
            values = arrays[f"{g}_dist_{kind}"]
            if kind == "pairwise":
                values = values[np.triu_indices(values.shape[0], 1)]
            if values.size == 0:
                continue
            jitter = np.linspace(-0.12, 0.12, values.size)
            ax.plot(i + jitter, values, "o", color=f"C{i}", ms=4, alpha=0.7)
            ax.errorbar(i + 0.25, values.mean(), yerr=values.std(), fmt="s", color="k", ms=4, capsize=3)
            top = max(top, 1.1 * values.max())
        ax.set_xticks(x)
        ax.set_xticklabels([LABELS[g] for g in groups], rotation=20, fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel(r"Euclidean distance $\|\cdot\|_2$")
    _suptitle(fig, config, "points: models/pairs; squares: mean +- std")
    return plots.save(fig, os.path.join(run_dir, "distances.png"))


def draw_radius(run_dir: str, config: dict, arrays: dict) -> str:
    groups = _groups(config)
    r_x = config["derived"]["r_x"]
    fig = Figure(layout="constrained", figsize=(15, 4.4))
    ax_t, ax_l, ax_acc = fig.subplots(1, 3)
    for i, g in enumerate(groups):
        model, step, radius = arrays[f"{g}_traj_model"], arrays[f"{g}_traj_step"], arrays[f"{g}_traj_radius"]
        for j, m in enumerate(np.unique(model)):
            keep = (model == m) & (step > 0)
            ax_t.plot(step[keep], radius[keep] / r_x, "-", color=f"C{i}", lw=1, alpha=0.8,
                      label=LABELS[g] if j == 0 else None)
        t = arrays[f"{g}_interp_t"]
        for j, row in enumerate(arrays[f"{g}_start_radius"]):
            ax_l.plot(t, row / r_x, "-", color=f"C{i}", lw=1,
                      label=f"{LABELS[g]}: start -> solution" if j == 0 else None)
        for j, row in enumerate(arrays[f"{g}_pair_radius"]):
            ax_l.plot(t, row / r_x, "--", color=f"C{i}", lw=1,
                      label=f"{LABELS[g]}: between solutions" if j == 0 else None)
        acc = arrays[f"{g}_test_accuracy"]
        plots.band(ax_acc, np.arange(1, acc.shape[1] + 1), acc.T, label=LABELS[g], color=f"C{i}")
        r0 = radius[np.flatnonzero(step == 0)[0]]  # model 0 (or the clones' parent) from step 0
        steps = arrays[f"{g}_step"].reshape(-1)
        walk = dynamics.random_walk_r2(r0, steps, arrays[f"{g}_update_sq"][0].reshape(-1))
        ax_t.plot(steps, np.sqrt(walk["cumulative"]) / r_x, ":", color=f"C{i}", lw=1.5)
    ax_t.plot([], [], ":", color="gray",
              label=r"random walk $\sqrt{r_0^2 + \sum |\delta\theta|^2}$ (first model)")
    ax_t.set_xscale("log")
    ax_t.set_yscale("log")
    ax_t.set_xlabel("step")
    ax_t.set_ylabel(r"$|\theta(t)| / r_X$ along the training path")
    ax_l.set_xlabel(r"$t$ along the straight line")
    ax_l.set_ylabel(r"$|\theta| / r_X$ along the line")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("test accuracy (mean, min-max over models)")
    for ax in (ax_t, ax_l):
        ax.axhline(1.0, color="k", ls=":", lw=1)
    for ax in (ax_t, ax_l, ax_acc):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="best")
    _suptitle(fig, config, f"radius along paths ($r_X$ = {r_x:.4g}; see the radius_dynamics experiment)")
    return plots.save(fig, os.path.join(run_dir, "radius.png"))

