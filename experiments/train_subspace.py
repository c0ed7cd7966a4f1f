r"""Training confined to random hyperplanes / hyperspheres through points at radius r.

Fort & Scherlis (2019): hyperplanes through points at radius r train well for r up to about r_X;
hyperspheres (|theta| = r fixed) only near r_X. For each mode, d, radius and seed: a point a at
radius r (same conventions and radius flags as the radius scan), a random d-dimensional
subspace, and a training run of z in R^d (theta = a + P z, or its normalised hypersphere form).

    python -m experiments.train_subspace --flagfile=experiments/flagfiles/mnist_subspace.flags \
        --data_dir=/path/to/npz

Records: <workdir>/train_subspace/<name>/ (a unit per (mode, d, radius) with all seeds; epoch
checkpoints inside a unit), arrays.npz with axes [mode, d, radius, seed(, epoch(, record))],
figure subspace_training.png.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time

import numpy as np
from absl import flags

from experiments import cli

EXPERIMENT = "train_subspace"
FLAGS = flags.FLAGS

cli.define_data_flags()
cli.define_model_flags()
cli.define_radius_flags()
cli.define_precision_flags()
cli.define_output_flags(EXPERIMENT)
cli.define_training_flags(epochs=3, batch_size=128, lr=1e-2)
cli.define_list("modes", ["hyperplane", "hypersphere"], "Subspace kinds to train in: hyperplane, hypersphere.")
cli.define_list("dims", ["10", "100"], "Subspace dimensions d.")
cli.define_enum("convention", "xavier_rescaled", ["xavier_rescaled", "isotropic", "scaled_init"], "How the point at radius r is drawn.")
cli.define_enum("init", "xavier", ["xavier", "he", "isotropic"], "Init sample used by --convention=scaled_init.")
cli.define_integer("num_seeds", 2, "Seeds (independent points, subspaces and batch orders) per unit.")
cli.define_enum("projection", "sparse", ["sparse", "sparse_fixed", "dense", "fastfood"], "Random subspace kind.")
cli.define_bool("plots", True, "Draw the figure at the end.")

MODES = ("hyperplane", "hypersphere")


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
    convention: str
    init: str
    radius_kind: str
    radius_values: tuple[float, ...]
    modes: tuple[str, ...]
    dims: tuple[int, ...]
    num_seeds: int
    projection: str
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
    grid = cli.radius_grid(FLAGS.log10_r2_over_rx2, FLAGS.radii)
    dims = cli.int_list("dims", FLAGS.dims, minimum=1)
    if not FLAGS.modes or any(m not in MODES for m in FLAGS.modes):
        raise cli.UsageError("modes", f"allowed: {', '.join(MODES)} (comma-separated), got {','.join(FLAGS.modes or [])!r}")
    if FLAGS.num_seeds < 1:
        raise cli.UsageError("num_seeds", f"must be >= 1, got {FLAGS.num_seeds}")
    from gzone import seeds

    return Config(
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        tfds_data_dir=FLAGS.tfds_data_dir,
        n_train=FLAGS.n_train,
        n_test=FLAGS.n_test,
        **{k if k != "kind" else "model": v for k, v in cli.model_spec_fields().items()},
        convention=FLAGS.convention,
        init=FLAGS.init,
        radius_kind=grid["kind"],
        radius_values=grid["values"],
        modes=tuple(dict.fromkeys(FLAGS.modes)),
        dims=tuple(dict.fromkeys(dims)),
        num_seeds=FLAGS.num_seeds,
        projection=FLAGS.projection,
        optimizer=FLAGS.optimizer,
        lr=FLAGS.lr,
        batch_size=FLAGS.batch_size,
        epochs=FLAGS.epochs,
        record_every=FLAGS.record_every,
        epochs_per_call=FLAGS.epochs_per_call,
        seed_mode=seeds.default_seed_mode() if FLAGS.seed_mode == "auto" else FLAGS.seed_mode,
        dtype=FLAGS.dtype,
        seed=FLAGS.seed,
        workdir=FLAGS.workdir,
        name=FLAGS.name,
        overwrite=FLAGS.overwrite,
        plots=FLAGS.plots,
    )


def default_name(config: Config) -> str:
    digest = hashlib.sha1(json.dumps(config.settings(), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{config.dataset}_{config.model}{'-'.join(map(str, config.widths))}_{digest}"


def unit_name(mode: str, d: int, ri: int) -> str:
    return f"{mode}_d{d}_r{ri:03d}"


def run(config: Config, log=print) -> str:
    cli.enable_x64_if(config.dtype)
    import jax
    import jax.numpy as jnp

    from gzone import plots, projections, seeds, subspace, train
    from gzone.runs import records

    problem = cli.Problem(
        dataset=config.dataset, data_dir=config.data_dir, tfds_data_dir=config.tfds_data_dir, n_train=config.n_train,
        n_test=config.n_test, model=config.model, widths=config.widths, activation=config.activation, dtype=config.dtype,
    )
    fm, r_x, dtype = problem.fm, problem.r_x, problem.dtype
    too_big = [d for d in config.dims if d > fm.D]
    if too_big:
        raise cli.UsageError("dims", f"d={too_big[0]} exceeds the number of parameters D={fm.D}")
    n_train = problem.dataset.x_train.shape[0]
    if config.batch_size > n_train:
        raise cli.UsageError("batch_size", f"{config.batch_size} exceeds the {n_train} training examples")
    if config.radius_kind == "relative":
        log10_rel = np.asarray(config.radius_values)
        radii = r_x * 10.0 ** (log10_rel / 2.0)
    else:
        radii = np.asarray(config.radius_values)
        log10_rel = 2.0 * np.log10(radii / r_x)

    path = records.run_path(config.workdir, EXPERIMENT, config.name or default_name(config))
    S = config.num_seeds
    axes = {
        "final_test_accuracy": ["mode", "d", "radius", "seed"],
        "best_test_accuracy": ["mode", "d", "radius", "seed"],
        "final_train_loss": ["mode", "d", "radius", "seed"],
        "test_accuracy": ["mode", "d", "radius", "seed", "epoch"],
        "test_loss": ["mode", "d", "radius", "seed", "epoch"],
        "train_loss": ["mode", "d", "radius", "seed", "epoch", "record"],
        "train_accuracy": ["mode", "d", "radius", "seed", "epoch", "record"],
        "radius_curve": ["mode", "d", "radius", "seed", "epoch", "record"],
        "step": ["epoch", "record"],
        "radii": ["radius"], "log10_r2_over_rx2": ["radius"], "dims": ["d"], "modes": ["mode"],
    }
    resumed = records.open_run(
        path, experiment=EXPERIMENT, settings=config.settings(),
        derived={**problem.describe(), "radii": radii, "log10_r2_over_rx2": log10_rel, "mode_names": list(config.modes)},
        axes=axes, flags_text=cli.flags_text(), overwrite=config.overwrite,
    )
    done = records.completed_units(path)
    units = [(m, d, ri) for m in config.modes for d in config.dims for ri in range(len(radii))]
    log(f"{'resuming' if resumed else 'new run'}: {path}  ({len(done)}/{len(units)} units done)")
    log(f"{problem.spec.name} on {problem.dataset.name}: D = {fm.D}, r_X = {r_x:.4g}; modes {list(config.modes)}, d in {list(config.dims)}, {len(radii)} radii, {S} seeds, {config.epochs} epochs")
    progress = cli.Progress(len(units), EXPERIMENT, done=len(done))

    keys = seeds.SeedKeys.from_seed(config.seed)
    k_init, k_train = keys.init_keys(S), keys.train_keys(S)
    sample_init = "xavier" if config.convention == "xavier_rescaled" else config.init
    sample = problem.sample_fn(sample_init)
    spec = train.spec_for(n_train, optimizer=config.optimizer, lr=config.lr, batch_size=config.batch_size,
                          record_every=config.record_every, mode="hyperplane")
    builders = {}
    for mode in config.modes:
        trainer = train.make_trainer(fm, dataclasses.replace(spec, mode=mode))
        for d in config.dims:
            pending = [ri for ri in range(len(radii)) if unit_name(mode, d, ri) not in done]
            if not pending:
                continue
            k_proj = keys.proj_keys(d, S)

            if d not in builders:  # the space builder does not depend on the mode: compile once per d

                def make_space(k_a, k_p, radius, d=d):
                    a = subspace.point_at_radius(k_a, radius, convention=config.convention, sample_fn=sample, D=fm.D, r_x=r_x, dtype=dtype)
                    return train.Space(a, projections.make(config.projection, k_p, D=fm.D, d=d, dtype=dtype))

                builders[d] = jax.jit(seeds.map_seeds(make_space, "vmap"))
            build = builders[d]
            init = jax.jit(jax.vmap(trainer.init))
            one_seed = lambda st, k, sp, e0, data, n: trainer.run(st, k, data, sp, e0, n)
            seeds_fn = seeds.map_seeds(one_seed, config.seed_mode, per_seed=3)
            run_seeds = jax.jit(seeds_fn, static_argnums=5)
            for ri in pending:
                unit = unit_name(mode, d, ri)
                start = time.time()
                spaces = build(k_init, k_proj, jnp.asarray(radii[ri], dtype))
                state0 = init(jnp.zeros((S, d), dtype), spaces)
                run_fn = lambda st, e0, n: run_seeds(st, k_train, spaces, e0, problem.data, n)
                state, hist = cli.resumable_fit(path, unit, run_fn, state0, epochs=config.epochs, epochs_per_call=config.epochs_per_call, log=log)
                out = {
                    "final_test_accuracy": hist["test_accuracy"][:, -1],
                    "best_test_accuracy": hist["test_accuracy"].max(axis=1),
                    "final_train_loss": hist["loss"][:, -1, -1],
                    "test_accuracy": hist["test_accuracy"],
                    "test_loss": hist["test_loss"],
                    "train_loss": hist["loss"],
                    "train_accuracy": hist["accuracy"],
                    "radius_curve": hist["radius"],
                    "step": hist["step"][0],
                }
                seconds = time.time() - start
                records.save_unit(path, unit, out, {
                    "mode": mode, "d": d, "radius_index": ri, "radius": radii[ri], "log10_r2_over_rx2": log10_rel[ri],
                    "seconds": seconds, "final_test_accuracy": out["final_test_accuracy"],
                })
                records.drop_checkpoint(path, unit)
                progress.step(f"{mode} d={d} log10(r^2/r_X^2)={log10_rel[ri]:+.2f}: test acc {np.mean(out['final_test_accuracy']):.3f} ({seconds:.1f}s)")

    arrays = {}
    for key in ("final_test_accuracy", "best_test_accuracy", "final_train_loss", "test_accuracy", "test_loss", "train_loss", "train_accuracy", "radius_curve"):
        arrays[key] = np.stack([
            np.stack([np.stack([records.load_unit(path, unit_name(m, d, ri))[key] for ri in range(len(radii))]) for d in config.dims])
            for m in config.modes
        ])
    arrays["step"] = records.load_unit(path, unit_name(config.modes[0], config.dims[0], 0))["step"]
    arrays.update(radii=radii, log10_r2_over_rx2=log10_rel, dims=np.asarray(config.dims), modes=np.arange(len(config.modes)))
    records.finish(path, arrays)
    log(summary_table(arrays, config))
    if config.plots:
        for figure in plots.draw(path):
            log(f"figure: {figure}")
    log(f"records: {path}")
    return path


def summary_table(arrays, config: Config) -> str:
    head = f"{'mode':<12} {'d':>6} " + " ".join(f"{x:>+7.2f}" for x in arrays["log10_r2_over_rx2"])
    lines = ["final test accuracy (mean over seeds); columns: log10(r^2/r_X^2)", head, "-" * len(head)]
    for mi, mode in enumerate(config.modes):
        for di, d in enumerate(config.dims):
            accs = arrays["final_test_accuracy"][mi, di].mean(axis=-1)
            lines.append(f"{mode:<12} {d:>6} " + " ".join(f"{a:>7.3f}" for a in accs))
    return "\n".join(lines)


def main(argv):
    del argv
    run(config_from_flags(), log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    cli.run(main)
