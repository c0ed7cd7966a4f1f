"""The record schema: what each experiment's arrays.npz holds and along which named axes.

One definition, read by the run engine (config.json's ``axes``), the figures (`gzone.plots`), the
zone summary and `compare_scans`. A run folder records the schema ``VERSION`` it was written with;
a folder of another version is refused on resume (never mixed) and by `read`.

    records = schema.read(run_dir)       # config, arrays, analysis; checked against the axes
    records.arrays["frac_pos"]           # [radius, d, seed]

Version history: 1 (no ``schema`` key in config.json): the first run folders; 2: settings hold the
options of the library call, the model's identity and the data's fingerprint.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

VERSION = 2


@dataclasses.dataclass(frozen=True)
class Records:
    """A finished run read back: config.json, arrays.npz and analysis.json (when written)."""

    path: str | None
    config: dict
    arrays: dict
    analysis: dict | None

    @property
    def experiment(self) -> str:
        return self.config["experiment"]

    @property
    def settings(self) -> dict:
        return self.config["settings"]

    @property
    def derived(self) -> dict:
        return self.config["derived"]


def check(config: dict, arrays: dict, where: str = "records") -> None:
    """Every array has its named axes and as many dimensions as names (ValueError if not)."""
    axes = config.get("axes", {})
    for key, value in arrays.items():
        if key not in axes:
            raise ValueError(f"{where}: array {key!r} has no named axes in config.json")
        if np.ndim(value) != len(axes[key]):
            raise ValueError(f"{where}: array {key!r} has {np.ndim(value)} dimensions, axes {axes[key]}")


def read(run_dir: str) -> Records:
    """A completed run folder's records, checked against the schema (ValueError when they do not fit)."""
    from gzone.runs import records

    config = records.read_config(run_dir)
    if config.get("schema") != VERSION:
        raise ValueError(
            f"{run_dir} holds records of schema {config.get('schema', 1)}; this gzone reads {VERSION}"
        )
    if config.get("status") != "complete":
        raise ValueError(f"{run_dir} holds a run that has not completed (rerun its command to finish it)")
    arrays = records.load_arrays(run_dir)
    check(config, arrays, run_dir)
    analysis = None
    path = os.path.join(run_dir, "analysis.json")
    if os.path.exists(path):
        with open(path) as fh:
            analysis = json.load(fh)
    return Records(run_dir, config, arrays, analysis)


# --------------------------------------------------------------------------- radius_scan

SCAN_SCALARS = (
    "loss",
    "accuracy",
    "grad_norm",
    "grad_radial",
    "radius",
    "frac_pos",
    "trace_over_frob",
    "trace",
    "frob",
    "top",
    "bottom",
)


def radius_scan_axes(
    dims, *, extra_scalars=(), extra_per_d=(), extra_per_k=(), extra_per_node=(), temperatures: bool = False
) -> dict:
    """Axes of a radius scan: scalars [radius, d, seed]; ``eigvals_d<d>`` [radius, seed, eigenvalue] per d;
    the options' scalars, per-d vectors (``<key>_d<d>``) and [k]-vectors (`fullspace.record_keys`);
    the density's quadratures (``density_nodes``, ``density_weights``: `fullspace.Spec.density_names`)
    [radius, d, seed, probe, node]; ``layer_sq_frac`` [d, seed, segment]; the grids.

    With a temperature axis (``temperatures``: the scan's ``temperatures`` option) every measured
    array gets a ``temperature`` axis before its seed axis: scalars [radius, d, temperature, seed],
    ``eigvals_d<d>`` (and the per-d vectors) [radius, temperature, seed, eigenvalue], [k]-vectors
    [radius, d, temperature, seed, k], and the grid ``temperatures`` [temperature]; ``layer_sq_frac``
    (P alone) and the other grids are unchanged. Without it the layout is the one above, exactly.
    `take` turns a temperature slice back into that layout.
    """
    t = ["temperature"] if temperatures else []
    axes = {k: ["radius", "d", *t, "seed"] for k in (*SCAN_SCALARS, *extra_scalars)}
    axes.update({f"eigvals_d{d}": ["radius", *t, "seed", "eigenvalue"] for d in dims})
    axes.update({f"{k}_d{d}": ["radius", *t, "seed", "eigenvalue"] for k in extra_per_d for d in dims})
    axes.update({k: ["radius", "d", *t, "seed", "k"] for k in extra_per_k})
    axes.update({k: ["radius", "d", *t, "seed", "probe", "node"] for k in extra_per_node})
    axes.update(
        layer_sq_frac=["d", "seed", "segment"], radii=["radius"], log10_r2_over_rx2=["radius"], dims=["d"]
    )
    if temperatures:
        axes["temperatures"] = ["temperature"]
    return axes


