"""Section 5 of experiments.benchmark: projections (5a) and training steps in subspaces (5b).

5a times P z, P^T v and the vjp of P z (the backward pass of a + P z under autodiff) for each
kind and, for sparse P, each kernel (`projections.IMPLS`); 5b times one training step (Adam,
batch 128) in a subspace against one full-space step, for both MLPs, and records the step targets
with a lower bound from the machine's rates measured in the same run:

  subspace step >= full step - Adam on D + (the least P z + P^T v can cost), where
  sparse P:  2 nnz(P) gathers at the gather rate (each product reads every nonzero once);
  Fastfood:  2 (L gathers for the permutation + one read and write of L floats at the streaming
             rate, the least a transform of length L = 2^ceil(log2 D) can touch);
  dense P:   2 reads of the D d floats of P at the streaming rate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import benchmark_sections as sections
from gzone import projections as proj
from gzone import train

# The step targets are read from single ratios near their thresholds: 5 rounds moved the same
# code's ratio by ~0.3 between runs, so the steps take at least this many rounds.
STEP_ROUNDS = 15


def projections(b) -> None:
    sz = b.sz
    t = b.table(
        "projections",
        "5a. projections P z, P^T v and the vjp of P z (memory, time; timed round-robin)",
        ["D", "d", "P", "impl", "memory MB", "P z ms", "P^T v ms", "vjp of P z ms"],
    )
    for model in sz.proj_models:
        D = b.problem(model, sz.n_hess).fm.D
        v = jnp.asarray(np.random.default_rng(3).standard_normal(D, dtype=np.float32))
        for d in sz.proj_dims:
            b.log(f"projections D={D} d={d}")
            z = jnp.asarray(np.random.default_rng(4).standard_normal(d, dtype=np.float32))
            for kind in ("dense", "sparse", "fastfood"):
                if kind == "dense" and 4 * D * d > sz.dense_max_bytes:
                    t.rows.append(
                        [
                            D,
                            d,
                            kind,
                            "",
                            4 * D * d / 1e6,
                            "",
                            "",
                            f"skipped: {4 * D * d / 1e9:.0f} GB > {sz.dense_max_bytes / 1e9:.0f} GB",
                        ]
                    )
                    continue
                with b.guard(t, D, d, kind):
                    P = b.projection(kind, D, d, orthonormal=False)
                    impls = {"dense": ("auto",), "fastfood": ("auto", "jnp")}.get(kind, proj.IMPLS)
                    impls = tuple(i for i in impls if not (i == "rows" and getattr(P, "Kr", 1) == 0))
                    fns = {}
                    for impl in impls:
                        fwd = jax.jit(lambda P, z, i=impl: proj.apply(P, z, impl=i))
                        tr = jax.jit(lambda P, v, i=impl: proj.apply_T(P, v, impl=i))
                        vjp = jax.jit(
                            lambda P, z, v, i=impl: jax.vjp(lambda z: proj.apply(P, z, impl=i), z)[1](v)
                        )
                        fns.update(
                            {
                                (impl, "fwd"): lambda f=fwd, P=P: f(P, z),
                                (impl, "T"): lambda f=tr, P=P: f(P, v),
                                (impl, "vjp"): lambda f=vjp, P=P: f(P, z, v),
                            }
                        )
                    times = b.measure_interleaved(fns)
                    for impl in impls:
                        label = f"{impl} ({_layout(P)})" if kind == "sparse" and impl == "auto" else impl
                        t.rows.append(
                            [
                                D,
                                d,
                                kind,
                                label,
                                proj.nbytes(P) / 1e6,
                                times[(impl, "fwd")] * 1e3,
                                times[(impl, "T")] * 1e3,
                                times[(impl, "vjp")] * 1e3,
                            ]
                        )
    t.notes.append(
        "impl (projections.IMPLS): auto = the library default (sparse: P z from the row-major layout "
        "where it is held, P^T v a gather, both from d >= 8192 on CPU by gzone's native sliced-ELL "
        "kernel (gzone.sell) where it is built, rows too; Fastfood: the pruned transforms, on CPU with "
        "gzone's native Walsh-Hadamard kernel where it is built), columns = P z by a scatter-add, "
        "jnp = the same "
        "column kernels in plain jnp with autodiff's transposes (a vjp of P z is then a scatter for "
        "Fastfood; no native kernel), bcoo = jax.experimental.sparse. Dense P here is Gaussian / "
        "sqrt(D) without the QR of projections.make('dense'): the products cost the same."
    )


def _layout(P) -> str:
    return f"rows, Kr={P.Kr}" if P.Kr else "columns"


def steps(b) -> None:
    sz = b.sz
    t = b.table(
        "steps",
        f"5b. one training step in a subspace / one full-space step (Adam, batch {sz.batch}; "
        "timed round-robin per model)",
        ["model", "D", "P", "d", "ms / step", "ratio to full", "lower bound of ratio", "P memory MB"],
    )
    ratios, bounds = {}, {}
    for model in sz.proj_models:
        p = b.problem(model, sz.n_hess)
        fns, spaces = {"full": step_case(b, model)["fn"]}, {}
        for kind in sz.step_kinds:
            for d in sz.proj_dims:
                if kind == "dense" and d > sz.steps_dense_max_d:
                    continue
                with b.guard(t, model, p.fm.D, kind, d):
                    case = step_case(b, model, kind, d)
                    fns[(kind, d)], spaces[(kind, d)] = case["fn"], case["space"]
        b.log(f"steps {model}: {len(fns)} configurations, interleaved")
        with b.guard(t, model, p.fm.D, "all"):
            rounds = None if b.cfg.quick else max(b.cfg.repeats, STEP_ROUNDS)
            per_call = b.measure_interleaved(fns, rounds=rounds)
            sections.remeasure_rates(b, sz.rate_n)
            ms = {k: s / sz.train_steps * 1e3 for k, s in per_call.items()}
            full, adam = ms["full"], adam_ms(b, p.theta)
            t.rows.append([model, p.fm.D, "full space", "", full, 1.0, "", ""])
            for (kind, d), space in spaces.items():
                # the full step holds its Adam update: adam > full is timing noise (short runs), not a
                # negative cost, so the bound never drops below what the projections alone cost
                bound = (max(full - adam, 0.0) + least_projection_ms(b, space.P)) / full
                ratios[(model, kind, d)], bounds[(model, kind, d)] = ms[(kind, d)] / full, bound
                t.rows.append(
                    [
                        model,
                        p.fm.D,
                        kind,
                        d,
                        ms[(kind, d)],
                        ms[(kind, d)] / full,
                        bound,
                        proj.nbytes(space.P) / 1e6,
                    ]
                )
    for key, kind, dims in sz.step_targets:
        got = [(r, m, d) for (m, k, d), r in ratios.items() if k == kind and d in dims]
        if got:
            worst = max(got)
            bound = max(bounds[(m, kind, d)] for _, m, d in got)
            b.target(key, f"max {worst[0]:.2f} ({worst[1]} d={worst[2]})", worst[0], bound)
    t.notes.append(
        f"Each: one jitted epoch of {sz.train_steps} steps (train.make_trainer's lax.scan, per-step metrics "
        f"included) divided by the steps, the median of {STEP_ROUNDS} or more interleaved rounds. Dense P is "
        f"skipped above d = {sz.steps_dense_max_d}."
    )
    rates = ", ".join(f"{k} {v:.3g}" for k, v in sections.gather_rates(b, sz.rate_n).items())
    t.notes.append(
        "lower bound of ratio = (full step - Adam on D + the least P z + P^T v can cost) / full step, "
        "from the gather and streaming rates (module docstring of experiments/benchmark_steps.py), each "
        "the fastest of section 1b's measurement and those taken again beside each model's steps "
        f"(gather, G elements/s: {rates}; stream {b.stream_rate():.3g} GB/s); a target whose bound "
        "exceeds its threshold cannot be met here."
    )


def step_case(b, model: str, kind: str | None = None, d: int = 0) -> dict:
    """One jitted epoch of train.make_trainer's run (`Sizes.train_steps` steps, Adam, batch `Sizes.batch`) on
    the model's synthetic data, full space (kind None) or in a hyperplane through the model's point with a
    P of `kind` [D, d]; cached per run. Returns {"fn": () -> output, "space", "jitted", "args"}."""

    def make():
        sz, p = b.sz, b.problem(model, b.sz.n_hess)
        n = sz.train_steps * sz.batch
        x = jax.random.normal(jax.random.key(5), (n, sz.models[model][0]))
        y = jax.random.randint(jax.random.key(6), (n,), 0, 10)
        data = train.Data(x, y, x[: sz.batch], y[: sz.batch])
        space = (
            None if kind is None else train.Space(p.theta, b.projection(kind, p.fm.D, d, orthonormal=False))
        )
        spec = train.spec_for(n, mode="full" if kind is None else "hyperplane", batch_size=sz.batch, lr=1e-3)
        trainer = train.make_trainer(p.fm, spec)
        jitted = jax.jit(trainer.run, static_argnums=5)
        args = (trainer.init(p.theta if kind is None else jnp.zeros(d), space), b.key, data, space, 0, 1)
        return {"fn": lambda: jitted(*args), "space": space, "jitted": jitted, "args": args}

    return b.cached(("step", model, kind, d), make)


def adam_ms(b, theta) -> float:
    """ms of one Adam update of D parameters (what a subspace step does not do)."""

    def make():
        opt = optax.adam(1e-3)
        update = jax.jit(lambda g, s, p: optax.apply_updates(p, opt.update(g, s, p)[0]))
        state = opt.init(theta)
        return b.measure(update, theta, state, theta)["median"] * 1e3

    return b.cached(("adam", theta.shape[0]), make)


def least_projection_ms(b, P) -> float:
    """The least P z + P^T v can cost on this machine (module docstring), in ms."""
    gather, stream = b.gather_rate() * 1e9, b.stream_rate() * 1e9
    if isinstance(P, proj.Sparse):
        return 2 * int(np.count_nonzero(np.asarray(P.data))) / gather * 1e3
    if isinstance(P, proj.Fastfood):
        L = P.signs.shape[0]
        return 2 * (L / gather + 8 * L / stream) * 1e3
    D, d = P.shape
    return 2 * 4 * D * d / stream * 1e3
