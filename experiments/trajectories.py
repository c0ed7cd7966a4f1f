r"""Weight-space trajectories (Lipton 2016, "Stuck in a What? Adventures in Weight Space").

Groups of full-space training runs, each keeping theta every --snapshot_every steps:
  single  (a): one model (init 0, batch order 0): the reference trajectory;
  inits   (b): S models from different initialisations 1..S, all with batch order 0;
  orders  (c): S models from the SAME initialisation 0 with different batch orders 1..S;
  clones  (d): init 0 / order 0 trained --clone_epoch epochs (the parent: the same run as (a) up to
               there), then cloned S times (parameters AND optimizer state) with batch orders 1..S.
Per group: PCA of the joint trajectory (centred and uncentred, via the T x T Gram matrix streamed
from disk), the loss surface on the PC1-PC2 plane around the path, distances between the final
solutions and from the origin / start / init, loss along straight lines start -> solution and
between solutions with barrier heights, and the radius along all of these. The link to the
radius-dynamics experiment: r_T^2 - r_0^2 against the random walk's sum of |d theta|^2 over all
steps (rw_ratio, 1 for a random walk), and the path's straightness |theta_T - theta_0| / (length
of the polygon through the snapshots).

    python -m experiments.trajectories --flagfile=experiments/flagfiles/mnist_trajectories_cpu.flags \
        --data_dir=/path/to/npz

Records: <workdir>/trajectories/<name>/: units train_<group> (epoch checkpoints inside) and
analysis_<group>; snapshots/<unit>/e<epoch>.npy ([S, n_snap, D] float, one file per epoch: the
trajectories themselves, too large for arrays.npz); arrays.npz with keys <group>_<array>; analysis.json;
figures pca.png, loss_surface.png, interpolation.png, distances.png, radius.png.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import numpy as np
from absl import flags

from experiments import cli

EXPERIMENT = "trajectories"
FLAGS = flags.FLAGS
GROUPS = ("single", "inits", "orders", "clones")

cli.define_data_flags()
cli.define_model_flags()
cli.define_precision_flags()
cli.define_output_flags(EXPERIMENT)
cli.define_training_flags(epochs=4, batch_size=128, lr=1e-3)
cli.define_list("groups", list(GROUPS), "Experiments to run: single (a), inits (b), orders (c), clones (d).")
cli.define_integer("num_models", 3, "S: models per group in inits, orders and clones (>= 2).")
cli.define_integer("clone_epoch", 1, "t0: epochs the parent trains before it is cloned (clones group).")
cli.define_integer("snapshot_every", 0,
                   "Keep theta every this many steps within an epoch (0: once per epoch, at its last step).")
cli.define_enum("init", "xavier", ["xavier", "he", "isotropic"], "Initialisation of theta.")
cli.define_integer("n_eval", 1000, "Fixed training examples on which loss grids and interpolations are evaluated.")
cli.define_integer("grid_size", 21, "Loss-surface grid points per axis on the PC1-PC2 plane.")
cli.define_float("grid_margin", 0.25, "Grid extends this fraction of the path's PC range beyond it on each side.")
cli.define_integer("interp_points", 21, "Points along each straight line (plus t = 0 and 1).")
cli.define_list("interp_range", ["-0.25", "1.25"], "low,high of t on straight lines (must contain [0, 1]).")
cli.define_integer("num_components", 10, "Principal components recorded.")
cli.define_integer("surface_batch", 8, "Points evaluated at once (vmapped) on grids and lines.")
cli.define_bool("plots", True, "Draw the figures at the end.")


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str
    data_dir: str | None
    tfds_data_dir: str | None
    n_train: int | None
    n_test: int | None
    model: str
    widths: tuple[int, ...]
    activation: str
    init: str
    groups: tuple[str, ...]
    num_models: int
    clone_epoch: int
    snapshot_every: int
    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    record_every: int
    n_eval: int
    grid_size: int
    grid_margin: float
    interp_points: int
    interp_range: tuple[float, float]
    num_components: int
    epochs_per_call: int
    seed_mode: str
    surface_batch: int
    dtype: str
    seed: int
    workdir: str
    name: str | None
    overwrite: bool
    plots: bool

    def settings(self) -> dict:
        return cli.resume_settings(self, "surface_batch")


def config_from_flags() -> Config:
    cli.check_training_flags()
    groups = tuple(dict.fromkeys(FLAGS.groups or []))
    if not groups or any(g not in GROUPS for g in groups):
        raise cli.UsageError("groups",
                             f"allowed: {', '.join(GROUPS)} (comma-separated), got {','.join(FLAGS.groups or [])!r}")
    if FLAGS.num_models < 2:
        raise cli.UsageError("num_models", f"must be >= 2 (distances between solutions), got {FLAGS.num_models}")
    if "clones" in groups and not 1 <= FLAGS.clone_epoch < FLAGS.epochs:
        raise cli.UsageError("clone_epoch", f"must be in [1, epochs - 1 = {FLAGS.epochs - 1}], got {FLAGS.clone_epoch}")
    for name, low in (("snapshot_every", 0), ("n_eval", 1), ("grid_size", 2), ("interp_points", 2), ("num_components", 2),
                      ("surface_batch", 1)):
        if FLAGS[name].value < low:
            raise cli.UsageError(name, f"must be >= {low}, got {FLAGS[name].value}")
    if not FLAGS.grid_margin >= 0:
        raise cli.UsageError("grid_margin", f"must be >= 0, got {FLAGS.grid_margin}")
    interp = cli.float_list("interp_range", FLAGS.interp_range)
    if len(interp) != 2 or not interp[0] <= 0.0 < 1.0 <= interp[1]:
        raise cli.UsageError("interp_range",
                             f"expected low,high with low <= 0 and high >= 1, got {','.join(FLAGS.interp_range)}")
    from gzone import seeds

    return Config(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, tfds_data_dir=FLAGS.tfds_data_dir, n_train=FLAGS.n_train,
        n_test=FLAGS.n_test, **{k if k != "kind" else "model": v for k, v in cli.model_spec_fields().items()},
        init=FLAGS.init, groups=groups, num_models=FLAGS.num_models, clone_epoch=FLAGS.clone_epoch,
        snapshot_every=FLAGS.snapshot_every, optimizer=FLAGS.optimizer, lr=FLAGS.lr, batch_size=FLAGS.batch_size,
        epochs=FLAGS.epochs, record_every=FLAGS.record_every, n_eval=FLAGS.n_eval, grid_size=FLAGS.grid_size,
        grid_margin=FLAGS.grid_margin, interp_points=FLAGS.interp_points, interp_range=interp,
        num_components=FLAGS.num_components, epochs_per_call=FLAGS.epochs_per_call,
        seed_mode=seeds.default_seed_mode() if FLAGS.seed_mode == "auto" else FLAGS.seed_mode,
        surface_batch=FLAGS.surface_batch, dtype=FLAGS.dtype, seed=FLAGS.seed, workdir=FLAGS.workdir,
        name=FLAGS.name, overwrite=FLAGS.overwrite, plots=FLAGS.plots,
    )


def default_name(config: Config) -> str:
    digest = hashlib.sha1(json.dumps(config.settings(), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{config.dataset}_{config.model}{'-'.join(map(str, config.widths))}_{digest}"


def training_plan(config: Config) -> list[tuple[str, str, list[int], list[int], int, int]]:
    """(unit, group, init indices, batch-order indices, first epoch, last epoch + 1) of each training unit."""
    S, E, t0 = config.num_models, config.epochs, config.clone_epoch
    varied = list(range(1, S + 1))
    rows = {"single": [("train_single", [0], [0], 0, E)],
            "inits": [("train_inits", varied, [0] * S, 0, E)],
            "orders": [("train_orders", [0] * S, varied, 0, E)],
            "clones": [("train_clones_parent", [0], [0], 0, t0), ("train_clones", [0] * S, varied, t0, E)]}
    return [(unit, g, *rest) for g in config.groups for unit, *rest in rows[g]]


def snapshot_dir(path: str, unit: str) -> str:
    return os.path.join(path, "snapshots", unit)


def run(config: Config, log=print) -> str:
    cli.enable_x64_if(config.dtype)
    import jax
    import jax.numpy as jnp

    from gzone import flat, plots, seeds, train
    from gzone.analysis import trajectory
    from gzone.runs import records

    problem = cli.Problem(
        dataset=config.dataset, data_dir=config.data_dir, tfds_data_dir=config.tfds_data_dir, n_train=config.n_train,
        n_test=config.n_test, model=config.model, widths=config.widths, activation=config.activation, dtype=config.dtype,
    )
    fm, dtype = problem.fm, problem.dtype
    n_train = problem.dataset.x_train.shape[0]
    if config.batch_size > n_train:
        raise cli.UsageError("batch_size", f"{config.batch_size} exceeds the {n_train} training examples")
    if config.n_eval > n_train:
        raise cli.UsageError("n_eval", f"{config.n_eval} exceeds the {n_train} training examples")
    steps = n_train // config.batch_size
    if config.snapshot_every > steps:
        raise cli.UsageError("snapshot_every", f"{config.snapshot_every} exceeds the {steps} steps of an epoch")
    every = config.snapshot_every or steps
    spec = train.spec_for(n_train, optimizer=config.optimizer, lr=config.lr, batch_size=config.batch_size,
                          record_every=config.record_every, snapshot_every=every)
    snap_in_epoch = (np.arange(spec.snapshots_per_epoch) + 1) * every
    path = records.run_path(config.workdir, EXPERIMENT, config.name or default_name(config))
    resumed = records.open_run(
        path, experiment=EXPERIMENT, settings=config.settings(),
        derived={**problem.describe(), "steps_per_epoch": steps, "snapshot_steps_in_epoch": snap_in_epoch},
        axes=axes_of(config), flags_text=cli.flags_text(), overwrite=config.overwrite,
    )
    plan = training_plan(config)
    done = records.completed_units(path)
    units = [p[0] for p in plan] + [f"analysis_{g}" for g in config.groups]
    log(f"{'resuming' if resumed else 'new run'}: {path}  ({len(done & set(units))}/{len(units)} units done)")
    log(f"{problem.spec.name} on {problem.dataset.name}: D = {fm.D}, r_X = {problem.r_x:.4g}; {config.epochs} epochs x "
        f"{steps} steps, a snapshot every {every} steps; groups {', '.join(config.groups)}; S = {config.num_models}")
    progress = cli.Progress(len(units), EXPERIMENT, done=len(done & set(units)))

    keys = seeds.SeedKeys.from_seed(config.seed)
    fold = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(None, 0)))
    sample = jax.jit(jax.vmap(problem.sample_fn(config.init)))
    trainer = train.make_trainer(fm, spec)
    init = jax.jit(jax.vmap(trainer.init))
    run_seeds = jax.jit(seeds.map_seeds(lambda st, k, e0, data, n: trainer.run(st, k, data, None, e0, n), config.seed_mode),
                        static_argnums=4)

    for unit, group, inits, orders, first, last in plan:
        if unit in done:
            continue
        start = time.time()
        if unit == "train_clones":  # the parent's full state after t0 epochs, S copies
            template = init(sample(fold(keys.k_init, jnp.zeros(1, jnp.int32))))
            parent = records.load_checkpoint(path, "train_clones_parent", template)[1]
            state0 = jax.tree_util.tree_map(lambda a: jnp.repeat(a, len(orders), axis=0), parent)
        else:
            state0 = init(sample(fold(keys.k_init, jnp.asarray(inits))))
        k_order = fold(keys.k_train, jnp.asarray(orders))
        run_fn = lambda st, e0, n, k=k_order, e=first: run_seeds(st, k, e0 + e, problem.data, n)  # noqa: E731
        run_fn = trajectory.to_store(run_fn, trajectory.SnapshotStore(snapshot_dir(path, unit)), epoch_offset=first)
        state, hist = cli.resumable_fit(path, unit, run_fn, state0, epochs=last - first,
                                        epochs_per_call=config.epochs_per_call, log=log)
        out = {"theta_start": state0.params, "theta_final": state.params, "test_accuracy": hist["test_accuracy"],
               "test_loss": hist["test_loss"], "train_loss": hist["loss"], "radius": hist["radius"],
               "update_sq": hist["update_sq"], "step": hist["step"][0],
               "snapshot_step": (np.arange(first, last)[:, None] * steps + snap_in_epoch).reshape(-1)}
        seconds = time.time() - start
        records.save_unit(path, unit, {k: np.asarray(v) for k, v in out.items()},
                          {"group": group, "seconds": seconds, "final_test_accuracy": out["test_accuracy"][:, -1]})
        if unit != "train_clones_parent":  # the clones start from the parent's checkpoint
            records.drop_checkpoint(path, unit)
        progress.step(f"{unit}: test acc {np.mean(out['test_accuracy'][:, -1]):.4f} ({seconds:.0f}s)")

    index = np.asarray(seeds.pick_examples(keys.k_data, n_train, config.n_eval))
    batch = (problem.data.x_train[index], problem.data.y_train[index])

    def metric_fn(theta, b):
        logits = flat.logits(fm, theta, b[0])
        return {"loss": jnp.mean(flat.cross_entropy(logits, b[1])), "accuracy": jnp.mean(jnp.argmax(logits, -1) == b[1]),
                "radius": jnp.linalg.norm(theta)}

    fns = trajectory.make_surface_fns(metric_fn, batch_size=config.surface_batch)
    for group in config.groups:
        unit = f"analysis_{group}"
        if unit in done:
            continue
        start = time.time()
        out, record = analyse_group(path, group, config, fns, batch, dtype, problem.r_x, steps)
        record["seconds"] = time.time() - start
        records.save_unit(path, unit, out, record)
        progress.step(f"{unit}: PC1-2 explain {record['pca_top2_centred']:.3f}, top 10 {record['pca_top10_centred']:.3f} "
                      f"({record['seconds']:.0f}s)")

    arrays, summary = assemble(path, config)
    records.atomic_write_json(os.path.join(path, "analysis.json"), summary)
    records.finish(path, arrays)
    log(summary_table(summary))
    if config.plots:
        for figure in plots.draw(path):
            log(f"figure: {figure}")
    log(f"records: {path}")
    return path


def group_snapshots(path: str, group: str, config: Config, steps_per_epoch: int):
    """A group's joint trajectory as row chunks (memory-mapped), with each row's model (-1: the clones'
    parent) and step; the group's training unit; the initialisations (clones: the parent's)."""
    from gzone.analysis import trajectory
    from gzone.runs import records

    name = "train_clones" if group == "clones" else f"train_{group}"
    unit = records.load_unit(path, name)
    chunks, model, step, inits = [], [], [], unit["theta_start"]
    if group == "clones":  # the parent's trajectory once (ending at the clone point), then each clone's
        parent = records.load_unit(path, "train_clones_parent")
        inits = parent["theta_start"]
        chunks += [inits] + trajectory.SnapshotStore(snapshot_dir(path, "train_clones_parent")).chunks(0)
        step += [0, *parent["snapshot_step"]]
        if step[-1] != config.clone_epoch * steps_per_epoch:  # no snapshot at the parent's last step
            chunks.append(unit["theta_start"][:1])
            step.append(config.clone_epoch * steps_per_epoch)
        model += [-1] * len(step)
    store = trajectory.SnapshotStore(snapshot_dir(path, name))
    for m in range(unit["theta_start"].shape[0]):
        if group != "clones":
            chunks.append(unit["theta_start"][m : m + 1])
            model.append(m)
            step.append(0)
        chunks += store.chunks(m)
        model += [m] * unit["snapshot_step"].size
        step += list(unit["snapshot_step"])
    return chunks, np.asarray(model, np.int32), np.asarray(step, np.int64), unit, inits


def analyse_group(path, group, config, fns, batch, dtype, r_x, steps_per_epoch):
    """PCA, loss surface, interpolations, distances and radii of one group (see module docstring)."""
    import jax.numpy as jnp

    from gzone.analysis import dynamics, trajectory

    chunks, model, step, unit, inits = group_snapshots(path, group, config, steps_per_epoch)
    starts, finals = unit["theta_start"], unit["theta_final"]
    S, K = finals.shape[0], config.num_components
    stats = trajectory.gram(chunks)  # one streamed pass over the snapshots
    centred = trajectory.pca_from_gram(stats, centred=True, num_components=K)
    uncentred = trajectory.pca_from_gram(stats, centred=False, num_components=K)
    at_epoch = np.flatnonzero(step % steps_per_epoch == 0)  # the start and the epoch ends: a sub-Gram matrix
    epochs_only = trajectory.pca_from_gram(stats.gram[np.ix_(at_epoch, at_epoch)], centred=True, num_components=K)
    # Each model's own path from its initialisation (a clone's through its parent's).
    paths = trajectory.path_statistics(
        stats.gram, [np.concatenate([np.flatnonzero(model == -1), np.flatnonzero(model == m)]) for m in range(S)], step,
        num_components=K)
    u = trajectory.directions(chunks, centred, mean=stats.mean, k=2)  # a second streamed pass
    alphas, betas = trajectory.grid_axes(centred.scores, num=config.grid_size, margin=config.grid_margin)
    center_u = (jnp.asarray(v, dtype) for v in (stats.mean, u[0], u[1]))
    grid = fns.plane(*center_u, jnp.asarray(alphas), jnp.asarray(betas), batch)
    ts = trajectory.interpolation_ts(*config.interp_range, num=config.interp_points)
    out = {"pair_index": np.asarray([(i, j) for i in range(S) for j in range(i + 1, S)], np.int32).reshape(-1, 2)}
    pairs = [(finals[i], finals[j]) for i, j in out["pair_index"]]
    for kind, ends in (("start", list(zip(starts, finals))), ("pair", pairs)):
        vals = [fns.line(jnp.asarray(a), jnp.asarray(b), jnp.asarray(ts), batch) for a, b in ends]
        for metric in ("loss", "accuracy", "radius"):
            out[f"{kind}_{metric}"] = np.asarray([v[metric] for v in vals], np.float64).reshape(len(ends), ts.size)
        bars = [trajectory.barrier(ts, row) for row in out[f"{kind}_loss"]]
        for key in ("barrier", "barrier_over_max"):
            out[f"{kind}_{key}"] = np.asarray([b[key] for b in bars]).reshape(len(ends))
    dist = trajectory.distance_summary(finals, starts, inits=inits[0] if group == "clones" else None)
    # The radius-dynamics link: r_T^2 - r_0^2 against a random walk's sum of |d theta|^2 over all steps.
    r0, rT = (np.linalg.norm(v.astype(np.float64), axis=1) for v in (starts, finals))
    first_step = config.clone_epoch * steps_per_epoch if group == "clones" else 0
    walked = np.asarray([dynamics.random_walk_r2(r0[m], unit["step"].reshape(-1) - first_step,
                                                 unit["update_sq"][m].reshape(-1))["cumulative"][-1] - r0[m] ** 2
                         for m in range(S)])
    out.update(
        traj_model=model, traj_step=step, traj_radius=np.sqrt(stats.sq_norms), radius_start=r0, radius_final=rT,
        rw_ratio=(rT**2 - r0**2) / walked, straightness=paths["straightness"], path_length=paths["length"],
        pca_variance_centred=centred.variance, pca_ratio_centred=centred.ratio, pca_ratio_uncentred=uncentred.ratio,
        pca_ratio_centred_epochs=epochs_only.ratio, pca_ratio_per_model=paths["ratio"],
        random_walk_ratio=paths["random_walk"],
        scores_centred=centred.scores[:, :3], scores_uncentred=uncentred.scores[:, :3],
        offplane=np.sqrt(np.clip(np.diag(stats.centred) - np.sum(centred.scores[:, :2] ** 2, axis=1), 0, None)),
        grid_alpha=alphas, grid_beta=betas, grid_loss=np.asarray(grid["loss"]), grid_accuracy=np.asarray(grid["accuracy"]),
        interp_t=ts, **{f"dist_{k}": dist[k] for k in ("pairwise", "origin", "start", "init")},
    )
    top = {f"pca_top{k}_{name}": float(res.ratio[:k].sum()) for k in (2, 10)
           for name, res in (("centred", centred), ("uncentred", uncentred), ("centred_epochs", epochs_only))}
    record = {"group": group, "T": int(model.size), "T_epochs": int(at_epoch.size), "r_x": r_x, **top,
              **{f"{name}_top{k}": trajectory.spread(paths[key][:, :k].sum(1)) for k in (2, 10)
                 for name, key in (("pca_per_model", "ratio"), ("random_walk", "random_walk"))},
              **{f"{k}_stats": dist[f"{k}_stats"] for k in ("pairwise", "origin", "start", "init")},
              **{f"{k}_barrier": trajectory.spread(out[f"{k}_barrier"]) for k in ("start", "pair")},
              "radius_final_over_start": trajectory.spread(rT / r0), "rw_ratio": trajectory.spread(out["rw_ratio"]),
              "straightness": trajectory.spread(paths["straightness"])}
    return out, record


ANALYSIS_AXES = {
    "traj_model": ["snapshot"], "traj_step": ["snapshot"], "traj_radius": ["snapshot"], "offplane": ["snapshot"],
    "radius_start": ["model"], "radius_final": ["model"], "rw_ratio": ["model"], "straightness": ["model"],
    "path_length": ["model"],
    "pca_variance_centred": ["component"], "pca_ratio_centred": ["component"], "pca_ratio_uncentred": ["component"],
    "pca_ratio_centred_epochs": ["component"], "pca_ratio_per_model": ["model", "component"],
    "random_walk_ratio": ["model", "component"], "scores_centred": ["snapshot", "component"],
    "scores_uncentred": ["snapshot", "component"], "grid_alpha": ["grid_a"], "grid_beta": ["grid_b"],
    "grid_loss": ["grid_a", "grid_b"], "grid_accuracy": ["grid_a", "grid_b"], "interp_t": ["t"],
    **{f"{k}_{m}": [k if k == "pair" else "model", "t"] for k in ("start", "pair") for m in ("loss", "accuracy", "radius")},
    "start_barrier": ["model"], "start_barrier_over_max": ["model"], "pair_barrier": ["pair"],
    "pair_barrier_over_max": ["pair"], "pair_index": ["pair", "end"], "dist_pairwise": ["model", "model"],
    "dist_origin": ["model"], "dist_start": ["model"], "dist_init": ["model"],
    "test_accuracy": ["model", "epoch"], "train_loss": ["model", "epoch", "record"],
    "update_sq": ["model", "epoch", "record"], "step": ["epoch", "record"],
}


def axes_of(config: Config) -> dict:
    return {f"{g}_{k}": v for g in config.groups for k, v in ANALYSIS_AXES.items()}


def assemble(path: str, config: Config) -> tuple[dict, dict]:
    """arrays.npz (keys <group>_<array>, training curves over all epochs) and the analysis.json summary."""
    from gzone.runs import records

    arrays, summary = {}, {"groups": {}}
    lines = {line["unit"]: line for line in records.read_jsonl(path)}
    for g in config.groups:
        out = records.load_unit(path, f"analysis_{g}")
        train_unit = records.load_unit(path, "train_clones" if g == "clones" else f"train_{g}")
        curves = {k: train_unit[k] for k in ("test_accuracy", "train_loss", "update_sq", "step")}
        if g == "clones":  # the parent's epochs in front of every clone's
            parent = records.load_unit(path, "train_clones_parent")
            S = train_unit["test_accuracy"].shape[0]
            for k in ("test_accuracy", "train_loss", "update_sq"):
                curves[k] = np.concatenate([np.repeat(parent[k], S, axis=0), train_unit[k]], axis=1)
            curves["step"] = np.concatenate([parent["step"], train_unit["step"]])
        arrays.update({f"{g}_{k}": v for k, v in {**out, **curves}.items()})
        summary["groups"][g] = {k: v for k, v in lines[f"analysis_{g}"].items() if k not in ("unit", "group")}
        summary["groups"][g]["final_test_accuracy"] = curves["test_accuracy"][:, -1].tolist()
    return arrays, summary


def summary_table(summary: dict) -> str:
    """PC1-2 / PC1-10: joint centred PCA; own / RW: PC1-2 of each model's path alone / of a random walk."""
    head = (f"{'group':<7} {'T':>4} {'PC1-2':>6} {'PC1-10':>6} {'own':>5} {'RW':>5} {'pairwise dist':>21} "
            f"{'from start':>14} {'|theta|':>7} {'barrier':>8} {'straight':>8} {'test acc':>8}")
    lines = [head, "-" * len(head)]
    for g, s in summary["groups"].items():
        pw, st = s["pairwise_stats"], s["start_stats"]
        pair = f"{pw['mean']:.3g}+-{pw['std']:.2g} [{pw['min']:.3g},{pw['max']:.3g}]" if pw["n"] else "-"
        bar = f"{s['pair_barrier']['mean']:.3g}" if s["pair_barrier"]["n"] else "-"
        lines.append(f"{g:<7} {s['T']:>4} {s['pca_top2_centred']:>6.3f} {s['pca_top10_centred']:>6.3f} "
                     f"{s['pca_per_model_top2']['mean']:>5.3f} {s['random_walk_top2']['mean']:>5.3f} {pair:>21} "
                     f"{st['mean']:>7.3g}+-{st['std']:<5.2g} {s['origin_stats']['mean']:>7.4g} {bar:>8} "
                     f"{s['straightness']['mean']:>8.3f} {np.mean(s['final_test_accuracy']):>8.4f}")
    return "\n".join(lines)


def main(argv):
    del argv
    run(config_from_flags(), log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    cli.run(main)
