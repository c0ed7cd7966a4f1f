r"""Peak memory and time of one radius-scan point at large D: against D, d, N and example chunks (CPU).

    python -m experiments.benchmark_memory                     # all (~10-15 min on 2 cores)
    python -m experiments.benchmark_memory --quick --out=/tmp/M.md

Each configuration is one `gzone.radius_scan` call with one radius (r = r_X), one d, one seed and
sparse P on an MLP 784-w-w-10 ReLU (w chosen for D ~ 10^5, 10^6, 10^7; N = 8192 at D ~ 10^6 with
and without chunks) with synthetic Gaussian inputs and random labels, run in a fresh subprocess, so
that its peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, read at the end of the child) is that call's alone
on top of the interpreter, JAX and the data (``base GB``: the peak before the call). Seconds are the
call's wall time, compile included (one point: the compile is part of what a point costs).
Writes a markdown section (--out, default docs/benchmark_memory.md) and its JSON next to it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time

from experiments import cli, config
from gzone import options
from gzone.options import option

INPUT, CLASSES = 784, 10
# (hidden width w, d, N, example_chunk or 0): D = 784 w + w^2 + 12 w + 10 for MLP 784-w-w-10.
FULL = (
    (120, 10, 256, 0), (120, 10, 1024, 0), (120, 100, 1024, 0),
    (700, 10, 256, 0), (700, 10, 1024, 0), (700, 100, 1024, 0), (700, 10, 8192, 0), (700, 10, 8192, 1024),
    (2800, 10, 256, 0), (2800, 10, 1024, 0), (2800, 10, 1024, 128),
)
QUICK = ((20, 4, 64, 0), (20, 4, 64, 16))


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryOptions(options.Group):
    quick: bool = option(False, "Smoke mode: two tiny configurations (checks that the script runs).")
    out: str = option("docs/benchmark_memory.md", "Markdown report; the JSON goes next to it (.json).")
    timeout: float = option(600.0, "Seconds a configuration may take before it is skipped.", minimum=1.0)


GROUPS = {"memory": MemoryOptions}


def num_params(width: int) -> int:
    return INPUT * width + width + width * width + width + width * CLASSES + CLASSES


def child(width: int, d: int, n: int, example_chunk: int) -> None:
    """One radius-scan point in this process; prints a JSON line with peak RSS and seconds."""
    import resource

    import jax
    import numpy as np

    import gzone
    from gzone import models

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, INPUT)).astype(np.float32)
    y = rng.integers(0, CLASSES, n).astype(np.int32)
    module = models.build(models.ModelSpec("mlp", (width, width), "relu"), CLASSES)
    jax.block_until_ready(jax.numpy.zeros(1))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = gzone.radius_scan(
        module, x, y, r_over_rx=[1.0], dims=[d], num_seeds=1, seed=0, projection="sparse",
        example_chunk=example_chunk, log=None,
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    row = {"D": result.derived["D"], "frac_pos": float(result.arrays["frac_pos"].mean()),
           "loss": float(result.arrays["loss"].mean())}
    print(json.dumps({**row, "base_gb": base * 1024 / 1e9, "peak_gb": peak * 1024 / 1e9, "seconds": seconds}))


def measure_one(width: int, d: int, n: int, example_chunk: int, *, timeout: float) -> dict:
    code = f"from experiments.benchmark_memory import child; child({width}, {d}, {n}, {example_chunk})"
    row = {"width": width, "D": num_params(width), "d": d, "N": n, "example_chunk": example_chunk or None}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {**row, "skipped": f"over {timeout:g} s"}
    if done.returncode != 0:
        return {**row, "skipped": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    return {**row, **json.loads(done.stdout.strip().splitlines()[-1])}


def machine() -> str:
    free = subprocess.run(["free", "-g"], capture_output=True, text=True, check=False).stdout.strip()
    total = free.splitlines()[1].split()[1] if free else "?"
    return f"{platform.processor() or platform.machine()}, nproc = {os.cpu_count()}, {total} GB RAM (free -g)"


def render(rows: list[dict], argv_text: str, env: str) -> str:
    lines = [
        "## Memory: radius-scan point at large D (CPU)",
        "",
        f"`python -m experiments.benchmark_memory{argv_text}` on {env}. One `gzone.radius_scan` point "
        "(one radius at r_X, one d, one seed, sparse P) on an MLP 784-w-w-10 ReLU, synthetic Gaussian "
        "inputs, float32, each in a fresh subprocess; peak RSS is the child's `ru_maxrss` at the end "
        "(base: before the call: interpreter, JAX, data); seconds are the call's wall time, compile "
        "included.",
        "",
        "| w | D | d | N | example_chunk | peak RSS GB | base GB | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        chunk = r["example_chunk"] or "-"
        if "skipped" in r:
            lines.append(f"| {r['width']} | {r['D']:,} | {r['d']} | {r['N']} | {chunk} | skipped: "
                         f"{r['skipped']} | | |")
        else:
            lines.append(f"| {r['width']} | {r['D']:,} | {r['d']} | {r['N']} | {chunk} | "
                         f"{r['peak_gb']:.2f} | {r['base_gb']:.2f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def run(opts: MemoryOptions, argv_text: str = "", *, log=print) -> str:
    rows = []
    for width, d, n, chunk in QUICK if opts.quick else FULL:
        row = measure_one(width, d, n, chunk, timeout=opts.timeout)
        log(json.dumps(row))
        rows.append(row)
    env = machine()
    text = render(rows, argv_text, env)
    os.makedirs(os.path.dirname(os.path.abspath(opts.out)), exist_ok=True)
    with open(opts.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(opts.out)[0] + ".json", "w") as f:
        json.dump({"machine": env, "command": f"python -m experiments.benchmark_memory{argv_text}",
                   "rows": rows}, f, indent=1)
    log(text)
    return opts.out


def config_from_argv(argv: list[str]) -> tuple[MemoryOptions, str]:
    parsed = config.parse(argv, **GROUPS)
    return parsed["memory"], "".join(f" {a}" for a in argv)


if __name__ == "__main__":
    cli.main(config_from_argv, lambda c: run(*c), groups=GROUPS, doc=__doc__)
