r"""The Goldilocks radius scan (Fort & Scherlis 2019) as one library call.

    result = gzone.radius_scan(model, x, y, r_over_rx=[0.1, 1, 10], dims=[10, 50], num_seeds=3, seed=0)

For each radius r, subspace dimension d and seed: a point theta with |theta| = r (`Points`), a
random d-dimensional subspace through it (`Projection`, `Metric`) and, on the fixed examples
(x, y), the loss, accuracy, gradient and the exact d x d subspace Hessian P^T H P
(`measure.make_point_fn`). A unit of the run is one (radius, d) with all seeds, as one compiled
call (seeds vmapped or mapped, sharded over the local devices). Options: the Gauss-Newton /
residual split (``gn_split``), full-space estimates (``fullspace_*``), per-layer metrics.

Records (`schema.radius_scan_axes`): scalars [radius, d, seed], ``eigvals_d<d>`` [radius, seed,
eigenvalue], ``layer_sq_frac`` [d, seed, segment] (the share of |P e_j|^2 in each parameter array,
from the projection keys alone).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from gzone import curvature, layer_metric, measure, options, seeds
from gzone import problem as problem_lib
from gzone.curvature import fullspace
from gzone.options import OptionError, option
from gzone.runs import engine as engine_lib
from gzone.runs import progress, result, schema, stores

EXPERIMENT = "radius_scan"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScanOptions(
    options.Radii, options.Points, options.Projection, options.Metric, options.Seeds, options.Precision
):
    """The options of a radius scan (keyword arguments of `radius_scan`)."""

    dims: tuple[int, ...] = option((10, 50), "Subspace dimensions d.", minimum=1)
    hessian_method: str = option(
        "linearize_map", "Exact subspace Hessian strategy.", choices=curvature.METHODS
    )
    chunk_size: int = option(
        0, "Columns per chunk of the linearize_map Hessian (0: measured default per projection).", minimum=0
    )
    gn_split: bool = option(
        False,
        "Also the Gauss-Newton part P^T G P (G = J^T H_CE J) and the residual P^T (H - G) P "
        "of the subspace Hessian.",
    )
    fullspace_probes: int = option(
        0,
        "Rademacher probes for full-space Tr(H), ||H||_F and Tr(H)/||H||_F with standard "
        "errors at each point (0: off; with --gn_split also for G and H - G).",
        minimum=0,
    )
    fullspace_top_k: int = option(
        0,
        "Largest and smallest k eigenvalues of the full Hessian at each point by Lanczos (0: off).",
        minimum=0,
    )
    fullspace_order: int = option(
        0, "Lanczos steps for --fullspace_top_k (0: max(30, 4k), at most D).", minimum=0
    )

    def _check(self):
        if len(set(self.dims)) != len(self.dims):
            raise OptionError("dims", f"repeated values in {','.join(map(str, self.dims))}")
        if self.fullspace_probes == 1:
            raise OptionError(
                "fullspace_probes", "must be 0 (off) or >= 2 (a standard error needs two probes), got 1"
            )
        if self.fullspace_order and not self.fullspace_top_k:
            raise OptionError("fullspace_order", "only used with --fullspace_top_k > 0")
        if self.fullspace_top_k and self.fullspace_order and self.fullspace_order < 2 * self.fullspace_top_k:
            raise OptionError(
                "fullspace_order",
                f"must be >= 2 * --fullspace_top_k = {2 * self.fullspace_top_k}, got {self.fullspace_order}",
            )


class ScanResult(result.Result):
    """A radius scan's records (`result.Result`): arrays [radius, d, seed], eigenvalues per d."""

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.arrays["dims"])

    def zone(self) -> list[dict]:
        """The zone read off the scan (`analysis.zone.summarise`): peak, value at r_X, extent per d and
        metric."""
        from gzone.analysis import zone

        return zone.summarise(self.arrays)

    def table(self) -> str:
        lines = [summary_table(self.arrays, self.dims)]
        if any(k.startswith(("gn_", "full_")) for k in self.arrays):
            lines.append(extra_table(self.arrays, self.dims))
        names = [layer["name"] for layer in self.derived["layers"]]
        for di, d in enumerate(self.dims):
            shares = ", ".join(
                f"{n} {v:.3f}" for n, v in zip(names, self.arrays["layer_sq_frac"][di].mean(axis=0))
            )
            lines.append(f"d={d}: mean share of |P e_j|^2 per parameter array: {shares}")
        return "\n".join(lines)


