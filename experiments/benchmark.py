r"""Benchmarks: gzone against the machine's matmul rate and against PyTorch, in one run.

    python -m experiments.benchmark                           # all (~15-25 min on 2 cores)
    python -m experiments.benchmark --section=hessian,torch --out=/tmp/B.md
    python -m experiments.benchmark --quick --out=/tmp/B.md   # smoke: tiny sizes, no end-to-end job

Writes a markdown report (--out, default BENCHMARKS.md) and the same results as JSON next to it
(BENCHMARKS.json), figures under docs/figures/ next to the report, and prints the report.
Sections (--section): matmul (1), grad_hvp (2), hessian (3), torch (4), projections (5a), steps
(5b), seeds (6), epoch (7), e2e (8), scaling (9: cost-vs-size curves). Every figure is the median
of --repeats calls after one warm-up call (compiles), with `block_until_ready`; comparisons (the
step ratios, Hessian strategies, seed modes) time their candidates round-robin, so that a slow
spell of a shared machine hits all of them alike. A measurement stops after 3 calls once it has
taken --max_seconds. Data are synthetic Gaussians with random labels of the real shapes (MNIST
784 -> D = 199,210; CIFAR-10 3072 -> D = 656,810 for MLP in-200-200-10). The torch side lives in
experiments/benchmark_torch.py (optional `bench` extra); without torch its rows say so.

The limit: the float32 rate of one large square product (2048^3) measured in the same run. Every
FLOP rate is reported as a fraction of it ("fraction of limit"); the model's own small products
(section 1) run below it, and a computation can beat their individual rates (XLA fuses and
batches) but not the limit. Memory-bound work (projections) is held against the machine's
measured gather and streaming rates instead (section 1, "machine rates").

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

Layout: this file holds the options, timing and the report; experiments/benchmark_sections.py
sections 1-4 and 6-8, experiments/benchmark_steps.py section 5 (projections, steps, their targets
and lower bounds), experiments/benchmark_scaling.py section 9, experiments/benchmark_torch.py the
PyTorch side.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import tempfile
import time
import traceback

from experiments import benchmark_core as core
from experiments import cli, config
from gzone import options
from gzone.options import option

SECTIONS = (
    "matmul",
    "grad_hvp",
    "hessian",
    "torch",
    "projections",
    "steps",
    "seeds",
    "epoch",
    "e2e",
    "scaling",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchOptions(options.Group):
    quick: bool = option(
        False,
        "Smoke mode: tiny sizes, 2 repeats, no end-to-end job (checks that the script "
        "runs, not the numbers).",
    )
    out: str | None = option(
        None,
        "Markdown report (default BENCHMARKS.md; --quick: in the temp folder); the "
        "JSON goes next to it (.json), the figures to docs/figures/ beside it.",
        kind="str",
    )
    section: tuple[str, ...] = option(SECTIONS, "Sections to run.", choices=SECTIONS)
    repeats: int | None = option(
        None,
        "Timed calls per measurement after the warm-up call (default 5; --quick: 2).",
        kind="int",
        minimum=1,
    )
    max_seconds: float = option(
        90.0, "A measurement stops after 3 timed calls once its calls took this long.", minimum=1e-3
    )
    torch_threads: int = option(
        0, "torch.set_num_threads (0: the CPU cores this process may use; 1 with --quick).", minimum=0
    )


GROUPS = {"bench": BenchOptions}


@dataclasses.dataclass(frozen=True)
class Config:
    """The resolved run: options with the automatic choices made."""

    quick: bool
    out: str
    sections: tuple[str, ...]
    repeats: int
    max_seconds: float
    torch_threads: int
    flags_text: str = ""


def config_from_argv(argv: list[str]) -> Config:
    parsed = config.parse(argv, **GROUPS)
    o: BenchOptions = parsed["bench"]
    out = o.out or (
        os.path.join(tempfile.gettempdir(), "gzone_BENCHMARKS.quick.md") if o.quick else "BENCHMARKS.md"
    )
    repeats = o.repeats or (2 if o.quick else 5)
    # --quick: one torch thread (tiny ops on several threads can take 100x longer on a busy machine).
    threads = o.torch_threads or (1 if o.quick else core.cores())
    return Config(
        o.quick, out, tuple(dict.fromkeys(o.section)), repeats, o.max_seconds, threads, parsed["flags_text"]
    )


def render(b: core.Bench, env: dict) -> str:
    lines = [
        "# gzone benchmarks",
        "",
        f"- date: {env['date']}",
        f"- machine: {env['machine']}",
        f"- devices: {env['devices']}",
        f"- versions: {env['versions']}",
        f"- command: `{env['command']}`",
        "",
        "## Targets",
        "",
    ]
    if b.cfg.quick:
        lines += ["--quick: tiny sizes; these statuses exercise the code, not the targets.", ""]
    lines += [
        "Lower bound: the least this machine could take, from its rates measured in this run (section 5b "
        "notes); a missed target whose bound is above its threshold is out of reach here.",
        "",
    ]
    lines += ["| target | measured | lower bound | status |", "| --- | --- | --- | --- |"]
    for key, (section, text, _, _) in core.TARGETS.items():
        got = b.targets.get(key)
        if got is None:
            lines.append(f"| {text} |  |  | {'not run' if section not in b.cfg.sections else 'no result'} |")
            continue
        status = {True: "met", False: "**missed**", None: "skipped"}[got["met"]]
        bound = got.get("bound")
        if got["met"] is False and bound is not None and not core.holds(bound, got["op"], got["threshold"]):
            status = "**missed** (out of reach: bound beyond the threshold)"
        lines.append(f"| {text} | {got['measured']} | {'' if bound is None else f'{bound:.3g}'} | {status} |")
    for t in b.tables:
        lines += [
            "",
            f"## {t.title}",
            "",
            "| " + " | ".join(t.columns) + " |",
            "|" + " --- |" * len(t.columns),
        ]
        lines += ["| " + " | ".join(core.fmt(v) for v in row) + " |" for row in t.rows]
        lines += [""] + [f"- {n}" for n in t.notes] if t.notes else []
        lines += [""] + [f"![{os.path.basename(f)}]({f})" for f in t.figures] if t.figures else []
    if not b.cfg.quick and os.path.isfile(MEMORY_REPORT):  # its own script and run, carried along
        with open(MEMORY_REPORT) as fh:
            lines += ["", f"<!-- from {MEMORY_REPORT} (python -m experiments.benchmark_memory) -->",
                      fh.read().strip()]
    return "\n".join(lines) + "\n"


MEMORY_REPORT = "docs/benchmark_memory.md"


def environment(b: core.Bench) -> dict:
    import jax

    from gzone.runs import environment as run_environment

    env = run_environment.describe()
    cpu = "?"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "?")
    versions = {k: v for k, v in env["versions"].items() if k != "platform"}
    versions["torch"] = b.bt.version() if b.bt else "not installed"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{cpu}; {core.cores()} usable of {os.cpu_count()} cores; {env['versions']['platform']}",
        "devices": f"{jax.default_backend()}: {', '.join(env['devices'])} ({jax.devices()[0].device_kind}); "
        f"torch on {b.torch_device or '-'}, {b.cfg.torch_threads} threads; gzone native kernels "
        f"{'on' if env['native_kernels'] else 'off'}",
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "git": env["git"],
        "command": " ".join(["python -m experiments.benchmark", *sys.argv[1:]]),
    }


def run(config_: Config, *, log=print) -> str:
    """Runs the chosen sections; writes the report, its JSON and figures; returns the report's path."""
    from experiments import benchmark_scaling, benchmark_sections, benchmark_steps, benchmark_training
    from gzone.runs import records

    try:
        from experiments import benchmark_torch as bt

        missing = None
    except ImportError as err:
        bt, missing = None, f"torch not installed ({err})"
    c = config_
    out_dir = os.path.dirname(os.path.abspath(c.out))
    b = core.Bench(c, core.QUICK if c.quick else core.FULL, bt, missing, figures=out_dir)
    modules = (benchmark_sections, benchmark_steps, benchmark_training, benchmark_scaling)
    for name in c.sections:
        b.log(f"section {name}")
        before = len(b.tables)
        try:
            getattr(next(m for m in modules if hasattr(m, name)), name)(b)
        except Exception as err:  # noqa: BLE001 - one failing section must not stop the rest
            traceback.print_exc()
            tables = b.tables[before:] or [b.table(name, name, ["status"])]
            tables[-1].notes.append(f"failed: {core.reason(err)}")
    env = environment(b)
    text = render(b, env)
    log(text.rstrip("\n"))
    os.makedirs(out_dir, exist_ok=True)
    records.atomic_write_bytes(c.out, text.encode())
    result = {
        "environment": env,
        "config": dataclasses.asdict(c),
        "sizes": dataclasses.asdict(b.sz),
        "targets": b.targets,
        "tables": [dataclasses.asdict(t) for t in b.tables],
    }
    records.atomic_write_json(os.path.splitext(c.out)[0] + ".json", result)
    b.log(f"wrote {c.out} and {os.path.splitext(c.out)[0]}.json ({time.perf_counter() - b.start:.0f} s)")
    return c.out


if __name__ == "__main__":
    if (
        "--quick" in sys.argv
    ):  # before JAX starts its backend: compiles ~4x faster; --quick checks code, not numbers
        os.environ["XLA_FLAGS"] = (
            f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
        )
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
