r"""Emergent properties of the local loss geometry (Fort & Ganguli 2019) as one library call.

    result = gzone.emergent_geometry(model, (x_train, y_train), (x_test, y_test),
                                     log10_r2_over_rx2=[-2, 0, 2], num_seeds=2, epochs=2, snapshot_every=50)

Parts (``parts``):
  training: one full-space run per seed from an ``init`` sample, keeping theta every ``snapshot_every``
            steps (inside the training scan); the initialisation and ``num_checkpoints`` of the
            snapshots (log-spaced in step, always the last; 0: all of them) are measured;
  radius:   points at radius r at initialisation (``convention``; the radii as in the radius scan).
At every point, the one point measurement (`measure.make_measure_fn` with `measure.Spec(top_k=,
order=, logit_var=True, gram=...)`), on fixed training examples: cosine similarities of the
per-example logit gradients grouped as q_SLSC / q_SL / q_SLDC / q_DL (C x ``gram_per_class``
examples, balanced); the top ``top_k`` Hessian eigenvalues by Lanczos and the outliers above the bulk
(`analysis.emergent.count_outliers`, both rules); the fraction of |g|^2 inside the top-j Hessian
subspace; loss, accuracy, |g|, the radial gradient g . theta / |theta|, the logit variance across
classes and |theta| (on ``n_hessian`` examples); with ``density_probes``, the SLQ quadrature of the full
Hessian's spectral density (`studies.spectral_density`, the measurement's ``full`` option). The
training examples are drawn from the training set with the run's key streams; the test set gives the
training curves' test loss and accuracy.

Units: ``train`` (epoch checkpoints inside; it records the measured thetas), ``ckpt_<i>`` and
``radius_<i>`` (all seeds each). Records (`schema.emergent_geometry_axes`): ``train_<key>``
[checkpoint, seed, ...], ``radius_<key>`` [radius, seed, ...] (``<part>_density_nodes`` / ``_weights``
[point, seed, probe, node]), the training curves; analysis.json: per point the means over seeds, the
outlier counts per seed, the gradient overlap with the top C (and the density's `analysis.spectral_density`
summary).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gzone import measure, models, options, seeds, subspace
from gzone import problem as problem_lib
from gzone import train as train_lib
from gzone.analysis import emergent, spectral_density
from gzone.curvature import fullspace
from gzone.options import OptionError, option
from gzone.runs import engine as engine_lib
from gzone.runs import progress, records, result, schema, stores
from gzone.studies.spectral_density import DensityOptions

EXPERIMENT = "emergent_geometry"
PARTS = schema.EMERGENT_PARTS


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmergentOptions(
    options.Training, options.Radii, options.Points, options.Objective, options.Seeds, options.Precision,
    DensityOptions,
):
    """The options of an emergent-geometry run (keyword arguments of `emergent_geometry`); the radii
    (`options.Radii`) are needed by the radius part only."""

    radii_required = False
    epochs: int = options.override(options.Training, "epochs", 2)
    num_seeds: int = option(
        1, "Seeds: training runs (init and batch order), and points per radius.", minimum=1)
    init: str = option("xavier", "Initialisation of the training run (and of --convention=scaled_init).",
                       choices=models.INIT_CONVENTIONS)
    parts: tuple[str, ...] = option(
        PARTS, "What to measure: training (checkpoints of a run), radius (points at init).", choices=PARTS)
    snapshot_every: int = option(
        50, "Keep theta every this many steps within an epoch (the candidate checkpoints).", minimum=1)
    num_checkpoints: int = option(
        0, "Snapshots measured besides the init, log-spaced in step (0: all).", minimum=0)
    gram_per_class: int = option(
        10, "Examples per class for the logit-gradient Gram matrix (N = C x this).", minimum=2)
    gram_chunk: int = option(10, "Examples per Jacobian block of the Gram matrix (must divide N).", minimum=1)
    n_hessian: int = option(
        1000, "Fixed training examples for loss, gradient, Hessian and logits.", minimum=1)
    top_k: int = option(
        20, "Top Hessian eigenpairs by Lanczos (take more than the number of classes).", minimum=2)
    lanczos_order: int = option(60, "Lanczos steps (>= top_k).", minimum=1)
    outlier_min_ratio: float = option(1.5, "A gap l_j / l_{j+1} >= this separates outliers from the bulk.")

    def _check(self):
        object.__setattr__(self, "parts", tuple(dict.fromkeys(self.parts)))
        if "radius" in self.parts and not self.has_radii:
            raise OptionError("log10_r2_over_rx2",
                              "the radius part needs radii: give log10_r2_over_rx2 or radii (or r_over_rx)")
        if "radius" not in self.parts and self.has_radii:
            raise OptionError("parts", "radii given but 'radius' is not in parts")
        if self.lanczos_order < self.top_k:
            raise OptionError("lanczos_order", f"must be >= top_k={self.top_k}, got {self.lanczos_order}")
        if not self.outlier_min_ratio > 1:
            raise OptionError("outlier_min_ratio", f"must be > 1, got {self.outlier_min_ratio}")


class EmergentResult(result.Result):
    """An emergent-geometry run's records (`result.Result`): ``train_*`` [checkpoint, seed, ...],
    ``radius_*`` [radius, seed, ...], analysis per point."""

    def table(self) -> str:
        return summary_table(self.analysis)


def emergent_geometry(model, train: tuple, test: tuple, *, run_dir: str | stores.RunFolder | None = None,
                      log=progress.to_stderr, **kwargs) -> EmergentResult:
    """Measures the emergent local geometry of `model` along training and along radius (module docstring).

    Args:
      model: any flax.linen Module mapping [N, *input_shape] to logits [N, C].
      train: (x_train [N, *input_shape], y_train [N] integers in [0, C)): the training set (the
        measured examples are drawn from it).
      test: (x_test [M, *input_shape], y_test [M]): the test set of the training curves.
      run_dir: a folder (or `stores.RunFolder`) to record the run in and resume from; None: in memory.
      log: where progress lines go (None: silent).
      **kwargs: `EmergentOptions`: ``parts``, ``log10_r2_over_rx2`` / ``radii`` / ``r_over_rx``,
        ``num_seeds``, ``epochs``, ``top_k``, ``gram_per_class``, ...

    Returns:
      An `EmergentResult`. Cost per point and seed: ``lanczos_order`` HVPs on n_hessian examples and
      the (N C) x (N C) logit-gradient Gram matrix (N = C gram_per_class).
    """
    opts = EmergentOptions(**kwargs)
    return problem_lib.run_study(run, opts, model=model, train=train, test=test, run_dir=run_dir, log=log)


def checkpoint_plan(opts: EmergentOptions, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices into [init, snapshot 1, ..., snapshot n], their global steps) of the measured checkpoints."""
    per_epoch = steps_per_epoch // opts.snapshot_every
    in_epoch = (np.arange(per_epoch) + 1) * opts.snapshot_every
    steps = np.concatenate([[0], (np.arange(opts.epochs)[:, None] * steps_per_epoch + in_epoch).reshape(-1)])
    index = np.concatenate([[0], emergent.log_spaced(steps.size - 1, opts.num_checkpoints)])
    return index, steps[index]


