r"""Radius dynamics: full-space training from initial radii r0, free or at fixed radius.

The poster's experiment (CIFAR-10, MLP 3072-200-200-10, Adam): from r0 < r_X the radius grows like
sqrt(t) and a good solution appears near r_X; from r0 > r_X the radius barely moves and training
fails; at fixed radius (radial part of the gradient removed, radius renormalised every step)
only r0 near r_X trains well.

    python -m experiments.radius_dynamics --flagfile=experiments/flagfiles/cifar10_chang_cpu.flags \
        --data_dir=/path/to/npz

Records r(t) every --record_every steps and test accuracy per epoch; fits, per r0 < r_X, the
exponent alpha of r(t)^2 - r0^2 ~ t^alpha, and compares with the random-walk model
<|r(t)|^2> = r0^2 + D sigma^2 t (sigma^2 from the measured update sizes). Resumes after a kill at
epoch granularity (--epochs_per_call).
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

EXPERIMENT = "radius_dynamics"
FLAGS = flags.FLAGS
RADIUS_MODES = ("free", "fixed")

cli.define_data_flags()
cli.define_model_flags()
cli.define_precision_flags()
cli.define_output_flags(EXPERIMENT)
cli.define_training_flags(epochs=2, batch_size=32, lr=1e-3)
cli.define_list("r0_over_rx", ["0.01", "0.1", "1", "10", "100"], "Initial radii r0 in units of r_X.")
cli.define_list("radius_modes", ["free", "fixed"], "free: ordinary training; fixed: |theta| held at r0.")
cli.define_enum("convention", "xavier_rescaled", ["xavier_rescaled", "isotropic", "scaled_init"], "How the initial point at r0 is drawn.")
cli.define_enum("init", "xavier", ["xavier", "he", "isotropic"], "Init sample used by --convention=scaled_init.")
cli.define_integer("num_seeds", 1, "Seeds (initial directions and batch orders) per (mode, r0).")
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
    convention: str
    init: str
    r0_over_rx: tuple[float, ...]
    radius_modes: tuple[str, ...]
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
    r0 = cli.float_list("r0_over_rx", FLAGS.r0_over_rx)
    if min(r0) <= 0:
        raise cli.UsageError("r0_over_rx", f"initial radii must be positive, got {','.join(FLAGS.r0_over_rx)}")
    if not FLAGS.radius_modes or any(m not in RADIUS_MODES for m in FLAGS.radius_modes):
        raise cli.UsageError("radius_modes", f"allowed: free, fixed (comma-separated), got {','.join(FLAGS.radius_modes or [])!r}")
    if FLAGS.num_seeds < 1:
        raise cli.UsageError("num_seeds", f"must be >= 1, got {FLAGS.num_seeds}")
    from gzone import seeds

    return Config(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, tfds_data_dir=FLAGS.tfds_data_dir,
        n_train=FLAGS.n_train, n_test=FLAGS.n_test,
        **{k if k != "kind" else "model": v for k, v in cli.model_spec_fields().items()},
        convention=FLAGS.convention, init=FLAGS.init, r0_over_rx=tuple(dict.fromkeys(r0)),
        radius_modes=tuple(dict.fromkeys(FLAGS.radius_modes)), num_seeds=FLAGS.num_seeds,
        optimizer=FLAGS.optimizer, lr=FLAGS.lr, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs,
        record_every=FLAGS.record_every, epochs_per_call=FLAGS.epochs_per_call,
        seed_mode=seeds.default_seed_mode() if FLAGS.seed_mode == "auto" else FLAGS.seed_mode,
        dtype=FLAGS.dtype, seed=FLAGS.seed, workdir=FLAGS.workdir, name=FLAGS.name,
        overwrite=FLAGS.overwrite, plots=FLAGS.plots,
    )


def default_name(config: Config) -> str:
    digest = hashlib.sha1(json.dumps(config.settings(), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{config.dataset}_{config.model}{'-'.join(map(str, config.widths))}_{digest}"


def unit_name(mode: str, i: int) -> str:
    return f"{mode}_r0{i:02d}"


KEYS = ("radius", "update_sq", "train_loss", "train_accuracy", "test_accuracy", "test_loss", "layer_norms")


def run(config: Config, log=print) -> str:
    cli.enable_x64_if(config.dtype)
    import jax
    import jax.numpy as jnp

    from gzone import plots, seeds, subspace, train
    from gzone.runs import records

    problem = cli.Problem(
        dataset=config.dataset, data_dir=config.data_dir, tfds_data_dir=config.tfds_data_dir, n_train=config.n_train,
        n_test=config.n_test, model=config.model, widths=config.widths, activation=config.activation, dtype=config.dtype,
    )
    fm, r_x, dtype = problem.fm, problem.r_x, problem.dtype
    n_train = problem.dataset.x_train.shape[0]
    if config.batch_size > n_train:
        raise cli.UsageError("batch_size", f"{config.batch_size} exceeds the {n_train} training examples")
    r0s = r_x * np.asarray(config.r0_over_rx)
    S = config.num_seeds
    path = records.run_path(config.workdir, EXPERIMENT, config.name or default_name(config))
    axes = {k: ["mode", "r0", "seed", "epoch", "record"] for k in ("radius", "update_sq", "train_loss", "train_accuracy")}
    axes.update(test_accuracy=["mode", "r0", "seed", "epoch"], test_loss=["mode", "r0", "seed", "epoch"],
                layer_norms=["mode", "r0", "seed", "epoch", "record", "layer"], step=["epoch", "record"],
                r0=["r0"], r0_over_rx=["r0"], modes=["mode"])
    resumed = records.open_run(
        path, experiment=EXPERIMENT, settings=config.settings(),
        derived={**problem.describe(), "r0": r0s, "mode_names": list(config.radius_modes)},
        axes=axes, flags_text=cli.flags_text(), overwrite=config.overwrite,
    )
    done = records.completed_units(path)
    units = [(m, i) for m in config.radius_modes for i in range(len(r0s))]
    log(f"{'resuming' if resumed else 'new run'}: {path}  ({len(done)}/{len(units)} units done)")
    spec = train.spec_for(n_train, optimizer=config.optimizer, lr=config.lr, batch_size=config.batch_size, record_every=config.record_every)
    log(f"{problem.spec.name} on {problem.dataset.name}: D = {fm.D}, r_X = {r_x:.4g}; r0/r_X in {list(config.r0_over_rx)}; "
        f"{config.epochs} epochs x {spec.steps_per_epoch} steps, {S} seeds")
    progress = cli.Progress(len(units), EXPERIMENT, done=len(done))

    keys = seeds.SeedKeys.from_seed(config.seed)
    k_init, k_train = keys.init_keys(S), keys.train_keys(S)
    sample = problem.sample_fn("xavier" if config.convention == "xavier_rescaled" else config.init)
    for mode in config.radius_modes:
        trainer = train.make_trainer(fm, dataclasses.replace(spec, fixed_radius=(mode == "fixed")))
        point = jax.jit(jax.vmap(lambda k, r: subspace.point_at_radius(
            k, r, convention=config.convention, sample_fn=sample, D=fm.D, r_x=r_x, dtype=dtype), in_axes=(0, None)))
        init = jax.jit(jax.vmap(trainer.init))
        seeds_fn = seeds.map_seeds(lambda st, k, e0, data, n: trainer.run(st, k, data, None, e0, n), config.seed_mode)
        run_seeds = jax.jit(seeds_fn, static_argnums=4)
        for i, r0 in enumerate(r0s):
            unit = unit_name(mode, i)
            if unit in done:
                continue
            start = time.time()
            state0 = init(point(k_init, jnp.asarray(r0, dtype)))
            run_fn = lambda st, e0, n: run_seeds(st, k_train, e0, problem.data, n)
            _, hist = cli.resumable_fit(path, unit, run_fn, state0, epochs=config.epochs, epochs_per_call=config.epochs_per_call, log=log)
            out = {"radius": hist["radius"], "update_sq": hist["update_sq"], "train_loss": hist["loss"],
                   "train_accuracy": hist["accuracy"], "test_accuracy": hist["test_accuracy"],
                   "test_loss": hist["test_loss"], "layer_norms": hist["layer_norms"], "step": hist["step"][0]}
            seconds = time.time() - start
            records.save_unit(path, unit, out, {
                "mode": mode, "r0_over_rx": config.r0_over_rx[i], "r0": r0, "seconds": seconds,
                "final_test_accuracy": out["test_accuracy"][:, -1], "final_radius": out["radius"][:, -1, -1],
            })
            records.drop_checkpoint(path, unit)
            progress.step(f"{mode} r0/r_X={config.r0_over_rx[i]:g}: radius {np.mean(out['radius'][:, -1, -1]) / r_x:.3g} r_X, "
                          f"test acc {np.mean(out['test_accuracy'][:, -1]):.3f} ({seconds:.0f}s)")

    arrays = {k: np.stack([np.stack([records.load_unit(path, unit_name(m, i))[k] for i in range(len(r0s))])
                           for m in config.radius_modes]) for k in KEYS}
    arrays["step"] = records.load_unit(path, unit_name(config.radius_modes[0], 0))["step"]
    arrays.update(r0=r0s, r0_over_rx=np.asarray(config.r0_over_rx), modes=np.arange(len(config.radius_modes)))
    analysis = analyse(arrays, config, r_x)
    records.atomic_write_json(os.path.join(path, "analysis.json"), analysis)
    records.finish(path, arrays)
    log(summary_table(analysis))
    if config.plots:
        for figure in plots.draw(path):
            log(f"figure: {figure}")
    log(f"records: {path}")
    return path


def analyse(arrays: dict, config: Config, r_x: float) -> dict:
    """Per (mode, r0): final radius and accuracy; for free runs below r_X the alpha fits."""
    from gzone.analysis import dynamics

    steps = arrays["step"].reshape(-1)
    rows = []
    for mi, mode in enumerate(config.radius_modes):
        for i, r0 in enumerate(arrays["r0"]):
            radius = arrays["radius"][mi, i].reshape(arrays["radius"].shape[2], -1)  # [S, T]
            upd = arrays["update_sq"][mi, i].reshape(radius.shape)
            acc = arrays["test_accuracy"][mi, i]
            row = {"mode": mode, "r0_over_rx": float(config.r0_over_rx[i]),
                   "final_radius_over_rx": float(np.mean(radius[:, -1]) / r_x),
                   "final_test_accuracy": float(np.mean(acc[:, -1])), "best_test_accuracy": float(np.mean(acc.max(axis=1))),
                   "final_test_accuracy_seeds": acc[:, -1].tolist()}
            if mode == "free" and r0 < r_x:
                growth = np.mean(radius**2, axis=0) - r0**2
                fit = dynamics.fit_power_law(steps, growth)
                per_seed = [dynamics.fit_power_law(steps, radius[s] ** 2 - r0**2).alpha for s in range(radius.shape[0])]
                mean, lo, hi = dynamics.mean_interval(per_seed)
                walk = dynamics.random_walk_r2(r0, steps, np.mean(upd, axis=0))
                row.update(alpha=fit.as_dict(), alpha_per_seed=per_seed, alpha_seed_mean=[mean, lo, hi],
                           D_sigma2=float(walk["D_sigma2"]),
                           rw_ratio_constant=float(growth[-1] / (walk["constant"][-1] - r0**2)),
                           rw_ratio_cumulative=float(growth[-1] / (walk["cumulative"][-1] - r0**2)))
            rows.append(row)
    return {"r_x": r_x, "rows": rows}


def summary_table(analysis: dict) -> str:
    head = f"{'mode':<6} {'r0/rX':>7} {'r_T/rX':>8} {'test acc':>8} {'best':>6} {'alpha [95% CI]':>22} {'meas/RW':>8}"
    lines = [head, "-" * len(head)]
    for row in analysis["rows"]:
        alpha, ratio = "", ""
        if "alpha" in row:
            a = row["alpha"]
            alpha = f"{a['alpha']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]"
            ratio = f"{row['rw_ratio_constant']:.3g}"
        lines.append(f"{row['mode']:<6} {row['r0_over_rx']:>7g} {row['final_radius_over_rx']:>8.3g} {row['final_test_accuracy']:>8.3f} "
                     f"{row['best_test_accuracy']:>6.3f} {alpha:>22} {ratio:>8}")
    return "\n".join(lines)


def main(argv):
    del argv
    run(config_from_flags(), log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    cli.run(main)