def take(arrays: dict, axes: dict, axis: str, index: int) -> dict:
    """The arrays at position `index` of the named `axis` (that axis dropped; the grid of the axis, the
    array whose only axis it is, left out), e.g. one temperature of a radius scan in the layout without
    a temperature axis."""
    out = {}
    for key, value in arrays.items():
        names = axes.get(key, [])
        if names == [axis]:
            continue
        out[key] = np.take(value, index, axis=names.index(axis)) if axis in names else value
    return out


# --------------------------------------------------------------------------- train_subspace

SUBSPACE_MODES = ("hyperplane", "hypersphere")


def train_subspace_axes() -> dict:
    """Axes of subspace training: results [mode, d, radius, seed], test curves [..., epoch], train
    curves and ``radius_curve`` (|theta| at each record) [..., epoch, record], the steps and grids."""
    per_run = ["mode", "d", "radius", "seed"]
    return {
        "final_test_accuracy": per_run,
        "best_test_accuracy": per_run,
        "final_train_loss": per_run,
        "test_accuracy": [*per_run, "epoch"],
        "test_loss": [*per_run, "epoch"],
        "train_loss": [*per_run, "epoch", "record"],
        "train_accuracy": [*per_run, "epoch", "record"],
        "radius_curve": [*per_run, "epoch", "record"],
        "step": ["epoch", "record"],
        "radii": ["radius"],
        "log10_r2_over_rx2": ["radius"],
        "dims": ["d"],
        "modes": ["mode"],
    }


# --------------------------------------------------------------------------- radius_dynamics

RADIUS_MODES = ("free", "fixed")
DYNAMICS_CURVES = ("radius", "update_sq", "train_loss", "train_accuracy")


def radius_dynamics_axes() -> dict:
    """Axes of radius dynamics: per-record curves [mode, r0, seed, epoch, record] (``radius`` |theta|,
    ``update_sq`` mean |dtheta|^2 per step, train loss and accuracy), ``layer_norms`` per parameter
    array, test loss and accuracy per epoch, the recorded steps and the grids."""
    axes = {k: ["mode", "r0", "seed", "epoch", "record"] for k in DYNAMICS_CURVES}
    axes.update(
        test_accuracy=["mode", "r0", "seed", "epoch"],
        test_loss=["mode", "r0", "seed", "epoch"],
        layer_norms=["mode", "r0", "seed", "epoch", "record", "layer"],
        step=["epoch", "record"],
        r0=["r0"],
        r0_over_rx=["r0"],
        modes=["mode"],
    )
    return axes


# --------------------------------------------------------------------------- threshold_dimension


