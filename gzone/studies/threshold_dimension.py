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

import jax
import numpy as np

from gzone import options, train
from gzone import problem as problem_lib
from gzone.analysis import dimension
from gzone.options import OptionError, option
from gzone.runs import engine as engine_lib
from gzone.runs import progress, result, schema, stores
from gzone.studies.threshold_units import UNIT, Units, _missing, unit_name

EXPERIMENT = "threshold_dimension"


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
    lr_reference_d: int = option(
        0, "With > 0, the subspace runs at dimension d use --lr * sqrt(lr_reference_d / d) (Adam moves "
        "each of the d coordinates by about lr per step, theta by about lr sqrt(d): this keeps the "
        "parameter-space step the same at every d); 0: --lr at every d.", minimum=0, setting="changed")
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
    gordon_seeds: int = option(0, "Predict d* from the Hessian at the baseline's solutions (Gordon's escape "
                               "theorem, analysis.gordon) for this many seeds (0: off; needs "
                               "--target_metric=train_loss).",
                               minimum=0)
    gordon_top_k: int = option(20, "Top Hessian eigenvalues by Lanczos for the prediction.", minimum=1)
    gordon_order: int = option(80, "Lanczos steps of the prediction's spectra.", minimum=2)
    gordon_probes: int = option(8, "SLQ probes of the prediction's spectral density.", minimum=1)
    gordon_matrix: str = option("gauss_newton", "The well's curvature: the Gauss-Newton matrix (positive "
                                "semidefinite: its quadrature converges) or the Hessian (curvature.wells).",
                                choices=("gauss_newton", "hessian"), setting="changed")

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
        if self.gordon_seeds and self.target_metric != "train_loss":
            raise OptionError("gordon_seeds", "the quadratic-well prediction needs "
                              "--target_metric=train_loss")
        if self.gordon_seeds > self.num_seeds or self.gordon_top_k > self.gordon_order:
            raise OptionError("gordon_seeds", "needs --gordon_seeds <= --num_seeds and --gordon_top_k <= "
                              "--gordon_order")
        object.__setattr__(self, "targets", tuple(dict.fromkeys(self.targets)))  # one curve per target
        object.__setattr__(self, "dims", tuple(sorted(set(self.dims))))
        object.__setattr__(self, "burn_in", tuple(dict.fromkeys(self.burn_in)))

    def subspace_lr(self, d: int) -> float:
        """The learning rate of the subspace runs at dimension d (``lr_reference_d``)."""
        return self.lr * (self.lr_reference_d / d) ** 0.5 if self.lr_reference_d else self.lr

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
    return problem_lib.run_study(run, opts, model=model, train=train_set, test=test_set, run_dir=run_dir,
                                 log=log)


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
                              axes=schema.threshold_dimension_axes(gordon=bool(opts.gordon_seeds)))
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
    if opts.gordon_seeds:
        arrays.update(units.gordon(prob, anchors, analysis))
    store.write_json("analysis.json", analysis)
    store.finish(arrays)
    return ThresholdResult(store, arrays, analysis)


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
