r"""Weight-space trajectories (Lipton 2016, "Stuck in a What? Adventures in Weight Space"): one library call.

    result = gzone.trajectories(model, (x_train, y_train), (x_test, y_test), groups=["inits", "clones"],
                                num_models=3, epochs=4, snapshot_every=10)

Groups of full-space training runs, each keeping theta every ``snapshot_every`` steps:
  single  (a): one model (init 0, batch order 0): the reference trajectory;
  inits   (b): S models from different initialisations 1..S, all with batch order 0;
  orders  (c): S models from the SAME initialisation 0 with different batch orders 1..S;
  clones  (d): init 0 / order 0 trained ``clone_epoch`` epochs (the parent: the same run as (a) up to
               there), then cloned S times (parameters AND optimizer state) with batch orders 1..S.
Per group (`analyse_group`): PCA of the joint trajectory (centred and uncentred,
via the T x T Gram matrix streamed from the snapshots), the loss surface on the PC1-PC2 plane around
the path, distances between the final solutions and from the origin / start / init, loss along
straight lines start -> solution and between solutions with barrier heights, the radius along all
of these, and the link to the radius-dynamics experiment (rw_ratio, straightness).

Units: ``train_<group>`` (``train_clones_parent`` and ``train_clones`` for the clones; epoch
checkpoints inside), then ``analysis_<group>``. Snapshots ([S, n_snap, D] floats per epoch, too
large for arrays.npz) live in a `snapshot_lib.SnapshotStore` per training unit: under
``<run_dir>/snapshots/<unit>/`` with a run folder (kept: an interrupted run resumes its analysis
from them); without one in a temporary folder (``tempfile``, under $TMPDIR) removed when the call
returns or fails, so nothing is left on disk and the result holds the analysis, not the snapshots.
Disk: (T + S) x D numbers per group in the dtype.

Records (`schema.trajectories_axes`): keys ``<group>_<array>``, training curves over all epochs
(the clones' parent's epochs in front of each clone's); analysis.json: the per-group summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from gzone import flat, models, options, seeds
from gzone import problem as problem_lib
from gzone import train as train_lib
from gzone.analysis import dynamics, trajectory
from gzone.options import OptionError, option
from gzone.runs import engine as engine_lib
from gzone.runs import progress, records, result, schema, stores
from gzone.runs import snapshots as snapshot_lib

EXPERIMENT = "trajectories"
GROUPS = schema.TRAJECTORY_GROUPS


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrajectoryOptions(options.Training, options.Objective, options.Precision):
    """The options of a trajectories run (keyword arguments of `trajectories`)."""

    epochs: int = options.override(options.Training, "epochs", 4)
    seed: int = options.override(options.Seeds, "seed", 0)
    seed_mode: str = options.override(options.Seeds, "seed_mode", "auto")
    init: str = option("xavier", "Initialisation of theta.", choices=models.INIT_CONVENTIONS)
    groups: tuple[str, ...] = option(
        GROUPS, "Experiments to run: single (a), inits (b), orders (c), clones (d).", choices=GROUPS)
    num_models: int = option(3, "S: models per group in inits, orders and clones (>= 2).", minimum=2)
    clone_epoch: int = option(1, "t0: epochs the parent trains before it is cloned (clones group).")
    snapshot_every: int = option(
        0, "Keep theta every this many steps within an epoch (0: once per epoch, at its last step).",
        minimum=0)
    n_eval: int = option(
        1000, "Fixed training examples on which loss grids and interpolations are evaluated.", minimum=1)
    grid_size: int = option(21, "Loss-surface grid points per axis on the PC1-PC2 plane.", minimum=2)
    grid_margin: float = option(
        0.25, "Grid extends this fraction of the path's PC range beyond it on each side.", minimum=0)
    interp_points: int = option(21, "Points along each straight line (plus t = 0 and 1).", minimum=2)
    interp_range: tuple[float, ...] = option(
        (-0.25, 1.25), "low,high of t on straight lines (must contain [0, 1]).")
    num_components: int = option(10, "Principal components recorded.", minimum=2)
    surface_batch: int = option(
        8, "Points evaluated at once (vmapped) on grids and lines.", minimum=1, setting=False)

    def _check(self):
        object.__setattr__(self, "groups", tuple(dict.fromkeys(self.groups)))
        if "clones" in self.groups and not 1 <= self.clone_epoch < self.epochs:
            raise OptionError("clone_epoch",
                              f"must be in [1, epochs - 1 = {self.epochs - 1}], got {self.clone_epoch}")
        r = self.interp_range
        if len(r) != 2 or not r[0] <= 0.0 < 1.0 <= r[1]:
            raise OptionError("interp_range", f"expected low,high with low <= 0 and high >= 1, got "
                              f"{','.join(f'{v:g}' for v in r)}")


class TrajectoryResult(result.Result):
    """A trajectories run's records (`result.Result`): arrays ``<group>_<array>``, analysis per group."""

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.settings["groups"])

    def table(self) -> str:
        return summary_table(self.analysis)