def run(prob: problem_lib.Problem, data: train_lib.Data, opts: EmergentOptions, *, run_dir=None,
        log=progress.to_stderr) -> EmergentResult:
    """The measurements of a built problem on validated data (what `emergent_geometry` calls)."""
    fm, r_x, dtype = prob.fm, prob.r_x, prob.dtype
    C, n_train, S = prob.num_classes, data.x_train.shape[0], opts.num_seeds
    if fm.state == "batch":
        raise OptionError("model_state", "per-example logit gradients need --model_state=frozen: with batch "
                          "statistics each example's logits depend on the whole batch")
    training = "training" in opts.parts
    steps = n_train // opts.batch_size
    spec = opts.train_spec(n_train, snapshot_every=opts.snapshot_every) if training else None
    if training and opts.snapshot_every > steps:
        raise OptionError("snapshot_every", f"{opts.snapshot_every} exceeds the {steps} steps of an epoch")
    if opts.n_hessian > n_train:
        raise OptionError("n_hessian", f"{opts.n_hessian} exceeds the {n_train} training examples")
    if (C * opts.gram_per_class) % opts.gram_chunk:
        raise OptionError("gram_chunk", f"must divide N = {C} classes x {opts.gram_per_class} = "
                          f"{C * opts.gram_per_class}")
    if opts.lanczos_order > fm.D:
        raise OptionError("lanczos_order", f"{opts.lanczos_order} exceeds the number of parameters D={fm.D}")
    density = opts.density_fields(fm.D)
    keys = seeds.SeedKeys.from_seed(opts.seed)
    k_gram, k_hess = jax.random.split(keys.k_data)
    try:
        gram_index = emergent.balanced_examples(k_gram, np.asarray(data.y_train),
                                                per_class=opts.gram_per_class, num_classes=C)
    except ValueError as err:
        raise OptionError("gram_per_class", str(err)) from None
    hess_index = seeds.pick_examples(k_hess, n_train, opts.n_hessian)
    x, y = data.x_train, data.y_train
    batch = (x[gram_index], y[gram_index], x[hess_index], y[hess_index])
    radii, log10_rel = opts.resolve(r_x, dtype)
    ck_index, ck_steps = checkpoint_plan(opts, steps) if training else (np.zeros(0, int), np.zeros(0, int))
    seed_mode = options.resolve_seed_mode(opts.seed_mode, "train")
    settings = {**options.settings(opts), "seed_mode": seed_mode, "model": prob.identity(),
                "data": {"train_examples": int(n_train), "test_examples": int(data.x_test.shape[0]),
                         "fingerprint": problem_lib.fingerprint(*data)}}
    derived = {**prob.describe(), "steps_per_epoch": steps, "checkpoint_steps": ck_steps, "radii": radii,
               "log10_r2_over_rx2": log10_rel, "gram_examples": gram_index, "hessian_examples": hess_index,
               "seed_mode": seed_mode, **({"density_order": density["density_order"]} if density else {})}
    store = stores.open_store(run_dir, experiment=EXPERIMENT, settings=settings, derived=derived,
                              axes=schema.emergent_geometry_axes(opts.parts, density=bool(density)))
    engine = engine_lib.Engine(store, label=EXPERIMENT, log=log)
    ck_units = [f"ckpt_{i:03d}" for i in range(ck_index.size)]
    radius_units = [f"radius_{ri:03d}" for ri in range(radii.size)]
    units = (["train"] if training else []) + ck_units + radius_units
    engine.plan([(u, 1.0) for u in units])
    if store.path:
        what = "resuming" if store.resumed else "new run"
        engine.say(f"{what}: {store.path}  ({len(store.done())}/{len(units)} units done)")
    engine.say(f"{derived['model']}: D = {fm.D}, r_X = {r_x:.4g}; {ck_index.size} checkpoints, {radii.size} "
               f"radii, {S} seeds; Gram of {C * opts.gram_per_class} examples x {C} logits, Hessian on "
               f"{opts.n_hessian} examples; seed mode {seed_mode}")

    k_init, k_train = keys.init_keys(S), keys.train_keys(S)
    k_lanczos = jax.vmap(lambda s: jax.random.fold_in(keys.k_proj, s))(jnp.arange(S))
    spec_point = measure.Spec(top_k=opts.top_k, order=opts.lanczos_order, logit_var=True,
                              gram=measure.Gram(num_classes=C, chunk=opts.gram_chunk),
                              full=fullspace.Spec(**density) if density else None)
    core = measure.make_measure_fn(fm, spec_point)
    point_fn = lambda k, th, xg, yg, xh, yh: core(k, th, None, xh, yh, xg, yg)  # noqa: E731
    measure_fn = jax.jit(seeds.map_seeds(point_fn, seed_mode))  # (keys [S], thetas [S, D], examples)

    def measured(thetas, record):
        out = jax.tree_util.tree_map(np.asarray, measure_fn(k_lanczos, jnp.asarray(thetas, dtype), *batch))
        out.pop("block_count")
        outliers = [emergent.count_outliers(e, min_ratio=opts.outlier_min_ratio) for e in out["top_eigs"]]
        return out, {**record, **{k: np.mean(out[k]) for k in schema.EMERGENT_SCALARS}, "outliers": outliers}

    def point_line(out, record):
        return (f"q_SLSC {record['q_slsc']:.3f}, q_DL {record['q_dl']:.3f}, outliers {record['outliers']}, "
                f"overlap(top {C}) {np.mean(out['overlap'][:, C - 1]):.3f}")

    if training:
        def trained():
            return _train(engine, prob, data, spec, opts, k_init, k_train, ck_index, seed_mode)

        train_unit = engine.unit("train", trained, weight=1.0,
                                 what=lambda a, r: f"test acc {np.mean(a['test_accuracy'][:, -1]):.4f}")
        for i, step in enumerate(ck_steps):
            record = {"checkpoint": i, "step": int(step)}
            engine.unit(ck_units[i], lambda i=i, record=record: measured(train_unit["thetas"][:, i], record),
                        weight=1.0, what=point_line)
    if radii.size:
        sample = prob.sample_fn(opts.sample_init)
        at_radius = lambda k, r: subspace.point_at_radius(  # noqa: E731
            k, r, convention=opts.convention, sample_fn=sample, D=fm.D, r_x=r_x, dtype=dtype)
        points = jax.jit(jax.vmap(at_radius, in_axes=(0, None)))
        for ri, radius in enumerate(radii):
            record = {"radius_index": ri, "radius": radius, "log10_r2_over_rx2": log10_rel[ri]}
            engine.unit(radius_units[ri], lambda r=radius, record=record: measured(
                points(k_init, jnp.asarray(r, dtype)), record), weight=1.0, what=point_line)

    arrays = assemble(engine, opts, ck_units, radius_units, ck_steps, radii, log10_rel)
    analysis = records.to_jsonable(analyse(arrays, opts, C, D=fm.D))
    store.write_json("analysis.json", analysis)
    store.finish(arrays)
    return EmergentResult(store, arrays, analysis=analysis)


