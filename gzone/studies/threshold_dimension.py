r"""Degrees of freedom of training (Li et al. 2018; Larsen, Fort, Becker & Ganguli 2021) as one library call.

    result = gzone.threshold_dimension(model, (x_train, y_train), (x_test, y_test), targets=[0.8],
                                       burn_in=[0, 8], lottery=True, d_min=8, d_max=512, num_seeds=4)

S seeds train in d-dimensional affine subspaces a + P z through a start point (one compile per d):
the initialisation theta_0 (``burn_in`` 0), burn-in points theta_{t0} (the first t0 steps of the
full-space baseline, trained with ``baseline_lr``) and, with ``lottery``, the span of the top-d
right singular vectors of the baseline trajectory's displacements (`subspaces.lottery_basis`).
Units, each computed once on demand (`Engine.unit`): ``baseline``, ``lottery_basis``,
``burnin_t<t0>`` and ``<start>_d<d>``. Which d are trained: the sweep ``dims`` plus, with
``search``, the adaptive search on a log grid (`dimension.threshold_search`) per start point and
target (P_s(d) >= 1 - delta) and for d_int at theta_0 (mean test accuracy >= ``dint_fraction`` of
the baseline's); a resumed run replays the searches from its saved units.

Records (`schema.threshold_dimension_axes`): per-seed results [start, d, seed] over the union of
the evaluated d (NaN where not trained), P_s [target, start, d], thresholds [target, start], d_int
[stat] (estimate, bootstrap low, high); analysis.json: the searches and bootstrap intervals.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from gzone import options, projections, seeds, train
from gzone import problem as problem_lib
from gzone.analysis import dimension, subspaces
from gzone.options import OptionError, option
from gzone.runs import engine as engine_lib
from gzone.runs import progress, result, schema, stores

EXPERIMENT = "threshold_dimension"
UNIT = re.compile(r"^(t\d+|lottery)_d(\d+)$")  # the subspace units' names


@dataclasses.dataclass(frozen=True, kw_only=True)
class ThresholdOptions(
    options.Training, options.Projection, options.Objective, options.Seeds, options.Precision
):
    """The options of `threshold_dimension` (Training: the subspace runs; ``baseline_lr``: the full space)."""

    epochs: int = options.override(options.Training, "epochs", 3)
    lr: float = options.override(options.Training, "lr", 0.1)
    num_seeds: int = option(8, "Trials n per (start point, d): initialisations, subspaces and batch orders.",
                            minimum=1)
    baseline_lr: float = option(1e-3, "Learning rate of the full-space runs (baseline, burn-in, lottery).")
    init: str = option("xavier", "Initialisation theta_0 of every seed.", choices=("xavier", "he"))
    target_metric: str = option("test_accuracy", "Success: final test accuracy >= target, or final training "
                                "loss <= target.", choices=dimension.METRICS)
    targets: tuple[float, ...] = option((0.8,), "Targets of --target_metric (one P_s curve and d* each).")
    delta: float = option(0.5, "Threshold training dimension: the smallest d with P_s(d) >= 1 - delta.")
    interval: str = option("wilson", "Binomial interval of P_s.", choices=dimension.INTERVALS)
    confidence: float = option(0.95, "Confidence level of the P_s intervals and the d_int bootstrap.")
    d_min: int = option(10, "Smallest d of the search grid.", minimum=1)
    d_max: int = option(3000, "Largest d of the search grid.", minimum=1)
    grid_per_decade: int = option(8, "Search grid points per factor of 10 in d.", minimum=1)
    dims: tuple[int, ...] = option((), "Fixed sweep of d trained at every start point besides the search "
                                   "(optional).", kind="ints", minimum=1, empty=True)
    search: bool = option(True, "Adaptive search (bracket, bisect on the log grid) for each d* and d_int.")
    burn_in: tuple[int, ...] = option((0,), "Burn-in steps t0 of full-space training before the subspace "
                                      "(0: the initialisation).", minimum=0)
    lottery: bool = option(False, "Also train in lottery subspaces of the baseline trajectories.")
    lottery_pca: str = option("uncentred", "SVD of the displacements (Larsen et al.) or centred PCA.",
                              choices=("uncentred", "centred"))
    snapshot_every: int = option(10, "Steps between kept thetas of the baseline trajectory (the lottery's "
                                 "data; rank <= their number).", minimum=1)
    dint_fraction: float = option(0.9, "d_int: the fraction of the baseline's mean test accuracy to reach "
                                  "(Li et al.: 0.9).")
    bootstrap: int = option(1000, "Bootstrap resamples over seeds for the d_int interval.", minimum=0)
    n_train_eval: int = option(10000, "Training examples for the final training loss (0: all).", minimum=0)

    def _check(self):
        shown = ",".join(f"{t:g}" for t in self.targets)
        if self.target_metric == "test_accuracy" and not all(0 < t <= 1 for t in self.targets):
            raise OptionError("targets", f"test accuracies must be in (0, 1], got {shown}")
        if self.target_metric == "train_loss" and not all(t > 0 for t in self.targets):
            raise OptionError("targets", f"training losses must be > 0, got {shown}")
        if self.d_max < self.d_min:
            raise OptionError("d_max", f"must be >= --d_min={self.d_min}, got {self.d_max}")
        for name in ("delta", "confidence"):
            if not 0 < getattr(self, name) < 1:
                raise OptionError(name, f"must be in (0, 1), got {getattr(self, name)}")
        if not 0 < self.dint_fraction <= 1:
            raise OptionError("dint_fraction", f"must be in (0, 1], got {self.dint_fraction}")
        if not self.baseline_lr > 0:
            raise OptionError("baseline_lr", f"must be > 0, got {self.baseline_lr}")
        if not self.search and not self.dims:
            raise OptionError("dims", "give a sweep --dims=d1,d2,... or keep --search")
        object.__setattr__(self, "targets", tuple(dict.fromkeys(self.targets)))  # one curve per target
        object.__setattr__(self, "dims", tuple(sorted(set(self.dims))))
        object.__setattr__(self, "burn_in", tuple(dict.fromkeys(self.burn_in)))

    @property
    def starts(self) -> tuple[str, ...]:
        """The start points' names: ``t<t0>`` per burn-in, then ``lottery``."""
        return tuple(f"t{t0}" for t0 in self.burn_in) + (("lottery",) if self.lottery else ())