def trajectories(model, train: tuple, test: tuple, *, run_dir: str | stores.RunFolder | None = None,
                 log=progress.to_stderr, **kwargs) -> TrajectoryResult:
    """Trains the groups of full-space runs of `model`, analyses their trajectories (module docstring).

    Args:
      model: any flax.linen Module mapping [N, *input_shape] to logits [N, C].
      train: (x_train [N, *input_shape], y_train [N] integers in [0, C)): the training set (the
        ``n_eval`` evaluation examples are drawn from it).
      test: (x_test [M, *input_shape], y_test [M]): the test set, evaluated after every epoch.
      run_dir: a folder (or `stores.RunFolder`) to record the run and its snapshots in and resume
        from; None: in memory, snapshots in a temporary folder removed before returning.
      log: where progress lines go (None: silent).
      **kwargs: `TrajectoryOptions`: ``groups``, ``num_models``, ``epochs``, ``snapshot_every``, ...

    Returns:
      A `TrajectoryResult`. Cost: per group S full-space training runs, then two streamed passes
      over its T snapshots (T^2 D multiply-adds) and (grid_size^2 + (S + S(S-1)/2) x points per line)
      loss evaluations on the n_eval examples.
    """
    opts = TrajectoryOptions(**kwargs)
    return problem_lib.run_study(run, opts, model=model, train=train, test=test, run_dir=run_dir, log=log)


def training_plan(opts: TrajectoryOptions) -> list[tuple[str, str, list[int], list[int], int, int]]:
    """(unit, group, init indices, batch-order indices, first epoch, last epoch + 1) per training unit."""
    S, E, t0 = opts.num_models, opts.epochs, opts.clone_epoch
    varied = list(range(1, S + 1))
    rows = {"single": [("train_single", [0], [0], 0, E)],
            "inits": [("train_inits", varied, [0] * S, 0, E)],
            "orders": [("train_orders", [0] * S, varied, 0, E)],
            "clones": [("train_clones_parent", [0], [0], 0, t0),
                       ("train_clones", [0] * S, varied, t0, E)]}
    return [(unit, g, *rest) for g in opts.groups for unit, *rest in rows[g]]


