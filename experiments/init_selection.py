r"""Convexity-selected initialisations (Fort & Scherlis 2019, on initialisation).

Draw K = --num_inits initialisations (--init sample, placed by --convention at --r_over_rx r_X), score
each on --n_score fixed training examples (`selection.make_score_fn`: Tr(H_sub)/||H_sub||_F and the
fraction of positive eigenvalues of the exact d-dimensional subspace Hessian, the full-space Tr(H)/||H||_F
by probes, the initial loss), pick the --num_selected best by --score and as many bottom-scored (or random,
--compare) ones, and train each from the same initial point with --num_seeds batch orders (the same orders
in both groups) for the same budget (--epochs). The final test loss / accuracy and the training loss
(last record block, and its mean over the run: the area under the curve) of the two groups are compared
by a two-sided Mann-Whitney U test with the rank-biserial effect size (`selection.mann_whitney`).

    python -m experiments.init_selection --flagfile=experiments/flagfiles/mnist_init_selection_cpu.flags \
        --data_dir=/path/to/npz

Records: <workdir>/init_selection/<name>/: units score_b<j> (--score_block inits each), train_top and
train_other (epoch checkpoints inside); arrays.npz (scores [init], training results [group, init, seed, ...]);
analysis.json (selection, tests, Spearman correlations of score and outcome); figure init_selection.png.
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

EXPERIMENT = "init_selection"
FLAGS = flags.FLAGS
GROUPS = ("top", "other")
OUTCOMES = ("final_test_loss", "final_test_accuracy", "final_train_loss", "mean_train_loss")

cli.define_data_flags()
cli.define_model_flags()
cli.define_precision_flags()
cli.define_output_flags(EXPERIMENT)
cli.define_training_flags(epochs=1, batch_size=128, lr=1e-3)
cli.define_enum("init", "xavier", ["xavier", "he", "isotropic"], "Initialisation sample.")
cli.define_enum("convention", "scaled_init", ["xavier_rescaled", "isotropic", "scaled_init"],
                "How the sample is placed at radius r = r_over_rx r_X (scaled_init with 1: the sample itself).")
cli.define_float("r_over_rx", 1.0, "Radius of the initial points in units of r_X.")
cli.define_integer("num_inits", 32, "K: initialisations drawn and scored.")
cli.define_enum("score", "trace_over_frob", ["trace_over_frob", "frac_pos", "full_trace_over_frob", "loss"],
                "What selects: subspace Tr(H)/||H||_F, fraction of positive subspace eigenvalues, full-space Tr/||H||_F, or initial loss (lower is better).")
cli.define_integer("d", 20, "Dimension of the random subspace of the subspace Hessian.")
cli.define_enum("projection", "sparse", ["sparse", "sparse_fixed", "dense", "fastfood"], "Random subspace kind.")
cli.define_integer("num_probes", 10, "Rademacher probes of the full-space Tr(H)/||H||_F (0: off).")
cli.define_integer("n_score", 1000, "Fixed training examples on which the scores are computed.")
cli.define_integer("score_block", 8, "Initialisations scored per unit (one compiled call).")
cli.define_integer("num_selected", 2, "M: initialisations trained per group.")
cli.define_enum("compare", "bottom", ["bottom", "random"], "The comparison group: the M bottom-scored or M random others.")
cli.define_integer("num_seeds", 4, "S: batch orders per selected initialisation (the same S in both groups).")
cli.define_bool("plots", True, "Draw the figure at the end.")


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
    convention: str
    r_over_rx: float
    num_inits: int
    score: str
    d: int
    projection: str
    num_probes: int
    n_score: int
    score_block: int
    num_selected: int
    compare: str
    num_seeds: int
    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    record_every: int
    epochs_per_call: int
    seed_mode: str
    dtype: str
    seed: int
    workdir: str
    name: str | None
    overwrite: bool
    plots: bool

    def settings(self) -> dict:
        return cli.resume_settings(self)


def config_from_flags() -> Config:
    cli.check_training_flags()
    for name, low in (("num_inits", 2), ("d", 1), ("n_score", 1), ("score_block", 1), ("num_selected", 1), ("num_seeds", 1)):
        if FLAGS[name].value < low:
            raise cli.UsageError(name, f"must be >= {low}, got {FLAGS[name].value}")
    if 2 * FLAGS.num_selected > FLAGS.num_inits:
        raise cli.UsageError("num_selected", f"two groups of {FLAGS.num_selected} do not fit in --num_inits={FLAGS.num_inits}")
    if FLAGS.num_probes < 0 or FLAGS.num_probes == 1:
        raise cli.UsageError("num_probes", f"must be 0 (off) or >= 2, got {FLAGS.num_probes}")
    if FLAGS.score == "full_trace_over_frob" and not FLAGS.num_probes:
        raise cli.UsageError("num_probes", "--score=full_trace_over_frob needs --num_probes >= 2")
    if not FLAGS.r_over_rx > 0:
        raise cli.UsageError("r_over_rx", f"must be > 0, got {FLAGS.r_over_rx}")
    from gzone import seeds

    return Config(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, tfds_data_dir=FLAGS.tfds_data_dir, n_train=FLAGS.n_train,
        n_test=FLAGS.n_test, **{k if k != "kind" else "model": v for k, v in cli.model_spec_fields().items()},
        init=FLAGS.init, convention=FLAGS.convention, r_over_rx=FLAGS.r_over_rx, num_inits=FLAGS.num_inits,
        score=FLAGS.score, d=FLAGS.d, projection=FLAGS.projection, num_probes=FLAGS.num_probes, n_score=FLAGS.n_score,
        score_block=FLAGS.score_block, num_selected=FLAGS.num_selected, compare=FLAGS.compare, num_seeds=FLAGS.num_seeds,
        optimizer=FLAGS.optimizer, lr=FLAGS.lr, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs,
        record_every=FLAGS.record_every, epochs_per_call=FLAGS.epochs_per_call,
        seed_mode=seeds.default_seed_mode() if FLAGS.seed_mode == "auto" else FLAGS.seed_mode,
        dtype=FLAGS.dtype, seed=FLAGS.seed, workdir=FLAGS.workdir, name=FLAGS.name, overwrite=FLAGS.overwrite,
        plots=FLAGS.plots,
    )


def default_name(config: Config) -> str:
    digest = hashlib.sha1(json.dumps(config.settings(), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{config.dataset}_{config.model}{'-'.join(map(str, config.widths))}_{digest}"


def run(config: Config, log=print) -> str:
    cli.enable_x64_if(config.dtype)
    import jax
    import jax.numpy as jnp

    from gzone import plots, seeds, subspace, train
    from gzone.analysis import selection
    from gzone.runs import records

    problem = cli.Problem(
        dataset=config.dataset, data_dir=config.data_dir, tfds_data_dir=config.tfds_data_dir, n_train=config.n_train,
        n_test=config.n_test, model=config.model, widths=config.widths, activation=config.activation, dtype=config.dtype,
    )
    fm, r_x, dtype = problem.fm, problem.r_x, problem.dtype
    n_train = problem.dataset.x_train.shape[0]
    if config.d > fm.D:
        raise cli.UsageError("d", f"{config.d} exceeds the number of parameters D={fm.D}")
    if config.batch_size > n_train:
        raise cli.UsageError("batch_size", f"{config.batch_size} exceeds the {n_train} training examples")
    if config.n_score > n_train:
        raise cli.UsageError("n_score", f"{config.n_score} exceeds the {n_train} training examples")
    K, M, S, B = config.num_inits, config.num_selected, config.num_seeds, config.score_block
    keys = seeds.SeedKeys.from_seed(config.seed)
    k_examples, k_probe, k_select = jax.random.split(keys.k_data, 3)
    index = seeds.pick_examples(k_examples, n_train, config.n_score)
    x, y = problem.data.x_train[index], problem.data.y_train[index]
    path = records.run_path(config.workdir, EXPERIMENT, config.name or default_name(config))
    blocks = -(-K // B)
    resumed = records.open_run(
        path, experiment=EXPERIMENT, settings=config.settings(),
        derived={**problem.describe(), "radius": config.r_over_rx * r_x, "score_examples": index,
                 "steps_per_epoch": n_train // config.batch_size},
        axes=axes_of(config), flags_text=cli.flags_text(), overwrite=config.overwrite,
    )
    done = records.completed_units(path)
    units = [f"score_b{j:03d}" for j in range(blocks)] + [f"train_{g}" for g in GROUPS]
    log(f"{'resuming' if resumed else 'new run'}: {path}  ({len(done)}/{len(units)} units done)")
    log(f"{problem.spec.name} on {problem.dataset.name}: D = {fm.D}, r_X = {r_x:.4g}; K = {K} inits scored by {config.score} "
        f"(d = {config.d}, {config.num_probes} probes, {config.n_score} examples); top {M} vs {config.compare} {M}, {S} seeds each")
    progress = cli.Progress(len(units), EXPERIMENT, done=len(done))

    sample = problem.sample_fn("xavier" if config.convention == "xavier_rescaled" else config.init)
    point_fn = lambda k: subspace.point_at_radius(k, jnp.asarray(config.r_over_rx * r_x, dtype), convention=config.convention,  # noqa: E731
                                              sample_fn=sample, D=fm.D, r_x=r_x, dtype=dtype)
    k_init, k_proj = keys.init_keys(K), keys.proj_keys(config.d, K)
    k_probes = jax.vmap(lambda i: jax.random.fold_in(k_probe, i))(jnp.arange(K))
    from gzone import measure, projections
    from gzone.curvature import fullspace

    core = measure.make_measure_fn(fm, measure.Spec(subspace=True, full=fullspace.Spec(config.num_probes) if config.num_probes else None))

    def score_fn(k_init, k_proj, k_probe, x, y):
        out = core(k_probe, point_fn(k_init).astype(dtype), projections.make(config.projection, k_proj, D=fm.D, d=config.d, dtype=dtype), x, y)
        keep = ["loss", "accuracy", "radius", "trace_over_frob", "frac_pos", "trace", "frob", "eigvals", "n_pos"]
        keep += ["full_trace_over_frob", "full_trace_over_frob_se", "full_trace"] if config.num_probes else []
        return {k: out[k] for k in keep}
    score_block = jax.jit(seeds.map_seeds(score_fn, config.seed_mode, per_seed=3))
    for j in range(blocks):
        unit = f"score_b{j:03d}"
        if unit in done:
            continue
        start = time.time()
        ids = np.arange(j * B, (j + 1) * B) % K  # the last block wraps around: fixed shape, one compile
        out = jax.tree_util.tree_map(lambda a: np.asarray(a)[: min(B, K - j * B)], score_block(k_init[ids], k_proj[ids], k_probes[ids], x, y))
        records.save_unit(path, unit, out, {"inits": list(range(j * B, min((j + 1) * B, K))), "seconds": time.time() - start,
                                            config.score: out[config.score]})
        progress.step(f"{unit}: {config.score} {np.mean(out[config.score]):.4g} ({time.time() - start:.0f}s)")

    scores = {k: np.concatenate([records.load_unit(path, f"score_b{j:03d}")[k] for j in range(blocks)]) for k in
              records.load_unit(path, "score_b000")}
    top, other = selection.select(scores[config.score], num=M, against=config.compare, key=k_select,
                                  higher_is_better=selection.HIGHER_IS_BETTER[config.score])
    steps = n_train // config.batch_size
    spec = train.spec_for(n_train, optimizer=config.optimizer, lr=config.lr, batch_size=config.batch_size,
                          record_every=config.record_every)
    trainer = train.make_trainer(fm, spec)
    init = jax.jit(jax.vmap(trainer.init))
    points = jax.jit(jax.vmap(point_fn))
    run_seeds = jax.jit(seeds.map_seeds(lambda st, k, e0, data, n: trainer.run(st, k, data, None, e0, n), config.seed_mode),
                        static_argnums=4)
    k_order = keys.train_keys(S)[np.tile(np.arange(S), M)]  # run m S + s: init m, batch order s (the same orders in both groups)
    for group, chosen in zip(GROUPS, (top, other)):
        unit = f"train_{group}"
        if unit in done:
            continue
        start = time.time()
        state0 = init(points(k_init[np.repeat(chosen, S)]))
        run_fn = lambda st, e0, n: run_seeds(st, k_order, e0, problem.data, n)  # noqa: E731
        _, hist = cli.resumable_fit(path, unit, run_fn, state0, epochs=config.epochs, epochs_per_call=config.epochs_per_call, log=log)
        out = {"inits": np.asarray(chosen), "test_loss": hist["test_loss"], "test_accuracy": hist["test_accuracy"],
               "train_loss": hist["loss"], "step": hist["step"][0]}
        out = {k: v.reshape(M, S, *v.shape[1:]) if k not in ("inits", "step") else v for k, v in out.items()}
        records.save_unit(path, unit, out, {"group": group, "inits": chosen.tolist(), "seconds": time.time() - start,
                                            "final_test_accuracy": out["test_accuracy"][..., -1]})
        records.drop_checkpoint(path, unit)
        progress.step(f"{unit}: inits {chosen.tolist()}, test acc {np.mean(out['test_accuracy'][..., -1]):.4f} "
                      f"({time.time() - start:.0f}s)")

    trained = [records.load_unit(path, f"train_{g}") for g in GROUPS]
    arrays = {f"score_{k}": v for k, v in scores.items()}
    arrays.update(selected=np.stack([t["inits"] for t in trained]), step=trained[0]["step"],
                  **{k: np.stack([t[k] for t in trained]) for k in ("test_loss", "test_accuracy", "train_loss")})
    arrays.update(outcomes(arrays))
    analysis = analyse(arrays, config, steps)
    records.atomic_write_json(os.path.join(path, "analysis.json"), analysis)
    records.finish(path, arrays)
    log(summary_table(analysis))
    if config.plots:
        for figure in plots.draw(path):
            log(f"figure: {figure}")
    log(f"records: {path}")
    return path


def axes_of(config: Config) -> dict:
    names = ["loss", "accuracy", "radius", "trace_over_frob", "frac_pos", "trace", "frob", "n_pos"]
    if config.num_probes:
        names += ["full_trace_over_frob", "full_trace_over_frob_se", "full_trace"]
    axes = {f"score_{k}": ["init"] for k in names}
    axes.update(score_eigvals=["init", "eigenvalue"], selected=["group", "member"], step=["epoch", "record"],
                test_loss=["group", "member", "seed", "epoch"], test_accuracy=["group", "member", "seed", "epoch"],
                train_loss=["group", "member", "seed", "epoch", "record"], **{k: ["group", "member", "seed"] for k in OUTCOMES})
    return axes


def outcomes(arrays: dict) -> dict:
    """The compared quantities per run [group, member, seed], after the same number of steps."""
    loss = arrays["train_loss"]
    return {"final_test_loss": arrays["test_loss"][..., -1], "final_test_accuracy": arrays["test_accuracy"][..., -1],
            "final_train_loss": loss[..., -1, -1], "mean_train_loss": loss.reshape(*loss.shape[:3], -1).mean(-1)}


def analyse(arrays: dict, config: Config, steps_per_epoch: int) -> dict:
    """Selection; Mann-Whitney tests top vs other per outcome over all M S runs (``tests``: the S runs of one
    init are not independent of each other, so their p-values overstate the evidence about inits) and over
    the M per-init means (``tests_init_means``: independent, but M = 3 vs 3 cannot reach p < 0.1);
    Spearman correlations of score and outcome over the runs and of the scores with each other."""
    from gzone.analysis import selection

    score = arrays[f"score_{config.score}"]
    run_score = score[arrays["selected"]][..., None] * np.ones(config.num_seeds)  # [group, member, seed]
    out = {"score": config.score, "higher_is_better": selection.HIGHER_IS_BETTER[config.score], "compare": config.compare,
           "steps": config.epochs * steps_per_epoch, "selected": {g: arrays["selected"][i].tolist() for i, g in enumerate(GROUPS)},
           "selected_scores": {g: score[arrays["selected"][i]].tolist() for i, g in enumerate(GROUPS)},
           "selected_initial_loss": {g: arrays["score_loss"][arrays["selected"][i]].tolist() for i, g in enumerate(GROUPS)},
           "score_quantiles": np.quantile(score, [0, 0.25, 0.5, 0.75, 1]).tolist(), "tests": {}, "tests_init_means": {},
           "spearman": {}, "score_correlations": {}}
    for name in OUTCOMES:
        out["tests"][name] = selection.mann_whitney(arrays[name][0], arrays[name][1])
        out["tests_init_means"][name] = selection.mann_whitney(arrays[name][0].mean(-1), arrays[name][1].mean(-1))
        out["spearman"][name] = spearman(run_score.ravel(), arrays[name].ravel())
    for name in ("trace_over_frob", "frac_pos", "full_trace_over_frob", "loss"):
        if name != config.score and f"score_{name}" in arrays:
            out["score_correlations"][name] = spearman(score, arrays[f"score_{name}"])
    return out


def spearman(a, b) -> dict:
    """Spearman's rho and its p-value; None for both when either sample is constant (rho undefined)."""
    from scipy import stats

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"rho": None, "p_value": None}
    res = stats.spearmanr(a, b)
    return {"rho": float(res.statistic), "p_value": float(res.pvalue)}


