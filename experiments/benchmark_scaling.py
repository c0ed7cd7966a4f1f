"""Section 9 of experiments.benchmark: cost-vs-size curves with fitted exponents and log-log figures.

The exact subspace Hessian P^T H P (library default, sparse P) against d (the MNIST MLP, N fixed),
against D (hidden widths of the MNIST MLP, d and N fixed) and against N (d fixed); a training step
in a subspace against d (sparse and Fastfood P, the MNIST MLP, Adam, batch 128). Time is the
median of the timed calls (the step's candidates round-robin); memory is what XLA allocates for
the compiled call (arguments + outputs + temporaries, `Compiled.memory_analysis`), the figure a
run can be sized with. Exponents: least-squares slopes of log(cost) against log(size); for the
step, of the subspace overhead (step - full step) over the upper half of the d range, where it
dominates.
"""

from __future__ import annotations

import jax
import numpy as np
from matplotlib.figure import Figure

from experiments import benchmark_sections as sections
from experiments import benchmark_steps
from gzone import curvature, flat
from gzone import projections as proj
from gzone.plots import save


def slope(x, y) -> float:
    """The least-squares exponent a of y ~ x^a (positive values only; nan with fewer than 2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0) & np.isfinite(y)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def compiled_mb(fn, *args) -> float:
    """MB XLA allocates for jitted fn(*args): arguments + outputs + temporaries."""
    m = fn.lower(*args).compile().memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes) / 1e6


def _hessian_cost(b, p, d: int) -> dict:
    P = b.projection("sparse", p.fm.D, d)
    fn = jax.jit(lambda theta, P, x, y: curvature.subspace_hessian(flat.loss_fn(p.fm, x, y), theta, P))
    args = (p.theta, P, p.x, p.y)
    seconds = b.measure(fn, *args)["median"]
    rate = sections.necessary_flops(p, d, P) / seconds / 1e9
    return {"s": seconds, "MB": compiled_mb(fn, *args), "rate": rate}


def scaling(b) -> None:
    sz = b.sz
    n, model = sz.n_hess, "mnist"
    own = sz.models[model][1]
    t = b.table(
        "scaling",
        f"9a. cost of the exact subspace Hessian against d, D and N ({model} MLP, sparse P, library default)",
        ["against", "d", "D", "N", "s", "memory MB", "GFLOP/s", "fraction of limit"],
    )
    curves = {"d": [], "D": [], "N": []}
    cases = (
        [("d", d, None, n) for d in sz.scale_hess_ds]
        + [("D", sz.scale_d, (w,) * len(own), n) for w in sz.scale_widths]
        + [("N", sz.scale_d, None, m) for m in sz.scale_ns]
    )
    for against, d, widths, m in cases:
        with b.guard(t, against, d, "", m):
            p = b.problem(model, m, widths)
            b.log(f"scaling hessian d={d} D={p.fm.D} N={m}")
            r = _hessian_cost(b, p, d)
            x = {"d": d, "D": p.fm.D, "N": m}[against]
            curves[against].append((x, r["s"], r["MB"]))
            t.rows.append([against, d, p.fm.D, m, r["s"], r["MB"], r["rate"], r["rate"] / b.square_rate()])
    step_points = _step_curve(b, model)
    fits = b.table(
        "scaling",
        "9c. fitted exponents: cost ~ size^a (least squares in log-log)",
        ["curve", "size range", "time exponent", "memory exponent"],
    )
    for against, points in curves.items():
        if points:
            xs, ss, mbs = zip(*points)
            fits.rows.append(
                [f"Hessian vs {against}", f"{min(xs)}..{max(xs)}", slope(xs, ss), slope(xs, mbs)]
            )
    overhead = {}
    for kind in ("sparse", "fastfood"):
        if kind in step_points:
            ds, times, _, mbs = zip(*step_points[kind])
            upper = [i for i, d in enumerate(ds) if d >= np.sqrt(min(ds) * max(ds))]
            xs = [ds[i] for i in upper]
            overhead[kind] = slope(xs, [times[i] - step_points["full"] for i in upper])
            fits.rows.append(
                [
                    f"step overhead vs d, {kind}",
                    f"{xs[0]}..{max(ds)}",
                    overhead[kind],
                    slope(xs, [mbs[i] for i in upper]),
                ]
            )
    with b.guard(fits, "figures"):
        fits.figures += [_hessian_figure(b, curves), _step_figure(b, step_points, overhead)]
    fits.notes.append(
        "Hessian: d Hessian-vector products, each O(N D) (module docstring of "
        "experiments/benchmark.py), so time ~ d N D is expected; memory holds the N x width "
        "activations and residuals once (linearize) and the D-vectors of the columns in flight. "
        "Step: overhead = step - full step, fitted over the upper half of the d range (log scale), "
        "where it dominates; memory: the compiled epoch's."
    )


def _step_curve(b, model: str) -> dict:
    """Times (and compiled memory) of the step against d for sparse and Fastfood P; rows in 9b."""
    sz = b.sz
    t = b.table(
        "scaling",
        f"9b. cost of a training step in a subspace against d ({model} MLP, Adam, batch "
        f"{sz.batch}; timed round-robin)",
        ["P", "d", "ms / step", "ratio to full", "P MB", "memory MB"],
    )
    fns = {"full": benchmark_steps.step_case(b, model)["fn"]}
    cases = {}
    for kind in ("sparse", "fastfood"):
        for d in sz.scale_step_ds:
            with b.guard(t, kind, d):
                cases[(kind, d)] = benchmark_steps.step_case(b, model, kind, d)
                fns[(kind, d)] = cases[(kind, d)]["fn"]
    b.log(f"scaling steps: {len(fns)} configurations, interleaved")
    ms = {k: s / sz.train_steps * 1e3 for k, s in b.measure_interleaved(fns).items()}
    points = {"full": ms["full"]}
    for (kind, d), case in cases.items():
        P = case["space"].P
        mb = compiled_mb(case["jitted"], *case["args"])
        points.setdefault(kind, []).append((d, ms[(kind, d)], proj.nbytes(P) / 1e6, mb))
        t.rows.append([kind, d, ms[(kind, d)], ms[(kind, d)] / ms["full"], proj.nbytes(P) / 1e6, mb])
    t.notes.append(
        "memory MB = XLA's allocation for one compiled epoch of the steps (data included); P MB = the "
        "projection's arrays."
    )
    return points


def _loglog(ax, xs, ys, label, marker="o"):
    ax.loglog(xs, ys, marker=marker, ms=4, label=f"{label} (slope {slope(xs, ys):.2f})")


def _hessian_figure(b, curves) -> str:
    fig = Figure(figsize=(11, 6.5), layout="constrained")
    axes = fig.subplots(2, 3)
    names = {"d": "subspace dimension d", "D": "parameters D", "N": "examples N"}
    for col, (against, points) in enumerate(curves.items()):
        if not points:
            continue
        xs, ss, mbs = zip(*points)
        _loglog(axes[0, col], xs, ss, "time")
        _loglog(axes[1, col], xs, mbs, "memory", marker="s")
        axes[0, col].set_ylabel("seconds")
        axes[1, col].set_ylabel("MB (compiled)")
        axes[1, col].set_xlabel(names[against])
        for ax in axes[:, col]:
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("exact subspace Hessian P^T H P: cost against size (log-log, fitted slopes)")
    path, rel = b.figure_path("bench_hessian_scaling.png")
    save(fig, path)
    return rel


def _step_figure(b, points, overhead: dict) -> str:
    """Time per step and memory against d; the legend gives the overhead exponents of 9c."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_t, ax_m = fig.subplots(1, 2)
    for kind in ("sparse", "fastfood"):
        if kind in points:
            ds, times, pmb, mbs = zip(*points[kind])
            ax_t.loglog(
                ds,
                times,
                marker="o",
                ms=4,
                label=f"{kind} (overhead exponent {overhead.get(kind, float('nan')):.2f}, upper d)",
            )
            _loglog(ax_m, ds, pmb, f"{kind}: P", marker="s")
            _loglog(ax_m, ds, mbs, f"{kind}: compiled epoch", marker="^")
    ax_t.axhline(points["full"], color="k", ls="--", lw=1, label="full-space step")
    ax_t.set(xlabel="subspace dimension d", ylabel="ms per step", title="time per step")
    ax_m.set(xlabel="subspace dimension d", ylabel="MB", title="memory")
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    path, rel = b.figure_path("bench_step_scaling.png")
    save(fig, path)
    return rel