def threshold_dimension_axes(*, gordon: bool = False) -> dict:
    """Axes of a threshold-dimension run: per-seed results [start, d, seed] over the union of the evaluated
    d, P_s [target, start, d], thresholds [target, start], the baseline [seed, ...], the burn-in start
    points [t0, seed], d_int [stat] (estimate, bootstrap low and high), the lottery basis's singular
    values [seed, rank] and the grids; with the quadratic-well prediction (``--gordon_seeds``),
    ``gordon_epsilon``, ``gordon_cone``, ``gordon_larsen``, ``gordon_beta``, ``gordon_mu0`` [target, t0,
    seed], ``gordon_distance``, ``gordon_start_curvature`` [t0, seed], ``gordon_loss``, ``gordon_top``
    [seed], ``gordon_line_loss`` [t0, seed, fraction] at ``gordon_fractions`` [fraction] of the way from
    the solution to the start (`analysis.gordon.predictions`)."""
    per_d = ["start", "d", "seed"]
    per_target = ["target", "start", "d"]
    axes = {
        "final_test_accuracy": per_d,
        "final_train_loss": per_d,
        "test_accuracy": [*per_d, "epoch"],
        "evaluated": ["start", "d"],
        "successes": per_target,
        "p_success": per_target,
        "p_low": per_target,
        "p_high": per_target,
        "threshold": ["target", "start"],
        "threshold_below": ["target", "start"],
        "search_evaluations": ["target", "start"],
        "baseline_test_accuracy": ["seed", "epoch"],
        "baseline_train_loss": ["seed"],
        "anchor_test_accuracy": ["t0", "seed"],
        "anchor_train_loss": ["t0", "seed"],
        "d_int": ["stat"],
        "d_int_interp": ["stat"],
        "lottery_singular_values": ["seed", "rank"],
        "targets": ["target"],
        "dims": ["d"],
        "burn_in": ["t0"],
        "grid": ["grid"],
    }
    if gordon:
        axes.update({f"gordon_{k}": ["target", "t0", "seed"] for k in ("epsilon", "cone", "larsen", "beta",
                                                                        "mu0")})
        axes.update({"gordon_distance": ["t0", "seed"], "gordon_start_curvature": ["t0", "seed"],
                     "gordon_loss": ["seed"], "gordon_top": ["seed"],
                     "gordon_line_loss": ["t0", "seed", "fraction"], "gordon_fractions": ["fraction"]})
    return axes


# --------------------------------------------------------------------------- trajectories

TRAJECTORY_GROUPS = ("single", "inits", "orders", "clones")
TRAJECTORY_AXES = {  # one group's arrays (`studies.trajectories.analyse_group` and its training curves)
    "traj_model": ["snapshot"],
    "traj_step": ["snapshot"],
    "traj_radius": ["snapshot"],
    "offplane": ["snapshot"],
    "radius_start": ["model"],
    "radius_final": ["model"],
    "rw_ratio": ["model"],
    "straightness": ["model"],
    "path_length": ["model"],
    "pca_variance_centred": ["component"],
    "pca_ratio_centred": ["component"],
    "pca_ratio_uncentred": ["component"],
    "pca_ratio_centred_epochs": ["component"],
    "pca_ratio_per_model": ["model", "component"],
    "random_walk_ratio": ["model", "component"],
    "scores_centred": ["snapshot", "component"],
    "scores_uncentred": ["snapshot", "component"],
    "grid_alpha": ["grid_a"],
    "grid_beta": ["grid_b"],
    "grid_loss": ["grid_a", "grid_b"],
    "grid_accuracy": ["grid_a", "grid_b"],
    "interp_t": ["t"],
    **{
        f"{k}_{m}": [k if k == "pair" else "model", "t"]
        for k in ("start", "pair")
        for m in ("loss", "accuracy", "radius")
    },
    "start_barrier": ["model"],
    "start_barrier_over_max": ["model"],
    "pair_barrier": ["pair"],
    "pair_barrier_over_max": ["pair"],
    "pair_index": ["pair", "end"],
    "dist_pairwise": ["model", "model"],
    "dist_origin": ["model"],
    "dist_start": ["model"],
    "dist_init": ["model"],
    "test_accuracy": ["model", "epoch"],
    "train_loss": ["model", "epoch", "record"],
    "update_sq": ["model", "epoch", "record"],
    "step": ["epoch", "record"],
}


def trajectories_axes(groups) -> dict:
    """Keys ``<group>_<array>`` for each group run (the clones' curves: the parent's epochs, then each
    clone's)."""
    return {f"{g}_{k}": v for g in groups for k, v in TRAJECTORY_AXES.items()}


# --------------------------------------------------------------------------- emergent_geometry