def summary_table(analysis: dict) -> str:
    lines = [f"score {analysis['score']} ({'higher' if analysis['higher_is_better'] else 'lower'} is better); "
             f"top {analysis['selected']['top']} {np.round(analysis['selected_scores']['top'], 4).tolist()} vs "
             f"{analysis['compare']} {analysis['selected']['other']} {np.round(analysis['selected_scores']['other'], 4).tolist()}; "
             f"after {analysis['steps']} steps; initial losses {np.round(analysis['selected_initial_loss']['top'], 3).tolist()} vs "
             f"{np.round(analysis['selected_initial_loss']['other'], 3).tolist()}",
             f"{'outcome':<20} {'median top':>11} {'median other':>12} {'U':>7} {'p-value':>9} {'rank-biserial':>13} {'Spearman rho':>12}"]
    lines.append("-" * len(lines[-1]))
    for name, t in analysis["tests"].items():
        m = analysis["tests_init_means"][name]
        lines.append(f"{name:<20} {t['median_a']:>11.4g} {t['median_b']:>12.4g} {t['U']:>7.1f} {t['p_value']:>9.3g} "
                     f"{t['rank_biserial']:>13.3f} {_fmt(analysis['spearman'][name]['rho']):>12}   per init: p {m['p_value']:.3g}, "
                     f"r {m['rank_biserial']:+.2f}")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv):
    del argv
    run(config_from_flags(), log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    cli.run(main)
