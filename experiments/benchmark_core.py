"""The machinery of experiments.benchmark: sizes, targets, timing, caches, tables.

`Bench` times jitted calls (median of the timed calls after a warm-up call, or round-robin over
candidates), caches problems, projections and measured rates, and collects the report's tables
and targets. A target's "met" is computed here from its measured value and threshold, never set
by a section.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import statistics
import sys
import time

from experiments import benchmark_sections as sections

# key: (section, text, "<=" or ">=", threshold).
TARGETS = {
    "hess_rate": (
        "hessian",
        "exact subspace Hessian >= 80 % of the matmul limit (large square) for d >= 100",
        ">=",
        0.8,
    ),
    "hess_default": (
        "hessian",
        "library default (method, chunk size) is the fastest strategy (within 5 %)",
        "<=",
        1.05,
    ),
    "hess_torch": ("torch", "exact subspace Hessian >= 3x faster than each torch route", ">=", 3.0),
    "hess_agree": ("torch", "gzone and torch Hessians agree to 1e-4 relative (float32)", "<=", 1e-4),
    "step_small": ("steps", "sparse step / full step <= 1.1 at d <= 100 (both MLPs)", "<=", 1.1),
    "step_1e3": ("steps", "sparse step / full step <= 1.5 at d = 10^3 (both MLPs)", "<=", 1.5),
    "step_1e4": ("steps", "sparse step / full step <= 3 at d = 10^4 (both MLPs)", "<=", 3.0),
    "step_fastfood": ("steps", "Fastfood step / full step <= 2 at every d up to 10^4 (both MLPs)", "<=", 2.0),
    "seeds": (
        "seeds",
        "default seed modes of this backend (scan, train) not slower than the other (within 5 %)",
        "<=",
        1.05,
    ),
    "epoch": ("epoch", "gzone training epoch not slower than the PyTorch loop", "<=", 1.0),
    "e2e": ("e2e", "the README's main job (radius_scan, quick.flags) <= 60 s end to end", "<=", 60.0),
}


def holds(value: float, op: str, threshold: float) -> bool:
    return value <= threshold if op == "<=" else value >= threshold


def target_record(key: str, measured: str, value: float | None, bound: float | None = None) -> dict:
    """A target's record: met = whether the value meets the threshold (None: no value, skipped).

    bound: the least (for "<=") value this machine allows, from rates measured in the run.
    """
    _, text, op, threshold = TARGETS[key]
    met = None if value is None else holds(value, op, threshold)
    return {
        "text": text,
        "measured": measured,
        "value": value,
        "op": op,
        "threshold": threshold,
        "met": met,
        "bound": bound,
    }


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Problem sizes of a run. models: name -> (input dim, hidden widths), 10 classes."""

    models: dict
    n_hess: int = 1000
    grad_ns: tuple = (1000, 10000)
    hess: tuple = (("mnist", 10), ("mnist", 100), ("mnist", 500), ("cifar", 100))
    torch_hess: tuple = (("mnist", 10), ("mnist", 100), ("cifar", 100))
    sweep_d: int = 100
    chunks: tuple = (1, 4, 16, 64)
    sweep_kinds: tuple = ("sparse", "dense")
    proj_models: tuple = ("mnist", "cifar")
    proj_dims: tuple = (10, 100, 1000, 10_000)
    # the step targets: key -> (projection kind, the d they are judged at)
    step_targets: tuple = (
        ("step_small", "sparse", (10, 100)),
        ("step_1e3", "sparse", (1000,)),
        ("step_1e4", "sparse", (10_000,)),
        ("step_fastfood", "fastfood", (10, 100, 1000, 10_000)),
    )
    step_kinds: tuple = ("sparse", "fastfood", "dense")
    steps_dense_max_d: int = 100  # a dense P^T v at d = 1000 alone takes ~1 s on 2 cores
    train_steps: int = 32
    batch: int = 128
    seeds: int = 8
    seed_units: tuple = (("mnist1d", 10), ("mnist1d", 50), ("mnist", 10), ("mnist", 100))
    train_seeds: int = 4
    train_seed_steps: int = 100
    epochs: tuple = (("MNIST-size", "mnist", 60_000), ("CIFAR-size", "cifar", 50_000))
    n_test: int = 10_000
    square: int = 2048
    rate_n: int = 1 << 22  # elements of the gather and streaming rates
    dense_max_bytes: float = 4e9
    # cost-vs-size curves (section 9): the Hessian against d, D (hidden width) and N; the step against d
    scale_hess_ds: tuple = (10, 30, 100, 300)
    scale_widths: tuple = (50, 100, 200, 400)
    scale_ns: tuple = (250, 500, 1000, 2000, 4000)
    scale_d: int = 30
    scale_step_ds: tuple = (10, 30, 100, 300, 1000, 3000, 10_000)