def _train(engine: engine_lib.Engine, prob: problem_lib.Problem, data: train_lib.Data,
           spec: train_lib.TrainSpec, opts: EmergentOptions, k_init, k_train, ck_index: np.ndarray,
           seed_mode: str) -> tuple[dict, dict]:
    """The training unit: S full-space runs from init samples (keys k_init [S], batch orders k_train [S]),
    snapshots kept in the scan; the thetas [S, checkpoint, D] at `ck_index` and the training curves."""
    trainer = train_lib.make_trainer(prob.fm, spec)
    theta0 = jax.jit(jax.vmap(prob.sample_fn(opts.init)))(k_init)
    run_one = lambda st, k, e0, d, n: trainer.run(st, k, d, None, e0, n)  # noqa: E731
    run_seeds = jax.jit(seeds.map_seeds(run_one, seed_mode), static_argnums=4)
    _, hist = engine.fit("train", lambda st, e0, n: run_seeds(st, k_train, e0, data, n),
                         jax.jit(jax.vmap(trainer.init))(theta0), epochs=opts.epochs,
                         epochs_per_call=opts.epochs_per_call)
    S = k_init.shape[0]
    snaps = np.concatenate([np.asarray(theta0)[:, None], hist["snapshots"].reshape(S, -1, prob.fm.D)], axis=1)
    out = {"thetas": snaps[:, ck_index], "train_loss": hist["loss"], "train_accuracy": hist["accuracy"],
           "test_loss": hist["test_loss"], "test_accuracy": hist["test_accuracy"],
           "radius_curve": hist["radius"], "curve_step": hist["step"][0]}
    return out, {"final_test_accuracy": out["test_accuracy"][:, -1]}