def run(prob: problem_lib.Problem, data: train_lib.Data, opts: TrajectoryOptions, *, run_dir=None,
        log=progress.to_stderr) -> TrajectoryResult:
    """The trajectories run of a built problem on validated data (what `trajectories` calls)."""
    fm, dtype = prob.fm, prob.dtype
    n_train = data.x_train.shape[0]
    steps = opts.train_spec(n_train).steps_per_epoch
    if opts.n_eval > n_train:
        raise OptionError("n_eval", f"{opts.n_eval} exceeds the {n_train} training examples")
    if opts.snapshot_every > steps:
        raise OptionError("snapshot_every", f"{opts.snapshot_every} exceeds the {steps} steps of an epoch")
    every = opts.snapshot_every or steps
    spec = opts.train_spec(n_train, snapshot_every=every)
    snap_in_epoch = (np.arange(spec.snapshots_per_epoch) + 1) * every
    seed_mode = options.resolve_seed_mode(opts.seed_mode, "train")
    keys = seeds.SeedKeys.from_seed(opts.seed)
    index = np.asarray(seeds.pick_examples(keys.k_data, n_train, opts.n_eval))
    settings = {**options.settings(opts), "seed_mode": seed_mode, "model": prob.identity(),
                "data": {"train_examples": int(n_train), "test_examples": int(data.x_test.shape[0]),
                         "fingerprint": problem_lib.fingerprint(*data)}}
    derived = {**prob.describe(), "steps_per_epoch": steps, "snapshot_steps_in_epoch": snap_in_epoch,
               "seed_mode": seed_mode, "eval_examples": index}
    store = stores.open_store(run_dir, experiment=EXPERIMENT, settings=settings, derived=derived,
                              axes=schema.trajectories_axes(opts.groups))
    engine = engine_lib.Engine(store, label=EXPERIMENT, log=log)
    plan = training_plan(opts)
    engine.plan([(p[0], 1.0) for p in plan] + [(f"analysis_{g}", 1.0) for g in opts.groups])
    if store.path:
        total = len(plan) + len(opts.groups)
        what = "resuming" if store.resumed else "new run"
        engine.say(f"{what}: {store.path}  ({len(store.done())}/{total} units done)")
    engine.say(f"{derived['model']}: D = {fm.D}, r_X = {prob.r_x:.4g}; {opts.epochs} epochs x {steps} steps, "
               f"a snapshot every {every} steps; groups {', '.join(opts.groups)}; S = {opts.num_models}; "
               f"seed mode {seed_mode}")

    fold = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(None, 0)))
    sample = jax.jit(jax.vmap(prob.sample_fn(opts.init)))
    trainer = train_lib.make_trainer(fm, spec)
    init = jax.jit(jax.vmap(trainer.init))
    run_one = lambda st, k, e0, d, n: trainer.run(st, k, d, None, e0, n)  # noqa: E731
    run_seeds = jax.jit(seeds.map_seeds(run_one, seed_mode), static_argnums=4)  # states, keys [S]; shared
    parent: dict = {}  # the clones' parent's final state, when trained in this call

    def trained(unit, group, inits, orders, first, last, root):
        if unit == "train_clones":  # the parent's full state after t0 epochs, S copies
            state = parent.get("state")
            if state is None:
                template = init(sample(fold(keys.k_init, jnp.zeros(1, jnp.int32))))
                state = engine.checkpoint("train_clones_parent", template)
            state0 = jax.tree_util.tree_map(lambda a: jnp.repeat(a, len(orders), axis=0), state)
        else:
            state0 = init(sample(fold(keys.k_init, jnp.asarray(inits))))
        k_order = fold(keys.k_train, jnp.asarray(orders))
        run_fn = lambda st, e0, n: run_seeds(st, k_order, e0 + first, data, n)  # noqa: E731
        snapshots = snapshot_lib.SnapshotStore(os.path.join(root, unit))
        run_fn = snapshot_lib.to_store(run_fn, snapshots, epoch_offset=first)
        state, hist = engine.fit(unit, run_fn, state0, epochs=last - first,
                                 epochs_per_call=opts.epochs_per_call)
        if unit == "train_clones_parent":
            parent["state"] = state
        out = {"theta_start": state0.params, "theta_final": state.params,
               "test_accuracy": hist["test_accuracy"], "test_loss": hist["test_loss"],
               "train_loss": hist["loss"], "radius": hist["radius"],
               "update_sq": hist["update_sq"], "step": hist["step"][0],
               "snapshot_step": (np.arange(first, last)[:, None] * steps + snap_in_epoch).reshape(-1)}
        return out, {"group": group, "final_test_accuracy": np.asarray(out["test_accuracy"])[:, -1]}

    def metric_fn(theta, b):
        logits = flat.logits(fm, theta, b[0])
        return {"loss": jnp.mean(flat.example_losses(fm, logits, b[1])),
                "accuracy": jnp.mean(jnp.argmax(logits, -1) == b[1]), "radius": jnp.linalg.norm(theta)}

    with _snapshot_root(store) as root:
        for unit, *rest in plan:
            engine.unit(unit, lambda unit=unit, rest=rest: trained(unit, *rest, root), weight=1.0,
                        keep_checkpoint=unit == "train_clones_parent",  # the clones start from it
                        what=lambda a, r: f"test acc {np.mean(a['test_accuracy'][:, -1]):.4f}")
        fns = trajectory.make_surface_fns(metric_fn, batch_size=opts.surface_batch)
        batch = (data.x_train[index], data.y_train[index])
        for group in opts.groups:
            def compute(group=group):
                return analyse_group(*group_snapshots(engine, root, group, opts, steps), group=group,
                                     opts=opts, fns=fns, batch=batch, dtype=dtype, r_x=prob.r_x,
                                     steps_per_epoch=steps)

            engine.unit(f"analysis_{group}", compute, weight=1.0, what=_analysis_line)

    arrays, summary = assemble(engine, opts)
    summary = records.to_jsonable(summary)
    store.write_json("analysis.json", summary)
    store.finish(arrays)
    return TrajectoryResult(store, arrays, analysis=summary)


def _analysis_line(arrays: dict, record: dict) -> str:
    return f"PC1-2 explain {record['pca_top2_centred']:.3f}, top 10 {record['pca_top10_centred']:.3f}"


@contextlib.contextmanager
def _snapshot_root(store):
    """The folder of the snapshot stores: in the run folder, or a temporary one removed afterwards."""
    if store.path:
        yield os.path.join(store.path, "snapshots")
        return
    with tempfile.TemporaryDirectory(prefix="gzone-snapshots-") as folder:
        yield folder


