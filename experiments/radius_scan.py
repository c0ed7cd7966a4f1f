r"""The Goldilocks radius scan (Fort & Scherlis 2019).

For each radius r, subspace dimension d and seed: a point theta with |theta| = r, a random
d-dimensional hyperplane through it, and at theta the loss, accuracy, gradient (norm and radial
part) and the EXACT d x d Hessian of the loss restricted to the hyperplane, on a fixed set of
training examples: its eigenvalues, fraction positive and Tr(H)/||H||_F.

    python -m experiments.radius_scan --flagfile=experiments/flagfiles/quick.flags

Records go to <workdir>/radius_scan/<name>/ (config.json, flags.txt, metrics.jsonl with a line
per completed (radius, d) unit, arrays.npz with axes [radius, d, seed], figures). Run the same
command again after an interruption to resume.

Options (off by default; a run without them records exactly what it did before, plus
``layer_sq_frac``): ``--projection_metric`` / ``--metric_renormalise`` (Fort & Scherlis's
per-layer metric P -> diag(eta) P, `gzone.layer_metric`), ``--gn_split`` (the Gauss-Newton and
residual parts of P^T H P: ``gn_*``, ``res_*``), ``--fullspace_probes`` / ``--fullspace_top_k``
(full-space Tr/||.||_F with standard errors and extreme Lanczos eigenvalues: ``full_*``,
`gzone.curvature.fullspace`). Every run records ``layer_sq_frac`` [d, seed, segment]: the mean over P's
columns of the fraction of |P e_j|^2 in each parameter array (config.json's derived.layers
names the segments).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
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
cli.define_enum("seed_mode", "auto", ["auto", "vmap", "map"], "Seeds as vmap or lax.map (auto: vmap; measured faster for scan units on CPU too, BENCHMARKS.md).")
cli.define_bool("shard_seeds", True, "Shard the seed axis over all local devices when there are several.")
cli.define_enum("hessian_method", "linearize_map", ["linearize_map", "vmap", "hessian"], "Exact subspace Hessian strategy.")
cli.define_integer("chunk_size", 0, "Columns per chunk of the linearize_map Hessian (0: measured default per projection).")
cli.define_bool("plots", True, "Draw the figures at the end.")
# Options added later, defined untracked: flags.txt lists them only when set (`new_option_flags`).
flags.DEFINE_enum("projection_metric", "none", ["none", "inv_layer_radius", "layer_radius", "inv_std", "std", "sqrt_layer_radius"],
                "Per-layer metric P -> diag(eta) P (Fort & Scherlis), eta per parameter array from its layer's Xavier init: "
                "1/R, R or sqrt(R) with R the layer's Xavier radius; 1/sigma or sigma with sigma the per-parameter Xavier std. "
                "Biases take their layer's kernel value; mean eta^2 = 1 over theta.")
flags.DEFINE_bool("metric_renormalise", False, "Rescale every column of diag(eta) P to unit length.")
flags.DEFINE_bool("gn_split", False, "Also the Gauss-Newton part P^T G P (G = J^T H_CE J) and the residual P^T (H - G) P of the subspace Hessian.")
flags.DEFINE_integer("fullspace_probes", 0, "Rademacher probes for full-space Tr(H), ||H||_F and Tr(H)/||H||_F with standard errors at each point "
                   "(0: off; with --gn_split also for G and H - G).")
flags.DEFINE_integer("fullspace_top_k", 0, "Largest and smallest k eigenvalues of the full Hessian at each point by Lanczos (0: off).")
flags.DEFINE_integer("fullspace_order", 0, "Lanczos steps for --fullspace_top_k (0: max(30, 4k), at most D).")


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
    projection_metric: str = "none"
    metric_renormalise: bool = False
    gn_split: bool = False
    fullspace_probes: int = 0
    fullspace_top_k: int = 0
    fullspace_order: int = 0

    def settings(self) -> dict:
        """What must match for a resume (not where the run lives).

        Options added later (`NEW_OPTIONS`) appear only when they differ from their defaults, so
        runs without them keep their settings, default names and resumability.
        """
        out = cli.resume_settings(self)
        for key, default in NEW_OPTIONS.items():
            if out[key] == default:
                out.pop(key)
        return out


NEW_OPTIONS = {"projection_metric": "none", "metric_renormalise": False, "gn_split": False,
               "fullspace_probes": 0, "fullspace_top_k": 0, "fullspace_order": 0}


def new_option_flags(config: Config) -> str:
    """flags.txt lines of the `NEW_OPTIONS` that differ from their defaults (so default runs'
    flags.txt is what it was; these flags are defined untracked for that reason)."""
    lines = []
    for key, default in NEW_OPTIONS.items():
        value = getattr(config, key)
        if value != default:
            lines.append(f"--{key}" if value is True else f"--{key}={value}")
    return "".join(f"{line}\n" for line in lines)


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
    if FLAGS.fullspace_probes < 0 or FLAGS.fullspace_probes == 1:
        raise cli.UsageError("fullspace_probes", f"must be 0 (off) or >= 2 (a standard error needs two probes), got {FLAGS.fullspace_probes}")
    for name in ("fullspace_top_k", "fullspace_order"):
        if FLAGS[name].value < 0:
            raise cli.UsageError(name, f"must be >= 0, got {FLAGS[name].value}")
    if FLAGS.fullspace_order and not FLAGS.fullspace_top_k:
        raise cli.UsageError("fullspace_order", "only used with --fullspace_top_k > 0")
    if FLAGS.fullspace_top_k and FLAGS.fullspace_order and FLAGS.fullspace_order < 2 * FLAGS.fullspace_top_k:
        raise cli.UsageError("fullspace_order", f"must be >= 2 * --fullspace_top_k = {2 * FLAGS.fullspace_top_k}, got {FLAGS.fullspace_order}")
    from gzone import seeds

    seed_mode = seeds.default_seed_mode(workload="scan") if FLAGS.seed_mode == "auto" else FLAGS.seed_mode
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
        projection_metric=FLAGS.projection_metric,
        metric_renormalise=FLAGS.metric_renormalise,
        gn_split=FLAGS.gn_split,
        fullspace_probes=FLAGS.fullspace_probes,
        fullspace_top_k=FLAGS.fullspace_top_k,
        fullspace_order=FLAGS.fullspace_order,
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

    from gzone import flat, layer_metric, measure, models, plots, seeds
    from gzone.curvature import fullspace
    from gzone.runs import records

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
    order = config.fullspace_order or fullspace.default_order(config.fullspace_top_k, fm.D)
    if config.fullspace_top_k and not 2 * config.fullspace_top_k <= order <= fm.D:
        flag = "fullspace_order" if config.fullspace_order else "fullspace_top_k"
        raise cli.UsageError(flag, f"Lanczos order {order} must be in [2 * top_k = {2 * config.fullspace_top_k}, D = {fm.D}]")
    full_spec = None
    if config.fullspace_probes or config.fullspace_top_k:
        full_spec = fullspace.Spec(config.fullspace_probes, config.fullspace_top_k, order if config.fullspace_top_k else 0, config.gn_split)
    try:
        metric_scales = layer_metric.segment_scales(fm, config.projection_metric)
    except ValueError as err:
        raise cli.UsageError("projection_metric", str(err)) from None
    if config.radius_kind == "relative":
        log10_rel = np.asarray(config.radius_values)
        radii = r_x * 10.0 ** (log10_rel / 2.0)
    else:
        radii = np.asarray(config.radius_values)
        log10_rel = 2.0 * np.log10(radii / r_x)

    keys = seeds.SeedKeys.from_seed(config.seed)
    index = seeds.pick_examples(keys.k_data, dataset.x_train.shape[0], config.n_hessian)
    x = jnp.asarray(dataset.x_train[index], dtype)
    y = jnp.asarray(dataset.y_train[index])
    sample_init = "xavier" if config.convention == "xavier_rescaled" else config.init
    sample = flat.sample_fn(module, dataset.input_shape, sample_init, dtype)
    devices = jax.devices() if config.shard_seeds and len(jax.devices()) > 1 else None

    path = records.run_path(config.workdir, EXPERIMENT, config.name or default_name(config))
    axes = {k: ["radius", "d", "seed"] for k in measure.SCALAR_METRICS}
    axes.update({f"eigvals_d{d}": ["radius", "seed", "eigenvalue"] for d in config.dims})
    axes.update(radii=["radius"], log10_r2_over_rx2=["radius"], dims=["d"], hessian_examples=["example"])
    scalars, per_d, per_k = fullspace.record_keys(gn_split=config.gn_split, spec=full_spec)
    axes.update({k: ["radius", "d", "seed"] for k in scalars})
    axes.update({f"{k}_d{d}": ["radius", "seed", "eigenvalue"] for k in per_d for d in config.dims})
    axes.update({k: ["radius", "d", "seed", "k"] for k in per_k})
    axes.update(layer_sq_frac=["d", "seed", "segment"])
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
        "projection_metric": {"name": config.projection_metric, "renormalise": config.metric_renormalise,
                              "segment_scales": {s.name: v for s, v in zip(fm.segments, metric_scales)}},
        "fullspace_order": order if config.fullspace_top_k else None,
    }
    resumed = records.open_run(
        path,
        experiment=EXPERIMENT,
        settings=config.settings(),
        derived=derived,
        axes=axes,
        flags_text=cli.flags_text() + new_option_flags(config),
        overwrite=config.overwrite,
    )
    done = records.completed_units(path)
    units = [(di, ri) for di in range(len(config.dims)) for ri in range(len(radii))]
    log(f"{'resuming' if resumed else 'new run'}: {path}  ({len(done)}/{len(units)} units done)")
    log(f"{spec.name} on {dataset.name}: D = {fm.D}, r_X = {r_x:.4g}; {len(radii)} radii x d in {list(config.dims)} x {config.num_seeds} seeds; seed mode {config.seed_mode}")
    pending_cost = [config.dims[di] + 2 for di, ri in units if unit_name(ri, config.dims[di]) not in done]
    progress = cli.Progress(len(units), EXPERIMENT, done=len(done), weights=pending_cost)
    k_init = keys.init_keys(config.num_seeds)
    for di, d in enumerate(config.dims):
        pending = [ri for ri in range(len(radii)) if unit_name(ri, d) not in done]
        if not pending:
            continue
        point_fn = measure.make_point_fn(
            fm,
            d=d,
            projection=config.projection,
            convention=config.convention,
            sample_fn=sample,
            r_x=r_x,
            dtype=dtype,
            hessian_method=config.hessian_method,
            chunk_size=config.chunk_size,
            metric=config.projection_metric,
            renormalise=config.metric_renormalise,
            gn_split=config.gn_split,
            fullspace_spec=full_spec,
        )
        unit_fn = seeds.make_unit_fn(point_fn, seed_mode=config.seed_mode, devices=devices)
        k_proj = keys.proj_keys(d, config.num_seeds)
        for ri in pending:
            start = time.time()
            out = unit_fn(k_init, k_proj, jnp.asarray(radii[ri], dtype), x, y)
            out = jax.tree_util.tree_map(np.asarray, jax.block_until_ready(out))
            seconds = time.time() - start
            summary = {k: float(np.nanmean(out[k])) if np.isfinite(out[k]).any() else None for k in (*measure.SCALAR_METRICS, *scalars)}
            records.save_unit(
                path,
                unit_name(ri, d),
                out,
                {"radius_index": ri, "radius": radii[ri], "log10_r2_over_rx2": log10_rel[ri], "d": d, "seconds": seconds, "mean": summary},
            )
            progress.step(f"d={d} log10(r^2/r_X^2)={log10_rel[ri]:+.2f}: frac+ {_fmt(summary['frac_pos'])}, Tr/||H|| {_fmt(summary['trace_over_frob'])}{_extra_line(summary)} ({seconds:.1f}s)", weight=d + 2)

    arrays = assemble(path, config, radii, log10_rel, full_spec)
    arrays["hessian_examples"] = index
    split = {"kind": config.projection, "metric": config.projection_metric, "renormalise": config.metric_renormalise, "dtype": dtype}
    arrays["layer_sq_frac"] = np.stack([layer_metric.seed_fractions(keys.proj_keys(d, config.num_seeds), fm, d=d, **split) for d in config.dims])
    records.finish(path, arrays, axes=axes)
    log(summary_table(arrays, config.dims))
    if scalars:
        log(extra_table(arrays, config.dims))
    for di, d in enumerate(config.dims):
        shares = ", ".join(f"{s.name} {v:.3f}" for s, v in zip(fm.segments, arrays["layer_sq_frac"][di].mean(axis=0)))
        log(f"d={d}: mean share of |P e_j|^2 per parameter array: {shares}")
    if config.plots:
        for figure in plots.draw(path):
            log(f"figure: {figure}")
    log(f"records: {path}")
    return path


def unit_name(ri: int, d: int) -> str:
    return f"r{ri:03d}_d{d}"


def assemble(path, config: Config, radii, log10_rel, full_spec=None) -> dict:
    from gzone import measure
    from gzone.curvature import fullspace
    from gzone.runs import records

    arrays = {}
    for k in measure.SCALAR_METRICS:
        arrays[k] = np.stack(
            [np.stack([records.load_unit(path, unit_name(ri, d))[k] for d in config.dims]) for ri in range(len(radii))]
        )
    for d in config.dims:
        arrays[f"eigvals_d{d}"] = np.stack([records.load_unit(path, unit_name(ri, d))["eigvals"] for ri in range(len(radii))])
    scalars, per_d, per_k = fullspace.record_keys(gn_split=config.gn_split, spec=full_spec)
    units = {(ri, d): records.load_unit(path, unit_name(ri, d)) for ri in range(len(radii)) for d in config.dims}
    for k in (*scalars, *per_k):
        arrays[k] = np.stack([np.stack([units[ri, d][k] for d in config.dims]) for ri in range(len(radii))])
    for k in per_d:
        for d in config.dims:
            arrays[f"{k}_d{d}"] = np.stack([units[ri, d][k] for ri in range(len(radii))])
    arrays.update(radii=np.asarray(radii), log10_r2_over_rx2=np.asarray(log10_rel), dims=np.asarray(config.dims))
    return arrays


def _extra_line(summary: dict) -> str:
    out = ""
    if "gn_trace_over_frob" in summary:
        out += f", G Tr/||G|| {_fmt(summary['gn_trace_over_frob'])}, R frac+ {_fmt(summary['res_frac_pos'])} Tr/||R|| {_fmt(summary['res_trace_over_frob'])}"
    if "full_trace_over_frob" in summary:
        out += f", full Tr/||H|| {_fmt(summary['full_trace_over_frob'])}"
    return out


def extra_table(arrays: dict, dims) -> str:
    """Per radius and d, means over seeds: subspace H, G, R = H - G (frac+, Tr/||.||_F) and full space."""
    labels = {"frac_pos": "H frac+", "trace_over_frob": "H Tr/F", "gn_trace_over_frob": "G Tr/F", "res_frac_pos": "R frac+",
              "res_trace_over_frob": "R Tr/F", "full_trace_over_frob": "full H Tr/F", "full_trace_over_frob_se": "+- se",
              "full_gn_trace_over_frob": "full G Tr/F", "full_res_trace_over_frob": "full R Tr/F"}
    cols = [(k, label) for k, label in labels.items() if k in arrays]
    head = f"{'log10 r2/rX2':>12} {'d':>5} " + " ".join(f"{label:>11}" for _, label in cols)
    lines = [head, "-" * len(head)]
    with np.errstate(all="ignore"):
        for ri, rel in enumerate(arrays["log10_r2_over_rx2"]):
            for di, d in enumerate(dims):
                lines.append(f"{rel:>12.2f} {d:>5} " + " ".join(f"{_fmt(np.nanmean(arrays[k][ri, di])):>11}" for k, _ in cols))
    return "\n".join(lines)


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
