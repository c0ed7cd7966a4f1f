"""Figure of the init_selection experiment, drawn from its records only (registered with `plots.register`).

init_selection.png  (1) the K scores with the selected groups marked, against the initial loss;
                    (2) score of each trained run's init vs its outcome (test loss after the budget), groups
                    marked, Mann-Whitney p and rank-biserial r over runs and over per-init means and
                    the effect top - other with Welch's 95 % interval in the title; (3) the same for
                    the area under
                    the training-loss curve (training speed); (4) training curves of both groups.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from gzone import plots

COLORS = {"top": "C3", "other": "C0"}
SCORE_LABELS = {"trace_over_frob": r"subspace $\mathrm{Tr}(H)/\|H\|_F$",
                "frac_pos": "fraction of positive subspace eigenvalues",
                "full_trace_over_frob": r"full-space $\mathrm{Tr}(H)/\|H\|_F$", "loss": "initial loss"}


def _effect_line(effect: dict, compare: str) -> str:
    return (f"\ntop - {compare}: {effect['difference']:+.3g} [{effect['low']:+.3g}, {effect['high']:+.3g}] "
            f"(95 %, Welch p = {effect['p_value']:.3g})")


@plots.register("init_selection")
def init_selection_figure(run_dir: str, config: dict, arrays: dict, analysis=None) -> list[str]:
    s = config["settings"]
    name = s["score"]
    score = arrays[f"score_{name}"]
    other_label = f"{s['compare']} {s['num_selected']}"
    labels = {"top": f"top {s['num_selected']}", "other": other_label}
    fig = Figure(layout="constrained", figsize=(20, 4.8))
    ax_k, ax_loss, ax_speed, ax_curve = fig.subplots(1, 4)

    versus = "score_loss" if name != "loss" else "score_trace_over_frob"
    ax_k.scatter(score, arrays[versus], s=14, color="gray", label=f"all K = {score.size} inits")
    for gi, g in enumerate(("top", "other")):
        chosen = arrays["selected"][gi]
        ax_k.scatter(score[chosen], arrays[versus][chosen], s=60, facecolors="none", edgecolors=COLORS[g],
                     lw=1.5, label=labels[g])
    ax_k.set_xlabel(SCORE_LABELS[name] + " (selection score)")
    ax_k.set_ylabel(SCORE_LABELS[versus[6:]] + " at the init")
    ax_k.set_title(f"scores at initialisation ({s['n_score']} examples, d = {s['d']})", fontsize=9)

    panels = ((ax_loss, "final_test_loss", "test loss"),
              (ax_speed, "mean_train_loss", "mean training loss over the run"))
    for ax, outcome, what in panels:
        test = analysis["tests"][outcome]
        for gi, g in enumerate(("top", "other")):
            values = arrays[outcome][gi]  # [member, seed]
            xs = np.repeat(score[arrays["selected"][gi]][:, None], values.shape[1], axis=1)
            ax.scatter(xs.ravel(), values.ravel(), s=22, color=COLORS[g], alpha=0.8,
                       label=f"{labels[g]} x {values.shape[1]} seeds")
            ax.axhline(np.median(values), color=COLORS[g], ls="--", lw=1, label=f"median {labels[g]}")
        ax.set_xlabel(SCORE_LABELS[name] + " of the init")
        ax.set_ylabel(f"{what} after {analysis['steps']} steps")
        rho = analysis["spearman"][outcome]["rho"]
        per_init = analysis["tests_init_means"][outcome]
        effect = analysis.get("effects", {}).get(outcome)
        ax.set_title(f"Mann-Whitney over runs: p = {test['p_value']:.3g}, r = {test['rank_biserial']:+.2f}\n"
                     f"over per-init means: p = {per_init['p_value']:.3g}, "
                     f"r = {per_init['rank_biserial']:+.2f}"
                     + (f"; Spearman rho = {rho:+.2f}" if rho is not None else "")
                     + (_effect_line(effect, s["compare"]) if effect else ""), fontsize=8)

    steps = arrays["step"].reshape(-1)
    for gi, g in enumerate(("top", "other")):
        loss = arrays["train_loss"][gi]  # [member, seed, epoch, record]
        plots.band(ax_curve, steps, loss.reshape(-1, steps.size).T, label=labels[g], color=COLORS[g],
                   log_y=True)
    ax_curve.set_yscale("log")
    ax_curve.set_xlabel("training step")
    ax_curve.set_ylabel("training loss (record blocks)")
    ax_curve.set_title("training curves: mean and min-max over runs", fontsize=9)
    for ax in (ax_k, ax_loss, ax_speed, ax_curve):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{plots.title_of(config)}; {s['init']} inits via {s['convention']} at {s['r_over_rx']:g} "
                 f"r_X; {s['optimizer']} lr {s['lr']}, batch {s['batch_size']}, {s['epochs']} epoch(s); "
                 f"selection by {name}", fontsize=9)
    return [plots.save(fig, os.path.join(run_dir, "init_selection.png"))]
