r"""The Goldilocks radius scan (Fort & Scherlis 2019) as one library call.

    result = gzone.radius_scan(model, x, y, r_over_rx=[0.1, 1, 10], dims=[10, 50], num_seeds=3, seed=0)

For each radius r, subspace dimension d and seed: a point theta with |theta| = r (`Points`), a
random d-dimensional subspace through it (`Projection`, `Metric`) and, on the fixed examples
(x, y), the loss, accuracy, gradient and the exact d x d subspace Hessian P^T H P
(`measure.make_point_fn`). A unit of the run is one (radius, d) with all seeds, as one compiled
call (seeds vmapped or mapped, sharded over the local devices). Options: the Gauss-Newton /
residual split (``gn_split``), full-space estimates (``fullspace_*``), the SLQ quadrature of the
full Hessian's spectral density (``density_*``, `studies.spectral_density`), per-layer metrics, the
loss kind, model state and temperature (`options.Objective`).

Temperatures (``temperatures=[T1, T2, ...]``, or ``temperature=`` a list): the same points and
subspaces measured with the logits divided by each T, a unit per (radius, d, T); the temperature
is data (one compile per d). For a positively homogeneous network of degree L (bias-free ReLU),
f(alpha theta) = alpha^L f(theta), so the loss at radius alpha r and T = 1 is the loss at radius r
and T = alpha^-L, and the Hessians agree up to the factor alpha^2 (H(alpha theta) = H_T(theta) /
alpha^2): the (radius, temperature) map of frac+ and Tr/||H||_F is constant along r^L / T.

Records (`schema.radius_scan_axes`): scalars [radius, d, seed], ``eigvals_d<d>`` [radius, seed,
eigenvalue], ``layer_sq_frac`` [d, seed, segment] (the share of |P e_j|^2 in each parameter array,
from the projection keys alone); with temperatures a ``temperature`` axis before the seed axis and
the grid ``temperatures``; with density probes ``density_nodes`` / ``density_weights`` [radius, d,
seed, probe, node] (the same at every d: measure it with one cheap d).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gzone import curvature, layer_metric, measure, options, seeds
from gzone import problem as problem_lib
from gzone.analysis import spectral_density, zone
from gzone.curvature import fullspace
from gzone.options import OptionError, option
from gzone.runs import engine as engine_lib
from gzone.runs import progress, result, schema, stores
from gzone.studies import scan_units
from gzone.studies.scan_units import assemble, t_indices, unit_name
from gzone.studies.spectral_density import DensityOptions

EXPERIMENT = "radius_scan"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScanOptions(
    options.Radii,
    options.Points,
    options.Projection,
    options.Metric,
    options.Objective,
    options.Seeds,
    options.Precision,
    DensityOptions,
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
    example_chunk: int = option(
        0, "Examples per chunk of each point's measurement, accumulated in a scan: peak memory is one "
        "chunk's activations, results equal to rounding (must divide N; 0: all at once).",
        minimum=0, setting=False,
    )
    temperatures: tuple[float, ...] | None = option(
        None,
        "Softmax temperatures T: a temperature axis in the records (scalars [radius, d, temperature, "
        "seed]) and a (radius, temperature) zone map; the same points and subspaces at every T "
        "(empty: none).",
        kind="floats",
        empty=True,
    )

    def _check(self):
        if self.temperatures == ():
            object.__setattr__(self, "temperatures", None)
        if self.temperatures is not None:
            if min(self.temperatures) <= 0:
                raise OptionError("temperatures", f"must be > 0, got {','.join(map(str, self.temperatures))}")
            if len(set(self.temperatures)) != len(self.temperatures):
                raise OptionError("temperatures", "repeated values")
            if self.temperature != 1.0:
                raise OptionError(
                    "temperature", "give --temperature (one T) or --temperatures (an axis), not both"
                )
        if len(set(self.dims)) != len(self.dims):
            raise OptionError("dims", f"repeated values in {','.join(map(str, self.dims))}")
        if self.fullspace_probes == 1:
            raise OptionError(
                "fullspace_probes", "must be 0 (off) or >= 2 (a standard error needs two probes), got 1"
            )
        if self.example_chunk and (self.fullspace_probes or self.fullspace_top_k or self.density_probes):
            raise OptionError(
                "example_chunk", "not with --fullspace_probes, --fullspace_top_k or --density_probes"
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

    @property
    def temperatures(self) -> tuple[float, ...] | None:
        """The temperature axis (None: a scan without one)."""
        return tuple(float(t) for t in self.arrays["temperatures"]) if "temperatures" in self.arrays else None

    def at_temperature(self, index: int) -> dict:
        """The arrays at one temperature of the axis, in the layout without a temperature axis."""
        return schema.take(self.arrays, self.axes, "temperature", index)

    def zone(self) -> list[dict]:
        """The zone read off the scan (`analysis.zone.summarise`): peak, value at r_X, extent per d and
        metric (and per temperature, with a ``temperature`` key, when the scan has that axis)."""
        if self.temperatures is None:
            return zone.summarise(self.arrays)
        return [
            {"temperature": t, **row}
            for ti, t in enumerate(self.temperatures)
            for row in zone.summarise(self.at_temperature(ti))
        ]

    def table(self) -> str:
        if self.temperatures is None:
            lines = _tables(self.arrays, self.dims, self.derived)
        else:
            lines = []
            for ti, t in enumerate(self.temperatures):
                at = self.at_temperature(ti)
                lines += [f"temperature T = {t:g}", *_tables(at, self.dims, self.derived)]
        names = [layer["name"] for layer in self.derived["layers"]]
        for di, d in enumerate(self.dims):
            shares = ", ".join(
                f"{n} {v:.3f}" for n, v in zip(names, self.arrays["layer_sq_frac"][di].mean(axis=0))
            )
            lines.append(f"d={d}: mean share of |P e_j|^2 per parameter array: {shares}")
        return "\n".join(lines)


def _tables(arrays: dict, dims, derived: dict) -> list[str]:
    lines = [zone.summary_table(arrays, dims)]
    if any(k.startswith(("gn_", "full_")) for k in arrays):
        lines.append(zone.extra_table(arrays, dims))
    if "density_nodes" in arrays:  # the same at every d: the first d's
        stats = spectral_density.summary(arrays["density_nodes"][:, 0], arrays["density_weights"][:, 0],
                                         D=derived["D"], k=spectral_density.edge_rank(derived["num_classes"]))
        labels = [f"r2/rX2 1e{x:+.1f}" for x in arrays["log10_r2_over_rx2"]]
        lines.append(spectral_density.table(labels, stats))
    return lines


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
        ``dims``, ``num_seeds``, ``seed``, ``projection``, ``convention``, ``seed_mode``, ``loss``,
        ``model_state``; ``temperature``: a scalar T, or a list (the same as ``temperatures=``).

    Returns:
      A `ScanResult`. Cost: per (radius, d) unit, S (d + 2) Hessian-vector products on N examples;
      one compile per d (BENCHMARKS.md has measured rates).
    """
    if isinstance(kwargs.get("temperature"), (list, tuple, np.ndarray)):  # a list: the temperature axis
        if kwargs.get("temperatures") is not None:
            raise OptionError("temperature", "give temperature= or temperatures=, not both")
        kwargs["temperatures"] = kwargs.pop("temperature")
    opts = ScanOptions(**kwargs)
    with options.x64(opts.dtype):
        prob = problem_lib.build(model, input_shape=np.shape(x)[1:],
                                 dtype=opts.dtype, **opts.problem_kwargs())
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
    if opts.example_chunk:
        try:
            measure.check_example_chunk(fm, x.shape[0], opts.example_chunk)
        except ValueError as err:
            raise OptionError("example_chunk", str(err)) from None
    full_spec, density = None, opts.density_fields(fm.D)
    if opts.fullspace_probes or opts.fullspace_top_k or density:
        full_spec = fullspace.Spec(
            opts.fullspace_probes, opts.fullspace_top_k, order if opts.fullspace_top_k else 0, opts.gn_split,
            **density,
        )
    try:
        metric_scales = layer_metric.segment_scales(fm, opts.projection_metric)
    except ValueError as err:
        raise OptionError("projection_metric", str(err)) from None
    radii, log10_rel = opts.resolve(r_x, dtype)
    seed_mode = options.resolve_seed_mode(opts.seed_mode, "scan")
    devices = opts.devices
    scalars, per_d, per_k = fullspace.record_keys(gn_split=opts.gn_split, spec=full_spec)
    per_node = full_spec.density_names() if full_spec else ()
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
        **({"density_order": density["density_order"]} if density else {}),
    }
    temps = opts.temperatures
    if temps is not None:
        derived["temperatures"] = list(temps)
    axes = schema.radius_scan_axes(opts.dims, extra_scalars=scalars, extra_per_d=per_d, extra_per_k=per_k,
                                   extra_per_node=per_node, temperatures=temps is not None)
    store = stores.open_store(run_dir, experiment=EXPERIMENT, settings=settings, derived=derived, axes=axes)
    engine = engine_lib.Engine(store, label=EXPERIMENT, log=log)
    grid = [(ri, d, ti) for d in opts.dims for ri in range(len(radii)) for ti in t_indices(temps)]
    cost = density.get("density_probes", 0) * density.get("density_order", 0)  # HVPs beside d + 2
    units = [(unit_name(ri, d, ti), d + 2 + cost) for ri, d, ti in grid]
    engine.plan(units)
    if store.path:
        engine.say(
            f"{'resuming' if store.resumed else 'new run'}: {store.path}  "
            f"({len(store.done())}/{len(units)} units done)"
        )
    engine.say(
        f"{derived['model']}: D = {fm.D}, r_X = {r_x:.4g}; {len(radii)} radii x d in {list(opts.dims)} x "
        f"{opts.num_seeds} seeds on {x.shape[0]} examples"
        f"{'' if temps is None else f' at {len(temps)} temperatures'}; seed mode {seed_mode}"
    )

    keys = seeds.SeedKeys.from_seed(opts.seed)
    k_init = keys.init_keys(opts.num_seeds)
    sample = prob.sample_fn(opts.sample_init)
    for d in opts.dims:
        names = [unit_name(ri, d_, ti) for ri, d_, ti in grid if d_ == d]
        if all(engine.has(name) or not engine.mine(name) for name in names):
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
            example_chunk=opts.example_chunk or None,
        )
        unit_fn = seeds.make_unit_fn(point_fn, seed_mode=seed_mode, devices=devices)
        k_proj = keys.proj_keys(d, opts.num_seeds)
        for ri, _, ti in (g for g in grid if g[1] == d):

            def compute(ri=ri, d=d, ti=ti):
                args = (k_init, k_proj, jnp.asarray(radii[ri], dtype), x, y)
                if ti is not None:
                    args += (jnp.asarray(temps[ti], dtype),)
                out = jax.tree_util.tree_map(np.asarray, jax.block_until_ready(unit_fn(*args)))
                mean = {
                    k: float(np.nanmean(out[k])) if np.isfinite(out[k]).any() else None
                    for k in (*schema.SCAN_SCALARS, *scalars)
                }
                record = {
                    "radius_index": ri,
                    "radius": radii[ri],
                    "log10_r2_over_rx2": log10_rel[ri],
                    "d": d,
                    "mean": mean,
                }
                if ti is not None:
                    record.update(temperature_index=ti, temperature=temps[ti])
                if per_node:
                    record.update(scan_units.density_means(out["density_nodes"], out["density_weights"]))
                return out, record

            engine.unit(
                unit_name(ri, d, ti),
                compute,
                weight=d + 2 + cost,
                what=lambda a, r: scan_units.progress_line(r),
                wait=False,
            )

    arrays = assemble(engine, opts.dims, radii, log10_rel, scalars, per_d, (*per_k, *per_node), temps)
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
