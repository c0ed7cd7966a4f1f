"""Figures of the emergent_geometry experiment, drawn from its records only (`plots.register`).

gradient_clustering.png  cosine similarities of logit gradients: the (logit, class) block means at the first
                         and last checkpoint, q_SLSC / q_SL / q_SLDC / q_DL over training and over radius;
hessian_outliers.png     the top Hessian eigenvalues over training, the spectrum's top at a few checkpoints
                         with the detected bulk edge, the outlier count over training and over radius;
gradient_overlap.png     the fraction of |g|^2 inside the top-j Hessian subspace over training and radius;
logit_variance.png       logit variance across classes and weight radius over training and over radius
                         (Fort & Ganguli, Fig. 4), with the training curves;
spectral_density_<part>.png, spectral_density_summary_<part>.png   with density probes: the full Hessian's
                         spectral density per point and its statistics (`plots.spectral_density`).
Lines are means over seeds; bands are min..max over seeds unless a legend says otherwise.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from gzone import plots
from gzone.analysis import spectral_density as analysis_density
from gzone.plots import spectral_density as density_plots

GROUP_LABELS = {"slsc": "same logit, same class", "sl": "same logit, any class",
                "sldc": "same logit, different class", "dl": "different logits"}


def _parts(arrays: dict) -> list[tuple[str, np.ndarray, str]]:
    """(prefix, x values, x label) of the parts present in the run."""
    out = []
    if "checkpoint_step" in arrays:
        out.append(("train", np.asarray(arrays["checkpoint_step"], float), "training step"))
    if "radii" in arrays:
        out.append(("radius", np.asarray(arrays["log10_r2_over_rx2"], float),
                    r"$\log_{10}(r^2 / r_X^2)$ at initialisation"))
    return out


def _xaxis(ax, part: str, x: np.ndarray, label: str) -> None:
    if part == "train" and x.size > 1:
        ax.set_xscale("symlog", linthresh=max(x[1], 1.0))
        ax.set_xlim(left=0)
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)
    if part == "radius":
        plots.mark_rx(ax)


def _suptitle(fig, config: dict, what: str) -> None:
    s = config["settings"]
    fig.suptitle(f"{plots.title_of(config)}; {s['optimizer']} lr {s['lr']}, batch {s['batch_size']}, "
                 f"{s['num_seeds']} seed(s); {what}", fontsize=9)


@plots.register("emergent_geometry")
def emergent_figures(run_dir: str, config: dict, arrays: dict, analysis=None) -> list[str]:
    out = [draw_clustering(run_dir, config, arrays), draw_outliers(run_dir, config, arrays),
           draw_overlap(run_dir, config, arrays), draw_logit_variance(run_dir, config, arrays)]
    return out + [path for part in _parts(arrays) if f"{part[0]}_density_nodes" in arrays
                  for path in draw_density(run_dir, config, arrays, *part)]


def draw_density(run_dir: str, config: dict, arrays: dict, part: str, x: np.ndarray, label: str) -> list[str]:
    """The full Hessian's spectral density at each point of a part, and its statistics across them."""
    derived = config["derived"]
    nodes, weights = arrays[f"{part}_density_nodes"], arrays[f"{part}_density_weights"]
    stats = analysis_density.summary(nodes, weights, D=derived["D"],
                                     k=analysis_density.edge_rank(derived["num_classes"]))
    if part == "train":
        labels, rx = [f"step {int(v)}" for v in x], None
    else:
        labels = [f"$r^2/r_X^2 = 10^{{{v:+.1f}}}$" for v in x]
        rx = density_plots.rx_index(x)
    what = (f"{plots.title_of(config)}; full Hessian, SLQ {nodes.shape[-2]} probes x {nodes.shape[-1]} steps "
            f"x {nodes.shape[1]} seeds")
    name = "training" if part == "train" else "radius"
    panels = os.path.join(run_dir, f"spectral_density_{name}.png")
    summary = os.path.join(run_dir, f"spectral_density_summary_{name}.png")
    return [
        density_plots.density_panels(panels, what, labels, nodes, weights, stats, D=derived["D"],
                                     highlight=rx),
        density_plots.density_summary(summary, what, x, stats, xlabel=label, rx=part == "radius"),
    ]