FULL = Sizes(models={"mnist": (784, (200, 200)), "cifar": (3072, (200, 200)), "mnist1d": (40, (100, 100))})
QUICK = Sizes(
    models={"mnist": (64, (32, 32)), "mnist1d": (40, (16,))},
    n_hess=64,
    grad_ns=(64,),
    hess=(("mnist", 8),),
    torch_hess=(("mnist", 8),),
    sweep_d=8,
    chunks=(1,),
    sweep_kinds=("dense",),
    proj_models=("mnist",),
    proj_dims=(16,),
    step_targets=(
        ("step_small", "sparse", (16,)),
        ("step_1e3", "sparse", (16,)),
        ("step_1e4", "sparse", (16,)),
        ("step_fastfood", "fastfood", (16,)),
    ),
    step_kinds=("sparse", "fastfood"),
    train_steps=4,
    batch=16,
    seeds=2,
    seed_units=(("mnist1d", 4),),
    train_seeds=2,
    train_seed_steps=4,
    epochs=(("MNIST-size", "mnist", 256),),
    n_test=64,
    square=128,
    rate_n=1 << 14,
    scale_hess_ds=(2, 8),
    scale_widths=(8, 32),
    scale_ns=(16, 64),
    scale_d=4,
    scale_step_ds=(4, 16),
)


@dataclasses.dataclass
class Table:
    section: str
    title: str
    columns: list
    rows: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    figures: list = dataclasses.field(default_factory=list)  # paths relative to the report's folder


@dataclasses.dataclass(frozen=True)
class Problem:
    """An MLP at a Xavier point with N synthetic examples."""

    module: object
    fm: object
    theta: object  # [D]
    x: object  # [N, input]
    y: object  # [N]
    layers: tuple  # ((i, o), ...)


