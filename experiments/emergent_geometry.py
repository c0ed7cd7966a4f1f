r"""Emergent properties of the local loss geometry (Fort & Ganguli 2019), along training and along radius.

Parts (--parts):
  training: one full-space run per seed from a --init sample, keeping theta every --snapshot_every steps
            (inside the training scan); the initialisation and --num_checkpoints of the snapshots
            (log-spaced in step, always the last; 0: all of them) are measured;
  radius:   points at radius r at initialisation (the radius scan's flags and --convention).
At every point, on fixed training examples (`emergent.make_measure_fn`): cosine similarities of the
per-example logit gradients grouped as q_SLSC / q_SL / q_SLDC / q_DL (C x --gram_per_class examples);
the top --top_k Hessian eigenvalues by Lanczos and the outliers above the bulk (`emergent.count_outliers`);
the fraction of |g|^2 inside the top-j Hessian subspace; the logit variance across classes and |theta|
(on --n_hessian examples).

    python -m experiments.emergent_geometry --flagfile=experiments/flagfiles/mnist_emergent_cpu.flags \
        --data_dir=/path/to/npz

Records: <workdir>/emergent_geometry/<name>/: units train (epoch checkpoints inside; the measured thetas),
ckpt_<i> and radius_<i> (all seeds); arrays.npz (train_<key> [checkpoint, seed, ...], radius_<key>
[radius, seed, ...], training curves); analysis.json (outlier counts by both rules, means); figures.
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
from gzone.runs import schema

EXPERIMENT = "emergent_geometry"
FLAGS = flags.FLAGS
PARTS = ("training", "radius")

cli.define_data_flags()
cli.define_model_flags()
cli.define_radius_flags()
cli.define_precision_flags()
cli.define_output_flags(EXPERIMENT)
cli.define_training_flags(epochs=2, batch_size=128, lr=1e-3)
cli.define_list("parts", list(PARTS), "What to measure: training (checkpoints of a run), radius (points at init).")
cli.define_enum("init", "xavier", ["xavier", "he", "isotropic"], "Initialisation of the training run (and of --convention=scaled_init).")
cli.define_enum("convention", "xavier_rescaled", ["xavier_rescaled", "isotropic", "scaled_init"], "How the point at radius r is drawn.")
cli.define_integer("num_seeds", 1, "Seeds: training runs (init and batch order), and points per radius.")
cli.define_integer("snapshot_every", 50, "Keep theta every this many steps within an epoch (the candidate checkpoints).")
cli.define_integer("num_checkpoints", 0, "Snapshots measured besides the init, log-spaced in step (0: all).")
cli.define_integer("gram_per_class", 10, "Examples per class for the logit-gradient Gram matrix (N = C x this).")
cli.define_integer("gram_chunk", 10, "Examples per Jacobian block of the Gram matrix (must divide N).")
cli.define_integer("n_hessian", 1000, "Fixed training examples for loss, gradient, Hessian and logits.")
cli.define_integer("top_k", 20, "Top Hessian eigenpairs by Lanczos (take more than the number of classes).")
cli.define_integer("lanczos_order", 60, "Lanczos steps (>= top_k).")
cli.define_float("outlier_min_ratio", 1.5, "A gap l_j / l_{j+1} >= this separates outliers from the bulk.")
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
    parts: tuple[str, ...]
    init: str
    convention: str
    radius_kind: str | None
    radius_values: tuple[float, ...]
    num_seeds: int
    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    record_every: int
    snapshot_every: int
    num_checkpoints: int
    gram_per_class: int
    gram_chunk: int
    n_hessian: int
    top_k: int
    lanczos_order: int
    outlier_min_ratio: float
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
    parts = tuple(dict.fromkeys(FLAGS.parts or []))
    if not parts or any(p not in PARTS for p in parts):
        raise cli.UsageError("parts", f"allowed: {', '.join(PARTS)} (comma-separated), got {','.join(FLAGS.parts or [])!r}")
    grid = {"kind": None, "values": ()}
    if "radius" in parts:
        grid = cli.radius_grid(FLAGS.log10_r2_over_rx2, FLAGS.radii)
    elif FLAGS.log10_r2_over_rx2 or FLAGS.radii:
        raise cli.UsageError("parts", "radius flags given but 'radius' is not in --parts")
    for name, low in (("num_seeds", 1), ("snapshot_every", 1), ("num_checkpoints", 0), ("gram_per_class", 2),
                      ("gram_chunk", 1), ("n_hessian", 1), ("top_k", 2)):
        if FLAGS[name].value < low:
            raise cli.UsageError(name, f"must be >= {low}, got {FLAGS[name].value}")
    if FLAGS.lanczos_order < FLAGS.top_k:
        raise cli.UsageError("lanczos_order", f"must be >= --top_k={FLAGS.top_k}, got {FLAGS.lanczos_order}")
    if not FLAGS.outlier_min_ratio > 1:
        raise cli.UsageError("outlier_min_ratio", f"must be > 1, got {FLAGS.outlier_min_ratio}")
    from gzone import seeds

    return Config(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, tfds_data_dir=FLAGS.tfds_data_dir, n_train=FLAGS.n_train,
        n_test=FLAGS.n_test, **{k if k != "kind" else "model": v for k, v in cli.model_spec_fields().items()},
        parts=parts, init=FLAGS.init, convention=FLAGS.convention, radius_kind=grid["kind"],
        radius_values=tuple(grid["values"]), num_seeds=FLAGS.num_seeds, optimizer=FLAGS.optimizer, lr=FLAGS.lr,
        batch_size=FLAGS.batch_size, epochs=FLAGS.epochs, record_every=FLAGS.record_every,
        snapshot_every=FLAGS.snapshot_every, num_checkpoints=FLAGS.num_checkpoints,
        gram_per_class=FLAGS.gram_per_class, gram_chunk=FLAGS.gram_chunk, n_hessian=FLAGS.n_hessian,
        top_k=FLAGS.top_k, lanczos_order=FLAGS.lanczos_order, outlier_min_ratio=FLAGS.outlier_min_ratio,
        epochs_per_call=FLAGS.epochs_per_call,
        seed_mode=seeds.default_seed_mode() if FLAGS.seed_mode == "auto" else FLAGS.seed_mode,
        dtype=FLAGS.dtype, seed=FLAGS.seed, workdir=FLAGS.workdir, name=FLAGS.name, overwrite=FLAGS.overwrite,
        plots=FLAGS.plots,
    )


def default_name(config: Config) -> str:
    digest = hashlib.sha1(json.dumps(config.settings(), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{config.dataset}_{config.model}{'-'.join(map(str, config.widths))}_{digest}"


def log_spaced(n: int, num: int) -> np.ndarray:
    """`num` distinct indices in 1..n, log-spaced, first 1 and last n (all of 1..n when num is 0 or >= n)."""
    if num == 0 or num >= n:
        return np.arange(1, n + 1)
    if num == 1:
        return np.asarray([n])
    idx = np.rint(np.geomspace(1, n, num)).astype(int)
    for i in range(1, num):  # strictly increasing, leaving room for the rest below n
        idx[i] = max(idx[i], idx[i - 1] + 1)
    for i in range(num - 1, -1, -1):
        idx[i] = min(idx[i], n - (num - 1 - i))
    return idx


def checkpoint_plan(config: Config, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices into [init, snapshot 1, ..., snapshot n], their global steps) of the measured checkpoints."""
    per_epoch = steps_per_epoch // config.snapshot_every
    in_epoch = (np.arange(per_epoch) + 1) * config.snapshot_every
    steps = np.concatenate([[0], (np.arange(config.epochs)[:, None] * steps_per_epoch + in_epoch).reshape(-1)])
    index = np.concatenate([[0], log_spaced(steps.size - 1, config.num_checkpoints)])
    return index, steps[index]


