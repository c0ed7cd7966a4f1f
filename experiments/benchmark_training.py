"""Sections 6-8 of experiments.benchmark: seed modes, a training epoch against PyTorch, the README's job.

Every function takes the run's `Bench` (experiments/benchmark_core.py) and records its rows and
targets there; a failing row is recorded as 'failed: reason'.
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

from experiments.benchmark_sections import REPO, _dims, segments
from gzone import flat, measure, models, train
from gzone import seeds as seed_lib

E2E = ["-m", "experiments.radius_scan", "--flagfile=experiments/flagfiles/quick.flags"]


def seeds(b) -> None:
    sz, default = b.sz, seed_lib.default_seed_mode(workload="scan")
    t = b.table(
        "seeds",
        f"6. seeds vmapped vs lax.map: a radius-scan unit (seeds.make_unit_fn: {sz.seeds} seeds, "
        f"sparse P, {sz.n_hess} examples) and training ({sz.train_seeds} seeds, {sz.train_seed_steps} Adam "
        f"steps of batch {sz.batch}); defaults on {jax.default_backend()}: scan {default}, "
        f"train {seed_lib.default_seed_mode(workload='train')}; timed calls interleaved",
        ["workload", "D", "d", "seed mode", "s", "vs faster", "default"],
    )
    verdicts = []
    for model, d in sz.seed_units:
        p = b.problem(model, sz.n_hess)
        shape = (sz.models[model][0],)
        r_x = models.xavier_radius(p.module, shape)
        point_fn = measure.make_point_fn(
            p.fm,
            d=d,
            projection="sparse",
            convention="xavier_rescaled",
            sample_fn=flat.sample_fn(p.module, shape),
            r_x=r_x,
        )
        keys = seed_lib.SeedKeys.from_seed(0)
        args = (keys.init_keys(sz.seeds), keys.proj_keys(d, sz.seeds), jnp.float32(r_x), p.x, p.y)
        times = {}
        with b.guard(t, "scan unit, MLP " + "-".join(map(str, _dims(b, model))), p.fm.D, d, "both"):
            b.log(f"seeds {'/'.join(seed_lib.SEED_MODES)} {model} d={d}, interleaved")
            units = {mode: seed_lib.make_unit_fn(point_fn, seed_mode=mode) for mode in seed_lib.SEED_MODES}
            times = b.measure_interleaved({mode: (lambda u=u: u(*args)) for mode, u in units.items()})
        for mode, sec in times.items():
            t.rows.append(
                [
                    "scan unit, MLP " + "-".join(map(str, _dims(b, model))),
                    p.fm.D,
                    d,
                    mode,
                    sec,
                    sec / min(times.values()),
                    "yes" if mode == default else "",
                ]
            )
        if default in times and len(times) == 2:
            verdicts.append((times[default] / min(times.values()), f"scan {default}", f"{model} d={d}"))
    # Training: the same full-space trainer for every seed (train.make_trainer + seed_lib.map_seeds).
    model, default_train = "mnist", seed_lib.default_seed_mode(workload="train")
    p = b.problem(model, sz.n_hess)
    n = sz.batch * sz.train_seed_steps
    rng = np.random.default_rng(0)
    data = train.Data(
        *(
            jnp.asarray(a)
            for a in (
                rng.standard_normal((n, sz.models[model][0]), dtype=np.float32),
                rng.integers(0, 10, n).astype(np.int32),
                p.x,
                p.y,
            )
        )
    )
    times = {}
    with b.guard(t, "train, MLP " + "-".join(map(str, _dims(b, model))), p.fm.D, "", "both"):
        trainer = train.make_trainer(
            p.fm, train.spec_for(n, mode="full", optimizer="adam", lr=1e-3, batch_size=sz.batch)
        )
        keys = jax.random.split(b.key, sz.train_seeds)
        state0 = jax.vmap(trainer.init)(jax.vmap(flat.sample_fn(p.module, (sz.models[model][0],)))(keys))
        b.log(f"seeds {'/'.join(seed_lib.SEED_MODES)} training {model}, interleaved")
        runs = {
            mode: jax.jit(seed_lib.map_seeds(lambda st, k, d: trainer.run(st, k, d, None, 0, 1), mode))
            for mode in seed_lib.SEED_MODES
        }
        times = b.measure_interleaved({mode: (lambda r=r: r(state0, keys, data)) for mode, r in runs.items()})
    for mode, sec in times.items():
        t.rows.append(
            [
                "train, MLP " + "-".join(map(str, _dims(b, model))),
                p.fm.D,
                "",
                mode,
                sec,
                sec / min(times.values()),
                "yes" if mode == default_train else "",
            ]
        )
    if default_train in times and len(times) == 2:
        verdicts.append((times[default_train] / min(times.values()), f"train {default_train}", model))
    if verdicts:
        worst = max(verdicts)
        b.target(
            "seeds",
            f"defaults at most {worst[0]:.2f}x the faster mode (worst: {worst[1]}, {worst[2]})",
            worst[0],
        )


def epoch(b) -> None:
    sz = b.sz
    t = b.table(
        "epoch",
        f"7. one training epoch, Adam, batch {sz.batch}, synthetic data of the real shapes, "
        f"{sz.n_test} test examples evaluated",
        ["data", "N train", "D", "gzone s", "torch s", "gzone / torch"],
    )
    verdicts = []
    for label, model, n in sz.epochs:
        p = b.problem(model, sz.n_hess)
        rng = np.random.default_rng(0)
        arrays = []  # x_train, y_train, x_test, y_test
        for m in (n, sz.n_test):
            arrays += [
                rng.standard_normal((m, sz.models[model][0]), dtype=np.float32),
                rng.integers(0, 10, m).astype(np.int32),
            ]
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
        b.target("epoch", f"gzone / torch = {worst[0]:.2f} ({worst[1]}, the worse)", worst[0])
    elif b.bt is None:
        b.target("epoch", "skipped: torch not installed", None)


def e2e(b) -> None:
    command = " ".join(["python", *E2E, "--workdir=<tmp>", "--overwrite"])
    t = b.table(
        "e2e", "8. the README's main job end to end (one cold run, compile included)", ["command", "wall s"]
    )
    if b.cfg.quick:
        t.rows.append([f"`{command}`", "skipped in --quick"])
        b.target("e2e", "skipped in --quick", None)
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, *E2E, f"--workdir={tmp}", "--overwrite"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}")
    t.rows.append([f"`{command}`", wall])
    b.target("e2e", f"{wall:.1f} s", wall)
