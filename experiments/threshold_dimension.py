r"""Degrees of freedom: success probability P_s(d), threshold training dimension d*, intrinsic
dimension d_int90, burn-in and lottery subspaces (Li et al. 2018; Larsen, Fort, Becker & Ganguli 2021).

For each start point and subspace dimension d, n seeds train in d-dimensional affine subspaces
a + P z through the start point (one compiled program per d and projection kind); a unit of the
run is one (start point, d) with all seeds. Start points: the random initialisation theta_0
(``--burn_in=0``), burn-in points theta_{t0} (t0 full-space steps: the first t0 steps of the
baseline run), and with ``--lottery`` the lottery subspace: the top-d right singular vectors of the
baseline trajectory's displacements theta_t - theta_0, through theta_0. The full-space baseline
(same initialisations, optimiser and epochs, ``--baseline_lr``) is part of the run.

Which d are trained: an optional fixed sweep (``--dims``) plus, with ``--search``, an adaptive
search on a log grid (``--d_min``, ``--d_max``, ``--grid_per_decade``) for each start point and
target (the smallest d with P_s(d) >= 1 - delta) and for d_int90 at theta_0 (the smallest d whose
mean test accuracy reaches --dint_fraction of the baseline's). Units are saved as they complete;
a resumed run replays the searches from them and trains only what is missing.

    python -m experiments.threshold_dimension --flagfile=experiments/flagfiles/mnist_threshold_cpu.flags \
        --data_dir=/path/to/npz --workdir=/path/to/runs

Records: <workdir>/threshold_dimension/<name>/ (config.json, flags.txt, metrics.jsonl, units/,
arrays.npz with axes [target, start, d, seed, ...], analysis.json, figures).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time

import numpy as np
from absl import flags

from experiments import cli

EXPERIMENT = "threshold_dimension"
FLAGS = flags.FLAGS

cli.define_data_flags()
cli.define_model_flags()
cli.define_precision_flags()
cli.define_output_flags(EXPERIMENT)
cli.define_training_flags(epochs=3, batch_size=128, lr=0.1)
cli.define_float("baseline_lr", 1e-3, "Learning rate of the full-space runs (baseline, burn-in, lottery trajectory).")
cli.define_enum("init", "xavier", ["xavier", "he"], "Initialisation theta_0 of every seed.")
cli.define_enum("projection", "sparse", ["sparse", "sparse_fixed", "dense", "fastfood"], "Kind of the random subspaces.")
cli.define_integer("num_seeds", 8, "Trials n per (start point, d): initialisations, subspaces and batch orders.")
cli.define_enum("target_metric", "test_accuracy", ["test_accuracy", "train_loss"],
                "Success: final test accuracy >= target, or final training loss <= target.")
cli.define_list("targets", ["0.8"], "Targets of --target_metric (one P_s curve and threshold each).")
cli.define_float("delta", 0.5, "Threshold training dimension: the smallest d with P_s(d) >= 1 - delta.")
cli.define_enum("interval", "wilson", ["wilson", "clopper_pearson"], "Binomial interval of P_s.")
cli.define_float("confidence", 0.95, "Confidence level of the P_s intervals and the d_int bootstrap.")
cli.define_integer("d_min", 10, "Smallest d of the search grid.")
cli.define_integer("d_max", 3000, "Largest d of the search grid.")
cli.define_integer("grid_per_decade", 8, "Search grid points per factor of 10 in d.")
cli.define_list("dims", None, "Fixed sweep of d trained at every start point besides the search (optional).")
cli.define_bool("search", True, "Adaptive search (bracket, then bisect on the log grid) for each threshold and d_int.")
cli.define_list("burn_in", ["0"], "Burn-in steps t0 of full-space training before the subspace (0: the initialisation).")
cli.define_bool("lottery", False, "Also train in lottery subspaces of the baseline trajectories.")
cli.define_enum("lottery_pca", "uncentred", ["uncentred", "centred"], "SVD of the displacements (Larsen et al.) or centred PCA.")
cli.define_integer("snapshot_every", 10, "Steps between kept thetas of the baseline trajectory (the lottery's data; rank <= their number).")
cli.define_float("dint_fraction", 0.9, "d_int: the fraction of the baseline's mean test accuracy to reach (Li et al.: 0.9).")
cli.define_integer("bootstrap", 1000, "Bootstrap resamples over seeds for the d_int interval.")
cli.define_integer("n_train_eval", 10000, "Training examples for the final training loss (0: all).")
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
    projection: str
    num_seeds: int
    optimizer: str
    lr: float
    baseline_lr: float
    batch_size: int
    epochs: int
    record_every: int
    epochs_per_call: int
    seed_mode: str
    target_metric: str
    targets: tuple[float, ...]
    delta: float
    interval: str
    confidence: float
    d_min: int
    d_max: int
    grid_per_decade: int
    dims: tuple[int, ...]
    search: bool
    burn_in: tuple[int, ...]
    lottery: bool
    lottery_pca: str
    snapshot_every: int
    dint_fraction: float
    bootstrap: int
    n_train_eval: int
    dtype: str
    seed: int
    workdir: str
    name: str | None
    overwrite: bool
    plots: bool

    def settings(self) -> dict:
        return cli.resume_settings(self)

    @property
    def starts(self) -> tuple[str, ...]:
        return tuple(f"t{t0}" for t0 in self.burn_in) + (("lottery",) if self.lottery else ())


def _check(ok: bool, flag: str, message: str) -> None:
    if not ok:
        raise cli.UsageError(flag, message)


def config_from_flags() -> Config:
    cli.check_training_flags()
    targets = cli.float_list("targets", FLAGS.targets)
    if FLAGS.target_metric == "test_accuracy":
        _check(all(0 < t <= 1 for t in targets), "targets", f"test accuracies must be in (0, 1], got {','.join(FLAGS.targets)}")
    else:
        _check(all(t > 0 for t in targets), "targets", f"training losses must be > 0, got {','.join(FLAGS.targets)}")
    dims = cli.int_list("dims", FLAGS.dims, minimum=1) if FLAGS.dims else ()
    burn_in = cli.int_list("burn_in", FLAGS.burn_in, minimum=0)
    for name, low in (("num_seeds", 1), ("d_min", 1), ("grid_per_decade", 1), ("snapshot_every", 1), ("bootstrap", 0), ("n_train_eval", 0)):
        _check(FLAGS[name].value >= low, name, f"must be >= {low}, got {FLAGS[name].value}")
    _check(FLAGS.d_max >= FLAGS.d_min, "d_max", f"must be >= --d_min={FLAGS.d_min}, got {FLAGS.d_max}")
    for name in ("delta", "confidence"):
        _check(0 < FLAGS[name].value < 1, name, f"must be in (0, 1), got {FLAGS[name].value}")
    _check(0 < FLAGS.dint_fraction <= 1, "dint_fraction", f"must be in (0, 1], got {FLAGS.dint_fraction}")
    _check(FLAGS.baseline_lr > 0, "baseline_lr", f"must be > 0, got {FLAGS.baseline_lr}")
    _check(FLAGS.search or bool(dims), "dims", "give a sweep --dims=d1,d2,... or keep --search")
    from gzone import seeds

    return Config(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, tfds_data_dir=FLAGS.tfds_data_dir, n_train=FLAGS.n_train,
        n_test=FLAGS.n_test, **{k if k != "kind" else "model": v for k, v in cli.model_spec_fields().items()},
        init=FLAGS.init, projection=FLAGS.projection, num_seeds=FLAGS.num_seeds, optimizer=FLAGS.optimizer, lr=FLAGS.lr,
        baseline_lr=FLAGS.baseline_lr, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs, record_every=FLAGS.record_every,
        epochs_per_call=FLAGS.epochs_per_call,
        seed_mode=seeds.default_seed_mode() if FLAGS.seed_mode == "auto" else FLAGS.seed_mode,
        target_metric=FLAGS.target_metric, targets=tuple(dict.fromkeys(targets)), delta=FLAGS.delta, interval=FLAGS.interval,
        confidence=FLAGS.confidence, d_min=FLAGS.d_min, d_max=FLAGS.d_max, grid_per_decade=FLAGS.grid_per_decade,
        dims=tuple(sorted(set(dims))), search=FLAGS.search, burn_in=tuple(dict.fromkeys(burn_in)), lottery=FLAGS.lottery,
        lottery_pca=FLAGS.lottery_pca, snapshot_every=FLAGS.snapshot_every, dint_fraction=FLAGS.dint_fraction,
        bootstrap=FLAGS.bootstrap, n_train_eval=FLAGS.n_train_eval, dtype=FLAGS.dtype, seed=FLAGS.seed,
        workdir=FLAGS.workdir, name=FLAGS.name, overwrite=FLAGS.overwrite, plots=FLAGS.plots,
    )


def default_name(config: Config) -> str:
    digest = hashlib.sha1(json.dumps(config.settings(), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{config.dataset}_{config.model}{'-'.join(map(str, config.widths))}_{digest}"


UNIT = re.compile(r"^(t\d+|lottery)_d(\d+)$")  # the subspace units' names


def unit_name(start: str, d: int) -> str:
    return f"{start}_d{d}"


class Runs:
    """The run's units: baseline, burn-in anchors, lottery bases and subspace runs, each computed
    once (then read back from the run folder), with the jitted functions they share."""

    def __init__(self, config: Config, problem, path: str, progress, log):
        import jax
        import jax.numpy as jnp

        from gzone import seeds, train
        from gzone.analysis import dimension
        from gzone.runs import records

        self.config, self.problem, self.path, self.progress, self.log = config, problem, path, progress, log
        self.done = records.completed_units(path)
        self.cache: dict[str, dict] = {}
        fm, S, N = problem.fm, config.num_seeds, problem.data.x_train.shape[0]
        keys = seeds.SeedKeys.from_seed(config.seed)
        self.keys, self.k_train = keys, keys.train_keys(S)
        self.theta0 = jax.jit(jax.vmap(problem.sample_fn(config.init)))(keys.init_keys(S))
        index = seeds.pick_examples(keys.k_data, N, min(config.n_train_eval or N, N))
        self.x_eval, self.y_eval = problem.data.x_train[index], problem.data.y_train[index]
        common = dict(optimizer=config.optimizer, batch_size=config.batch_size, record_every=config.record_every)
        self.full_spec = train.spec_for(N, lr=config.baseline_lr, snapshot_every=config.snapshot_every if config.lottery else 0, **common)
        self.sub_spec = train.spec_for(N, lr=config.lr, mode="hyperplane", **common)
        full, sub = train.make_trainer(fm, self.full_spec), train.make_trainer(fm, self.sub_spec)
        mode = config.seed_mode
        self.full_init = jax.jit(jax.vmap(full.init))
        self.full_run = jax.jit(seeds.map_seeds(lambda st, k, e0, data, n: full.run(st, k, data, None, e0, n), mode), static_argnums=4)
        steps = train.make_step_runner(fm, self.full_spec)
        self.burn = jax.jit(seeds.map_seeds(lambda st, k, data, n: steps(st, k, data, None, n), mode), static_argnums=3)
        evaluate = lambda th, x, y: train.evaluate(fm, th, x, y, self.full_spec.eval_chunk)  # noqa: E731
        self.eval_theta = jax.jit(jax.vmap(evaluate, in_axes=(0, None, None)))
        self.sub_init = jax.jit(jax.vmap(sub.init))
        self.sub_run = jax.jit(seeds.map_seeds(lambda st, k, sp, e0, data, n: sub.run(st, k, data, sp, e0, n), mode, per_seed=3), static_argnums=5)
        self.sub_theta = jax.jit(jax.vmap(sub.theta))
        kind = config.projection
        self.random_spaces = jax.jit(
            lambda anchors, k_proj, d: jax.vmap(lambda a, k: dimension.random_space(k, a, kind=kind, d=d))(anchors, k_proj),
            static_argnums=2)
        self.jnp = jnp

    def load(self, unit: str):
        from gzone.runs import records

        if unit not in self.cache and unit in self.done:
            self.cache[unit] = records.load_unit(self.path, unit)
        return self.cache.get(unit)

    def save(self, unit: str, arrays: dict, record: dict, what: str, start: float) -> dict:
        from gzone.runs import records

        seconds = time.time() - start
        records.save_unit(self.path, unit, arrays, {**record, "seconds": seconds})
        records.drop_checkpoint(self.path, unit)
        self.done.add(unit)
        self.cache[unit] = arrays
        self.progress.total = max(self.progress.total, self.progress.done + 1)
        self.progress.step(f"{unit}: {what} ({seconds:.1f}s)")
        return arrays

    def evaluate(self, thetas) -> dict:
        loss, acc = self.eval_theta(thetas, self.x_eval, self.y_eval)
        return {"train_loss": np.asarray(loss), "train_accuracy": np.asarray(acc)}

    def baseline(self) -> dict:
        """Full-space training of every seed from theta_0; with --lottery also the lottery bases."""
        from gzone.analysis import dimension

        if self.load("baseline") is not None and (not self.config.lottery or self.load("lottery_basis") is not None):
            return self.load("baseline")
        c, start = self.config, time.time()
        run_fn = lambda st, e0, n: self.full_run(st, self.k_train, e0, self.problem.data, n)  # noqa: E731
        state, hist = cli.resumable_fit(self.path, "baseline", run_fn, self.full_init(self.theta0), epochs=c.epochs,
                                        epochs_per_call=c.epochs_per_call, log=self.log)
        if c.lottery and self.load("lottery_basis") is None:
            snaps = hist["snapshots"]  # [S, epochs, n_snap, D]
            moves = snaps.reshape(snaps.shape[0], -1, snaps.shape[-1]) - np.asarray(self.theta0)[:, None]
            bases = [dimension.lottery_basis(m, centred=c.lottery_pca == "centred") for m in moves]
            rank = min(b.directions.shape[1] for b in bases)
            self.save("lottery_basis", {"directions": np.stack([b.directions[:, :rank] for b in bases]),
                                        "singular_values": np.stack([b.singular_values[:rank] for b in bases])},
                      {"rank": rank, "snapshots": moves.shape[1]}, f"rank {rank} from {moves.shape[1]} snapshots", start)
        out = {"test_accuracy": hist["test_accuracy"], "train_loss_curve": hist["loss"],
               **{f"final_{k}": v for k, v in self.evaluate(state.params).items()}}
        out["final_test_accuracy"] = hist["test_accuracy"][:, -1]
        return self.save("baseline", out, {"final_test_accuracy": out["final_test_accuracy"]},
                         f"full-space test accuracy {np.mean(out['final_test_accuracy']):.4f}", start)

    def anchors(self, t0: int) -> dict:
        """theta after t0 full-space steps (the baseline's first t0 steps), with its metrics."""
        unit = f"burnin_t{t0}"
        if self.load(unit) is not None:
            return self.load(unit)
        start, state = time.time(), self.full_init(self.theta0)
        if t0 > 0:
            state, _ = self.burn(state, self.k_train, self.problem.data, t0)
        _, test_acc = self.eval_theta(state.params, self.problem.data.x_test, self.problem.data.y_test)
        out = {"anchor": np.asarray(state.params), "test_accuracy": np.asarray(test_acc), **self.evaluate(state.params)}
        return self.save(unit, out, {"t0": t0, "test_accuracy": out["test_accuracy"]},
                         f"test accuracy {np.mean(out['test_accuracy']):.4f}", start)

    def lottery_rank(self) -> int:
        return int(self.load("lottery_basis")["directions"].shape[-1])

    def subspace(self, start_point: str, d: int) -> dict:
        """n seeds trained in d-dimensional subspaces through a start point (one unit)."""
        from gzone import projections, train

        unit = unit_name(start_point, d)
        if self.load(unit) is not None:
            return self.load(unit)
        c, jnp, start = self.config, self.jnp, time.time()
        if start_point == "lottery":
            basis = self.load("lottery_basis")["directions"][:, :, :d]
            spaces = train.Space(self.theta0, projections.Dense(jnp.asarray(basis, self.theta0.dtype)))
        else:
            anchors = jnp.asarray(self.anchors(int(start_point[1:]))["anchor"])
            spaces = self.random_spaces(anchors, self.keys.proj_keys(d, c.num_seeds), d)
        state0 = self.sub_init(jnp.zeros((c.num_seeds, d), self.theta0.dtype), spaces)
        run_fn = lambda st, e0, n: self.sub_run(st, self.k_train, spaces, e0, self.problem.data, n)  # noqa: E731
        state, hist = cli.resumable_fit(self.path, unit, run_fn, state0, epochs=c.epochs, epochs_per_call=c.epochs_per_call, log=self.log)
        out = {"final_test_accuracy": hist["test_accuracy"][:, -1], "test_accuracy": hist["test_accuracy"],
               "train_loss_curve": hist["loss"], **{f"final_{k}": v for k, v in self.evaluate(self.sub_theta(state, spaces)).items()}}
        return self.save(unit, out, {"start": start_point, "d": d, "final_test_accuracy": out["final_test_accuracy"],
                                     "final_train_loss": out["final_train_loss"]},
                         f"test accuracy {np.mean(out['final_test_accuracy']):.4f}, train loss {np.mean(out['final_train_loss']):.4f}", start)


def run(config: Config, log=print) -> str:
    cli.enable_x64_if(config.dtype)
    from gzone import plots
    from gzone.analysis import dimension
    from gzone.runs import records

    problem = cli.Problem(
        dataset=config.dataset, data_dir=config.data_dir, tfds_data_dir=config.tfds_data_dir, n_train=config.n_train,
        n_test=config.n_test, model=config.model, widths=config.widths, activation=config.activation, dtype=config.dtype,
    )
    D, N = problem.fm.D, problem.dataset.x_train.shape[0]
    _check(config.batch_size <= N, "batch_size", f"{config.batch_size} exceeds the {N} training examples")
    _check(config.d_max <= D, "d_max", f"{config.d_max} exceeds the number of parameters D={D} of {problem.spec.name}")
    _check(not config.dims or max(config.dims) <= D, "dims", f"d={max(config.dims or [0])} exceeds the number of parameters D={D}")
    _check(not config.lottery or config.snapshot_every <= N // config.batch_size, "snapshot_every",
           f"{config.snapshot_every} exceeds the {N // config.batch_size} steps of an epoch")
    grid = dimension.log_grid(config.d_min, config.d_max, config.grid_per_decade)
    path = records.run_path(config.workdir, EXPERIMENT, config.name or default_name(config))
    axes = analysis_axes()
    try:
        resumed = records.open_run(path, experiment=EXPERIMENT, settings=config.settings(),
                                   derived={**problem.describe(), "grid": grid, "start_names": list(config.starts)},
                                   axes=axes, flags_text=cli.flags_text(), overwrite=config.overwrite)
    except records.RunDirError as err:
        raise cli.UsageError("name", str(err)) from None
    n_search = len(config.targets) * len(config.starts) + (0 in config.burn_in)
    estimate = 2 + len(config.burn_in) + len(config.starts) * len(config.dims) + n_search * (int(np.log2(len(grid))) + 2) * config.search
    done = records.completed_units(path)
    log(f"{'resuming' if resumed else 'new run'}: {path}  ({len(done)} units done)")
    log(f"{problem.spec.name} on {problem.dataset.name}: D = {D}; starts {list(config.starts)}; {config.num_seeds} seeds; "
        f"grid of {len(grid)} d in [{grid[0]}, {grid[-1]}]; targets {config.target_metric} {list(config.targets)}")
    runs = Runs(config, problem, path, cli.Progress(estimate, EXPERIMENT, done=len(done)), log)
    base = runs.baseline()
    searches, dint_search = {}, None
    metric = config.target_metric
    for start in config.starts:
        limit = runs.lottery_rank() if start == "lottery" else D
        for d in config.dims:
            if d <= limit:
                runs.subspace(start, d)
        if not config.search:
            continue
        g = grid[grid <= limit]
        for ti, target in enumerate(config.targets):
            def success(d, s=start, t=target):
                return int(dimension.reached(runs.subspace(s, d)[f"final_{metric}"], t, metric).sum()), config.num_seeds

            searches[ti, start] = dimension.threshold_search(success, g, delta=config.delta) if len(g) else None
        if start == "t0":
            goal = config.dint_fraction * float(np.mean(base["final_test_accuracy"]))
            dint_search = dimension.search_grid(lambda d: float(np.mean(runs.subspace("t0", d)["final_test_accuracy"])) >= goal, grid)
    arrays, analysis = assemble(runs, config, grid, base, searches, dint_search)
    records.atomic_write_json(os.path.join(path, "analysis.json"), analysis)
    records.finish(path, arrays)
    log(summary_table(analysis))
    if config.plots:
        for figure in plots.draw(path):
            log(f"figure: {figure}")
    log(f"records: {path}")
    return path


def analysis_axes() -> dict:
    per_d = ["start", "d", "seed"]
    return {
        "final_test_accuracy": per_d, "final_train_loss": per_d, "test_accuracy": [*per_d, "epoch"], "evaluated": ["start", "d"],
        "successes": ["target", "start", "d"], "p_success": ["target", "start", "d"], "p_low": ["target", "start", "d"],
        "p_high": ["target", "start", "d"], "threshold": ["target", "start"], "threshold_below": ["target", "start"],
        "search_evaluations": ["target", "start"], "baseline_test_accuracy": ["seed", "epoch"], "baseline_train_loss": ["seed"],
        "anchor_test_accuracy": ["t0", "seed"], "anchor_train_loss": ["t0", "seed"], "d_int": ["stat"], "d_int_interp": ["stat"],
        "lottery_singular_values": ["seed", "rank"], "targets": ["target"], "dims": ["d"], "burn_in": ["t0"], "grid": ["grid"],
    }


def assemble(runs: Runs, config: Config, grid, base, searches, dint_search) -> tuple[dict, dict]:
    """Arrays over the union of evaluated d (NaN where a start point was not trained at a d) and the analysis."""
    import jax

    from gzone.analysis import dimension

    units = {(m.group(1), int(m.group(2))) for m in map(UNIT.match, runs.done) if m}
    dims = np.array(sorted({d for _, d in units}), np.int64)
    S, E, starts = config.num_seeds, config.epochs, config.starts
    acc = np.full((len(starts), len(dims), S), np.nan)
    loss, curves = np.full_like(acc, np.nan), np.full((*acc.shape, E), np.nan)
    evaluated = np.zeros(acc.shape[:2], bool)
    for si, start in enumerate(starts):
        for di, d in enumerate(dims):
            if (start, d) in units:
                unit = runs.subspace(start, int(d))
                acc[si, di], loss[si, di], curves[si, di] = unit["final_test_accuracy"], unit["final_train_loss"], unit["test_accuracy"]
                evaluated[si, di] = True
    values = acc if config.target_metric == "test_accuracy" else loss
    arrays = dimension.success_table(dims, values, evaluated, targets=config.targets, metric=config.target_metric,
                                     delta=config.delta, method=config.interval, confidence=config.confidence)
    n_eval = np.zeros(arrays["threshold"].shape)
    rows = []
    for ti, target in enumerate(config.targets):
        for si, start in enumerate(starts):
            result = searches.get((ti, start))
            n_eval[ti, si] = len(result.evaluated) if result else 0
            rows.append({"target": target, "start": start, "threshold": arrays["threshold"][ti, si],
                         "below": arrays["threshold_below"][ti, si], "search": dataclasses.asdict(result) if result else None})
    anchors = [runs.anchors(t0) for t0 in config.burn_in]
    dint = {"d_int": [np.nan] * 3, "d_int_interp": [np.nan] * 3}
    analysis = {"metric": config.target_metric, "level": 1 - config.delta, "thresholds": rows,
                "baseline_test_accuracy": float(np.mean(base["final_test_accuracy"]))}
    if 0 in config.burn_in:
        si = starts.index("t0")
        key = jax.random.fold_in(runs.keys.k_data, 1)
        analysis["d_int"] = {"fraction": config.dint_fraction, "goal": config.dint_fraction * analysis["baseline_test_accuracy"],
                             "search": dataclasses.asdict(dint_search) if dint_search else None}
        for name, interpolate in (("d_int", False), ("d_int_interp", True)):
            interval = dimension.bootstrap_intrinsic_dimension(
                key, dims[evaluated[si]], acc[si][evaluated[si]], base["final_test_accuracy"], fraction=config.dint_fraction,
                interpolate=interpolate, num_resamples=max(config.bootstrap, 1), confidence=config.confidence)
            dint[name] = list(interval[:3])
            analysis["d_int"]["grid" if name == "d_int" else "interpolated"] = interval._asdict()
    arrays.update(
        final_test_accuracy=acc, final_train_loss=loss, test_accuracy=curves, evaluated=evaluated, search_evaluations=n_eval,
        baseline_test_accuracy=base["test_accuracy"],
        baseline_train_loss=base["final_train_loss"], anchor_test_accuracy=np.stack([a["test_accuracy"] for a in anchors]),
        anchor_train_loss=np.stack([a["train_loss"] for a in anchors]), **{k: np.asarray(v, float) for k, v in dint.items()},
        lottery_singular_values=runs.load("lottery_basis")["singular_values"] if config.lottery else np.zeros((S, 0)),
        targets=np.asarray(config.targets), dims=dims, burn_in=np.asarray(config.burn_in), grid=np.asarray(grid),
    )
    return arrays, analysis


def summary_table(analysis: dict) -> str:
    lines = [f"threshold training dimension d* (P_s >= {analysis['level']:.2f}, {analysis['metric']}); "
             f"full-space baseline test accuracy {analysis['baseline_test_accuracy']:.4f}",
             f"{'start':<10} {'target':>8} {'d*':>8} {'bracket':>16} {'units':>6}", "-" * 52]
    for row in analysis["thresholds"]:
        bracket = f"({row['below']:g}, {row['threshold']:g}]"
        units = len(row["search"]["evaluated"]) if row["search"] else 0
        lines.append(f"{row['start']:<10} {row['target']:>8g} {row['threshold']:>8g} {bracket:>16} {units:>6}")
    if "d_int" in analysis:
        di, grid, interp = analysis["d_int"], analysis["d_int"]["grid"], analysis["d_int"]["interpolated"]
        lines.append(f"d_int{round(100 * di['fraction'])} = {grid['estimate']:g} on the grid (bootstrap [{grid['low']:g}, {grid['high']:g}]), "
                     f"{interp['estimate']:.4g} interpolated (bootstrap [{interp['low']:.4g}, {interp['high']:.4g}]); "
                     f"goal test accuracy {di['goal']:.4f}")
    return "\n".join(lines)


def main(argv):
    del argv
    run(config_from_flags(), log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    cli.run(main)
