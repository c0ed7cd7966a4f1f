"""Sections 1-4 of experiments.benchmark, one function per --section, each filling tables.

Every function takes the run's `Bench` (timing, caches, report; experiments/benchmark_core.py)
and records its rows and targets there; a failing row is recorded as 'failed: reason'. Every
FLOP rate is also given as a fraction of the limit, the large square product's rate (section 1).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from gzone import curvature, flat, native
from gzone import projections as proj

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A product kind and the kinds each layer does (first layer, other layers): see benchmark.py.
KINDS = {"fwd": "ni,io->no", "wgrad": "ni,no->io", "xgrad": "no,io->ni"}
PARTS = {
    "grad": (("fwd", "wgrad"), ("fwd", "wgrad", "xgrad")),
    "tangent": (("fwd", "wgrad"), ("fwd", "fwd", "wgrad", "wgrad", "xgrad", "xgrad")),
}
E2E = ["-m", "experiments.radius_scan", "--flagfile=experiments/flagfiles/quick.flags"]


def products(layers, n: int, part: str) -> list:
    """[(einsum, dims)] of the matmuls of `part` (grad | tangent) of an MLP on n examples."""
    return [
        (KINDS[k], {"n": n, "i": i, "o": o}) for l, (i, o) in enumerate(layers) for k in PARTS[part][l > 0]
    ]


def flops(layers, n: int, part: str) -> int:
    return sum(2 * n * i * o * len(PARTS[part][l > 0]) for l, (i, o) in enumerate(layers))


def segments(fm) -> tuple:
    """((kernel (start, size, shape)), (bias ...)) per layer, for the torch side."""
    seg = {s.name: (s.start, s.size, s.shape) for s in fm.segments}
    return tuple((seg[f"{layer}/kernel"], seg[f"{layer}/bias"]) for layer in fm.layers)


def gather_rate(b, n: int) -> float:
    """G elements/s of a gather from a 1000-float table (cache-resident) at n random indices, summed
    (no output written): the fastest call of the faster route, as a limit is the best this machine
    does (`gather_rates`)."""
    return max(gather_rates(b, n).values())


def gather_rates(b, n: int) -> dict:
    """{route: G elements/s} of the gather of `gather_rate`: XLA's (jnp.take, summed) and, where
    gzone's native kernels run, the sliced-ELL kernel's (gzone.sell: n / 8 slots of 8 sums side
    by side, signed uint16 entries, on every thread)."""

    def make():
        rng = np.random.default_rng(2)
        table = jnp.asarray(rng.standard_normal(1000, dtype=np.float32))
        index = jnp.asarray(rng.integers(0, 1000, n).astype(np.int32))
        fn = jax.jit(lambda t, i: jnp.sum(jnp.take(t, i, mode="clip")))
        rates = {"XLA": n / b.measure(fn, table, index)["min"] / 1e9}
        if native.enabled() and jax.default_backend() == "cpu":
            groups, width = 1024, n // (8 * 1024)  # 1024 groups: 4 chunks of the kernel's 256
            idx = (np.asarray(index[: groups * width * 8]) | (rng.integers(0, 2, groups * width * 8) << 15))
            off = jnp.asarray(np.arange(groups + 1) * 8 * width, jnp.int32)
            perm = jnp.arange(8 * groups, dtype=jnp.int32)
            idx = jnp.asarray(idx.astype(np.uint16))
            kernel = jax.jit(lambda t: native.sell_sum(t, idx, off, perm, outputs=8 * groups, block=1000))
            rates["native"] = groups * width * 8 / b.measure(kernel, table)["min"] / 1e9
        return rates

    return b.cached(("rate", "gathers"), make)


def remeasure_rates(b, n: int) -> None:
    """Measures the gather and streaming rates again and keeps, route by route, the faster of the
    two measurements: a limit taken in one slow spell of a shared machine would be no limit (a run
    measured the native gather at 2.6 G/s in section 1b against 4.8 in others, and a step came out
    below its bound). Section 5b calls it beside the steps of each model."""
    old = dict(gather_rates(b, n)), stream_rate_cached(b, n)
    for key in (("rate", "gathers"), ("rate", "gather"), ("rate", "stream")):
        b.cache.pop(key, None)
    new = gather_rates(b, n)
    b.cache[("rate", "gathers")] = {k: max(v, old[0].get(k, 0.0)) for k, v in new.items()}
    b.cache[("rate", "stream")] = max(stream_rate(b, n), old[1])


def stream_rate_cached(b, n: int) -> float:
    return b.cached(("rate", "stream"), lambda: stream_rate(b, n))


STREAM_PASSES = 16


def stream_rate(b, n: int) -> float:
    """GB/s (bytes read + written) of y <- y / 2 + 1 over n float32, the fastest call of a loop of
    STREAM_PASSES passes in one buffer. (One y = 2 x + 1 a call allocates a fresh output each time,
    and where the allocator maps new pages for it the page faults, not the memory, set the rate: a
    run measured 1.3 GB/s that way against 28 GB/s in others.)"""
    x = jnp.asarray(np.random.default_rng(3).standard_normal(n, dtype=np.float32))
    passes = jax.jit(lambda x: jax.lax.fori_loop(0, STREAM_PASSES, lambda i, y: y * 0.5 + 1.0, x))
    seconds = b.measure(passes, x)["min"] / STREAM_PASSES
    return 8 * n / seconds / 1e9


def matmul(b) -> None:
    n = b.sz.n_hess
    t = b.table(
        "matmul",
        "1. float32 matmul rate: the limit, and the model's own products",
        ["product", "N, in, out", "GFLOP", "ms", "GFLOP/s", "fraction of limit"],
    )
    with b.guard(t, "square"):
        s = b.sz.square
        rate = b.square_rate()
        t.rows.append(
            [
                "**large square (the limit)**",
                f"{s}, {s}, {s}",
                2 * s**3 / 1e9,
                2 * s**3 / rate / 1e6,
                rate,
                1.0,
            ]
        )
    for model in dict.fromkeys(m for m, _ in b.sz.hess):
        layers = b.problem(model, n).layers
        for l, (i, o) in enumerate(layers[:1] if model != "mnist" else layers):
            for kind, eq in KINDS.items():
                with b.guard(t, f"{kind} {eq}", f"{n}, {i}, {o}"):
                    r = b.product(eq, {"n": n, "i": i, "o": o})
                    t.rows.append(
                        [
                            f"{kind} {eq}",
                            f"{n}, {i}, {o}",
                            r["flops"] / 1e9,
                            r["seconds"] * 1e3,
                            r["rate"],
                            r["rate"] / b.square_rate(),
                        ]
                    )
        for part in ("grad", "tangent"):
            with b.guard(t, f"{model} MLP {part} products"):
                r = b.own_products(model, n, part)
                t.rows.append(
                    [
                        f"{model} MLP: {part} products",
                        f"{n}, {layers}",
                        r["flops"] / 1e9,
                        r["seconds"] * 1e3,
                        r["rate"],
                        r["rate"] / b.square_rate(),
                    ]
                )
    t.notes.append(
        "Each product row: one jitted einsum on random operands. MLP rows: the products one gradient / "
        "one HVP tangent does (module docstring), at their shapes and layouts, each timed alone, times "
        "summed. fraction of limit = GFLOP/s / the large square's GFLOP/s."
    )
    m = b.table(
        "matmul",
        "1b. machine rates: the limits of memory-bound work (projections, section 5)",
        ["operation", "elements", "rate", "unit"],
    )
    with b.guard(m, "gather"):
        for route, rate in gather_rates(b, b.sz.rate_n).items():
            label = f"gather from a 1000-float table, summed (fastest call), {route}"
            m.rows.append([label, b.sz.rate_n, rate, "G elements/s"])
    with b.guard(m, "stream"):
        label = f"y <- y / 2 + 1, float32, read + write (a loop of {STREAM_PASSES} passes, fastest call)"
        m.rows.append([label, b.sz.rate_n, b.stream_rate(), "GB/s"])


def grad_hvp(b) -> None:
    t = b.table(
        "grad_hvp",
        "2. grad and HVP (jvp of grad), MLP " + "-".join(map(str, _dims(b, "mnist"))),
        ["N", "op", "ms", "GFLOP", "GFLOP/s", "fraction of limit", "HVP / grad"],
    )
    limit = b.square_rate()
    for n in b.sz.grad_ns:
        p = b.problem("mnist", n)
        with b.guard(t, n):
            grad_fn = jax.jit(lambda th, x, y: jax.grad(flat.loss_fn(p.fm, x, y))(th))
            hvp_fn = jax.jit(lambda th, v, x, y: curvature.hvp(flat.loss_fn(p.fm, x, y), th, v))
            v = jax.random.normal(jax.random.key(2), p.theta.shape)
            tg = b.measure(grad_fn, p.theta, p.x, p.y)["median"]
            th = b.measure(hvp_fn, p.theta, v, p.x, p.y)["median"]
            fg = flops(p.layers, n, "grad")
            fh = fg + flops(p.layers, n, "tangent")
            t.rows.append([n, "grad", tg * 1e3, fg / 1e9, fg / tg / 1e9, fg / tg / 1e9 / limit, ""])
            t.rows.append([n, "HVP", th * 1e3, fh / 1e9, fh / th / 1e9, fh / th / 1e9 / limit, th / tg])


def _dims(b, model) -> tuple:
    return (b.sz.models[model][0], *b.sz.models[model][1], 10)


def necessary_flops(p, d: int, P) -> float:
    """FLOPs of H_sub at problem p that any method must do: grad + d tangents + the projection (module
    docstring of experiments/benchmark.py)."""
    n = p.x.shape[0]
    mm = flops(p.layers, n, "grad") + d * flops(p.layers, n, "tangent")
    nnz = None if isinstance(P, proj.Dense) else int(np.count_nonzero(np.asarray(P.data)))
    return mm + (2 * d * d * p.fm.D if nnz is None else 2 * d * nnz)


def hessian(b) -> None:
    sz = b.sz
    t = b.table(
        "hessian",
        f"3. exact subspace Hessian P^T H P, library default (linearize_map, "
        f"default_chunk_size), sparse P, {sz.n_hess} examples",
        ["model", "D", "d", "s", "GFLOP (necessary)", "GFLOP/s", "fraction of limit", "vs own products"],
    )
    worst = None
    for model, d in sz.hess:
        with b.guard(t, model, "", d):
            h = b.hessian(model, d)
            f = necessary_flops(b.problem(model, sz.n_hess), d, h["P"])
            rate, limit = f / h["median"] / 1e9, b.square_rate()
            own = b.own_products(model, sz.n_hess, "tangent")["rate"]
            t.rows.append(
                [
                    model,
                    b.problem(model, sz.n_hess).fm.D,
                    d,
                    h["median"],
                    f / 1e9,
                    rate,
                    rate / limit,
                    rate / own,
                ]
            )
            if d >= sz.sweep_d and (worst is None or rate / limit < worst[0]):
                worst = (rate / limit, model, d, rate, limit)
    if worst:
        b.target(
            "hess_rate",
            f"{worst[0]:.0%} ({worst[1]} d={worst[2]}: {worst[3]:.1f} of {worst[4]:.1f} GFLOP/s)",
            worst[0],
        )
    t.notes.append(
        "GFLOP (necessary) = grad + d x HVP tangent + projection (module docstring); fraction of limit = "
        "GFLOP/s / the large square's (section 1); vs own products = GFLOP/s / the rate of the model's "
        "HVP-tangent products each timed alone (above 1 where XLA fuses or batches them; not a limit)."
    )
    s = b.table(
        "hessian",
        f"3b. Hessian strategies (curvature.METHODS) and chunk sizes, mnist d={sz.sweep_d}",
        ["P", "method", "chunk", "s", "vs fastest of this P", "library default"],
    )
    verdicts = []
    for kind in sz.sweep_kinds:
        default = ("linearize_map", curvature.default_chunk_size(b.hessian_P("mnist", sz.sweep_d, kind)))
        chunks = sorted(set(sz.chunks) | {default[1]})
        # Every method of curvature.METHODS; the default method at each chunk size, the others at their
        # default; jax.hessian (dense jacfwd of jacrev in z) once, with the sparse P.
        configs = [
            (m, c)
            for m in curvature.METHODS
            for c in (chunks if m == "linearize_map" else (None,))
            if m != "hessian" or kind == "sparse"
        ]
        # Interleaved timed calls (Bench.measure_interleaved): the choice of default must not hinge on
        # which configuration met a slow spell of a shared machine.
        fns = {}
        for method, chunk in configs:
            with b.guard(s, kind, method, chunk or "-"):
                fns[(method, chunk)] = b.hessian_fn("mnist", sz.sweep_d, kind, method, chunk)
        b.log(f"hessian strategies {kind} d={sz.sweep_d}: {len(fns)} configurations, interleaved")
        times = {}
        with b.guard(s, kind, "all", "-"):
            times = b.measure_interleaved(fns)
        if not times:
            continue
        best = min(times, key=times.get)
        for (method, chunk), sec in times.items():
            is_default = "yes" if (method, chunk) == default else ""
            s.rows.append([kind, method, chunk or "-", sec, sec / times[best], is_default])
        ratio = times.get(default, float("nan")) / times[best]
        fastest = f"{best[0]}" + (f" chunk {best[1]}" if best[1] else "")
        verdicts.append((ratio, f"{kind}: default chunk {default[1]} = {ratio:.2f}x the fastest ({fastest})"))
    if verdicts:
        b.target("hess_default", "; ".join(v for _, v in verdicts), max(r for r, _ in verdicts))


def torch(b) -> None:
    t = b.table(
        "torch",
        "4. the same Hessian in PyTorch: same weights, data and P (dense in torch)",
        ["model", "D", "d", "route", "s", "calls", "torch / gzone", "max rel. diff"],
    )
    if b.bt is None:
        t.rows.append(["", "", "", "all", f"skipped: {b.torch_missing}", "", "", ""])
        for key in ("hess_torch", "hess_agree"):
            b.target(key, "skipped: torch not installed", None)
        return
    ratios, diffs, warmed = [], [], False
    for model, d in b.sz.torch_hess:
        p = b.problem(model, b.sz.n_hess)
        with b.guard(t, model, p.fm.D, d):
            g = b.hessian(model, d)
            P = np.asarray(proj.todense(g["P"]))
            args = (segments(p.fm), np.asarray(p.theta), P, np.asarray(p.x), np.asarray(p.y))
            if not warmed:
                b.bt.warm_up(args[0], args[1], args[3], args[4])
                warmed = True
            for route, fn in b.bt.hessian_fns(*args).items():
                with b.guard(t, model, p.fm.D, d, route):
                    b.log(f"torch {route} {model} d={d}")
                    r = b.measure(fn, torch_side=True, warm_up=False)
                    diff = float(np.max(np.abs(r["out"] - g["out"])) / np.max(np.abs(g["out"])))
                    ratios.append((r["median"] / g["median"], route, model, d))
                    diffs.append(diff)
                    t.rows.append([model, p.fm.D, d, route, r["median"], r["n"], ratios[-1][0], diff])
    if ratios:
        low = min(ratios)
        b.target("hess_torch", f"{low[0]:.1f}x (smallest margin: {low[1]}, {low[2]} d={low[3]})", low[0])
        b.target("hess_agree", f"max {max(diffs):.1e}", max(diffs))
    t.notes.append(
        "torch: no compile, so no warm-up call per row (one gradient warms torch up first); "
        "a row stops after 3 calls once they took --max_seconds. max rel. diff = max|H_torch - H_gzone| / "
        "max|H_gzone|. On a GPU, JAX's default matmul precision may be TF32: expect ~1e-3 there."
    )
