r"""Convexity-selected initialisations (Fort & Scherlis 2019, on initialisation) as one library call.

    result = gzone.init_selection(model, (x_train, y_train), (x_test, y_test), num_inits=32, d=20,
                                  score="trace_over_frob", num_selected=2, num_seeds=4)

Draw K = ``num_inits`` initialisations (the ``init`` sample placed by ``convention`` at
``r_over_rx`` r_X), score each on ``n_score`` fixed training examples by the one point measurement
(`measure.make_measure_fn` with the exact subspace Hessian H_sub = P^T H P of a random
d-dimensional subspace and ``num_probes`` full-space Rademacher probes): Tr(H_sub)/||H_sub||_F,
the fraction of positive eigenvalues, the full-space Tr(H)/||H||_F, the initial loss. Pick the
``num_selected`` best by ``score`` and as many bottom-scored (or random, ``compare``) ones, train
each from the same initial point with ``num_seeds`` batch orders (the same orders in both groups)
for the same budget, and compare the final test loss / accuracy and the training loss (last
record block, and its mean over the run) of the two groups by a two-sided Mann-Whitney U test
with the rank-biserial effect size (`selection.mann_whitney`), and on the per-init means by Welch's
t-test with a 95 % interval of the difference (`selection.welch`).

Units: ``score_b<j>`` (``score_block`` inits each, one compiled call), ``train_top`` and
``train_other`` (epoch checkpoints inside). Records (`schema.init_selection_axes`): scores [init],
training results [group, member, seed, ...]; analysis.json: the selection, the tests and Spearman
correlations of score and outcome.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gzone import measure, options, projections, seeds, subspace, train
from gzone import problem as problem_lib
from gzone.analysis import selection
from gzone.curvature import fullspace
from gzone.options import OptionError, option
from gzone.runs import engine as engine_lib
from gzone.runs import progress, result, schema, stores

EXPERIMENT = "init_selection"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SelectionOptions(options.Training, options.Points, options.Projection, options.Objective, options.Seeds,
                       options.Precision):
    """The options of `init_selection` (keyword arguments)."""

    epochs: int = options.override(options.Training, "epochs", 1)
    convention: str = options.override(options.Points, "convention", "scaled_init")
    num_seeds: int = option(4, "S: batch orders per selected initialisation (the same S in both groups).",
                            minimum=1)
    r_over_rx: float = option(1.0, "Radius of the initial points in units of r_X.")
    num_inits: int = option(32, "K: initialisations drawn and scored.", minimum=2)
    score: str = option("trace_over_frob", "What selects: subspace Tr(H)/||H||_F, fraction of positive "
                        "subspace eigenvalues, full-space Tr/||H||_F, or initial loss (lower is better).",
                        choices=selection.SCORES)
    d: int = option(20, "Dimension of the random subspace of the subspace Hessian.", minimum=1)
    num_probes: int = option(10, "Rademacher probes of the full-space Tr(H)/||H||_F (0: off).", minimum=0)
    n_score: int = option(1000, "Fixed training examples on which the scores are computed.", minimum=1)
    score_block: int = option(8, "Initialisations scored per unit (one compiled call).", minimum=1)
    num_selected: int = option(2, "M: initialisations trained per group.", minimum=1)
    compare: str = option("bottom", "The comparison group: the M bottom-scored or M random others.",
                          choices=selection.AGAINST)

    def _check(self):
        if 2 * self.num_selected > self.num_inits:
            raise OptionError("num_selected", f"two groups of {self.num_selected} do not fit in "
                              f"--num_inits={self.num_inits}")
        if self.num_probes == 1:
            raise OptionError("num_probes", f"must be 0 (off) or >= 2, got {self.num_probes}")
        if self.score == "full_trace_over_frob" and not self.num_probes:
            raise OptionError("num_probes", "--score=full_trace_over_frob needs --num_probes >= 2")
        if not self.r_over_rx > 0:
            raise OptionError("r_over_rx", f"must be > 0, got {self.r_over_rx}")


class SelectionResult(result.Result):
    """An init-selection run's records (`result.Result`): scores, selection, training and the tests."""

    def table(self) -> str:
        return summary_table(self.analysis)