def radius_scan(
    model, x, y, *, run_dir: str | stores.RunFolder | None = None, log=progress.to_stderr, **kwargs
) -> ScanResult:
    """Scans the subspace Hessian of `model` on the fixed examples (x, y) over radii, dimensions and seeds.

    Args:
      model: any flax.linen Module mapping [N, *input_shape] to logits [N, C] (initialised with
        Xavier-normal kernels and zero biases, so r_X is defined for it).
      x: [N, *input_shape] inputs of the loss, gradient and Hessian.
      y: [N] integer labels in [0, C).
      run_dir: a folder (or `stores.RunFolder`) to record the run in and resume from; None: in memory.
      log: where progress lines go (None: silent).
      **kwargs: `ScanOptions`: exactly one of ``r_over_rx``, ``log10_r2_over_rx2``, ``radii``;
        ``dims``, ``num_seeds``, ``seed``, ``projection``, ``convention``, ``seed_mode``, ...

    Returns:
      A `ScanResult`. Cost: per (radius, d) unit, S (d + 2) Hessian-vector products on N examples;
      one compile per d (BENCHMARKS.md has measured rates).
    """
    opts = ScanOptions(**kwargs)
    with options.x64(opts.dtype):
        prob = problem_lib.build(model, input_shape=np.shape(x)[1:], dtype=opts.dtype)
        return run(prob, *prob.examples(x, y), opts, run_dir=run_dir, log=log)


def run(
    prob: problem_lib.Problem, x, y, opts: ScanOptions, *, run_dir=None, log=progress.to_stderr
) -> ScanResult:
    """The scan of a built problem on validated examples (what `radius_scan` calls)."""
    fm, r_x, dtype = prob.fm, prob.r_x, prob.dtype
    too_big = [d for d in opts.dims if d > fm.D]
    if too_big:
        raise OptionError("dims", f"d={too_big[0]} exceeds the number of parameters D={fm.D} of the model")
    order = opts.fullspace_order or fullspace.default_order(opts.fullspace_top_k, fm.D)
    if opts.fullspace_top_k and not 2 * opts.fullspace_top_k <= order <= fm.D:
        name = "fullspace_order" if opts.fullspace_order else "fullspace_top_k"
        raise OptionError(
            name, f"Lanczos order {order} must be in [2 * top_k = {2 * opts.fullspace_top_k}, D = {fm.D}]"
        )
    full_spec = None
    if opts.fullspace_probes or opts.fullspace_top_k:
        full_spec = fullspace.Spec(
            opts.fullspace_probes, opts.fullspace_top_k, order if opts.fullspace_top_k else 0, opts.gn_split
        )
    try:
        metric_scales = layer_metric.segment_scales(fm, opts.projection_metric)
    except ValueError as err:
        raise OptionError("projection_metric", str(err)) from None
    radii, log10_rel = opts.resolve(r_x, dtype)
    seed_mode = options.resolve_seed_mode(opts.seed_mode, "scan")
    devices = opts.devices
    scalars, per_d, per_k = fullspace.record_keys(gn_split=opts.gn_split, spec=full_spec)
    settings = {
        **options.settings(opts),
        "seed_mode": seed_mode,
        "model": prob.identity(),
        "data": {"examples": int(x.shape[0]), "fingerprint": problem_lib.fingerprint(x, y)},
    }
    derived = {
        **prob.describe(),
        "radii": radii,
        "log10_r2_over_rx2": log10_rel,
        "seed_mode": seed_mode,
        "chunk_size": opts.chunk_size or None,
        "devices_used": len(devices) if devices else 1,
        "projection_metric": {
            "name": opts.projection_metric,
            "renormalise": opts.metric_renormalise,
            "segment_scales": {s.name: v for s, v in zip(fm.segments, metric_scales)},
        },
        "fullspace_order": order if opts.fullspace_top_k else None,
    }
    axes = schema.radius_scan_axes(opts.dims, extra_scalars=scalars, extra_per_d=per_d, extra_per_k=per_k)
    store = stores.open_store(run_dir, experiment=EXPERIMENT, settings=settings, derived=derived, axes=axes)
    engine = engine_lib.Engine(store, label=EXPERIMENT, log=log)
    units = [(unit_name(ri, d), d + 2) for d in opts.dims for ri in range(len(radii))]
    engine.plan(units)
    if store.path:
        engine.say(
            f"{'resuming' if store.resumed else 'new run'}: {store.path}  "
            f"({len(store.done())}/{len(units)} units done)"
        )
    engine.say(
        f"{derived['model']}: D = {fm.D}, r_X = {r_x:.4g}; {len(radii)} radii x d in {list(opts.dims)} x "
        f"{opts.num_seeds} seeds on {x.shape[0]} examples; seed mode {seed_mode}"
    )

    keys = seeds.SeedKeys.from_seed(opts.seed)
    k_init = keys.init_keys(opts.num_seeds)
    sample = prob.sample_fn(opts.sample_init)
    for d in opts.dims:
        if all(engine.has(unit_name(ri, d)) or not engine.mine(unit_name(ri, d)) for ri in range(len(radii))):
            continue  # nothing for this process to compute at this d
        point_fn = measure.make_point_fn(
            fm,
            d=d,
            projection=opts.projection,
            convention=opts.convention,
            sample_fn=sample,
            r_x=r_x,
            dtype=dtype,
            hessian_method=opts.hessian_method,
            chunk_size=opts.chunk_size or None,
            metric=opts.projection_metric,
            renormalise=opts.metric_renormalise,
            gn_split=opts.gn_split,
            fullspace_spec=full_spec,
        )
        unit_fn = seeds.make_unit_fn(point_fn, seed_mode=seed_mode, devices=devices)
        k_proj = keys.proj_keys(d, opts.num_seeds)
        for ri in range(len(radii)):

            def compute(ri=ri, d=d):
                out = unit_fn(k_init, k_proj, jnp.asarray(radii[ri], dtype), x, y)
                out = jax.tree_util.tree_map(np.asarray, jax.block_until_ready(out))
                mean = {
                    k: float(np.nanmean(out[k])) if np.isfinite(out[k]).any() else None
                    for k in (*schema.SCAN_SCALARS, *scalars)
                }
                return out, {
                    "radius_index": ri,
                    "radius": radii[ri],
                    "log10_r2_over_rx2": log10_rel[ri],
                    "d": d,
                    "mean": mean,
                }

            engine.unit(
                unit_name(ri, d), compute, weight=d + 2, what=lambda a, r: _progress_line(r), wait=False
            )

    arrays = assemble(engine, opts.dims, radii, log10_rel, scalars, per_d, per_k)
    split = {
        "kind": opts.projection,
        "metric": opts.projection_metric,
        "renormalise": opts.metric_renormalise,
        "dtype": dtype,
    }
    arrays["layer_sq_frac"] = np.stack([
        layer_metric.seed_fractions(keys.proj_keys(d, opts.num_seeds), fm, d=d, **split) for d in opts.dims
    ])
    store.finish(arrays)
    return ScanResult(store, arrays)