EMERGENT_PARTS = ("training", "radius")
EMERGENT_GROUPS = ("slsc", "sl", "sldc", "dl")  # `curvature.logits.GROUPS`
EMERGENT_SCALARS = ("loss", "accuracy", "grad_norm", "grad_radial", "radius", "logit_var") + tuple(
    f"q_{g}{s}" for g in EMERGENT_GROUPS for s in ("", "_std")
)  # the point measurement's (`measure`)
EMERGENT_VECTOR_AXES = {
    "top_eigs": ["eigen"],
    "overlap": ["eigen"],
    "block_mean": ["logit", "class", "logit2", "class2"],
}
EMERGENT_DENSITY_AXES = {"density_nodes": ["probe", "node"], "density_weights": ["probe", "node"]}
EMERGENT_CURVES = {
    "train_loss_curve": ["seed", "epoch", "record"],
    "train_accuracy_curve": ["seed", "epoch", "record"],
    "radius_curve": ["seed", "epoch", "record"],
    "test_loss_curve": ["seed", "epoch"],
    "test_accuracy_curve": ["seed", "epoch"],
    "curve_step": ["epoch", "record"],
}


def emergent_geometry_axes(parts, *, density: bool = False) -> dict:
    """Keys ``train_<key>`` [checkpoint, seed, ...] and ``radius_<key>`` [radius, seed, ...] per measured part
    (the scalars, the Gram pair counts ``n_<group>``, the vectors, with ``density`` the full Hessian's SLQ
    quadratures ``<part>_density_nodes`` / ``_weights`` [point, seed, probe, node]; the outlier counts by
    both rules), the training curves and the grids."""
    axes = {}
    vectors = {**EMERGENT_VECTOR_AXES, **(EMERGENT_DENSITY_AXES if density else {})}
    for part, point, wanted in (("train", "checkpoint", "training"), ("radius", "radius", "radius")):
        if wanted not in parts:
            continue
        for key in (*EMERGENT_SCALARS, *(f"n_{g}" for g in EMERGENT_GROUPS), *vectors):
            axes[f"{part}_{key}"] = [point, "seed", *vectors.get(key, [])]
        axes[f"{part}_outliers"] = [point, "seed"]
        axes[f"{part}_outliers_largest"] = [point, "seed"]
    if "training" in parts:
        axes.update(checkpoint_step=["checkpoint"], **EMERGENT_CURVES)
    if "radius" in parts:
        axes.update(radii=["radius"], log10_r2_over_rx2=["radius"])
    return axes


# --------------------------------------------------------------------------- init_selection

SELECTION_GROUPS = ("top", "other")
SELECTION_OUTCOMES = ("final_test_loss", "final_test_accuracy", "final_train_loss", "mean_train_loss")
SELECTION_SCORES = ("loss", "accuracy", "radius", "trace_over_frob", "frac_pos", "trace", "frob", "n_pos")
SELECTION_FULL_SCORES = ("full_trace_over_frob", "full_trace_over_frob_se", "full_trace")


def selection_scores(*, full: bool) -> tuple[str, ...]:
    """The scalar scores of an init (`measure.make_measure_fn`'s keys): subspace and base ones, and
    with full-space probes (``full``) the full-space Tr(H)/||H||_F, its standard error and Tr(H)."""
    return SELECTION_SCORES + (SELECTION_FULL_SCORES if full else ())


def init_selection_axes(score_names) -> dict:
    """Scores [init] (``score_<name>``, ``score_eigvals`` [init, eigenvalue]) and training results
    [group, member, seed, ...]."""
    axes = {f"score_{k}": ["init"] for k in score_names}
    per_run = ["group", "member", "seed"]
    axes.update(
        score_eigvals=["init", "eigenvalue"],
        selected=["group", "member"],
        step=["epoch", "record"],
        test_loss=[*per_run, "epoch"],
        test_accuracy=[*per_run, "epoch"],
        train_loss=[*per_run, "epoch", "record"],
        **{k: per_run for k in SELECTION_OUTCOMES},
    )
    return axes
