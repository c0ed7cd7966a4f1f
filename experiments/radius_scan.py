r"""The Goldilocks radius scan (Fort & Scherlis 2019).

For each radius r, subspace dimension d and seed: a point theta with |theta| = r, a random
d-dimensional hyperplane through it, and at theta the loss, accuracy, gradient (norm and radial
part) and the EXACT d x d Hessian of the loss restricted to the hyperplane, on a fixed set of
training examples: its eigenvalues, fraction positive and Tr(H)/||H||_F.

    python -m experiments.radius_scan --flagfile=experiments/flagfiles/quick.flags

Records go to <workdir>/radius_scan/<name>/ (config.json, flags.txt, metrics.jsonl with a line
per completed (radius, d) unit, arrays.npz with axes [radius, d, seed], figures). Run the same
command again after an interruption to resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
from absl import flags

from experiments import cli

EXPERIMENT = "radius_scan"
FLAGS = flags.FLAGS

cli.define_data_flags()
cli.define_model_flags()
cli.define_radius_flags()
cli.define_precision_flags()
cli.define_output_flags(EXPERIMENT)
cli.define_enum("convention", "xavier_rescaled", ["xavier_rescaled", "isotropic", "scaled_init"], "How the point at radius r is drawn.")
cli.define_enum("init", "xavier", ["xavier", "he", "isotropic"], "Init sample used by --convention=scaled_init.")
cli.define_list("dims", ["10", "50"], "Subspace dimensions d.")
cli.define_integer("num_seeds", 3, "Seeds S per (radius, d): independent points and subspaces.")
cli.define_integer("n_hessian", 1000, "Number of fixed training examples for loss, gradient and Hessian.")
cli.define_enum("projection", "sparse", ["sparse", "sparse_fixed", "dense", "fastfood"], "Random subspace kind.")
cli.define_enum("seed_mode", "auto", ["auto", "vmap", "map"], "Seeds as vmap or lax.map (auto: map on CPU, vmap on GPU/TPU).")
cli.define_bool("shard_seeds", True, "Shard the seed axis over all local devices when there are several.")
cli.define_enum("hessian_method", "linearize_map", ["linearize_map", "vmap", "hessian"], "Exact subspace Hessian strategy.")
cli.define_integer("chunk_size", 0, "Columns per chunk of the linearize_map Hessian (0: measured default per projection).")
cli.define_bool("plots", True, "Draw the figures at the end.")


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str
    data_dir: str | None
    tfds_data_dir: str | None
    n_train: int | None
    model: str
    widths: tuple[int, ...]
    activation: str
    convention: str
    init: str
    radius_kind: str
    radius_values: tuple[float, ...]
    dims: tuple[int, ...]
    num_seeds: int
    n_hessian: int
    projection: str
    dtype: str
    seed: int
    seed_mode: str
    shard_seeds: bool
    hessian_method: str
    chunk_size: int | None
    workdir: str
    name: str | None
    overwrite: bool
    plots: bool

    def settings(self) -> dict:
        """What must match for a resume (not where the run lives)."""
        out = dataclasses.asdict(self)
        for key in ("workdir", "name", "overwrite", "plots", "data_dir", "tfds_data_dir"):
            out.pop(key)
        return out


def config_from_flags() -> Config:
    grid = cli.radius_grid(FLAGS.log10_r2_over_rx2, FLAGS.radii)
    dims = cli.int_list("dims", FLAGS.dims, minimum=1)
    if len(set(dims)) != len(dims):
        raise cli.UsageError("dims", f"repeated values in {','.join(FLAGS.dims)}")
    if FLAGS.num_seeds < 1:
        raise cli.UsageError("num_seeds", f"must be >= 1, got {FLAGS.num_seeds}")
    if FLAGS.n_hessian < 1:
        raise cli.UsageError("n_hessian", f"must be >= 1, got {FLAGS.n_hessian}")
    if FLAGS.chunk_size < 0:
        raise cli.UsageError("chunk_size", f"must be >= 0, got {FLAGS.chunk_size}")
    if FLAGS.n_train is not None and FLAGS.n_train < 1:
        raise cli.UsageError("n_train", f"must be >= 1, got {FLAGS.n_train}")
    from gzone import scan

    seed_mode = scan.default_seed_mode() if FLAGS.seed_mode == "auto" else FLAGS.seed_mode
    return Config(
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        tfds_data_dir=FLAGS.tfds_data_dir,
        n_train=FLAGS.n_train,
        **{k if k != "kind" else "model": v for k, v in cli.model_spec_fields().items()},
        convention=FLAGS.convention,
        init=FLAGS.init,
        radius_kind=grid["kind"],
        radius_values=grid["values"],
        dims=dims,
        num_seeds=FLAGS.num_seeds,
        n_hessian=FLAGS.n_hessian,
        projection=FLAGS.projection,
        dtype=FLAGS.dtype,
        seed=FLAGS.seed,
        seed_mode=seed_mode,
        shard_seeds=FLAGS.shard_seeds,
        hessian_method=FLAGS.hessian_method,
        chunk_size=FLAGS.chunk_size or None,
        workdir=FLAGS.workdir,
        name=FLAGS.name,
        overwrite=FLAGS.overwrite,
        plots=FLAGS.plots,
    )


def default_name(config: Config) -> str:
    digest = hashlib.sha1(json.dumps(config.settings(), sort_keys=True, default=str).encode()).hexdigest()[:8]
    widths = "-".join(str(w) for w in config.widths) or "linear"
    return f"{config.dataset}_{config.model}{widths}_{config.activation}_{digest}"


def run(config: Config, log=print) -> str:
    """Runs (or resumes) a scan; returns the run folder."""
    cli.enable_x64_if(config.dtype)
    import jax
    import jax.numpy as jnp

    from gzone import flat, models, plots, records, scan

    dataset = cli.load_data(config.dataset, config.data_dir, config.tfds_data_dir, config.n_train, None)
    spec = models.ModelSpec(config.model, config.widths, config.activation)
    module = models.build(spec, dataset.num_classes)
    dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
    fm = flat.flat_model(module, dataset.input_shape, dtype)
    r_x = models.xavier_radius(module, dataset.input_shape)
    too_big = [d for d in config.dims if d > fm.D]
    if too_big:
        raise cli.UsageError("dims", f"d={too_big[0]} exceeds the number of parameters D={fm.D} of {spec.name}")
    if config.n_hessian > dataset.x_train.shape[0]:
        raise cli.UsageError("n_hessian", f"{config.n_hessian} exceeds the {dataset.x_train.shape[0]} training examples")
    if config.radius_kind == "relative":
        log10_rel = np.asarray(config.radius_values)
        radii = r_x * 10.0 ** (log10_rel / 2.0)
    else:
        radii = np.asarray(config.radius_values)
        log10_rel = 2.0 * np.log10(radii / r_x)

    keys = scan.SeedKeys.from_seed(config.seed)
    index = scan.pick_examples(keys.k_data, dataset.x_train.shape[0], config.n_hessian)
    x = jnp.asarray(dataset.x_train[index], dtype)
    y = jnp.asarray(dataset.y_train[index])
    sample_init = "xavier" if config.convention == "xavier_rescaled" else config.init
    sample = flat.sample_fn(module, dataset.input_shape, sample_init, dtype)
    devices = jax.devices() if config.shard_seeds and len(jax.devices()) > 1 else None

    path = records.run_path(config.workdir, EXPERIMENT, config.name or default_name(config))
    axes = {k: ["radius", "d", "seed"] for k in scan.SCALAR_METRICS}
    axes.update({f"eigvals_d{d}": ["radius", "seed", "eigenvalue"] for d in config.dims})
    axes.update(radii=["radius"], log10_r2_over_rx2=["radius"], dims=["d"], hessian_examples=["example"])
    derived = {
        "D": fm.D,
        "r_x": r_x,
        "radii": radii,
        "log10_r2_over_rx2": log10_rel,
        "model": spec.name,
        "dataset": dataset.describe(),
        "seed_mode": config.seed_mode,
        "chunk_size": config.chunk_size,
        "devices_used": len(devices) if devices else 1,
        "layers": [{"name": s.name, "size": s.size} for s in fm.segments],
    }
    resumed = records.open_run(
        path,
        experiment=EXPERIMENT,
        settings=config.settings(),
        derived=derived,
        axes=axes,
        flags_text=cli.flags_text(),
        overwrite=config.overwrite,
    )
    done = records.completed_units(path)
    units = [(di, ri) for di in range(len(config.dims)) for ri in range(len(radii))]
    log(f"{'resuming' if resumed else 'new run'}: {path}  ({len(done)}/{len(units)} units done)")
    log(f"{spec.name} on {dataset.name}: D = {fm.D}, r_X = {r_x:.4g}; {len(radii)} radii x d in {list(config.dims)} x {config.num_seeds} seeds; seed mode {config.seed_mode}")
    progress = cli.Progress(len(units), EXPERIMENT, done=len(done))
    k_init = keys.init_keys(config.num_seeds)
    for di, d in enumerate(config.dims):
        pending = [ri for ri in range(len(radii)) if unit_name(ri, d) not in done]
        if not pending:
            continue
        point_fn = scan.make_point_fn(
            fm,
            d=d,
            projection=config.projection,
            convention=config.convention,
            sample_fn=sample,
            r_x=r_x,
            dtype=dtype,
            hessian_method=config.hessian_method,
            chunk_size=config.chunk_size,
        )
        unit_fn = scan.make_unit_fn(point_fn, seed_mode=config.seed_mode, devices=devices)
        k_proj = keys.proj_keys(d, config.num_seeds)
        for ri in pending:
            start = time.time()
            out = unit_fn(k_init, k_proj, jnp.asarray(radii[ri], dtype), x, y)
            out = jax.tree_util.tree_map(np.asarray, jax.block_until_ready(out))
            seconds = time.time() - start
            summary = {k: float(np.nanmean(out[k])) if np.isfinite(out[k]).any() else None for k in scan.SCALAR_METRICS}
            records.save_unit(
                path,
                unit_name(ri, d),
                out,
                {"radius_index": ri, "radius": radii[ri], "log10_r2_over_rx2": log10_rel[ri], "d": d, "seconds": seconds, "mean": summary},
            )
            progress.step(f"d={d} log10(r^2/r_X^2)={log10_rel[ri]:+.2f}: frac+ {_fmt(summary['frac_pos'])}, Tr/||H|| {_fmt(summary['trace_over_frob'])} ({seconds:.1f}s)")

    arrays = assemble(path, config, radii, log10_rel)
    arrays["hessian_examples"] = index
    records.finish(path, arrays)
    log(summary_table(arrays, config.dims))
    if config.plots:
        for figure in plots.draw(path):
            log(f"figure: {figure}")
    log(f"records: {path}")
    return path


def unit_name(ri: int, d: int) -> str:
    return f"r{ri:03d}_d{d}"


def assemble(path, config: Config, radii, log10_rel) -> dict:
    from gzone import records, scan

    arrays = {}
    for k in scan.SCALAR_METRICS:
        arrays[k] = np.stack(
            [np.stack([records.load_unit(path, unit_name(ri, d))[k] for d in config.dims]) for ri in range(len(radii))]
        )
    for d in config.dims:
        arrays[f"eigvals_d{d}"] = np.stack([records.load_unit(path, unit_name(ri, d))["eigvals"] for ri in range(len(radii))])
    arrays.update(radii=np.asarray(radii), log10_r2_over_rx2=np.asarray(log10_rel), dims=np.asarray(config.dims))
    return arrays


def _fmt(value) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.3f}"


def summary_table(arrays: dict, dims) -> str:
    """Rows: radii; columns: loss, accuracy and per d mean frac+ and Tr/||H||_F over seeds."""
    head = f"{'log10 r2/rX2':>12} {'radius':>10} {'loss':>10} {'acc':>6}"
    for d in dims:
        head += f" | d={d:<4} {'frac+':>6} {'Tr/|H|':>7}"
    lines = [head, "-" * len(head)]
    with np.errstate(all="ignore"):
        for ri, rel in enumerate(arrays["log10_r2_over_rx2"]):
            row = f"{rel:>12.2f} {arrays['radii'][ri]:>10.4g} {np.nanmean(arrays['loss'][ri]):>10.4g} {np.nanmean(arrays['accuracy'][ri]):>6.3f}"
            for di, _ in enumerate(dims):
                fp = arrays["frac_pos"][ri, di]
                tf = arrays["trace_over_frob"][ri, di]
                row += f" | {'':6} {_fmt(np.nanmean(fp)):>6} {_fmt(np.nanmean(tf)):>7}"
            lines.append(row)
    return "\n".join(lines)


def main(argv):
    del argv
    config = config_from_flags()
    run(config, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    cli.run(main)