def unit_name(ri: int, d: int) -> str:
    return f"r{ri:03d}_d{d}"


def assemble(engine: engine_lib.Engine, dims, radii, log10_rel, scalars=(), per_d=(), per_k=()) -> dict:
    """The units stacked into the schema's arrays."""
    units = {(ri, d): engine.unit(unit_name(ri, d), _missing) for ri in range(len(radii)) for d in dims}
    arrays = {
        k: np.stack([np.stack([units[ri, d][k] for d in dims]) for ri in range(len(radii))])
        for k in (*schema.SCAN_SCALARS, *scalars, *per_k)
    }
    for d in dims:
        arrays[f"eigvals_d{d}"] = np.stack([units[ri, d]["eigvals"] for ri in range(len(radii))])
        for k in per_d:
            arrays[f"{k}_d{d}"] = np.stack([units[ri, d][k] for ri in range(len(radii))])
    arrays.update(radii=np.asarray(radii), log10_r2_over_rx2=np.asarray(log10_rel), dims=np.asarray(dims))
    return arrays


def _missing():
    raise RuntimeError("a unit of the scan is missing at assembly")


def _progress_line(record: dict) -> str:
    m = record["mean"]
    line = (
        f"d={record['d']} log10(r^2/r_X^2)={record['log10_r2_over_rx2']:+.2f}: frac+ {_fmt(m['frac_pos'])}, "
        f"Tr/||H|| {_fmt(m['trace_over_frob'])}"
    )
    if "gn_trace_over_frob" in m:
        line += (
            f", G Tr/||G|| {_fmt(m['gn_trace_over_frob'])}, R frac+ {_fmt(m['res_frac_pos'])} "
            f"Tr/||R|| {_fmt(m['res_trace_over_frob'])}"
        )
    if "full_trace_over_frob" in m:
        line += f", full Tr/||H|| {_fmt(m['full_trace_over_frob'])}"
    return line


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
            row = (
                f"{rel:>12.2f} {arrays['radii'][ri]:>10.4g} {np.nanmean(arrays['loss'][ri]):>10.4g} "
                f"{np.nanmean(arrays['accuracy'][ri]):>6.3f}"
            )
            for di, _ in enumerate(dims):
                row += (
                    f" | {'':6} {_fmt(np.nanmean(arrays['frac_pos'][ri, di])):>6} "
                    f"{_fmt(np.nanmean(arrays['trace_over_frob'][ri, di])):>7}"
                )
            lines.append(row)
    return "\n".join(lines)


def extra_table(arrays: dict, dims) -> str:
    """Per radius and d, means over seeds: subspace H, G, R = H - G (frac+, Tr/||.||_F) and full space."""
    labels = {
        "frac_pos": "H frac+",
        "trace_over_frob": "H Tr/F",
        "gn_trace_over_frob": "G Tr/F",
        "res_frac_pos": "R frac+",
        "res_trace_over_frob": "R Tr/F",
        "full_trace_over_frob": "full H Tr/F",
        "full_trace_over_frob_se": "+- se",
        "full_gn_trace_over_frob": "full G Tr/F",
        "full_res_trace_over_frob": "full R Tr/F",
    }
    cols = [(k, label) for k, label in labels.items() if k in arrays]
    head = f"{'log10 r2/rX2':>12} {'d':>5} " + " ".join(f"{label:>11}" for _, label in cols)
    lines = [head, "-" * len(head)]
    with np.errstate(all="ignore"):
        for ri, rel in enumerate(arrays["log10_r2_over_rx2"]):
            for di, d in enumerate(dims):
                lines.append(
                    f"{rel:>12.2f} {d:>5} "
                    + " ".join(f"{_fmt(np.nanmean(arrays[k][ri, di])):>11}" for k, _ in cols)
                )
    return "\n".join(lines)