def group_snapshots(engine: engine_lib.Engine, root: str, group: str, opts: TrajectoryOptions,
                    steps_per_epoch: int):
    """A group's joint trajectory as row chunks (memory-mapped), with each row's model (-1: the clones'
    parent) and step; the group's training unit; the initialisations (clones: the parent's)."""
    name = "train_clones" if group == "clones" else f"train_{group}"
    unit = engine.unit(name, _missing)
    chunks, model, step, inits = [], [], [], unit["theta_start"]
    if group == "clones":  # the parent's trajectory once (ending at the clone point), then each clone's
        parent = engine.unit("train_clones_parent", _missing)
        inits = parent["theta_start"]
        chunks += [inits] + _snapshot_chunks(root, "train_clones_parent", parent, 0)
        step += [0, *parent["snapshot_step"]]
        if step[-1] != opts.clone_epoch * steps_per_epoch:  # no snapshot at the parent's last step
            chunks.append(unit["theta_start"][:1])
            step.append(opts.clone_epoch * steps_per_epoch)
        model += [-1] * len(step)
    for m in range(unit["theta_start"].shape[0]):
        if group != "clones":
            chunks.append(unit["theta_start"][m : m + 1])
            model.append(m)
            step.append(0)
        chunks += _snapshot_chunks(root, name, unit, m)
        model += [m] * unit["snapshot_step"].size
        step += list(unit["snapshot_step"])
    return chunks, np.asarray(model, np.int32), np.asarray(step, np.int64), unit, inits


def _snapshot_chunks(root: str, name: str, unit: dict, model: int) -> list[np.ndarray]:
    """Model `model`'s snapshots of training unit `name` ([n_snap, D] per epoch), checked against the unit."""
    store = snapshot_lib.SnapshotStore(os.path.join(root, name))
    chunks = store.chunks(model)
    if sum(len(c) for c in chunks) != unit["snapshot_step"].size:
        raise records.DamagedFile(f"{store.folder}: the snapshots of {name} are incomplete; pass --overwrite "
                                  "(overwrite=True) to start the run again")
    return chunks


