r"""Benchmarks: gzone against the machine's matmul rate and against PyTorch, in one run.

    python -m experiments.benchmark                           # all (~20-30 min on 2 cores, half torch)
    python -m experiments.benchmark --section=hessian,torch --out=/tmp/B.md
    python -m experiments.benchmark --quick --out=/tmp/B.md   # smoke: tiny sizes, no end-to-end job

Writes a markdown report (--out, default BENCHMARKS.md) and the same results as JSON next to it
(BENCHMARKS.json), and prints the report. Sections (--section): matmul (1), grad_hvp (2),
hessian (3), torch (4), projections and steps (5), seeds (6), epoch (7), e2e (8). Every figure is
the median of --repeats calls after one warm-up call (compiles), with `block_until_ready`; a
measurement stops after 3 calls once it has taken --max_seconds (the PyTorch Hessians, ~30-60 s a
call on 2 cores). Data are synthetic Gaussians with random labels of the real shapes (MNIST
784 -> D = 199,210; CIFAR-10 3072 -> D = 656,810 for MLP in-200-200-10). The torch side lives in
experiments/benchmark_torch.py (optional `bench` extra); without torch its rows say so.

FLOP counts (matmuls only; activations, softmax and Adam are O(N width) or O(D), a few % at most,
and are not counted). An MLP layer i -> o on N examples does products of 2 N i o FLOPs of three
kinds: forward x W ("ni,io->no"), weight gradient x^T g ("ni,no->io"), input gradient g W^T
("no,io->ni"). Summing over layers l with F_l = 2 N i_l o_l:
  grad            = sum_l F_l * (3; 2 for the first layer, whose input is data: no g W^T)
  HVP tangent     = sum_l F_l * (6; 2 for the first layer): forward dx W + x dW, backward
                    dx^T g + x^T dg and dg W^T + g dW^T (jvp of grad, given the point's residuals)
  HVP (jvp(grad)) = grad + HVP tangent
  subspace Hessian, necessary work = grad (once, the point) + d * HVP tangent + the projection:
                    2 d^2 D for a dense P (P^T (H P)), 2 d nnz(P) for a sparse P.
The reference rate ("limit") of a computation is the rate of the same list of products at the same
shapes and layouts, each timed alone (section 1), their times summed: effective GFLOP/s / limit is
the fraction of the machine a computation gets. A large square product's rate is shown beside it.

Layout: this file holds the flags, timing and the report; experiments/benchmark_sections.py the
eight items (one function per --section); experiments/benchmark_torch.py the PyTorch side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import statistics
import sys
import tempfile
import time
import traceback

from absl import flags

from experiments import benchmark_sections as sections
from experiments import cli

FLAGS = flags.FLAGS
SECTIONS = ("matmul", "grad_hvp", "hessian", "torch", "projections", "steps", "seeds", "epoch", "e2e")

cli.define_bool("quick", False, "Smoke mode: tiny sizes, 2 repeats, no end-to-end job "
                "(checks that the script runs, not the numbers).")
cli.define_string("out", "BENCHMARKS.md", "Markdown report; the JSON goes next to it (.json). "
                  "--quick defaults to the temp folder.")
cli.define_list("section", list(SECTIONS), f"Sections to run, any of: {','.join(SECTIONS)}.")
cli.define_integer("repeats", 5, "Timed calls per measurement after the warm-up call (--quick: 2).")
cli.define_float("max_seconds", 90.0, "A measurement stops after 3 timed calls once its calls took this long.")
cli.define_integer("torch_threads", 0, "torch.set_num_threads (0: the CPU cores this process may use; "
                   "1 with --quick).")

TARGETS = {  # key: (section, text)
    "hess_rate": ("hessian", "exact subspace Hessian >= 80 % of the matmul limit for d >= 100"),
    "hess_default": ("hessian", "library default (method, chunk size) is the fastest strategy (within 5 %)"),
    "hess_torch": ("torch", "exact subspace Hessian >= 3x faster than each torch route"),
    "hess_agree": ("torch", "gzone and torch Hessians agree to 1e-4 relative (float32)"),
    "step_small": ("steps", "subspace step / full step <= 1.1, sparse P, d <= 100"),
    "step_mid": ("steps", "subspace step / full step <= 2, sparse P, d = 1000"),
    "step_fastfood": ("steps", "Fastfood step / full step <= 3 at d = 10^4, O(D) memory"),
    "seeds": ("seeds", "default seed modes of this backend (scan, train) not slower than the other (within 5 %)"),
    "epoch": ("epoch", "gzone training epoch not slower than the PyTorch loop"),
    "e2e": ("e2e", "the README's main job (radius_scan, quick.flags) <= 60 s end to end"),
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
    small_dims: tuple = (10, 100)  # targets: sparse step <= 1.1 at these d, <= 2 at mid_d, Fastfood <= 3 at big_d
    mid_d: int = 1000
    big_d: int = 10_000
    step_kinds: tuple = ("sparse", "dense", "fastfood")
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
    dense_max_bytes: float = 4e9


FULL = Sizes(models={"mnist": (784, (200, 200)), "cifar": (3072, (200, 200)), "mnist1d": (40, (100, 100))})
QUICK = Sizes(models={"mnist": (64, (32, 32)), "mnist1d": (40, (16,))}, n_hess=64, grad_ns=(64,),
              hess=(("mnist", 8),), torch_hess=(("mnist", 8),), sweep_d=8, chunks=(1,), sweep_kinds=("dense",),
              proj_models=("mnist",), proj_dims=(16,), small_dims=(16,), mid_d=16, big_d=16,
              step_kinds=("sparse",), train_steps=4, batch=16, seeds=2, seed_units=(("mnist1d", 4),),
              train_seeds=2, train_seed_steps=4,
              epochs=(("MNIST-size", "mnist", 256),), n_test=64, square=128)


@dataclasses.dataclass(frozen=True)
class Config:
    quick: bool
    out: str
    sections: tuple[str, ...]
    repeats: int
    max_seconds: float
    torch_threads: int


def config_from_flags() -> Config:
    chosen = tuple(FLAGS.section or ())
    unknown = [s for s in chosen if s not in SECTIONS]
    if not chosen or unknown:
        raise cli.UsageError("section", f"unknown or empty {','.join(unknown)!r}; allowed: {','.join(SECTIONS)}")
    repeats = 2 if FLAGS.quick and not FLAGS["repeats"].present else FLAGS.repeats
    if repeats < 1 or FLAGS.max_seconds <= 0 or FLAGS.torch_threads < 0:
        raise cli.UsageError("repeats", "--repeats and --max_seconds must be positive, --torch_threads >= 0")
    out = FLAGS.out
    if FLAGS.quick and not FLAGS["out"].present:
        out = os.path.join(tempfile.gettempdir(), "gzone_BENCHMARKS.quick.md")
    # --quick: one torch thread (tiny ops on several threads can take 100x longer on a busy machine).
    threads = FLAGS.torch_threads or (1 if FLAGS.quick else _cores())
    return Config(FLAGS.quick, out, chosen, repeats, FLAGS.max_seconds, threads)


@dataclasses.dataclass
class Table:
    section: str
    title: str
    columns: list
    rows: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)


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

    def __init__(self, config: Config, sizes: Sizes, torch_module, torch_missing: str | None):
        import jax

        self.cfg, self.sz, self.bt, self.torch_missing = config, sizes, torch_module, torch_missing
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

    def target(self, key: str, measured: str, met: bool | None) -> None:
        self.targets[key] = {"measured": measured, "met": met}

    @contextlib.contextmanager
    def guard(self, table: Table, *label):
        """A row that fails is recorded as 'failed: reason' and the section goes on."""
        try:
            yield
        except Exception as err:  # noqa: BLE001 - recorded in the report, the run goes on
            self.log(f"failed: {' '.join(map(str, label))}: {_reason(err)}")
            table.rows.append([*label, f"failed: {_reason(err)}"] + [""] * (len(table.columns) - len(label) - 1))

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
        return {"median": statistics.median(times), "min": min(times), "first": first, "n": len(times), "out": out}

    def measure_interleaved(self, fns: dict) -> dict:
        """Median seconds of each fn() (no arguments), the timed calls taken round-robin (fns[a], fns[b],
        ..., then again) after one warm-up call each, so that a slow spell of a shared machine hits every
        candidate alike: for comparisons that choose a default. Stops after 3 rounds once one candidate's
        calls took --max_seconds."""
        import jax

        times = {k: [] for k in fns}
        for fn in fns.values():
            jax.block_until_ready(fn())
        for _ in range(self.cfg.repeats):
            for k, fn in fns.items():
                start = time.perf_counter()
                jax.block_until_ready(fn())
                times[k].append(time.perf_counter() - start)
            if len(next(iter(times.values()))) >= 3 and max(sum(v) for v in times.values()) > self.cfg.max_seconds:
                break
        return {k: statistics.median(v) for k, v in times.items()}

    def cached(self, key, make):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def problem(self, model: str, n: int) -> Problem:
        def make():
            import jax

            from gzone import flat, models

            input_dim, widths = self.sz.models[model]
            module = models.build(models.ModelSpec("mlp", tuple(widths)), 10)
            k_theta, k_x, k_y = jax.random.split(jax.random.fold_in(self.key, n), 3)
            theta = flat.sample_fn(module, (input_dim,))(k_theta)
            x = jax.random.normal(k_x, (n, input_dim))
            y = jax.random.randint(k_y, (n,), 0, 10)
            dims = (input_dim, *widths, 10)
            layers = tuple(zip(dims[:-1], dims[1:]))
            return Problem(module, flat.flat_model(module, (input_dim,)), theta, x, y, layers)

        return self.cached(("problem", model, n), make)

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

    def limit(self, model: str, n: int, part: str) -> dict:
        """The products of `part` (grad | tangent) of the model's MLP on n examples, one after another."""
        items = [self.product(eq, dims) for eq, dims in sections.products(self.problem(model, n).layers, n, part)]
        flops, seconds = sum(r["flops"] for r in items), sum(r["seconds"] for r in items)
        return {"flops": flops, "seconds": seconds, "rate": flops / seconds / 1e9}

    def square_rate(self) -> float:
        s = self.sz.square
        return self.product("ij,jk->ik", {"i": s, "j": s, "k": s})["rate"]

    def hessian_P(self, model: str, d: int, kind: str = "sparse"):
        D = self.problem(model, self.sz.n_hess).fm.D
        return self.cached(("P", kind, D, d), lambda: self.projection(kind, D, d))

    def hessian(self, model: str, d: int, kind: str = "sparse", method: str = "linearize_map", chunk=None) -> dict:
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
                return curvature.subspace_hessian(flat.loss_fn(p.fm, x, y), theta, P, method=method, chunk_size=chunk)

            jitted = jax.jit(fn)
            return lambda: jitted(p.theta, P, p.x, p.y)

        return self.cached(("hessian_fn", model, d, kind, method, chunk), make)


