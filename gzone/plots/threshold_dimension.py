"""Figures of the threshold_dimension experiment, drawn from its records (imported by plots.draw).

  * success_probability.png: P_s(d) with binomial intervals, a panel per target, a curve per start
    point (burn-in t0, lottery); the 1 - delta level and each threshold d* marked.
  * intrinsic_dimension.png: final test accuracy against d (Li et al.'s figure): mean and min-max
    over seeds per start point, the full-space baseline, the 90 % line and d_int90 with its
    bootstrap interval.
  * threshold_vs_t0.png: d* against the burn-in length t0 per target (bars: the bracket from the
    largest failing d to d*), the lottery subspace's d* as a dashed line.
  * gordon_prediction.png (runs with ``--gordon_seeds``): a panel per burn-in start (rows) and
    training-loss target (columns): P_s(d), the measured d* with its bracket, and the quadratic-well
    predictions of d* by eq. (3') and eq. (4) of `analysis.gordon` (seed mean, range over seeds).
"""

from __future__ import annotations

import math
import os

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from gzone import plots


def _label(start: str) -> str:
    if start == "lottery":
        return "lottery subspace"
    t0 = int(start[1:])
    return "random init ($t_0$ = 0)" if t0 == 0 else f"burn-in $t_0$ = {t0}"


def _suptitle(fig, config: dict, arrays: dict, what: str) -> None:
    s = config["settings"]
    seeds = arrays["final_test_accuracy"].shape[-1]
    fig.suptitle(f"{plots.title_of(config)}; {what}\n{s['projection']} subspaces, {s['optimizer']} lr "
                 f"{s['lr']} (full space {s['baseline_lr']}), {s['epochs']} epochs, {seeds} seeds per d",
                 fontsize=9, y=1.02)


@plots.register("threshold_dimension")
def threshold_dimension_figures(run_dir: str, config: dict, arrays: dict, analysis=None) -> list[str]:
    figures = [success_figure(run_dir, config, arrays), accuracy_figure(run_dir, config, arrays),
               threshold_figure(run_dir, config, arrays)]
    if "gordon_cone" in arrays:
        figures.append(gordon_figure(run_dir, config, arrays))
    return figures


def success_figure(run_dir: str, config: dict, arrays: dict) -> str:
    starts, dims, targets = config["derived"]["start_names"], arrays["dims"], arrays["targets"]
    s = config["settings"]
    level = 1.0 - s["delta"]
    fig = Figure(figsize=(max(6.5, 5.2 * len(targets)), 4.4))
    axes = np.atleast_1d(fig.subplots(1, len(targets), sharey=True))
    for ti, (ax, target) in enumerate(zip(axes, targets)):
        for si, start in enumerate(starts):
            ev = arrays["evaluated"][si]
            if not ev.any():
                continue
            p, lo, hi = (arrays[k][ti, si, ev] for k in ("p_success", "p_low", "p_high"))
            color = f"C{si}"
            ax.errorbar(dims[ev], p, yerr=np.clip([p - lo, hi - p], 0.0, None), marker="o", ms=4, capsize=2,
                        color=color, label=_label(start))
            d_star = arrays["threshold"][ti, si]
            if math.isfinite(d_star):
                ax.axvline(d_star, color=color, ls="--", lw=1)
                ax.text(d_star, 0.02 + 0.06 * si, f" $d^*$={d_star:g}", color=color, fontsize=7)
        ax.axhline(level, color="gray", ls=":", lw=1, label=f"$1-\\delta$ = {level:g}")
        relation = ">=" if s["target_metric"] == "test_accuracy" else "<="
        metric = s["target_metric"].replace("_", " ")
        ax.set_title(f"success: final {metric} {relation} {target:g}", fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("subspace dimension d")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3, which="both")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: P_s = 1 at small d
    interval = s["interval"].replace("_", "-")
    axes[0].set_ylabel(f"success probability $P_s(d)$ ({interval} {s['confidence']:.0%} intervals)")
    _suptitle(fig, config, arrays, "success probability")
    return plots.save(fig, os.path.join(run_dir, "success_probability.png"))


