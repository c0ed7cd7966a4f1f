"""The eight items of experiments.benchmark, one function per --section, each filling tables.

Every function takes the run's `Bench` (timing, caches, report; see experiments/benchmark.py)
and records its rows and targets there; a failing row is recorded as 'failed: reason'.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from gzone import curvature, flat, measure, models, train
from gzone import projections as proj
from gzone import seeds as seed_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A product kind and the kinds each layer does (first layer, other layers): see benchmark.py.
KINDS = {"fwd": "ni,io->no", "wgrad": "ni,no->io", "xgrad": "no,io->ni"}
PARTS = {"grad": (("fwd", "wgrad"), ("fwd", "wgrad", "xgrad")),
         "tangent": (("fwd", "wgrad"), ("fwd", "fwd", "wgrad", "wgrad", "xgrad", "xgrad"))}
E2E = ["-m", "experiments.radius_scan", "--flagfile=experiments/flagfiles/quick.flags"]


def products(layers, n: int, part: str) -> list:
    """[(einsum, dims)] of the matmuls of `part` (grad | tangent) of an MLP on n examples."""
    return [(KINDS[k], {"n": n, "i": i, "o": o}) for l, (i, o) in enumerate(layers) for k in PARTS[part][l > 0]]


def flops(layers, n: int, part: str) -> int:
    return sum(2 * n * i * o * len(PARTS[part][l > 0]) for l, (i, o) in enumerate(layers))


def segments(fm) -> tuple:
    """((kernel (start, size, shape)), (bias ...)) per layer, for the torch side."""
    seg = {s.name: (s.start, s.size, s.shape) for s in fm.segments}
    return tuple((seg[f"{layer}/kernel"], seg[f"{layer}/bias"]) for layer in fm.layers)


def matmul(b) -> None:
    n = b.sz.n_hess
    t = b.table("matmul", "1. float32 matmul rate: the limit", ["product", "N, in, out", "GFLOP", "ms", "GFLOP/s"])
    for model in dict.fromkeys(m for m, _ in b.sz.hess):
        layers = b.problem(model, n).layers
        for l, (i, o) in enumerate(layers[:1] if model != "mnist" else layers):
            for kind, eq in KINDS.items():
                with b.guard(t, f"{kind} {eq}", f"{n}, {i}, {o}"):
                    r = b.product(eq, {"n": n, "i": i, "o": o})
                    t.rows.append([f"{kind} {eq}", f"{n}, {i}, {o}", r["flops"] / 1e9, r["seconds"] * 1e3, r["rate"]])
        for part in ("grad", "tangent"):
            with b.guard(t, f"{model} MLP {part} products"):
                r = b.limit(model, n, part)
                t.rows.append([f"**{model} MLP: {part} products (limit)**", f"{n}, {layers}", r["flops"] / 1e9,
                               r["seconds"] * 1e3, r["rate"]])
    with b.guard(t, "square"):
        s = b.sz.square
        rate = b.square_rate()
        t.rows.append(["**large square**", f"{s}, {s}, {s}", 2 * s**3 / 1e9, 2 * s**3 / rate / 1e6, rate])
    t.notes.append("Each product row: one jitted einsum on random operands. Limit rows: the products one gradient / "
                   "one HVP tangent does (module docstring), at their shapes and layouts, times summed.")


def grad_hvp(b) -> None:
    t = b.table("grad_hvp", "2. grad and HVP (jvp of grad), MLP " + "-".join(map(str, _dims(b, "mnist"))),
                ["N", "op", "ms", "GFLOP", "GFLOP/s", "fraction of limit", "HVP / grad"])
    for n in b.sz.grad_ns:
        p = b.problem("mnist", n)
        with b.guard(t, n):
            grad_fn = jax.jit(lambda th, x, y: jax.grad(flat.loss_fn(p.fm, x, y))(th))
            hvp_fn = jax.jit(lambda th, v, x, y: curvature.hvp(flat.loss_fn(p.fm, x, y), th, v))
            v = jax.random.normal(jax.random.key(2), p.theta.shape)
            tg = b.measure(grad_fn, p.theta, p.x, p.y)["median"]
            th = b.measure(hvp_fn, p.theta, v, p.x, p.y)["median"]
            lg, lt = b.limit("mnist", n, "grad"), b.limit("mnist", n, "tangent")
            fg, fh = lg["flops"], lg["flops"] + lt["flops"]
            t.rows.append([n, "grad", tg * 1e3, fg / 1e9, fg / tg / 1e9, fg / tg / 1e9 / lg["rate"], ""])
            lim = fh / (lg["seconds"] + lt["seconds"]) / 1e9
            t.rows.append([n, "HVP", th * 1e3, fh / 1e9, fh / th / 1e9, fh / th / 1e9 / lim, th / tg])


def _dims(b, model) -> tuple:
    return (b.sz.models[model][0], *b.sz.models[model][1], 10)


def _necessary(b, model: str, d: int, P) -> tuple[float, float]:
    """(necessary FLOPs of H_sub, limit GFLOP/s of its matmuls): grad + d tangents + projection."""
    n = b.sz.n_hess
    lg, lt = b.limit(model, n, "grad"), b.limit(model, n, "tangent")
    mm = lg["flops"] + d * lt["flops"]
    D = b.problem(model, n).fm.D
    projection = 2 * d * d * D if isinstance(P, proj.Dense) else 2 * d * int(np.count_nonzero(np.asarray(P.data)))
    return mm + projection, mm / (lg["seconds"] + d * lt["seconds"]) / 1e9


def hessian(b) -> None:
    sz = b.sz
    t = b.table("hessian", f"3. exact subspace Hessian P^T H P, library default (linearize_map, "
                f"default_chunk_size), sparse P, {sz.n_hess} examples",
                ["model", "D", "d", "s", "GFLOP (necessary)", "GFLOP/s", "fraction of limit", "fraction of square"])
    worst = None
    for model, d in sz.hess:
        with b.guard(t, model, "", d):
            h = b.hessian(model, d)
            f, lim = _necessary(b, model, d, h["P"])
            rate = f / h["median"] / 1e9
            t.rows.append([model, b.problem(model, sz.n_hess).fm.D, d, h["median"], f / 1e9, rate, rate / lim,
                           rate / b.square_rate()])
            if d >= sz.sweep_d and (worst is None or rate / lim < worst[0]):
                worst = (rate / lim, model, d, rate, lim)
    if worst:
        b.target("hess_rate", f"{worst[0]:.0%} ({worst[1]} d={worst[2]}: {worst[3]:.1f} of {worst[4]:.1f} GFLOP/s)",
                 worst[0] >= 0.8)
    t.notes.append("GFLOP (necessary) = grad + d x HVP tangent + projection (module docstring); limit = the rate of "
                   "those matmuls alone (section 1); square = the large square product's rate.")
    s = b.table("hessian", f"3b. Hessian strategies (curvature.METHODS) and chunk sizes, mnist d={sz.sweep_d}",
                ["P", "method", "chunk", "s", "vs fastest of this P", "library default"])
    verdicts, ok = [], True
    for kind in sz.sweep_kinds:
        default = ("linearize_map", curvature.default_chunk_size(b.hessian_P("mnist", sz.sweep_d, kind)))
        chunks = sorted(set(sz.chunks) | {default[1]})
        # Every method of curvature.METHODS; the default method at each chunk size, the others at their
        # default; jax.hessian (dense jacfwd of jacrev in z) once, with the sparse P.
        configs = [(m, c) for m in curvature.METHODS for c in (chunks if m == "linearize_map" else (None,))
                   if m != "hessian" or kind == "sparse"]
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
        ok &= ratio <= 1.05
        fastest = f"{best[0]}" + (f" chunk {best[1]}" if best[1] else "")
        verdicts.append(f"{kind}: default chunk {default[1]} = {ratio:.2f}x the fastest ({fastest})")
    if verdicts:
        b.target("hess_default", "; ".join(verdicts), ok)


def torch(b) -> None:
    t = b.table("torch", "4. the same Hessian in PyTorch: same weights, data and P (dense in torch)",
                ["model", "D", "d", "route", "s", "calls", "torch / gzone", "max rel. diff"])
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
        b.target("hess_torch", f"{low[0]:.1f}x (smallest margin: {low[1]}, {low[2]} d={low[3]})", low[0] >= 3)
        b.target("hess_agree", f"max {max(diffs):.1e}", max(diffs) <= 1e-4)
    t.notes.append("torch: no compile, so no warm-up call per row (one gradient warms torch up first); "
                   "a row stops after 3 calls once they took --max_seconds. max rel. diff = max|H_torch - H_gzone| / "
                   "max|H_gzone|. On a GPU, JAX's default matmul precision may be TF32: expect ~1e-3 there.")


def projections(b) -> None:
    sz = b.sz
    t = b.table("projections", "5a. projections P z and P^T v (memory, time)",
                ["D", "d", "P", "memory MB", "P z ms", "P^T v ms", "note"])
    wins = {"gather": 0, "bcoo": 0}
    for model in sz.proj_models:
        D = b.problem(model, sz.n_hess).fm.D
        v = jnp.asarray(np.random.default_rng(3).standard_normal(D, dtype=np.float32))
        for d in sz.proj_dims:
            b.log(f"projections D={D} d={d}")
            z = jnp.asarray(np.random.default_rng(4).standard_normal(d, dtype=np.float32))
            for kind in ("dense", "sparse", "fastfood"):
                if kind == "dense" and 4 * D * d > sz.dense_max_bytes:
                    t.rows.append([D, d, kind, 4 * D * d / 1e6, "", "", f"skipped: {4 * D * d / 1e9:.0f} GB > "
                                   f"{sz.dense_max_bytes / 1e9:.0f} GB"])
                    continue
                with b.guard(t, D, d, kind):
                    P = b.projection(kind, D, d, orthonormal=False)
                    pair = {}
                    for impl in ("gather", "bcoo") if kind == "sparse" else ("gather",):
                        fwd = b.measure(jax.jit(lambda P, z: proj.apply(P, z, impl=impl)), P, z)["median"]
                        tr = b.measure(jax.jit(lambda P, v: proj.apply_T(P, v, impl=impl)), P, v)["median"]
                        pair[impl] = fwd + tr
                        label = f"sparse, impl={impl}" if kind == "sparse" else kind
                        t.rows.append([D, d, label, proj.nbytes(P) / 1e6, fwd * 1e3, tr * 1e3, ""])
                    if kind == "sparse":
                        wins[min(pair, key=pair.get)] += 1
                    del P
    t.notes.append("Dense P here is Gaussian / sqrt(D) without the QR of projections.make('dense'): the products "
                   "cost the same, the QR is O(D d^2) (minutes at d = 1000 on 2 cores).")
    t.notes.append(f"Sparse impl (P z + P^T v faster): gather in {wins['gather']}, bcoo in {wins['bcoo']} of "
                   f"{sum(wins.values())} configurations; the library default is impl='gather'.")


def steps(b) -> None:
    sz = b.sz
    t = b.table("steps", f"5b. one training step in a subspace / one full-space step (Adam, batch {sz.batch})",
                ["D", "P", "d", "ms / step", "ratio to full", "P memory MB"])
    ratios = {}
    for model in sz.proj_models:
        p = b.problem(model, sz.n_hess)
        n = sz.train_steps * sz.batch
        x = jax.random.normal(jax.random.key(5), (n, sz.models[model][0]))
        y = jax.random.randint(jax.random.key(6), (n,), 0, 10)
        data = train.Data(x, y, x[: sz.batch], y[: sz.batch])
        with b.guard(t, p.fm.D, "full space"):
            full = _step_ms(b, p.fm, "full", p.theta, data, None)
            t.rows.append([p.fm.D, "full space", "", full, 1.0, ""])
            for kind in sz.step_kinds:
                for d in sz.proj_dims:
                    if kind == "dense" and d > sz.steps_dense_max_d:
                        continue
                    with b.guard(t, p.fm.D, kind, d):
                        P = b.projection(kind, p.fm.D, d, orthonormal=False)
                        ms = _step_ms(b, p.fm, "hyperplane", jnp.zeros(d), data, train.Space(p.theta, P))
                        ratios[(model, kind, d)] = ms / full
                        t.rows.append([p.fm.D, kind, d, ms, ms / full, proj.nbytes(P) / 1e6])
    for key, kind, dims, limit in (("step_small", "sparse", sz.small_dims, 1.1),
                                   ("step_mid", "sparse", (sz.mid_d,), 2.0),
                                   ("step_fastfood", "fastfood", (sz.big_d,), 3.0)):
        got = [(r, m, d) for (m, k, d), r in ratios.items() if k == kind and d in dims]
        if got:
            worst = max(got)
            b.target(key, f"max {worst[0]:.2f} ({worst[1]} d={worst[2]})", worst[0] <= limit)
    t.notes.append(f"Each: one jitted epoch of {sz.train_steps} steps (train.make_trainer's lax.scan, per-step "
                   f"metrics included) divided by the steps. Dense P is skipped above d = {sz.steps_dense_max_d} "
                   "(its P^T v alone costs ~1 s at d = 1000 on 2 cores; see 5a).")


def _step_ms(b, fm, mode, params0, data, space) -> float:
    spec = train.spec_for(data.x_train.shape[0], mode=mode, batch_size=b.sz.batch, lr=1e-3)
    trainer = train.make_trainer(fm, spec)
    b.log(f"steps D={fm.D} " + ("full space" if space is None else f"{type(space.P).__name__} d={params0.shape[0]}"))
    r = b.measure(jax.jit(trainer.run, static_argnums=5), trainer.init(params0, space), b.key, data, space, 0, 1)
    return r["median"] / spec.steps_per_epoch * 1e3


def seeds(b) -> None:
    sz, default = b.sz, seed_lib.default_seed_mode(workload="scan")
    t = b.table("seeds", f"6. seeds vmapped vs lax.map: a radius-scan unit (seeds.make_unit_fn: {sz.seeds} seeds, "
                f"sparse P, {sz.n_hess} examples) and training ({sz.train_seeds} seeds, {sz.train_seed_steps} Adam "
                f"steps of batch {sz.batch}); defaults on {jax.default_backend()}: scan {default}, "
                f"train {seed_lib.default_seed_mode(workload='train')}; timed calls interleaved",
                ["workload", "D", "d", "seed mode", "s", "vs faster", "default"])
    verdicts = []
    for model, d in sz.seed_units:
        p = b.problem(model, sz.n_hess)
        shape = (sz.models[model][0],)
        r_x = models.xavier_radius(p.module, shape)
        point_fn = measure.make_point_fn(p.fm, d=d, projection="sparse", convention="xavier_rescaled",
                                      sample_fn=flat.sample_fn(p.module, shape), r_x=r_x)
        keys = seed_lib.SeedKeys.from_seed(0)
        args = (keys.init_keys(sz.seeds), keys.proj_keys(d, sz.seeds), jnp.float32(r_x), p.x, p.y)
        times = {}
        with b.guard(t, "scan unit, MLP " + "-".join(map(str, _dims(b, model))), p.fm.D, d, "both"):
            b.log(f"seeds {'/'.join(seed_lib.SEED_MODES)} {model} d={d}, interleaved")
            units = {mode: seed_lib.make_unit_fn(point_fn, seed_mode=mode) for mode in seed_lib.SEED_MODES}
            times = b.measure_interleaved({mode: (lambda u=u: u(*args)) for mode, u in units.items()})
        for mode, sec in times.items():
            t.rows.append(["scan unit, MLP " + "-".join(map(str, _dims(b, model))), p.fm.D, d, mode, sec,
                           sec / min(times.values()), "yes" if mode == default else ""])
        if default in times and len(times) == 2:
            verdicts.append((times[default] / min(times.values()), f"scan {default}", f"{model} d={d}"))
    # Training: the same full-space trainer for every seed (train.make_trainer + seed_lib.map_seeds).
    model, default_train = "mnist", seed_lib.default_seed_mode(workload="train")
    p = b.problem(model, sz.n_hess)
    n = sz.batch * sz.train_seed_steps
    rng = np.random.default_rng(0)
    data = train.Data(*(jnp.asarray(a) for a in (rng.standard_normal((n, sz.models[model][0]), dtype=np.float32),
                                                 rng.integers(0, 10, n).astype(np.int32), p.x, p.y)))
    times = {}
    with b.guard(t, "train, MLP " + "-".join(map(str, _dims(b, model))), p.fm.D, "", "both"):
        trainer = train.make_trainer(p.fm, train.spec_for(n, mode="full", optimizer="adam", lr=1e-3, batch_size=sz.batch))
        keys = jax.random.split(b.key, sz.train_seeds)
        state0 = jax.vmap(trainer.init)(jax.vmap(flat.sample_fn(p.module, (sz.models[model][0],)))(keys))
        b.log(f"seeds {'/'.join(seed_lib.SEED_MODES)} training {model}, interleaved")
        runs = {mode: jax.jit(seed_lib.map_seeds(lambda st, k, d: trainer.run(st, k, d, None, 0, 1), mode))
                for mode in seed_lib.SEED_MODES}
        times = b.measure_interleaved({mode: (lambda r=r: r(state0, keys, data)) for mode, r in runs.items()})
    for mode, sec in times.items():
        t.rows.append(["train, MLP " + "-".join(map(str, _dims(b, model))), p.fm.D, "", mode, sec,
                       sec / min(times.values()), "yes" if mode == default_train else ""])
    if default_train in times and len(times) == 2:
        verdicts.append((times[default_train] / min(times.values()), f"train {default_train}", model))
    if verdicts:
        worst = max(verdicts)
        b.target("seeds", f"defaults at most {worst[0]:.2f}x the faster mode (worst: {worst[1]}, {worst[2]})",
                 worst[0] <= 1.05)


def epoch(b) -> None:
    sz = b.sz
    t = b.table("epoch", f"7. one training epoch, Adam, batch {sz.batch}, synthetic data of the real shapes, "
                f"{sz.n_test} test examples evaluated",
                ["data", "N train", "D", "gzone s", "torch s", "gzone / torch"])
    verdicts = []
    for label, model, n in sz.epochs:
        p = b.problem(model, sz.n_hess)
        rng = np.random.default_rng(0)
        arrays = []  # x_train, y_train, x_test, y_test
        for m in (n, sz.n_test):
            arrays += [rng.standard_normal((m, sz.models[model][0]), dtype=np.float32), rng.integers(0, 10, m).astype(np.int32)]
        with b.guard(t, label, n, p.fm.D):
            spec = train.spec_for(n, mode="full", optimizer="adam", lr=1e-3, batch_size=sz.batch)
            trainer = train.make_trainer(p.fm, spec)
            b.log(f"epoch gzone {label}")
            data = train.Data(*map(jnp.asarray, arrays))
            run = jax.jit(trainer.run, static_argnums=5)
            tg = b.measure(run, trainer.init(p.theta), b.key, data, None, 0, 1)["median"]
            del data
            if b.bt is None:
                t.rows.append([label, n, p.fm.D, tg, f"skipped: {b.torch_missing}", ""])
                continue
            b.log(f"epoch torch {label}")
            fn = b.bt.epoch_fn(segments(p.fm), np.asarray(p.theta), arrays, batch_size=sz.batch, lr=1e-3)
            tt = b.measure(fn, torch_side=True)["median"]
            t.rows.append([label, n, p.fm.D, tg, tt, tg / tt])
            verdicts.append((tg / tt, label))
    if verdicts:
        worst = max(verdicts)
        b.target("epoch", f"gzone / torch = {worst[0]:.2f} ({worst[1]}, the worse)", worst[0] <= 1.0)
    elif b.bt is None:
        b.target("epoch", "skipped: torch not installed", None)


def e2e(b) -> None:
    command = " ".join(["python", *E2E, "--workdir=<tmp>", "--overwrite"])
    t = b.table("e2e", "8. the README's main job end to end (one cold run, compile included)", ["command", "wall s"])
    if b.cfg.quick:
        t.rows.append([f"`{command}`", "skipped in --quick"])
        b.target("e2e", "skipped in --quick", None)
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, *E2E, f"--workdir={tmp}", "--overwrite"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}")
    t.rows.append([f"`{command}`", wall])
    b.target("e2e", f"{wall:.1f} s", wall <= 60)