def draw_clustering(run_dir: str, config: dict, arrays: dict) -> str:
    parts = _parts(arrays)
    first = parts[0][0]
    blocks = arrays[f"{first}_block_mean"]  # [point, seed, k, c, l, c']
    C = blocks.shape[2]
    fig = Figure(layout="constrained", figsize=(5.0 * (2 + len(parts)), 4.6))
    axes = fig.subplots(1, 2 + len(parts))
    which = ((0, "initialisation" if first == "train" else "smallest radius"),
             (-1, "last checkpoint" if first == "train" else "largest radius"))
    top = max(float(np.nanmax(np.abs(np.nanmean(blocks[i], axis=0)))) for i, _ in which)
    for ax, (i, name) in zip(axes[:2], which):
        m = np.nanmean(blocks[i], axis=0).reshape(C * C, C * C)
        image = ax.imshow(m, cmap="coolwarm", vmin=-top, vmax=top, interpolation="nearest")
        for edge in np.arange(C, C * C, C) - 0.5:
            ax.axhline(edge, color="k", lw=0.4)
            ax.axvline(edge, color="k", lw=0.4)
        ticks = np.arange(C) * C + (C - 1) / 2
        ax.set_xticks(ticks, [str(k) for k in range(C)], fontsize=7)
        ax.set_yticks(ticks, [str(k) for k in range(C)], fontsize=7)
        ax.set_xlabel("logit $l$ (within: class of $x_m$)")
        ax.set_ylabel("logit $k$ (within: class of $x_n$)")
        ax.set_title(f"mean cos of $\\nabla z_k(x_n)$, $\\nabla z_l(x_m)$, {name}", fontsize=9)
    fig.colorbar(image, ax=axes[:2], shrink=0.8, label="mean cosine similarity")
    for ax, (part, x, label) in zip(axes[2:], parts):
        for gi, g in enumerate(("slsc", "sl", "sldc", "dl")):
            mean = np.mean(arrays[f"{part}_q_{g}"], axis=1)
            spread = np.mean(arrays[f"{part}_q_{g}_std"], axis=1)
            ax.plot(x, mean, marker="o", ms=3, color=f"C{gi}", label=f"q_{g.upper()}: {GROUP_LABELS[g]}")
            ax.fill_between(x, mean - spread, mean + spread, color=f"C{gi}", alpha=0.15, lw=0)
        ax.axhline(0, color="gray", lw=0.8, ls="--")
        ax.set_ylabel("cosine similarity (mean; band: +-1 std over pairs)")
        _xaxis(ax, part, x, label)
        ax.legend(fontsize=7, loc="best")
    _suptitle(fig, config,
              f"logit-gradient clustering on {C} x {config['settings']['gram_per_class']} examples")
    return plots.save(fig, os.path.join(run_dir, "gradient_clustering.png"))