class ThresholdResult(result.Result):
    """A threshold-dimension run's records (`result.Result`): P_s, thresholds d*, d_int."""

    def table(self) -> str:
        return dimension.table(self.analysis)


def threshold_dimension(model, train_set, test_set, *, run_dir: str | stores.RunFolder | None = None,
                        log=progress.to_stderr, **kwargs) -> ThresholdResult:
    """Trains `model` in random (burn-in, lottery) subspaces of searched dimensions d, and in full space.

    Args:
      model: any flax.linen Module mapping [N, *input_shape] to logits [N, C].
      train_set: (x_train [N, *input_shape], y_train [N] integer labels): what every run trains on.
      test_set: (x_test [M, *input_shape], y_test [M]): the test accuracy of success and d_int.
      run_dir: a folder (or `stores.RunFolder`) to record the run in and resume from; None: in memory.
      log: where progress lines go (None: silent).
      **kwargs: `ThresholdOptions`: ``targets``, ``burn_in``, ``lottery``, ``d_min``, ``d_max``, ...

    Returns:
      A `ThresholdResult`. Cost: per (start, d) unit S subspace trainings of ``epochs`` epochs, one
      compile per d; O(log m) units per search on a grid of m values of d.
    """
    opts = ThresholdOptions(**kwargs)
    with options.x64(opts.dtype):
        prob = problem_lib.build(model, input_shape=np.shape(train_set[0])[1:],
                                 dtype=opts.dtype, **opts.problem_kwargs())
        data = train.Data(*prob.examples(*train_set, what="training examples"),
                          *prob.examples(*test_set, what="test examples"))
        return run(prob, data, opts, run_dir=run_dir, log=log)