def _cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]


def render(b: Bench, env: dict) -> str:
    lines = ["# gzone benchmarks", "", f"- date: {env['date']}", f"- machine: {env['machine']}",
             f"- devices: {env['devices']}", f"- versions: {env['versions']}",
             f"- command: `{env['command']}`", "", "## Targets", ""]
    if b.cfg.quick:
        lines += ["--quick: tiny sizes, unoptimised XLA compiles; these statuses exercise the code, "
                  "not the targets.", ""]
    lines += ["Why the missed targets cannot be met here, with numbers: BUILD_NOTES.md (Performance).", ""]
    lines += ["| target | measured | status |", "| --- | --- | --- |"]
    for key, (section, text) in TARGETS.items():
        got = b.targets.get(key)
        if got is None:
            status, measured = ("not run" if section not in b.cfg.sections else "no result"), ""
        else:
            measured = got["measured"]
            status = {True: "met", False: "**missed**", None: "skipped"}[got["met"]]
        lines.append(f"| {text} | {measured} | {status} |")
    for t in b.tables:
        lines += ["", f"## {t.title}", "", "| " + " | ".join(t.columns) + " |", "|" + " --- |" * len(t.columns)]
        lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in t.rows]
        lines += [""] + [f"- {n}" for n in t.notes] if t.notes else []
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "nan"
    return str(v)