def accuracy_figure(run_dir: str, config: dict, arrays: dict) -> str:
    starts, dims = config["derived"]["start_names"], arrays["dims"]
    s = config["settings"]
    base = float(np.mean(arrays["baseline_test_accuracy"][:, -1]))
    fig = Figure(figsize=(7.5, 4.6))
    ax = fig.subplots()
    for si, start in enumerate(starts):
        ev = arrays["evaluated"][si]
        if ev.any():
            plots.band(ax, dims[ev], arrays["final_test_accuracy"][si, ev], label=_label(start),
                       color=f"C{si}")
    ax.axhline(base, color="k", lw=1, label=f"full-space baseline {base:.4f}")
    ax.axhline(s["dint_fraction"] * base, color="k", ls="--", lw=1,
               label=f"{s['dint_fraction']:.0%} of baseline")
    estimate = arrays["d_int"][0]
    interp, low, high = arrays["d_int_interp"]
    name = f"$d_{{int{round(100 * s['dint_fraction'])}}}$"
    if math.isfinite(estimate):
        ax.axvline(estimate, color="0.2", lw=1.5, label=f"{name} = {estimate:g} (evaluated d)")
    if math.isfinite(interp):
        ax.axvline(interp, color="0.2", ls=":", lw=1.2,
                   label=f"{name} = {interp:.4g} (log-linear between evaluated d)")
        ax.axvspan(low, high if math.isfinite(high) else dims.max(), color="0.5", alpha=0.2, lw=0,
                   label=f"bootstrap {s['confidence']:.0%} over seeds: [{low:.4g}, {high:.4g}]")
    num_classes = config["derived"]["num_classes"]
    ax.axhline(1.0 / num_classes, color="gray", ls=":", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("subspace dimension d")
    ax.set_ylabel("final test accuracy (mean, min-max over seeds)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    _suptitle(fig, config, arrays, "intrinsic dimension")
    return plots.save(fig, os.path.join(run_dir, "intrinsic_dimension.png"))


def threshold_figure(run_dir: str, config: dict, arrays: dict) -> str:
    starts, targets = config["derived"]["start_names"], arrays["targets"]
    burn = [si for si, st in enumerate(starts) if st != "lottery"]
    t0 = np.asarray(arrays["burn_in"], float)
    d_max = float(np.max(arrays["grid"]))
    fig = Figure(figsize=(6.5, 4.4))
    ax = fig.subplots()
    x = np.arange(len(t0))  # t0 values as categories (0 and a geometric list of burn-ins)
    for ti, target in enumerate(targets):
        color = f"C{ti}"
        d_star = arrays["threshold"][ti, burn]
        below = arrays["threshold_below"][ti, burn]
        lower = np.where(np.isfinite(below), d_star - below, 0.0)
        ax.errorbar(x, d_star, yerr=[lower, np.zeros_like(lower)], marker="o", capsize=3, color=color,
                    label=f"target {target:g}")
        missing = ~np.isfinite(d_star)
        if missing.any():
            ax.plot(x[missing], np.full(missing.sum(), d_max), "^", color=color, ms=8, mfc="none",
                    label=f"target {target:g}: $d^*$ > {d_max:g} (not reached on the grid)")
        at_floor = np.isfinite(d_star) & ~np.isfinite(below)  # the smallest grid d passes: d* <= d_min
        if at_floor.any():
            ax.plot(x[at_floor], d_star[at_floor], "v", color=color, ms=9, mfc="none",
                    label=f"target {target:g}: $d^*$ <= {d_star[at_floor].max():g} (grid floor)")
        if "lottery" in starts:
            value = arrays["threshold"][ti, starts.index("lottery")]
            if math.isfinite(value):
                ax.axhline(value, color=color, ls="--", lw=1, label=f"lottery subspace, target {target:g}")
    start_acc = np.nanmean(arrays["anchor_test_accuracy"], axis=-1)
    ax.set_xticks(x, [f"{v:g}\n(test acc {a:.2f})" for v, a in zip(t0, start_acc)])
    if np.any(np.isfinite(arrays["threshold"]) & (arrays["threshold"] > 0)):
        ax.set_yscale("log")
    ax.set_xlabel("burn-in steps $t_0$ before restricting to the subspace (test accuracy of the start point)")
    ax.set_ylabel(f"threshold dimension $d^*$ ($P_s \\geq$ {1 - config['settings']['delta']:g})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    _suptitle(fig, config, arrays, "threshold vs burn-in; bars: bracket from the largest failing d")
    return plots.save(fig, os.path.join(run_dir, "threshold_vs_t0.png"))


PREDICTIONS = (("gordon_cone", "eq. (3'): tangent cone", "C3", ":"),
               ("gordon_larsen", "eq. (4): Larsen et al.", "C2", "-."))


def gordon_figure(run_dir: str, config: dict, arrays: dict) -> str:
    """P_s(d) per burn-in start and target with the measured d* and the predicted d* of both formulas."""
    starts, dims, targets = config["derived"]["start_names"], arrays["dims"], arrays["targets"]
    t0s = [int(t) for t in arrays["burn_in"]]
    level, D = 1.0 - config["settings"]["delta"], int(config["derived"]["D"])
    line = "gordon_line_loss" in arrays and arrays["gordon_line_loss"].shape[-1] > 0
    fig = Figure(figsize=(4.2 * (len(targets) + line) + 1.5, 3.3 * len(t0s)))
    grid = fig.add_gridspec(len(t0s), len(targets) + line)
    axes = np.empty((len(t0s), len(targets)), object)
    for row in range(len(t0s)):
        for ti in range(len(targets)):
            axes[row, ti] = fig.add_subplot(grid[row, ti], sharex=axes[0, 0], sharey=axes[0, 0])
    values = [dims[arrays["evaluated"].any(0)].astype(float)]
    for key, *_ in PREDICTIONS:
        v = arrays[key]
        values.append(v[np.isfinite(v) & (v >= 1)])
    values = np.concatenate(values)
    lo_x, hi_x = values.min() / 1.6, min(max(values.max() * 1.6, 10.0), 1.6 * D)
    for row, t0 in enumerate(t0s):
        si = starts.index(f"t{t0}")
        ev = arrays["evaluated"][si]
        for ti, target in enumerate(targets):
            ax = axes[row, ti]
            if ev.any():
                p, lo, hi = (arrays[k][ti, si, ev] for k in ("p_success", "p_low", "p_high"))
                ax.errorbar(dims[ev], p, yerr=np.clip([p - lo, hi - p], 0.0, None), marker="o", ms=4,
                            capsize=2, color="C0", label="measured $P_s(d)$")
            d_star, below = arrays["threshold"][ti, si], arrays["threshold_below"][ti, si]
            if math.isfinite(d_star):
                ax.axvspan(below if math.isfinite(below) else lo_x, d_star, color="C0", alpha=0.15, lw=0,
                           label=f"measured $d^*$ = {d_star:g} (bracket)")
            else:
                ax.text(0.98, 0.5, f"measured $d^*$ > {np.max(dims[ev]) if ev.any() else 0:g}",
                        transform=ax.transAxes, ha="right", fontsize=7, color="C0")
            for n, (key, name, color, ls) in enumerate(PREDICTIONS):
                seeds = arrays[key][ti, row]
                finite = seeds[np.isfinite(seeds)]
                if not finite.size:
                    ax.text(0.02, 0.9 - 0.08 * n, f"{name}: no well (target <= L*)", transform=ax.transAxes,
                            fontsize=6, color=color)
                    continue
                mean = float(finite.mean())
                if mean < 1:
                    ax.text(0.02, 0.9 - 0.08 * n, f"{name}: {mean:.3g} (start inside the well)",
                            transform=ax.transAxes, fontsize=6, color=color)
                    continue
                ax.axvline(mean, color=color, ls=ls, lw=1.5, label=f"{name}: {mean:.4g}")
                if finite.size > 1:
                    ax.axvspan(max(finite.min(), lo_x), finite.max(), color=color, alpha=0.12, lw=0)
            ax.axhline(level, color="gray", ls=":", lw=1)
            ax.set_xscale("log")
            ax.set_xlim(lo_x, hi_x)
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=6, loc="lower right")
            if row == 0:
                ax.set_title(f"training loss <= {target:g}", fontsize=9)
            if ti == 0:
                ax.set_ylabel(f"{_label(f't{t0}')}\n$P_s(d)$", fontsize=8)
            if row == len(t0s) - 1:
                ax.set_xlabel("subspace dimension d")
        if line:
            _segment_panel(fig.add_subplot(grid[row, -1]), arrays, row, targets, last=row == len(t0s) - 1)
    _suptitle(fig, config, arrays, "measured vs quadratic-well (Gordon) threshold; bands: range over seeds")
    return plots.save(fig, os.path.join(run_dir, "gordon_prediction.png"))


def _segment_panel(ax, arrays: dict, row: int, targets, *, last: bool) -> None:
    """The training loss along the segment theta* + s (start - theta*) against the quadratic well's
    L* + s^2 b^T H b / 2, per seed, with the targets: where the well stops describing the loss."""
    s = np.concatenate([[0.0], arrays["gordon_fractions"]])
    fine = np.linspace(0.0, 1.0, 50)
    for g in range(arrays["gordon_loss"].shape[0]):
        L, R = arrays["gordon_loss"][g], arrays["gordon_distance"][row, g]
        curvature = arrays["gordon_start_curvature"][row, g]
        ax.plot(s, np.concatenate([[L], arrays["gordon_line_loss"][row, g]]), "o-", ms=3, color="C0",
                label="training loss" if g == 0 else None)
        ax.plot(fine, L + 0.5 * (fine * R) ** 2 * curvature, "--", color="C3",
                label="quadratic well" if g == 0 else None)
    for target in targets:
        ax.axhline(target, color="gray", ls=":", lw=1)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, loc="upper left")
    ax.set_title("loss on the segment solution -> start" if row == 0 else "", fontsize=9)
    if last:
        ax.set_xlabel("s: theta* + s (start - theta*)")