def run(prob: problem_lib.Problem, data: train.Data, opts: ThresholdOptions, *, run_dir=None,
        log=progress.to_stderr) -> ThresholdResult:
    """The study on a built problem and validated data (what `threshold_dimension` calls)."""
    D, N = prob.fm.D, data.x_train.shape[0]
    full_spec = opts.train_spec(N, lr=opts.baseline_lr,
                                snapshot_every=opts.snapshot_every if opts.lottery else 0)
    if opts.d_max > D:
        raise OptionError("d_max", f"{opts.d_max} exceeds the number of parameters D={D} of the model")
    if opts.dims and max(opts.dims) > D:
        raise OptionError("dims", f"d={max(opts.dims)} exceeds the number of parameters D={D}")
    if opts.lottery and opts.snapshot_every > full_spec.steps_per_epoch:
        raise OptionError("snapshot_every", f"{opts.snapshot_every} exceeds the {full_spec.steps_per_epoch} "
                          "steps of an epoch")
    grid = dimension.log_grid(opts.d_min, opts.d_max, opts.grid_per_decade)
    seed_mode = options.resolve_seed_mode(opts.seed_mode, "train")
    settings = {**options.settings(opts), "seed_mode": seed_mode, "model": prob.identity(),
                "data": {"n_train": N, "n_test": int(data.x_test.shape[0]),
                         "fingerprint": problem_lib.fingerprint(*data)}}
    derived = {**prob.describe(), "grid": grid, "start_names": list(opts.starts), "seed_mode": seed_mode,
               "steps_per_epoch": full_spec.steps_per_epoch}
    store = stores.open_store(run_dir, experiment=EXPERIMENT, settings=settings, derived=derived,
                              axes=schema.threshold_dimension_axes())
    engine = engine_lib.Engine(store, label=EXPERIMENT, log=log)
    starts = opts.starts
    known = [("baseline", 1), *([("lottery_basis", 1)] if opts.lottery else []),
             *[(f"burnin_t{t}", 1) for t in opts.burn_in],
             *[(unit_name(s, d), 1) for s in starts for d in opts.dims]]
    n_search = len(opts.targets) * len(starts) + (0 in opts.burn_in)
    engine.plan(known, unplanned=n_search * (int(np.log2(len(grid))) + 2) * opts.search)
    if store.path:
        engine.say(f"{'resuming' if store.resumed else 'new run'}: {store.path}  ({len(store.done())} units "
                   "done)")
    engine.say(f"{derived['model']}: D = {D}; starts {list(starts)}; {opts.num_seeds} seeds; grid of "
               f"{len(grid)} d in [{grid[0]}, {grid[-1]}]; targets {opts.target_metric} {list(opts.targets)}")

    units = Units(engine, prob, data, opts, full_spec=full_spec, seed_mode=seed_mode)
    base = units.baseline()
    searches, dint_search = {}, None
    metric = opts.target_metric
    for start in starts:
        limit = engine.unit("lottery_basis", _missing)["directions"].shape[-1] if start == "lottery" else D
        for d in opts.dims:  # the sweep: split over processes (another's units are collected below)
            if d <= limit:
                units.subspace(start, d, wait=False)
        if not opts.search:
            continue
        g = grid[grid <= limit]
        for ti, target in enumerate(opts.targets):
            def success(d, s=start, t=target):
                hits = dimension.reached(units.subspace(s, d)[f"final_{metric}"], t, metric)
                return int(hits.sum()), opts.num_seeds

            searches[ti, start] = dimension.threshold_search(success, g, delta=opts.delta) if len(g) else None
        if start == "t0":
            goal = opts.dint_fraction * float(np.mean(base["final_test_accuracy"]))
            dint_search = dimension.search_grid(
                lambda d: float(np.mean(units.subspace("t0", d)["final_test_accuracy"])) >= goal, grid)

    for start in starts:  # every process has the whole sweep before assembling
        limit = engine.unit("lottery_basis", _missing)["directions"].shape[-1] if start == "lottery" else D
        for d in (d for d in opts.dims if d <= limit):
            units.subspace(start, d)
    store.refresh()
    trained = {(m.group(1), int(m.group(2))) for m in map(UNIT.match, store.done() | set(engine.cache)) if m}
    subspace_units = {key: units.subspace(*key) for key in sorted(trained)}
    anchors = [units.anchors(t0) for t0 in opts.burn_in]
    lottery = engine.unit("lottery_basis", _missing) if opts.lottery else None
    arrays, analysis = analyse(opts, grid, base, subspace_units, anchors, lottery, searches, dint_search,
                               key=jax.random.fold_in(units.keys.k_data, 1))
    store.write_json("analysis.json", analysis)
    store.finish(arrays)
    return ThresholdResult(store, arrays, analysis)