METRIC_AXES = {"top_eigs": ["eigen"], "overlap": ["eigen"], "block_mean": ["logit", "class", "logit2", "class2"]}


def run(config: Config, log=print) -> str:
    cli.enable_x64_if(config.dtype)
    import jax
    import jax.numpy as jnp

    from gzone import plots, seeds, subspace, train
    from gzone.analysis import emergent
    from gzone.runs import records

    problem = cli.Problem(
        dataset=config.dataset, data_dir=config.data_dir, tfds_data_dir=config.tfds_data_dir, n_train=config.n_train,
        n_test=config.n_test, model=config.model, widths=config.widths, activation=config.activation, dtype=config.dtype,
    )
    fm, r_x, dtype, ds = problem.fm, problem.r_x, problem.dtype, problem.dataset
    C, n_train, S = ds.num_classes, ds.x_train.shape[0], config.num_seeds
    training = "training" in config.parts
    steps = n_train // config.batch_size
    if training and config.batch_size > n_train:
        raise cli.UsageError("batch_size", f"{config.batch_size} exceeds the {n_train} training examples")
    if training and config.snapshot_every > steps:
        raise cli.UsageError("snapshot_every", f"{config.snapshot_every} exceeds the {steps} steps of an epoch")
    if config.n_hessian > n_train:
        raise cli.UsageError("n_hessian", f"{config.n_hessian} exceeds the {n_train} training examples")
    if (C * config.gram_per_class) % config.gram_chunk:
        raise cli.UsageError("gram_chunk", f"must divide N = {C} classes x {config.gram_per_class} = {C * config.gram_per_class}")
    if config.lanczos_order > fm.D:
        raise cli.UsageError("lanczos_order", f"{config.lanczos_order} exceeds the number of parameters D={fm.D}")
    keys = seeds.SeedKeys.from_seed(config.seed)
    k_gram, k_hess = jax.random.split(keys.k_data)
    try:
        gram_index = emergent.balanced_examples(k_gram, ds.y_train, per_class=config.gram_per_class, num_classes=C)
    except ValueError as err:
        raise cli.UsageError("gram_per_class", str(err)) from None
    hess_index = seeds.pick_examples(k_hess, n_train, config.n_hessian)
    x, y = problem.data.x_train, problem.data.y_train
    batch = (x[gram_index], y[gram_index], x[hess_index], y[hess_index])
    radii = r_x * 10.0 ** (np.asarray(config.radius_values) / 2.0) if config.radius_kind == "relative" else np.asarray(config.radius_values)
    log10_rel = 2.0 * np.log10(radii / r_x) if radii.size else radii
    ck_index, ck_steps = checkpoint_plan(config, steps) if training else (np.zeros(0, int), np.zeros(0, int))

    path = records.run_path(config.workdir, EXPERIMENT, config.name or default_name(config))
    resumed = records.open_run(
        path, experiment=EXPERIMENT, settings=config.settings(),
        derived={**problem.describe(), "steps_per_epoch": steps, "checkpoint_steps": ck_steps, "radii": radii,
                 "log10_r2_over_rx2": log10_rel, "gram_examples": gram_index, "hessian_examples": hess_index},
        axes=axes_of(config), flags_text=cli.flags_text(), overwrite=config.overwrite,
    )
    done = records.completed_units(path)
    units = (["train"] + [f"ckpt_{i:03d}" for i in range(ck_index.size)] if training else []) + [
        f"radius_{ri:03d}" for ri in range(radii.size)]
    log(f"{'resuming' if resumed else 'new run'}: {path}  ({len(done)}/{len(units)} units done)")
    log(f"{problem.spec.name} on {ds.name}: D = {fm.D}, r_X = {r_x:.4g}; {ck_index.size} checkpoints, {radii.size} radii, "
        f"{S} seeds; Gram of {C * config.gram_per_class} examples x {C} logits, Hessian on {config.n_hessian} examples")
    progress = cli.Progress(len(units), EXPERIMENT, done=len(done))

    k_init, k_train = keys.init_keys(S), keys.train_keys(S)
    k_lanczos = jax.vmap(lambda s: jax.random.fold_in(keys.k_proj, s))(jnp.arange(S))
    from gzone import measure as measure_lib
    from gzone.runs import schema

    spec = measure_lib.Spec(top_k=config.top_k, order=config.lanczos_order, logit_var=True,
                            gram=measure_lib.Gram(num_classes=C, chunk=config.gram_chunk))
    core = measure_lib.make_measure_fn(fm, spec)

    def point(k, th, xg, yg, xh, yh):
        out = core(k, th, None, xh, yh, xg, yg)
        out.pop("grad_radial")
        return out

    measure = jax.jit(seeds.map_seeds(point, config.seed_mode))

    def measured(unit, thetas, record):
        start = time.time()
        out = jax.tree_util.tree_map(np.asarray, measure(k_lanczos, jnp.asarray(thetas, dtype), *batch))
        out.pop("block_count")
        record = {**record, "seconds": time.time() - start, **{k: np.mean(out[k]) for k in schema.EMERGENT_SCALARS},
                  "outliers": [emergent.count_outliers(e, min_ratio=config.outlier_min_ratio) for e in out["top_eigs"]]}
        records.save_unit(path, unit, out, record)
        progress.step(f"{unit}: q_SLSC {record['q_slsc']:.3f}, q_DL {record['q_dl']:.3f}, outliers {record['outliers']}, "
                      f"overlap(top {C}) {np.mean(out['overlap'][:, C - 1]):.3f} ({record['seconds']:.0f}s)")

    if training and "train" not in done:
        start = time.time()
        tspec = train.spec_for(n_train, optimizer=config.optimizer, lr=config.lr, batch_size=config.batch_size,
                               record_every=config.record_every, snapshot_every=config.snapshot_every)
        trainer = train.make_trainer(fm, tspec)
        theta0 = jax.jit(jax.vmap(problem.sample_fn(config.init)))(k_init)
        run_seeds = jax.jit(seeds.map_seeds(lambda st, k, e0, data, n: trainer.run(st, k, data, None, e0, n), config.seed_mode),
                            static_argnums=4)
        run_fn = lambda st, e0, n: run_seeds(st, k_train, e0, problem.data, n)  # noqa: E731
        _, hist = cli.resumable_fit(path, "train", run_fn, jax.jit(jax.vmap(trainer.init))(theta0), epochs=config.epochs,
                                    epochs_per_call=config.epochs_per_call, log=log)
        snaps = np.concatenate([np.asarray(theta0)[:, None], hist["snapshots"].reshape(S, -1, fm.D)], axis=1)
        out = {"thetas": snaps[:, ck_index], "train_loss": hist["loss"], "train_accuracy": hist["accuracy"],
               "test_loss": hist["test_loss"], "test_accuracy": hist["test_accuracy"], "radius_curve": hist["radius"],
               "curve_step": hist["step"][0]}
        records.save_unit(path, "train", out, {"seconds": time.time() - start, "final_test_accuracy": out["test_accuracy"][:, -1]})
        records.drop_checkpoint(path, "train")
        progress.step(f"train: test acc {np.mean(out['test_accuracy'][:, -1]):.4f} ({time.time() - start:.0f}s)")
    if training:
        thetas = records.load_unit(path, "train")["thetas"]
        for i, step in enumerate(ck_steps):
            if f"ckpt_{i:03d}" not in done:
                measured(f"ckpt_{i:03d}", thetas[:, i], {"checkpoint": i, "step": int(step)})
    if radii.size:
        sample = problem.sample_fn("xavier" if config.convention == "xavier_rescaled" else config.init)
        point = jax.jit(jax.vmap(lambda k, r: subspace.point_at_radius(k, r, convention=config.convention, sample_fn=sample,
                                                                   D=fm.D, r_x=r_x, dtype=dtype), in_axes=(0, None)))
        for ri, radius in enumerate(radii):
            if f"radius_{ri:03d}" not in done:
                measured(f"radius_{ri:03d}", point(k_init, jnp.asarray(radius, dtype)),
                         {"radius_index": ri, "radius": radius, "log10_r2_over_rx2": log10_rel[ri]})

    arrays = assemble(path, config, ck_steps, radii, log10_rel)
    analysis = analyse(arrays, config, C)
    records.atomic_write_json(os.path.join(path, "analysis.json"), analysis)
    records.finish(path, arrays)
    log(summary_table(analysis))
    if config.plots:
        for figure in plots.draw(path):
            log(f"figure: {figure}")
    log(f"records: {path}")
    return path