def _missing():
    raise RuntimeError("a unit of the emergent-geometry run is missing at assembly")


def assemble(engine: engine_lib.Engine, opts: EmergentOptions, ck_units, radius_units, ck_steps, radii,
             log10_rel) -> dict:
    """The units stacked into the schema's arrays, with the outlier counts by both rules."""
    arrays = {}
    for part, units in (("train", ck_units), ("radius", radius_units)):
        if not units:
            continue
        loaded = [engine.unit(u, _missing) for u in units]
        for key in loaded[0]:
            arrays[f"{part}_{key}"] = np.stack([u[key] for u in loaded])
        for suffix, rule in (("", "last"), ("_largest", "largest")):
            arrays[f"{part}_outliers{suffix}"] = np.asarray(
                [[emergent.count_outliers(e, min_ratio=opts.outlier_min_ratio, rule=rule) for e in row]
                 for row in arrays[f"{part}_top_eigs"]], np.int32)
    if "training" in opts.parts:
        unit = engine.unit("train", _missing)
        curves = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
        arrays.update(checkpoint_step=np.asarray(ck_steps), curve_step=unit["curve_step"],
                      radius_curve=unit["radius_curve"], **{f"{k}_curve": unit[k] for k in curves})
    if "radius" in opts.parts:
        arrays.update(radii=np.asarray(radii), log10_r2_over_rx2=np.asarray(log10_rel))
    return arrays