def draw_outliers(run_dir: str, config: dict, arrays: dict) -> str:
    parts = _parts(arrays)
    C = config["derived"]["num_classes"]
    ratio = config["settings"]["outlier_min_ratio"]
    fig = Figure(layout="constrained", figsize=(5.0 * (1 + 2 * len(parts)) * 0.8, 4.4))
    axes = list(fig.subplots(1, 1 + 2 * len(parts)))
    part, x, label = parts[0]
    eigs = arrays[f"{part}_top_eigs"]  # [point, seed, k]
    ax = axes.pop(0)
    picks = sorted({0, eigs.shape[0] // 2, eigs.shape[0] - 1})
    for n, i in enumerate(picks):
        values = eigs[i, 0]
        j = np.arange(1, values.size + 1)
        count = int(arrays[f"{part}_outliers"][i, 0])
        where = f"step {int(x[i])}" if part == "train" else f"log10 r2/rX2 {x[i]:+.1f}"
        ax.plot(j, np.maximum(values, 1e-12), marker="o", ms=3, color=f"C{n}",
                label=f"{where}: {count} outliers")
        if count:
            ax.axvline(count + 0.5, color=f"C{n}", ls=":", lw=1)
    ax.axvline(C + 0.5, color="k", ls="--", lw=0.8, label=f"C = {C}")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue index $j$ (Lanczos Ritz values, seed 0)")
    ax.set_ylabel("Hessian eigenvalue $\\lambda_j$")
    ax.set_title(f"top of the spectrum; dotted: edge by the last gap >= {ratio:g}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    for part, x, label in parts:
        ax_eig, ax_count = axes.pop(0), axes.pop(0)
        eigs = np.mean(arrays[f"{part}_top_eigs"], axis=1)  # [point, k]
        k = eigs.shape[1]
        for j in range(k):
            name = f"top {C}" if j == 0 else ("the rest" if j == C else None)
            ax_eig.plot(x, np.maximum(eigs[:, j], 1e-12), color="C3" if j < C else "gray",
                        lw=1.2 if j < C else 0.7, alpha=1.0 if j < C else 0.6, label=name)
        ax_eig.set_yscale("log")
        ax_eig.set_ylabel(f"top {k} Hessian eigenvalues (mean over seeds)")
        _xaxis(ax_eig, part, x, label)
        ax_eig.legend(fontsize=7, loc="best")
        plots.band(ax_count, x, arrays[f"{part}_outliers"], label=f"last gap >= {ratio:g}")
        plots.band(ax_count, x, arrays[f"{part}_outliers_largest"], label=f"largest gap (if >= {ratio:g})")
        ax_count.axhline(C, color="k", ls="--", lw=0.8, label=f"C = {C}")
        ax_count.axhline(C - 1, color="k", ls=":", lw=0.8, label=f"C - 1 = {C - 1}")
        ax_count.set_ylabel("outliers above the bulk")
        _xaxis(ax_count, part, x, label)
        ax_count.legend(fontsize=7, loc="best")
    s = config["settings"]
    _suptitle(fig, config, f"Hessian on {s['n_hessian']} examples, Lanczos order {s['lanczos_order']}")
    return plots.save(fig, os.path.join(run_dir, "hessian_outliers.png"))


def draw_overlap(run_dir: str, config: dict, arrays: dict) -> str:
    parts = _parts(arrays)
    C = config["derived"]["num_classes"]
    fig = Figure(layout="constrained", figsize=(5.0 * (1 + len(parts)), 4.4))
    axes = list(fig.subplots(1, 1 + len(parts)))
    part, x, label = parts[0]
    overlap = arrays[f"{part}_overlap"]  # [point, seed, k]
    ax = axes.pop(0)
    for n, i in enumerate(sorted({0, overlap.shape[0] // 2, overlap.shape[0] - 1})):
        where = f"step {int(x[i])}" if part == "train" else f"log10 r2/rX2 {x[i]:+.1f}"
        plots.band(ax, np.arange(1, overlap.shape[2] + 1), overlap[i].T, label=where, color=f"C{n}")
    ax.axvline(C, color="k", ls="--", lw=0.8, label=f"j = C = {C}")
    ax.set_xlabel("j (top-j Hessian eigenvectors)")
    ax.set_ylabel(r"$|P_j g|^2 / |g|^2$")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    for ax, (part, x, label) in zip(axes, parts):
        overlap = arrays[f"{part}_overlap"]
        for j, color in ((1, "C0"), (C, "C3"), (overlap.shape[2], "C2")):
            plots.band(ax, x, overlap[:, :, j - 1], label=f"top {j}", color=color)
        ax.set_ylim(0, 1)
        ax.set_ylabel("fraction of $|g|^2$ in the top Hessian subspace")
        _xaxis(ax, part, x, label)
        ax.legend(fontsize=7, loc="best")
    _suptitle(fig, config, "gradient confinement to the top Hessian subspace (Gur-Ari et al. 2018)")
    return plots.save(fig, os.path.join(run_dir, "gradient_overlap.png"))


def draw_logit_variance(run_dir: str, config: dict, arrays: dict) -> str:
    parts = _parts(arrays)
    width = 5.2 * len(parts) + (4.6 if "checkpoint_step" in arrays else 0)
    fig = Figure(layout="constrained", figsize=(width, 4.4))
    axes = list(np.atleast_1d(fig.subplots(1, len(parts) + ("checkpoint_step" in arrays))))
    for ax, (part, x, label) in zip(axes, parts):
        plots.band(ax, x, arrays[f"{part}_logit_var"], label="logit variance across classes", color="C0",
                   log_y=True)
        ax.set_yscale("log")
        ax.set_ylabel("mean over examples of Var$_k\\, z_k(x)$", color="C0")
        twin = ax.twinx()
        plots.band(twin, x, arrays[f"{part}_radius"], label=r"$|\theta|$", color="C1")
        twin.set_ylabel(r"weight radius $|\theta|$", color="C1")
        if part == "radius":
            twin.set_yscale("log")
        _xaxis(ax, part, x, label)
        lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(lines, [h.get_label() for h in lines], fontsize=7, loc="best")
    if "checkpoint_step" in arrays:
        ax = axes[-1]
        steps = arrays["curve_step"].reshape(-1)
        loss = arrays["train_loss_curve"].reshape(arrays["train_loss_curve"].shape[0], -1)
        plots.band(ax, steps, loss.T, label="training loss (record blocks)", color="C0", log_y=True)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss")
        per_epoch = config["derived"]["steps_per_epoch"]
        epochs = (np.arange(arrays["test_accuracy_curve"].shape[1]) + 1) * per_epoch
        twin = ax.twinx()
        plots.band(twin, epochs, arrays["test_accuracy_curve"].T, label="test accuracy (epoch ends)",
                   color="C2")
        twin.set_ylim(0, 1)
        twin.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(lines, [h.get_label() for h in lines], fontsize=7, loc="best")
    _suptitle(fig, config, "logit variance and weight radius (Fort & Ganguli Fig. 4), on "
              f"{config['settings']['n_hessian']} examples")
    return plots.save(fig, os.path.join(run_dir, "logit_variance.png"))