def axes_of(config: Config) -> dict:

    axes = {}
    for part, point, wanted in (("train", "checkpoint", "training"), ("radius", "radius", "radius")):
        if wanted not in config.parts:
            continue
        for key in schema.EMERGENT_SCALARS + tuple(f"n_{g}" for g in schema.EMERGENT_GROUPS) + tuple(METRIC_AXES):
            axes[f"{part}_{key}"] = [point, "seed", *METRIC_AXES.get(key, [])]
        axes[f"{part}_outliers"] = [point, "seed"]
        axes[f"{part}_outliers_largest"] = [point, "seed"]
    if "training" in config.parts:
        axes.update(checkpoint_step=["checkpoint"], curve_step=["epoch", "record"],
                    **{k: ["seed", "epoch", "record"] for k in ("train_loss_curve", "train_accuracy_curve", "radius_curve")},
                    **{k: ["seed", "epoch"] for k in ("test_loss_curve", "test_accuracy_curve")})
    if "radius" in config.parts:
        axes.update(radii=["radius"], log10_r2_over_rx2=["radius"])
    return axes


def assemble(path: str, config: Config, ck_steps, radii, log10_rel) -> dict:
    from gzone.analysis import emergent
    from gzone.runs import records

    arrays = {}
    for part, units in (("train", [f"ckpt_{i:03d}" for i in range(len(ck_steps))]),
                        ("radius", [f"radius_{ri:03d}" for ri in range(len(radii))])):
        if not units:
            continue
        loaded = [records.load_unit(path, u) for u in units]
        for key in loaded[0]:
            arrays[f"{part}_{key}"] = np.stack([u[key] for u in loaded])
        for suffix, rule in (("", "last"), ("_largest", "largest")):
            arrays[f"{part}_outliers{suffix}"] = np.asarray(
                [[emergent.count_outliers(e, min_ratio=config.outlier_min_ratio, rule=rule) for e in row]
                 for row in arrays[f"{part}_top_eigs"]], np.int32)
    if "training" in config.parts:
        unit = records.load_unit(path, "train")
        arrays.update(checkpoint_step=np.asarray(ck_steps), curve_step=unit["curve_step"], radius_curve=unit["radius_curve"],
                      **{f"{k}_curve": unit[k] for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")})
    if "radius" in config.parts:
        arrays.update(radii=np.asarray(radii), log10_r2_over_rx2=np.asarray(log10_rel))
    return arrays


def analyse(arrays: dict, config: Config, C: int) -> dict:
    """Per point: means over seeds, the outlier counts per seed, the gradient overlap with the top C."""

    out = {"num_classes": C, "outlier_min_ratio": config.outlier_min_ratio, "train": [], "radius": []}
    for part, label, values in (("train", "step", arrays.get("checkpoint_step", [])),
                                ("radius", "log10_r2_over_rx2", arrays.get("log10_r2_over_rx2", []))):
        for i, value in enumerate(values):
            row = {label: value, **{k: float(np.mean(arrays[f"{part}_{k}"][i])) for k in schema.EMERGENT_SCALARS},
                   "outliers": arrays[f"{part}_outliers"][i].tolist(), "outliers_largest": arrays[f"{part}_outliers_largest"][i].tolist(),
                   "top_eigs": np.mean(arrays[f"{part}_top_eigs"][i], axis=0).tolist(),
                   "overlap_top_C": arrays[f"{part}_overlap"][i][:, C - 1].tolist()}
            out[part].append(row)
    return out


def summary_table(analysis: dict) -> str:
    C = analysis["num_classes"]
    head = (f"{'point':>14} {'loss':>7} {'acc':>5} {'|theta|':>8} {'logit var':>9} {'q_SLSC':>7} {'q_SL':>7} {'q_SLDC':>7} "
            f"{'q_DL':>7} {'outliers':>9} {'l_1':>8} {f'ovl top{C}':>9}")
    lines = [head, "-" * len(head)]
    for part, label in (("train", "step"), ("radius", "log10_r2_over_rx2")):
        for row in analysis[part]:
            name = f"step {row['step']}" if part == "train" else f"r2/rX2 1e{row[label]:+.1f}"
            lines.append(f"{name:>14} {row['loss']:>7.3g} {row['accuracy']:>5.3f} {row['radius']:>8.4g} {row['logit_var']:>9.3g} "
                         f"{row['q_slsc']:>7.3f} {row['q_sl']:>7.3f} {row['q_sldc']:>7.3f} {row['q_dl']:>7.3f} "
                         f"{','.join(map(str, row['outliers'])):>9} {row['top_eigs'][0]:>8.3g} {np.mean(row['overlap_top_C']):>9.3f}")
    return "\n".join(lines)


def main(argv):
    del argv
    run(config_from_flags(), log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    cli.run(main)