def analyse_group(chunks, model, step, unit, inits, *, group: str, opts: TrajectoryOptions, fns, batch, dtype,
                  r_x: float, steps_per_epoch: int) -> tuple[dict, dict]:
    """PCA, loss surface, interpolations, distances and radii of one group (module docstring).

    Args:
      chunks, model, step, unit, inits: the group's snapshots as `group_snapshots` gives them.
      fns: `trajectory.make_surface_fns` of the loss, accuracy and radius on ``batch``.

    Returns:
      (arrays, record): the analysis arrays (`schema.TRAJECTORY_AXES`) and the metrics line.
    """
    starts, finals = unit["theta_start"], unit["theta_final"]
    S, K = finals.shape[0], opts.num_components
    stats = trajectory.gram(chunks)  # one streamed pass over the snapshots
    centred = trajectory.pca_from_gram(stats, centred=True, num_components=K)
    uncentred = trajectory.pca_from_gram(stats, centred=False, num_components=K)
    at_epoch = np.flatnonzero(step % steps_per_epoch == 0)  # the start and the epoch ends: a sub-Gram matrix
    epochs_only = trajectory.pca_from_gram(stats.gram[np.ix_(at_epoch, at_epoch)], centred=True,
                                           num_components=K)
    # Each model's own path from its initialisation (a clone's through its parent's).
    own = [np.concatenate([np.flatnonzero(model == -1), np.flatnonzero(model == m)]) for m in range(S)]
    paths = trajectory.path_statistics(stats.gram, own, step, num_components=K)
    u = trajectory.directions(chunks, centred, mean=stats.mean, k=2)  # a second streamed pass
    alphas, betas = trajectory.grid_axes(centred.scores, num=opts.grid_size, margin=opts.grid_margin)
    center_u = (jnp.asarray(v, dtype) for v in (stats.mean, u[0], u[1]))
    grid = fns.plane(*center_u, jnp.asarray(alphas), jnp.asarray(betas), batch)
    ts = trajectory.interpolation_ts(*opts.interp_range, num=opts.interp_points)
    pair_index = [(i, j) for i in range(S) for j in range(i + 1, S)]
    out = {"pair_index": np.asarray(pair_index, np.int32).reshape(-1, 2)}
    pairs = [(finals[i], finals[j]) for i, j in out["pair_index"]]
    for kind, ends in (("start", list(zip(starts, finals))), ("pair", pairs)):
        vals = [fns.line(jnp.asarray(a), jnp.asarray(b), jnp.asarray(ts), batch) for a, b in ends]
        for metric in ("loss", "accuracy", "radius"):
            values = np.asarray([v[metric] for v in vals], np.float64)
            out[f"{kind}_{metric}"] = values.reshape(len(ends), ts.size)
        bars = [trajectory.barrier(ts, row) for row in out[f"{kind}_loss"]]
        for key in ("barrier", "barrier_over_max"):
            out[f"{kind}_{key}"] = np.asarray([b[key] for b in bars]).reshape(len(ends))
    dist = trajectory.distance_summary(finals, starts, inits=inits[0] if group == "clones" else None)
    # The radius-dynamics link: r_T^2 - r_0^2 against a random walk's sum of |d theta|^2 over all steps.
    r0, rT = (np.linalg.norm(v.astype(np.float64), axis=1) for v in (starts, finals))
    first_step = opts.clone_epoch * steps_per_epoch if group == "clones" else 0
    walk_steps = unit["step"].reshape(-1) - first_step
    walks = [dynamics.random_walk_r2(r0[m], walk_steps, unit["update_sq"][m].reshape(-1)) for m in range(S)]
    walked = np.asarray([walk["cumulative"][-1] - r0[m] ** 2 for m, walk in enumerate(walks)])
    out.update(
        traj_model=model, traj_step=step, traj_radius=np.sqrt(stats.sq_norms), radius_start=r0,
        radius_final=rT, rw_ratio=(rT**2 - r0**2) / walked, straightness=paths["straightness"],
        path_length=paths["length"], pca_variance_centred=centred.variance, pca_ratio_centred=centred.ratio,
        pca_ratio_uncentred=uncentred.ratio,
        pca_ratio_centred_epochs=epochs_only.ratio, pca_ratio_per_model=paths["ratio"],
        random_walk_ratio=paths["random_walk"],
        scores_centred=centred.scores[:, :3], scores_uncentred=uncentred.scores[:, :3],
        offplane=np.sqrt(np.clip(np.diag(stats.centred) - np.sum(centred.scores[:, :2] ** 2, axis=1), 0,
                                 None)),
        grid_alpha=alphas, grid_beta=betas, grid_loss=np.asarray(grid["loss"]),
        grid_accuracy=np.asarray(grid["accuracy"]),
        interp_t=ts, **{f"dist_{k}": dist[k] for k in ("pairwise", "origin", "start", "init")},
    )
    top = {f"pca_top{k}_{name}": float(res.ratio[:k].sum()) for k in (2, 10)
           for name, res in (("centred", centred), ("uncentred", uncentred), ("centred_epochs", epochs_only))}
    record = {"group": group, "T": int(model.size), "T_epochs": int(at_epoch.size), "r_x": r_x, **top,
              **{f"{name}_top{k}": trajectory.spread(paths[key][:, :k].sum(1)) for k in (2, 10)
                 for name, key in (("pca_per_model", "ratio"), ("random_walk", "random_walk"))},
              **{f"{k}_stats": dist[f"{k}_stats"] for k in ("pairwise", "origin", "start", "init")},
              **{f"{k}_barrier": trajectory.spread(out[f"{k}_barrier"]) for k in ("start", "pair")},
              "radius_final_over_start": trajectory.spread(rT / r0),
              "rw_ratio": trajectory.spread(out["rw_ratio"]),
              "straightness": trajectory.spread(paths["straightness"])}
    return out, record


def _missing():
    raise RuntimeError("a training unit of the trajectories run is missing at its analysis")


def assemble(engine: engine_lib.Engine, opts: TrajectoryOptions) -> tuple[dict, dict]:
    """arrays (keys <group>_<array>, training curves over all epochs) and the analysis.json summary."""
    arrays, summary = {}, {"groups": {}}
    lines = {line["unit"]: line for line in engine.store.records()}
    for g in opts.groups:
        out = engine.unit(f"analysis_{g}", _missing)
        train_unit = engine.unit("train_clones" if g == "clones" else f"train_{g}", _missing)
        curves = {k: train_unit[k] for k in ("test_accuracy", "train_loss", "update_sq", "step")}
        if g == "clones":  # the parent's epochs in front of every clone's
            parent = engine.unit("train_clones_parent", _missing)
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
                     f"{s['pca_per_model_top2']['mean']:>5.3f} {s['random_walk_top2']['mean']:>5.3f} "
                     f"{pair:>21} "
                     f"{st['mean']:>7.3g}+-{st['std']:<5.2g} {s['origin_stats']['mean']:>7.4g} {bar:>8} "
                     f"{s['straightness']['mean']:>8.3f} {np.mean(s['final_test_accuracy']):>8.4f}")
    return "\n".join(lines)