def environment(b: Bench) -> dict:
    import jax

    from gzone.runs import environment

    env = environment.describe()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?") \
        if os.path.exists("/proc/cpuinfo") else os.uname().machine
    versions = {k: v for k, v in env["versions"].items() if k != "platform"}
    versions["torch"] = b.bt.version() if b.bt else "not installed"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{cpu}; {_cores()} usable of {os.cpu_count()} cores; {env['versions']['platform']}",
        "devices": f"{jax.default_backend()}: {', '.join(env['devices'])} ({jax.devices()[0].device_kind}); "
                   f"torch on {b.torch_device or '-'}, {b.cfg.torch_threads} threads",
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "git": env["git"],
        "command": " ".join(["python -m experiments.benchmark", *sys.argv[1:]]),
    }


def main(argv):
    del argv
    config = config_from_flags()
    if config.quick:  # before JAX starts its backend: compiles ~4x faster; --quick checks code paths, not numbers
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    try:
        from experiments import benchmark_torch as bt

        missing = None
    except ImportError as err:
        bt, missing = None, f"torch not installed ({err})"
    b = Bench(config, QUICK if config.quick else FULL, bt, missing)
    for name in config.sections:
        b.log(f"section {name}")
        before = len(b.tables)
        try:
            getattr(sections, name)(b)
        except Exception as err:  # noqa: BLE001 - one failing section must not stop the rest
            traceback.print_exc()
            tables = b.tables[before:] or [b.table(name, name, ["status"])]
            tables[-1].notes.append(f"failed: {_reason(err)}")
    from gzone.runs import records

    env = environment(b)
    text = render(b, env)
    print(text, end="", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(config.out)), exist_ok=True)
    records.atomic_write_bytes(config.out, text.encode())
    result = {"environment": env, "config": dataclasses.asdict(config), "sizes": dataclasses.asdict(b.sz),
              "targets": {k: {"text": TARGETS[k][1], **v} for k, v in b.targets.items()},
              "tables": [dataclasses.asdict(t) for t in b.tables]}
    records.atomic_write_json(os.path.splitext(config.out)[0] + ".json", result)
    b.log(f"wrote {config.out} and {os.path.splitext(config.out)[0]}.json")


if __name__ == "__main__":
    cli.run(main)