def unit_name(start: str, d: int) -> str:
    return f"{start}_d{d}"


def _missing():
    raise RuntimeError("a unit of the threshold-dimension run is missing at assembly")


class Units:
    """The run's units on demand (`Engine.unit`): baseline, lottery basis, burn-in anchors and subspace
    runs, with the jitted functions they share."""

    def __init__(self, engine: engine_lib.Engine, prob: problem_lib.Problem, data: train.Data,
                 opts: ThresholdOptions, *, full_spec: train.TrainSpec, seed_mode: str):
        self.engine, self.data, self.opts = engine, data, opts
        fm, S, N = prob.fm, opts.num_seeds, data.x_train.shape[0]
        self.keys = keys = seeds.SeedKeys.from_seed(opts.seed)
        self.k_train = keys.train_keys(S)
        self.theta0 = jax.jit(jax.vmap(prob.sample_fn(opts.init)))(keys.init_keys(S))
        index = seeds.pick_examples(keys.k_data, N, min(opts.n_train_eval or N, N))
        self.x_eval, self.y_eval = data.x_train[index], data.y_train[index]
        sub_spec = opts.train_spec(N, mode="hyperplane")
        full, sub = train.make_trainer(fm, full_spec), train.make_trainer(fm, sub_spec)
        mode = seed_mode
        self.full_init = jax.jit(jax.vmap(full.init))
        self.full_run = jax.jit(seeds.map_seeds(lambda st, k, e0, data, n: full.run(st, k, data, None, e0, n),
                                                mode), static_argnums=4)
        steps = train.make_step_runner(fm, full_spec)
        self.burn = jax.jit(seeds.map_seeds(lambda st, k, data, n: steps(st, k, data, None, n), mode),
                            static_argnums=3)
        evaluate = lambda th, x, y: train.evaluate(fm, th, x, y, full_spec.eval_chunk)  # noqa: E731
        self.eval_theta = jax.jit(jax.vmap(evaluate, in_axes=(0, None, None)))
        self.sub_init = jax.jit(jax.vmap(sub.init))
        self.sub_run = jax.jit(seeds.map_seeds(lambda st, k, sp, e0, data, n: sub.run(st, k, data, sp, e0, n),
                                               mode, per_seed=3), static_argnums=5)
        self.sub_theta = jax.jit(jax.vmap(sub.theta))
        kind = opts.projection
        self.random_spaces = jax.jit(
            lambda anchors, k_proj, d: jax.vmap(lambda a, k: subspaces.random_space(k, a, kind=kind, d=d))(
                anchors, k_proj), static_argnums=2)
        self._trained = None

    def fit(self, name: str, run_fn, state0):
        return self.engine.fit(name, run_fn, state0, epochs=self.opts.epochs,
                               epochs_per_call=self.opts.epochs_per_call)

    def evaluate(self, thetas) -> dict:
        loss, acc = self.eval_theta(thetas, self.x_eval, self.y_eval)
        return {"train_loss": np.asarray(loss), "train_accuracy": np.asarray(acc)}

    def _train_baseline(self):
        if self._trained is None:
            run_fn = lambda st, e0, n: self.full_run(st, self.k_train, e0, self.data, n)  # noqa: E731
            self._trained = self.fit("baseline", run_fn, self.full_init(self.theta0))
        return self._trained

    def baseline(self) -> dict:
        """Full-space training of every seed from theta_0 (with ``lottery``, its basis unit first)."""
        if self.opts.lottery:
            self.engine.unit("lottery_basis", self._lottery_basis,
                             what=lambda a, r: f"rank {r['rank']} from {r['snapshots']} snapshots")

        def compute():
            state, hist = self._train_baseline()
            out = {"test_accuracy": hist["test_accuracy"], "train_loss_curve": hist["loss"],
                   **{f"final_{k}": v for k, v in self.evaluate(state.params).items()}}
            out["final_test_accuracy"] = hist["test_accuracy"][:, -1]
            return out, {"final_test_accuracy": out["final_test_accuracy"]}

        return self.engine.unit("baseline", compute, what=lambda a, r: "full-space test accuracy "
                                f"{np.mean(a['final_test_accuracy']):.4f}")

    def _lottery_basis(self):
        snaps = self._train_baseline()[1]["snapshots"]  # [S, epochs, n_snap, D]
        moves = snaps.reshape(snaps.shape[0], -1, snaps.shape[-1]) - np.asarray(self.theta0)[:, None]
        bases = [subspaces.lottery_basis(m, centred=self.opts.lottery_pca == "centred") for m in moves]
        rank = min(b.directions.shape[1] for b in bases)
        return ({"directions": np.stack([b.directions[:, :rank] for b in bases]),
                 "singular_values": np.stack([b.singular_values[:rank] for b in bases])},
                {"rank": rank, "snapshots": moves.shape[1]})

    def anchors(self, t0: int) -> dict:
        """theta after t0 full-space steps (the baseline's first t0 steps), with its metrics."""

        def compute():
            state = self.full_init(self.theta0)
            if t0 > 0:
                state, _ = self.burn(state, self.k_train, self.data, t0)
            _, test_acc = self.eval_theta(state.params, self.data.x_test, self.data.y_test)
            out = {"anchor": np.asarray(state.params), "test_accuracy": np.asarray(test_acc),
                   **self.evaluate(state.params)}
            return out, {"t0": t0, "test_accuracy": out["test_accuracy"]}

        return self.engine.unit(f"burnin_t{t0}", compute,
                                what=lambda a, r: f"test accuracy {np.mean(a['test_accuracy']):.4f}")

    def subspace(self, start: str, d: int, *, wait: bool = True) -> dict | None:
        """S seeds trained in d-dimensional subspaces through a start point (one unit; None when it is
        another process's and not `wait`)."""
        name = unit_name(start, d)

        def compute():
            S, dtype = self.opts.num_seeds, self.theta0.dtype
            if start == "lottery":
                basis = self.engine.unit("lottery_basis", _missing)["directions"][:, :, :d]
                spaces = train.Space(self.theta0, projections.Dense(jnp.asarray(basis, dtype)))
            else:
                anchors = jnp.asarray(self.anchors(int(start[1:]))["anchor"])
                spaces = self.random_spaces(anchors, self.keys.proj_keys(d, S), d)
            state0 = self.sub_init(jnp.zeros((S, d), dtype), spaces)
            run_fn = lambda st, e0, n: self.sub_run(st, self.k_train, spaces, e0, self.data, n)  # noqa: E731
            state, hist = self.fit(name, run_fn, state0)
            final = self.evaluate(self.sub_theta(state, spaces))
            acc = hist["test_accuracy"]
            out = {"final_test_accuracy": acc[:, -1], "test_accuracy": acc, "train_loss_curve": hist["loss"],
                   **{f"final_{k}": v for k, v in final.items()}}
            return out, {"start": start, "d": d, "final_test_accuracy": out["final_test_accuracy"],
                         "final_train_loss": out["final_train_loss"]}

        return self.engine.unit(name, compute, what=lambda a, r: "test accuracy "
                                f"{np.mean(a['final_test_accuracy']):.4f}, train loss "
                                f"{np.mean(a['final_train_loss']):.4f}", wait=wait)