class Bench:
    """Timing, caches and the report of one run."""

    def __init__(self, config, sizes: Sizes, torch_module, torch_missing: str | None, *, figures: str):
        """config: experiments.benchmark.Config; figures: the report's folder (docs/figures/ in it)."""
        import jax

        self.cfg, self.sz, self.bt, self.torch_missing = config, sizes, torch_module, torch_missing
        self.report_dir = figures
        self.torch_device = torch_module.setup(config.torch_threads) if torch_module is not None else None
        self.tables: list[Table] = []
        self.targets: dict = {}
        self.cache: dict = {}
        self.start = time.perf_counter()
        self.key = jax.random.key(0)

    def log(self, message: str) -> None:
        print(f"[benchmark {time.perf_counter() - self.start:6.0f}s] {message}", file=sys.stderr, flush=True)

    def table(self, section: str, title: str, columns: list) -> Table:
        self.tables.append(Table(section, title, columns))
        return self.tables[-1]

    def target(self, key: str, measured: str, value: float | None, bound: float | None = None) -> None:
        """Records target `key` (TARGETS): met follows from value and the threshold."""
        self.targets[key] = target_record(key, measured, value, bound)

    def figure_path(self, name: str) -> tuple[str, str]:
        """(absolute path, path relative to the report) of a figure docs/figures/<name>."""
        rel = os.path.join("docs", "figures", name)
        path = os.path.join(self.report_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path, rel

    @contextlib.contextmanager
    def guard(self, table: Table, *label):
        """A row that fails is recorded as 'failed: reason' and the section goes on."""
        try:
            yield
        except Exception as err:  # noqa: BLE001 - recorded in the report, the run goes on
            self.log(f"failed: {' '.join(map(str, label))}: {reason(err)}")
            table.rows.append(
                [*label, f"failed: {reason(err)}"] + [""] * (len(table.columns) - len(label) - 1)
            )

    def measure(self, fn, *args, torch_side: bool = False, warm_up: bool = True) -> dict:
        """Median seconds of fn(*args) over the timed calls (and the warm-up call's seconds, 'first')."""
        import jax

        sync = (lambda out: self.bt.sync()) if torch_side else jax.block_until_ready
        first, times, out = None, [], None
        for i in range(self.cfg.repeats + (1 if warm_up else 0)):
            start = time.perf_counter()
            out = fn(*args)
            sync(out)
            seconds = time.perf_counter() - start
            if warm_up and i == 0:
                first = seconds
                continue
            times.append(seconds)
            if len(times) >= 3 and sum(times) > self.cfg.max_seconds:
                break
        return {
            "median": statistics.median(times),
            "min": min(times),
            "first": first,
            "n": len(times),
            "out": out,
        }

    def measure_interleaved(self, fns: dict, rounds: int | None = None) -> dict:
        """Median seconds of each fn() (no arguments), the timed calls taken round-robin (fns[a], fns[b],
        ..., then again) after one warm-up call each, so that a slow spell of a shared machine hits every
        candidate alike: for comparisons that choose a default. `rounds` rounds (default --repeats);
        stops after 3 rounds once one candidate's calls took --max_seconds."""
        import jax

        times = {k: [] for k in fns}
        for fn in fns.values():
            jax.block_until_ready(fn())
        for _ in range(rounds or self.cfg.repeats):
            for k, fn in fns.items():
                start = time.perf_counter()
                jax.block_until_ready(fn())
                times[k].append(time.perf_counter() - start)
            if (
                len(next(iter(times.values()))) >= 3
                and max(sum(v) for v in times.values()) > self.cfg.max_seconds
            ):
                break
        return {k: statistics.median(v) for k, v in times.items()}

    def cached(self, key, make):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def problem(self, model: str, n: int, widths: tuple | None = None) -> Problem:
        """The model's MLP (or one of other hidden widths) at a Xavier point, with n synthetic examples."""

        def make():
            import jax

            from gzone import flat, models

            input_dim, own = self.sz.models[model]
            module = models.build(models.ModelSpec("mlp", tuple(widths or own)), 10)
            k_theta, k_x, k_y = jax.random.split(jax.random.fold_in(self.key, n), 3)
            theta = flat.sample_fn(module, (input_dim,))(k_theta)
            x = jax.random.normal(k_x, (n, input_dim))
            y = jax.random.randint(k_y, (n,), 0, 10)
            dims = (input_dim, *(widths or own), 10)
            layers = tuple(zip(dims[:-1], dims[1:]))
            return Problem(module, flat.flat_model(module, (input_dim,)), theta, x, y, layers)

        return self.cached(("problem", model, n, widths), make)

    def projection(self, kind: str, D: int, d: int, *, orthonormal: bool = True):
        """P [D, d] of a kind, deterministic in (D, d); a dense P without QR when not orthonormal."""
        import jax
        import jax.numpy as jnp

        from gzone import projections

        key = jax.random.fold_in(jax.random.fold_in(self.key, D), d)
        if kind == "dense" and not orthonormal:
            return projections.Dense(jax.random.normal(key, (D, d), jnp.float32) / math.sqrt(D))
        return jax.jit(lambda k: projections.make(kind, k, D=D, d=d))(key)

    def product(self, eq: str, dims: dict) -> dict:
        """Times one einsum product (e.g. "ni,io->no", {"n": 1000, "i": 784, "o": 200}) on random operands."""
        import jax
        import jax.numpy as jnp
        import numpy as np

        def make():
            rng = np.random.default_rng(1)
            shapes = [tuple(dims[c] for c in s) for s in eq.split("->")[0].split(",")]
            a, b = (jnp.asarray(rng.standard_normal(s, dtype=np.float32)) for s in shapes)
            seconds = self.measure(jax.jit(lambda a, b: jnp.einsum(eq, a, b)), a, b)["median"]
            flops = 2 * math.prod(dims.values())
            return {"flops": flops, "seconds": seconds, "rate": flops / seconds / 1e9}

        return self.cached(("product", eq, tuple(sorted(dims.items()))), make)

    def own_products(self, model: str, n: int, part: str) -> dict:
        """The products of `part` (grad | tangent) of the model's MLP on n examples, each timed alone,
        times summed: the rate of the model's own shapes (below the limit; not a bound)."""
        items = [
            self.product(eq, dims) for eq, dims in sections.products(self.problem(model, n).layers, n, part)
        ]
        flops, seconds = sum(r["flops"] for r in items), sum(r["seconds"] for r in items)
        return {"flops": flops, "seconds": seconds, "rate": flops / seconds / 1e9}

    def square_rate(self) -> float:
        """The limit: GFLOP/s of one large square float32 product, measured once per run."""
        s = self.sz.square
        return self.product("ij,jk->ik", {"i": s, "j": s, "k": s})["rate"]

    def gather_rate(self) -> float:
        """G elements/s of a float32 gather from a table of 1000 (in L1): the fastest a gather gets here
        (XLA's or the native kernel's, the faster)."""
        return self.cached(("rate", "gather"), lambda: sections.gather_rate(self, self.sz.rate_n))

    def stream_rate(self) -> float:
        """GB/s (read + write) of y = a x + b over rate_n float32: the memory traffic rate."""
        return sections.stream_rate_cached(self, self.sz.rate_n)

    def hessian_P(self, model: str, d: int, kind: str = "sparse"):
        D = self.problem(model, self.sz.n_hess).fm.D
        return self.cached(("P", kind, D, d), lambda: self.projection(kind, D, d))

    def hessian(
        self, model: str, d: int, kind: str = "sparse", method: str = "linearize_map", chunk=None
    ) -> dict:
        """Times curvature.subspace_hessian (jit once per configuration); keeps H and P for torch."""
        import numpy as np

        from gzone import curvature

        P = self.hessian_P(model, d, kind)
        if method == "linearize_map" and chunk is None:
            chunk = curvature.default_chunk_size(P)

        def make():
            self.log(f"hessian {model} d={d} {kind} {method} chunk={chunk}")
            t = self.measure(self.hessian_fn(model, d, kind, method, chunk))
            return {**t, "out": np.asarray(t["out"]), "P": P}

        return self.cached(("hessian", model, d, kind, method, chunk), make)

    def hessian_fn(self, model: str, d: int, kind: str, method: str, chunk):
        """A no-argument call of the jitted curvature.subspace_hessian on the model's point, data and P."""
        import jax

        from gzone import curvature, flat

        p, P = self.problem(model, self.sz.n_hess), self.hessian_P(model, d, kind)

        def make():
            def fn(theta, P, x, y):
                return curvature.subspace_hessian(
                    flat.loss_fn(p.fm, x, y), theta, P, method=method, chunk_size=chunk
                )

            jitted = jax.jit(fn)
            return lambda: jitted(p.theta, P, p.x, p.y)

        return self.cached(("hessian_fn", model, d, kind, method, chunk), make)


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def reason(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "nan"
    return str(v)