def analyse(arrays: dict, opts: EmergentOptions, C: int, *, D: int) -> dict:
    """Per point: means over seeds, the outlier counts per seed, the gradient overlap with the top C; with the
    density, its `analysis.spectral_density.summary` per seed (``density``)."""
    out = {"num_classes": C, "outlier_min_ratio": opts.outlier_min_ratio, "train": [], "radius": []}
    for part, label, values in (("train", "step", arrays.get("checkpoint_step", [])),
                                ("radius", "log10_r2_over_rx2", arrays.get("log10_r2_over_rx2", []))):
        density = None
        if f"{part}_density_nodes" in arrays:
            nodes, weights = arrays[f"{part}_density_nodes"], arrays[f"{part}_density_weights"]
            density = spectral_density.summary(nodes, weights, D=D, k=spectral_density.edge_rank(C))
        for i, value in enumerate(values):
            out[part].append({
                label: value,
                **{k: float(np.mean(arrays[f"{part}_{k}"][i])) for k in schema.EMERGENT_SCALARS},
                "outliers": arrays[f"{part}_outliers"][i].tolist(),
                "outliers_largest": arrays[f"{part}_outliers_largest"][i].tolist(),
                "top_eigs": np.mean(arrays[f"{part}_top_eigs"][i], axis=0).tolist(),
                "overlap_top_C": arrays[f"{part}_overlap"][i][:, C - 1].tolist(),
                **({"density": {k: v[i].tolist() for k, v in density.items()}} if density else {})})
    return out


def summary_table(analysis: dict) -> str:
    """Rows: checkpoints, then radii; columns: means over seeds, outliers per seed, l_1, overlap (top C)."""
    C = analysis["num_classes"]
    head = (f"{'point':>14} {'loss':>7} {'acc':>5} {'|theta|':>8} {'logit var':>9} {'q_SLSC':>7} {'q_SL':>7} "
            f"{'q_SLDC':>7} {'q_DL':>7} {'outliers':>9} {'l_1':>8} {f'ovl top{C}':>9}")
    lines = [head, "-" * len(head)]
    for part in ("train", "radius"):
        for name, row in zip(_names(analysis, part), analysis[part]):
            lines.append(f"{name:>14} {row['loss']:>7.3g} {row['accuracy']:>5.3f} {row['radius']:>8.4g} "
                         f"{row['logit_var']:>9.3g} {row['q_slsc']:>7.3f} {row['q_sl']:>7.3f} "
                         f"{row['q_sldc']:>7.3f} {row['q_dl']:>7.3f} "
                         f"{','.join(map(str, row['outliers'])):>9} {row['top_eigs'][0]:>8.3g} "
                         f"{np.mean(row['overlap_top_C']):>9.3f}")
    rows = [(n, row) for part, label in (("train", "step"), ("radius", "log10_r2_over_rx2"))
            for n, row in zip(_names(analysis, part), analysis[part]) if "density" in row]
    if rows:
        stats = {k: np.asarray([row["density"][k] for _, row in rows]) for k in spectral_density.SUMMARY_KEYS}
        lines.append(spectral_density.table([n for n, _ in rows], stats))
    return "\n".join(lines)


def _names(analysis: dict, part: str) -> list[str]:
    return [f"step {row['step']}" if part == "train" else f"r2/rX2 1e{row['log10_r2_over_rx2']:+.1f}"
            for row in analysis[part]]