def analyse(opts: ThresholdOptions, grid, base: dict, subspace_units: dict, anchors: list[dict],
            lottery: dict | None, searches: dict, dint_search, *, key) -> tuple[dict, dict]:
    """(arrays of `schema.threshold_dimension_axes`, analysis.json) from the units: the baseline, the
    ``burnin_t<t0>`` anchors in ``opts.burn_in`` order, the lottery basis (or None), subspace_units
    (start, d) -> arrays (``final_test_accuracy`` [S], ...), the searches ((target index, start) ->
    `dimension.SearchResult` or None) and d_int's; key: the d_int bootstrap's."""
    dims = np.array(sorted({d for _, d in subspace_units}), np.int64)
    S, E, starts = opts.num_seeds, opts.epochs, opts.starts
    acc = np.full((len(starts), len(dims), S), np.nan)
    loss, curves = np.full_like(acc, np.nan), np.full((*acc.shape, E), np.nan)
    evaluated = np.zeros(acc.shape[:2], bool)
    for si, start in enumerate(starts):
        for di, d in enumerate(dims):
            unit = subspace_units.get((start, int(d)))
            if unit is not None:
                acc[si, di], loss[si, di] = unit["final_test_accuracy"], unit["final_train_loss"]
                curves[si, di] = unit["test_accuracy"]
                evaluated[si, di] = True
    values = acc if opts.target_metric == "test_accuracy" else loss
    arrays = dimension.success_table(dims, values, evaluated, targets=opts.targets, metric=opts.target_metric,
                                     delta=opts.delta, method=opts.interval, confidence=opts.confidence)
    n_eval = np.zeros(arrays["threshold"].shape)
    rows = []
    for ti, target in enumerate(opts.targets):
        for si, start in enumerate(starts):
            found = searches.get((ti, start))
            n_eval[ti, si] = len(found.evaluated) if found else 0
            rows.append({"target": target, "start": start, "threshold": arrays["threshold"][ti, si],
                         "below": arrays["threshold_below"][ti, si],
                         "search": dataclasses.asdict(found) if found else None})
    dint = {"d_int": [np.nan] * 3, "d_int_interp": [np.nan] * 3}
    analysis = {"metric": opts.target_metric, "level": 1 - opts.delta, "thresholds": rows,
                "baseline_test_accuracy": float(np.mean(base["final_test_accuracy"]))}
    if 0 in opts.burn_in:
        si = starts.index("t0")
        analysis["d_int"] = {"fraction": opts.dint_fraction,
                             "goal": opts.dint_fraction * analysis["baseline_test_accuracy"],
                             "search": dataclasses.asdict(dint_search) if dint_search else None}
        for name, interpolate in (("d_int", False), ("d_int_interp", True)):
            interval = dimension.bootstrap_intrinsic_dimension(
                key, dims[evaluated[si]], acc[si][evaluated[si]], base["final_test_accuracy"],
                fraction=opts.dint_fraction, interpolate=interpolate, num_resamples=max(opts.bootstrap, 1),
                confidence=opts.confidence)
            dint[name] = list(interval[:3])
            analysis["d_int"]["grid" if name == "d_int" else "interpolated"] = interval._asdict()
    arrays.update(
        final_test_accuracy=acc, final_train_loss=loss, test_accuracy=curves, evaluated=evaluated,
        search_evaluations=n_eval, baseline_test_accuracy=base["test_accuracy"],
        baseline_train_loss=base["final_train_loss"],
        anchor_test_accuracy=np.stack([a["test_accuracy"] for a in anchors]),
        anchor_train_loss=np.stack([a["train_loss"] for a in anchors]),
        **{k: np.asarray(v, float) for k, v in dint.items()},
        lottery_singular_values=lottery["singular_values"] if lottery is not None else np.zeros((S, 0)),
        targets=np.asarray(opts.targets), dims=dims, burn_in=np.asarray(opts.burn_in), grid=np.asarray(grid),
    )
    return arrays, analysis