def init_selection(model, train_set, test_set, *, run_dir: str | stores.RunFolder | None = None,
                   log=progress.to_stderr, **kwargs) -> SelectionResult:
    """Scores K initialisations of `model` by curvature, trains the best and the worst, and compares them.

    Args:
      model: any flax.linen Module mapping [N, *input_shape] to logits [N, C].
      train_set: (x_train [N, *input_shape], y_train [N] integer labels): the scores' examples are
        ``n_score`` of them; the selected inits train on all of them.
      test_set: (x_test [M, *input_shape], y_test [M]): the compared test loss and accuracy.
      run_dir: a folder (or `stores.RunFolder`) to record the run in and resume from; None: in memory.
      log: where progress lines go (None: silent).
      **kwargs: `SelectionOptions`: ``num_inits``, ``score``, ``d``, ``num_probes``, ``num_selected``, ...

    Returns:
      A `SelectionResult`. Cost: K (d + 2 + num_probes) Hessian-vector products on ``n_score``
      examples, then 2 M S training runs of ``epochs`` epochs.
    """
    opts = SelectionOptions(**kwargs)
    return problem_lib.run_study(run, opts, model=model, train=train_set, test=test_set, run_dir=run_dir,
                                 log=log)


def run(prob: problem_lib.Problem, data: train.Data, opts: SelectionOptions, *, run_dir=None,
        log=progress.to_stderr) -> SelectionResult:
    """The study on a built problem and validated data (what `init_selection` calls)."""
    fm, r_x, dtype = prob.fm, prob.r_x, prob.dtype
    n_train = data.x_train.shape[0]
    if opts.d > fm.D:
        raise OptionError("d", f"{opts.d} exceeds the number of parameters D={fm.D}")
    spec = opts.train_spec(n_train)
    if opts.n_score > n_train:
        raise OptionError("n_score", f"{opts.n_score} exceeds the {n_train} training examples")
    K, M, S, B = opts.num_inits, opts.num_selected, opts.num_seeds, opts.score_block
    seed_mode = options.resolve_seed_mode(opts.seed_mode, "train")
    keys = seeds.SeedKeys.from_seed(opts.seed)
    k_examples, k_probe, k_select = jax.random.split(keys.k_data, 3)
    index = seeds.pick_examples(k_examples, n_train, opts.n_score)
    x, y = data.x_train[index], data.y_train[index]
    blocks = -(-K // B)
    names = schema.selection_scores(full=bool(opts.num_probes))
    settings = {**options.settings(opts), "seed_mode": seed_mode, "model": prob.identity(),
                "data": {"n_train": n_train, "n_test": int(data.x_test.shape[0]),
                         "fingerprint": problem_lib.fingerprint(*data)}}
    derived = {**prob.describe(), "radius": opts.r_over_rx * r_x, "score_examples": index,
               "steps_per_epoch": spec.steps_per_epoch, "seed_mode": seed_mode}
    store = stores.open_store(run_dir, experiment=EXPERIMENT, settings=settings, derived=derived,
                              axes=schema.init_selection_axes(names))
    engine = engine_lib.Engine(store, label=EXPERIMENT, log=log)
    units = [(f"score_b{j:03d}", 1) for j in range(blocks)]
    units += [(f"train_{g}", 1) for g in schema.SELECTION_GROUPS]
    engine.plan(units)
    if store.path:
        engine.say(f"{'resuming' if store.resumed else 'new run'}: {store.path}  "
                   f"({len(store.done())}/{len(units)} units done)")
    engine.say(f"{derived['model']}: D = {fm.D}, r_X = {r_x:.4g}; K = {K} inits scored by {opts.score} "
               f"(d = {opts.d}, {opts.num_probes} probes, {opts.n_score} examples); top {M} vs "
               f"{opts.compare} {M}, {S} seeds each")

    sample = prob.sample_fn(opts.sample_init)
    radius = jnp.asarray(opts.r_over_rx * r_x, dtype)
    point_fn = lambda k: subspace.point_at_radius(k, radius, convention=opts.convention,  # noqa: E731
                                                  sample_fn=sample, D=fm.D, r_x=r_x, dtype=dtype)
    k_init, k_proj = keys.init_keys(K), keys.proj_keys(opts.d, K)
    k_probes = jax.vmap(lambda i: jax.random.fold_in(k_probe, i))(jnp.arange(K))
    score_fn = make_score_fn(fm, d=opts.d, projection=opts.projection, num_probes=opts.num_probes,
                             point_fn=point_fn, dtype=dtype)
    score_block = jax.jit(seeds.map_seeds(score_fn, seed_mode, per_seed=3))
    for j in range(blocks):
        def compute(j=j):
            ids = np.arange(j * B, (j + 1) * B) % K  # the last block wraps around: fixed shape, one compile
            out = score_block(k_init[ids], k_proj[ids], k_probes[ids], x, y)
            out = jax.tree_util.tree_map(lambda a: np.asarray(a)[: min(B, K - j * B)], out)
            return out, {"inits": list(range(j * B, min((j + 1) * B, K))), opts.score: out[opts.score]}

        engine.unit(f"score_b{j:03d}", compute,
                    what=lambda a, r: f"{opts.score} {np.mean(a[opts.score]):.4g}")
    score_units = [engine.unit(f"score_b{j:03d}", _missing) for j in range(blocks)]
    scores = {k: np.concatenate([u[k] for u in score_units]) for k in score_units[0]}

    top, other = selection.select(scores[opts.score], num=M, against=opts.compare, key=k_select,
                                  higher_is_better=selection.HIGHER_IS_BETTER[opts.score])
    trainer = train.make_trainer(fm, spec)
    init = jax.jit(jax.vmap(trainer.init))
    points = jax.jit(jax.vmap(point_fn))
    run_seeds = jax.jit(seeds.map_seeds(lambda st, k, e0, data, n: trainer.run(st, k, data, None, e0, n),
                                        seed_mode), static_argnums=4)
    k_order = keys.train_keys(S)[np.tile(np.arange(S), M)]  # run m S + s: init m, order s (both groups)
    trained = []
    for group, chosen in zip(schema.SELECTION_GROUPS, (top, other)):
        def compute(group=group, chosen=chosen):
            state0 = init(points(k_init[np.repeat(chosen, S)]))
            run_fn = lambda st, e0, n: run_seeds(st, k_order, e0, data, n)  # noqa: E731
            _, hist = engine.fit(f"train_{group}", run_fn, state0, epochs=opts.epochs,
                                 epochs_per_call=opts.epochs_per_call)
            curves = {"test_loss": hist["test_loss"], "test_accuracy": hist["test_accuracy"],
                      "train_loss": hist["loss"]}
            out = {"inits": np.asarray(chosen), "step": hist["step"][0],
                   **{k: v.reshape(M, S, *v.shape[1:]) for k, v in curves.items()}}
            return out, {"group": group, "inits": chosen.tolist(),
                         "final_test_accuracy": out["test_accuracy"][..., -1]}

        trained.append(engine.unit(f"train_{group}", compute, what=lambda a, r: f"inits {r['inits']}, test "
                                   f"acc {np.mean(a['test_accuracy'][..., -1]):.4f}"))

    arrays = {f"score_{k}": v for k, v in scores.items()}
    arrays.update(selected=np.stack([t["inits"] for t in trained]), step=trained[0]["step"],
                  **{k: np.stack([t[k] for t in trained]) for k in ("test_loss", "test_accuracy",
                                                                      "train_loss")})
    arrays.update(outcomes(arrays))
    analysis = analyse(arrays, opts, spec.steps_per_epoch)
    store.write_json("analysis.json", analysis)
    store.finish(arrays)
    return SelectionResult(store, arrays, analysis)


def _missing():
    raise RuntimeError("a unit of the init-selection run is missing at assembly")


def make_score_fn(fm, *, d: int, projection: str, num_probes: int, point_fn, dtype=jnp.float32):
    """The scores of one initialisation by the measurement core (`measure.make_measure_fn`).

    Args:
      fm: the flat model; d, projection: the random subspace of H_sub (`projections.KINDS`).
      num_probes: full-space Rademacher probes (0: none; else >= 2).
      point_fn: k_init -> theta [D], the initialisation.

    Returns:
      score_fn(k_init, k_proj, k_probe, x, y) -> `schema.selection_scores` scalars and ``eigvals`` [d]
      (ascending); map it over inits with ``seeds.map_seeds(..., per_seed=3)``. The probes are drawn from
      k_probe by `fullspace.estimates`. Cost: d + 2 + num_probes Hessian-vector products on (x, y).
    """
    core = measure.make_measure_fn(fm, measure.Spec(subspace=True, full=fullspace.Spec(num_probes)
                                                    if num_probes else None))
    names = (*schema.selection_scores(full=bool(num_probes)), "eigvals")

    def score_fn(k_init, k_proj, k_probe, x, y):
        P = projections.make(projection, k_proj, D=fm.D, d=d, dtype=dtype)
        out = core(k_probe, point_fn(k_init).astype(dtype), P, x, y)
        return {k: out[k] for k in names}

    return score_fn


def outcomes(arrays: dict) -> dict:
    """The compared quantities per run [group, member, seed], after the same number of steps."""
    loss = arrays["train_loss"]
    return {"final_test_loss": arrays["test_loss"][..., -1],
            "final_test_accuracy": arrays["test_accuracy"][..., -1], "final_train_loss": loss[..., -1, -1],
            "mean_train_loss": loss.reshape(*loss.shape[:3], -1).mean(-1)}


def analyse(arrays: dict, opts: SelectionOptions, steps_per_epoch: int) -> dict:
    """Selection; Mann-Whitney tests top vs other per outcome over all M S runs (``tests``: the S runs of one
    init are not independent of each other, so their p-values overstate the evidence about inits) and over
    the M per-init means (``tests_init_means``: independent, but M = 3 vs 3 cannot reach p < 0.1); the
    effect top - other on the per-init means with Welch's t-test and its 95 % interval (``effects``) and
    the between-init and init x order variances (``variance_components``, with S >= 2 and M >= 2);
    Spearman correlations of score and outcome over the runs and of the scores with each other."""
    groups = schema.SELECTION_GROUPS
    score = arrays[f"score_{opts.score}"]
    run_score = score[arrays["selected"]][..., None] * np.ones(opts.num_seeds)  # [group, member, seed]
    chosen = dict(zip(groups, arrays["selected"]))
    out = {"score": opts.score, "higher_is_better": selection.HIGHER_IS_BETTER[opts.score],
           "compare": opts.compare, "steps": opts.epochs * steps_per_epoch,
           "selected": {g: c.tolist() for g, c in chosen.items()},
           "selected_scores": {g: score[c].tolist() for g, c in chosen.items()},
           "selected_initial_loss": {g: arrays["score_loss"][c].tolist() for g, c in chosen.items()},
           "score_quantiles": np.quantile(score, [0, 0.25, 0.5, 0.75, 1]).tolist(), "tests": {},
           "tests_init_means": {}, "effects": {}, "variance_components": {}, "spearman": {},
           "score_correlations": {}}
    for name in schema.SELECTION_OUTCOMES:
        top, other = arrays[name]
        out["tests"][name] = selection.mann_whitney(top, other)
        out["tests_init_means"][name] = selection.mann_whitney(top.mean(-1), other.mean(-1))
        if opts.num_selected >= 2:
            out["effects"][name] = selection.welch(top.mean(-1), other.mean(-1), confidence=0.95)
            if opts.num_seeds >= 2:
                out["variance_components"][name] = selection.variance_components(arrays[name])
        out["spearman"][name] = selection.spearman(run_score.ravel(), arrays[name].ravel())
    for name in selection.SCORES:
        if name != opts.score and f"score_{name}" in arrays:
            out["score_correlations"][name] = selection.spearman(score, arrays[f"score_{name}"])
    return out


def summary_table(analysis: dict) -> str:
    """The selection, then per outcome: medians, U, p-value, rank-biserial r, Spearman rho, per-init test."""
    sel, scores, loss = analysis["selected"], analysis["selected_scores"], analysis["selected_initial_loss"]
    better = "higher" if analysis["higher_is_better"] else "lower"
    lines = [f"score {analysis['score']} ({better} is better); top {sel['top']} "
             f"{np.round(scores['top'], 4).tolist()} vs {analysis['compare']} {sel['other']} "
             f"{np.round(scores['other'], 4).tolist()}; after {analysis['steps']} steps; initial losses "
             f"{np.round(loss['top'], 3).tolist()} vs {np.round(loss['other'], 3).tolist()}",
             f"{'outcome':<20} {'median top':>11} {'median other':>12} {'U':>7} {'p-value':>9} "
             f"{'rank-biserial':>13} {'Spearman rho':>12}"]
    lines.append("-" * len(lines[-1]))
    for name, t in analysis["tests"].items():
        m = analysis["tests_init_means"][name]
        rho = analysis["spearman"][name]["rho"]
        rho = "-" if rho is None else f"{rho:.3f}"
        lines.append(f"{name:<20} {t['median_a']:>11.4g} {t['median_b']:>12.4g} {t['U']:>7.1f} "
                     f"{t['p_value']:>9.3g} {t['rank_biserial']:>13.3f} {rho:>12}   per init: p "
                     f"{m['p_value']:.3g}, r {m['rank_biserial']:+.2f}")
    for name, e in analysis.get("effects", {}).items():
        lines.append(f"{name:<20} top - other (per-init means) {e['difference']:+.4g} "
                     f"[{e['low']:+.4g}, {e['high']:+.4g}] (95 %), Welch p {e['p_value']:.3g}")
    return "\n".join(lines)
