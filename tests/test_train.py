"""Tests of gzone.train: the scanned trainer against hand-written optax loops, radius invariants,
history semantics, seeds, data parallelism, chunked fitting and checkpoint resumption.

The problems are tiny (synthetic Gaussian blobs, an MLP with D ~ 100) so that each compile is
about a second and 1000 steps take milliseconds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import textwrap
import types

import chex
import conftest
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gzone import flat, models, projections, seeds, subspace, train
from gzone.runs import records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TRAIN, N_TEST, DIM, CLASSES, WIDTHS = 64, 37, 8, 3, (8,)


@dataclasses.dataclass(frozen=True)
class Problem:
    module: object
    fm: flat.FlatModel
    data: train.Data
    theta0: jax.Array


@functools.lru_cache(maxsize=None)
def make_problem(dtype=jnp.float32, seed=0, n_train=N_TRAIN) -> Problem:
    """Three Gaussian blobs in R^8 and an MLP 8-8-3 (tanh), D = 99.

    Everything random is drawn with numpy (jax.random would cost a compile per call site).
    """
    rng = np.random.default_rng(seed)
    centers = 1.5 * rng.normal(size=(CLASSES, DIM))
    y = rng.integers(0, CLASSES, n_train + N_TEST)
    x = centers[y] + rng.normal(size=(y.size, DIM))
    module = models.build(models.ModelSpec("mlp", WIDTHS, "tanh"), CLASSES)
    fm = flat.flat_model(module, (DIM,), dtype)
    theta0 = jnp.asarray(0.4 * rng.normal(size=fm.D), dtype)
    data = train.Data(
        jnp.asarray(x[:n_train], dtype),
        jnp.asarray(y[:n_train], jnp.int32),
        jnp.asarray(x[n_train:], dtype),
        jnp.asarray(y[n_train:], jnp.int32),
    )
    return Problem(module, fm, data, theta0)


def make_space(prob: Problem, d: int, seed: int = 7) -> train.Space:
    """A random anchor (|a| ~ 4) and a dense orthonormal P [D, d], drawn with numpy."""
    rng = np.random.default_rng(seed)
    dtype = prob.theta0.dtype
    anchor = 0.4 * rng.normal(size=prob.fm.D)
    q, _ = np.linalg.qr(rng.normal(size=(prob.fm.D, d)))
    return train.Space(jnp.asarray(anchor, dtype), projections.Dense(jnp.asarray(q, dtype)))


# --------------------------------------------------------------------------- reference loop


@functools.partial(jax.jit, static_argnums=2)
def _permutation(key, epoch, n):
    """The documented batch order of epoch `epoch`: permutation(fold_in(key, epoch), n)."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def reference_run(
    prob: Problem,
    spec: train.TrainSpec,
    params0,
    key,
    epochs: int,
    space=None,
    *,
    project_update: bool = True,
) -> dict:
    """The same training as `trainer.run`, written as a Python loop of jitted optax steps.

    Independent of train.py: its own theta(z), cross-entropy (optax), projections and batch loop.
    Fixed radius: g <- tangent(g); u <- optimizer(g); u <- tangent(u) (skipped when not
    `project_update`, a deliberately wrong variant); theta <- r0 (theta + u)/|theta + u|.
    Returns per-step losses/accuracies [E, steps], thetas after each step [E, steps, D], the
    starting theta, and the final params.
    """
    fm, data = prob.fm, prob.data
    opt = train.make_optimizer(spec.optimizer, spec.lr)
    if spec.mode == "full":
        r0 = jnp.linalg.norm(params0)
    else:
        r0 = jnp.linalg.norm(space.anchor)
        a, P = space.anchor, projections.todense(space.P)
        a_hat = a / jnp.linalg.norm(a)

    def theta_of(p):
        if spec.mode == "full":
            return p
        if spec.mode == "hyperplane":
            return a + P @ p
        step = P @ p
        x = a + step - jnp.dot(a_hat, step) * a_hat
        return r0 * x / jnp.linalg.norm(x)

    def loss_and_acc(p, xb, yb):
        logits = fm.apply_fn(fm.unravel(theta_of(p)), xb)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
        return jnp.mean(ce), jnp.mean(jnp.argmax(logits, -1) == yb)

    @jax.jit
    def step(p, opt_state, xb, yb):
        (value, acc), g = jax.value_and_grad(loss_and_acc, has_aux=True)(p, xb, yb)
        p_hat = p / jnp.linalg.norm(p)
        if spec.fixed_radius:
            g = g - jnp.dot(g, p_hat) * p_hat
        u, opt_state = opt.update(g, opt_state, p)
        if spec.fixed_radius and project_update:
            u = u - jnp.dot(u, p_hat) * p_hat
        p = p + u
        if spec.fixed_radius:
            p = r0 * p / jnp.linalg.norm(p)
        return p, opt_state, value, acc, theta_of(p)

    p, opt_state = params0, opt.init(params0)
    n, steps, B = data.x_train.shape[0], spec.steps_per_epoch, spec.batch_size
    x_np, y_np = np.asarray(data.x_train), np.asarray(data.y_train)
    losses, accs, thetas = np.zeros((epochs, steps)), np.zeros((epochs, steps)), []
    for e in range(epochs):
        order = np.asarray(_permutation(key, e, n))[: steps * B].reshape(steps, B)
        row = []
        for t in range(steps):
            p, opt_state, value, acc, th = step(p, opt_state, x_np[order[t]], y_np[order[t]])
            losses[e, t], accs[e, t] = value, acc
            row.append(np.asarray(th))
        thetas.append(row)
    return {
        "loss": losses,
        "accuracy": accs,
        "thetas": np.asarray(thetas),
        "theta_start": np.asarray(theta_of(params0)),
        "params": np.asarray(p),
    }


def segment_layer_norms(fm: flat.FlatModel, theta: np.ndarray) -> np.ndarray:
    """Per-layer norms from the segment table (independent of flat.layer_norms)."""
    sq = {layer: 0.0 for layer in fm.layers}
    for s in fm.segments:
        sq[s.layer] += float(np.sum(np.asarray(theta[s.start : s.start + s.size], np.float64) ** 2))
    return np.sqrt([sq[layer] for layer in fm.layers])


def run_jit(trainer: train.Trainer):
    return jax.jit(trainer.run, static_argnums=5)


# --------------------------------------------------------------------------- radius invariants


def _check_radius_kept(name, r0, theta_start, theta, steps, hist, rtol):
    """|theta| = r0 at every record, epoch end and the end of >= 1000 steps (float rounding does not
    accumulate), and not vacuously: theta turned well away from its start and the loss went down.
    hist: the run's history, epochs concatenated."""
    assert steps >= 1000, name
    radius = np.asarray(hist["radius"], np.float64)
    assert np.max(np.abs(radius / r0 - 1)) < rtol, (name, np.max(np.abs(radius / r0 - 1)))
    assert np.max(np.abs(np.asarray(hist["epoch_radius"]) / r0 - 1)) < rtol, name
    assert abs(np.linalg.norm(theta) / r0 - 1) < rtol, name
    cos = theta @ theta_start / (np.linalg.norm(theta) * np.linalg.norm(theta_start))
    assert cos < 0.99, (name, cos)
    assert np.mean(hist["loss"][-1]) < np.mean(hist["loss"][0]), name


def _long_run(trainer, run, data, params0, space, key, *, calls, epochs_per_call):
    """`calls` consecutive calls of the jitted run (one compile): |theta_0|, the start and end theta, the
    end state and the history of all epochs."""
    state = state0 = trainer.init(params0, space)
    hists = []
    for i in range(calls):
        state, hist = run(state, key, data, space, i * epochs_per_call, epochs_per_call)
        hists.append(hist)
    hist = {k: np.concatenate([h[k] for h in hists]) for k in ("radius", "epoch_radius", "loss")}
    theta = lambda st: np.asarray(trainer.theta(st, space), np.float64)  # noqa: E731
    return float(state0.r0), theta(state0), theta(state), state, hist


def test_fixed_radius_and_hypersphere_keep_radius_float32():
    """Full-space fixed radius (1000 steps in one call of 125 epochs) and the hypersphere (1000 steps in
    250 calls of the seed tests' one-epoch runner: the same property, no compile of its own)."""
    prob = make_problem(jnp.float32)
    key = jax.random.key(3)
    spec = train.spec_for(N_TRAIN, batch_size=8, lr=0.05, record_every=1, fixed_radius=True)
    trainer = train.make_trainer(prob.fm, spec)
    r0, start, end, state, hist = _long_run(trainer, run_jit(trainer), prob.data, prob.theta0, None, key,
                                            calls=1, epochs_per_call=125)
    assert np.shape(hist["radius"]) == (125, spec.steps_per_epoch) and int(state.step) == 1000
    _check_radius_kept("full_fixed", r0, start, end, int(state.step), hist, 1e-5)
    c = seeds_setup()
    calls = 1000 // c.spec.steps_per_epoch
    r0, start, end, state, hist = _long_run(c.trainer, c.single, c.prob.data, jnp.zeros(c.d), c.per_seed[0],
                                            c.k_train[0], calls=calls, epochs_per_call=1)
    assert int(state.step) == 1000
    _check_radius_kept("hypersphere", r0, start, end, int(state.step), hist, 1e-5)


def test_fixed_radius_and_hypersphere_keep_radius_float64():
    """The float64 trainers of the scan-vs-loop test (`full_fixed_adam`, `hypersphere_adam`: their one
    compile of 3 epochs) run on for 42 calls, 1008 steps."""
    with jax.enable_x64(True):
        for name in ("full_fixed_adam", "hypersphere_adam"):
            c = scan_setup(name)
            r0, start, end, state, hist = _long_run(c.trainer, c.run, c.prob.data, c.params0, c.space,
                                                    jax.random.key(3), calls=42, epochs_per_call=c.epochs)
            _check_radius_kept(name, r0, start, end, int(state.step), hist, 1e-12)


def test_tangent_projection_exact_float64():
    """subspace.tangent/radial in float64. (That train's fixed-radius update is tangent before
    renormalising is checked against the reference loop in the `full_fixed_adam` case below.)"""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        theta = jnp.asarray(3.0 * rng.normal(size=1000))
        v = jnp.asarray(rng.normal(size=1000)) + 0.5 * theta  # a large radial part
        t = subspace.tangent(theta, v)
        r = subspace.radial(theta, v)
        assert t.dtype == jnp.float64
        scale = float(jnp.linalg.norm(theta) * jnp.linalg.norm(v))
        assert abs(float(jnp.vdot(t, theta))) / scale < 1e-15
        assert abs(float(jnp.vdot(v, theta))) / scale > 0.1  # v itself is far from tangent
        np.testing.assert_allclose(t + r, v, rtol=0, atol=1e-14)
        np.testing.assert_allclose(subspace.tangent(theta, t), t, rtol=0, atol=1e-14)
        theta_hat = np.asarray(theta) / np.linalg.norm(np.asarray(theta))
        radial_length = float(subspace.radial_scalar(theta, v))
        np.testing.assert_allclose(radial_length, np.asarray(v) @ theta_hat, rtol=1e-14)
        np.testing.assert_allclose(r, (np.asarray(v) @ theta_hat) * theta_hat, rtol=0, atol=1e-14)
        # theta = 0: no radial direction, tangent is the identity
        np.testing.assert_array_equal(subspace.tangent(jnp.zeros(1000), v), v)


# --------------------------------------------------------------------------- scan vs Python loop

CONFIGS = {  # 8 steps per epoch in every config
    "full_momentum": dict(mode="full", optimizer="momentum", lr=0.02, record_every=3, snapshot_every=3),
    "full_fixed_adam": dict(
        mode="full", optimizer="adam", lr=0.05, fixed_radius=True, record_every=3, snapshot_every=4
    ),
    "hyperplane_sgd": dict(mode="hyperplane", optimizer="sgd", lr=0.2, record_every=20, snapshot_every=0),
    "hypersphere_adam": dict(mode="hypersphere", optimizer="adam", lr=0.05, record_every=1, snapshot_every=3),
}


@functools.lru_cache(maxsize=None)
def scan_setup(name):
    """A config's float64 problem, spec, start, trainer and jitted run (called inside jax.enable_x64), shared
    by the scan-vs-loop test and the float64 radius test (one compile of `epochs` = 3)."""
    prob = make_problem(jnp.float64)
    spec = train.spec_for(N_TRAIN, batch_size=8, **CONFIGS[name])
    space = None if spec.mode == "full" else make_space(prob, 6)
    params0 = prob.theta0 if spec.mode == "full" else jnp.zeros(6, jnp.float64)
    trainer = train.make_trainer(prob.fm, spec)
    return types.SimpleNamespace(prob=prob, spec=spec, space=space, params0=params0, trainer=trainer,
                                 run=run_jit(trainer), epochs=3)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_scan_equals_python_loop_with_history_and_snapshots(name):
    """Final params, per-block records, per-epoch test metrics and snapshots vs an optax loop;
    subspace (hyperplane, hypersphere) training lowers the loss.

    record_every 3 (2 blocks: steps 1-3, 4-6; steps 7-8 unrecorded), 20 (one block of the whole
    epoch) or 1 (every step). float64, so any difference in batch order or update rule shows far
    above the tolerance.
    """
    with jax.enable_x64(True):
        c = scan_setup(name)
        prob, spec, space, params0, trainer, epochs = c.prob, c.spec, c.space, c.params0, c.trainer, c.epochs
        steps = spec.steps_per_epoch
        R, B = spec.records_per_epoch, spec.block
        expected_rb = {3: (2, 3), 20: (1, 8), 1: (8, 1)}[spec.record_every]
        assert (steps, R, B) == (8, *expected_rb)
        key = jax.random.key(11)
        state, hist = c.run(trainer.init(params0, space), key, prob.data, space, 0, epochs)
        ref = reference_run(prob, spec, params0, key, epochs, space)
        tight = dict(rtol=1e-10, atol=1e-12)
        exact_fraction = dict(rtol=0, atol=1e-7)  # accuracies: float32 means of booleans even under x64

        np.testing.assert_allclose(state.params, ref["params"], **tight)
        assert int(state.step) == epochs * steps
        blocks = lambda a: a[:, : R * B].reshape(epochs, R, B)  # noqa: E731
        np.testing.assert_allclose(hist["loss"], blocks(ref["loss"]).mean(-1), **tight)
        np.testing.assert_allclose(hist["accuracy"], blocks(ref["accuracy"]).mean(-1), **exact_fraction)
        block_ends = (np.arange(R) + 1) * B  # 1-based step within the epoch
        np.testing.assert_array_equal(hist["step"], np.arange(epochs)[:, None] * steps + block_ends)
        thetas = ref["thetas"]  # [E, steps, D]: theta after each step
        at_block_end = thetas[:, block_ends - 1]
        np.testing.assert_allclose(hist["radius"], np.linalg.norm(at_block_end, axis=-1), **tight)
        np.testing.assert_allclose(
            hist["layer_norms"],
            np.array([[segment_layer_norms(prob.fm, th) for th in row] for row in at_block_end]),
            **tight,
        )
        path = np.concatenate([ref["theta_start"][None], thetas.reshape(-1, thetas.shape[-1])])
        upd = np.sum(np.diff(path, axis=0) ** 2, -1).reshape(epochs, steps)
        np.testing.assert_allclose(hist["update_sq"], blocks(upd).mean(-1), **tight)
        if spec.snapshot_every:
            snap_steps = (np.arange(steps // spec.snapshot_every) + 1) * spec.snapshot_every
            assert hist["snapshots"].shape == (epochs, snap_steps.size, prob.fm.D)
            np.testing.assert_allclose(hist["snapshots"], thetas[:, snap_steps - 1], **tight)
        else:
            assert "snapshots" not in hist
        end = thetas[:, -1]
        np.testing.assert_allclose(hist["epoch_radius"], np.linalg.norm(end, axis=-1), **tight)
        xt, yt = prob.data.x_test, prob.data.y_test
        test_acc = [float(flat.accuracy(prob.fm, jnp.asarray(th), xt, yt)) for th in end]
        test_loss = [float(flat.loss(prob.fm, jnp.asarray(th), xt, yt)) for th in end]
        np.testing.assert_allclose(hist["test_accuracy"], test_acc, **exact_fraction)
        np.testing.assert_allclose(hist["test_loss"], test_loss, **tight)
        # The recorded quantities are not trivially constant (the comparisons mean something).
        assert np.ptp(ref["loss"]) > 1e-3 and np.ptp(test_loss) > 1e-4
        if space is not None:  # subspace training lowers the loss on this small problem
            x, y = prob.data.x_train, prob.data.y_train
            loss_start = float(flat.loss(prob.fm, space.anchor, x, y))
            assert float(flat.loss(prob.fm, trainer.theta(state, space), x, y)) < 0.8 * loss_start
        if spec.fixed_radius:
            # The update is made tangent before renormalising: the reference without that second
            # projection (the optimizer's update of a tangent gradient has a radial part) differs.
            wrong = reference_run(prob, spec, params0, key, epochs, space, project_update=False)
            assert np.max(np.abs(wrong["params"] - ref["params"])) > 1e-6
            assert np.max(np.abs(wrong["loss"] - ref["loss"])) > 1e-9
        if spec.mode == "hyperplane":  # theta stays on a + P z: P^T (theta - a) = z, no residual
            P = np.asarray(projections.todense(space.P))
            delta = np.asarray(trainer.theta(state, space) - space.anchor)
            np.testing.assert_allclose(P.T @ delta, state.params, **tight)
            np.testing.assert_allclose(P @ (P.T @ delta), delta, **tight)


def test_evaluate_chunked_equals_unchunked():
    prob = make_problem()
    theta = prob.theta0 * 3.0
    x, y = prob.data.x_test, prob.data.y_test  # 37 examples
    chunks = (10, 36)  # 37 = 3*10 + 7 = 36 + 1: padding and masking matter

    @jax.jit  # one program (op by op, each operation would compile on its own)
    def compute(theta):
        parts = [train.evaluate(prob.fm, theta, x, y, chunk=c) for c in chunks]
        return (train.evaluate(prob.fm, theta, x, y, chunk=1000), flat.loss(prob.fm, theta, x, y),
                flat.accuracy(prob.fm, theta, x, y), parts)

    whole, loss, accuracy, parts = compute(theta)
    np.testing.assert_allclose(whole[0], loss, rtol=1e-6)
    np.testing.assert_allclose(whole[1], accuracy, rtol=1e-7)
    assert 0.0 < float(whole[1]) < 1.0
    for part in parts:
        np.testing.assert_allclose(part[0], whole[0], rtol=1e-6)
        np.testing.assert_allclose(part[1], whole[1], rtol=1e-6)


# --------------------------------------------------------------------------- seeds


@functools.lru_cache(maxsize=None)
def seeds_setup():
    """Hypersphere training of S = 3 seeds (own point, subspace and batch order each), with the
    jitted runners (`train.seed_runner`, as the experiments use) shared by the seed, fit, trace-count and
    float32 radius tests (each compiles once per epoch count)."""
    prob = make_problem()
    S, d = 3, 6
    spec = train.spec_for(N_TRAIN, batch_size=16, lr=0.05, record_every=2, mode="hypersphere")
    trainer = train.make_trainer(prob.fm, spec)
    per_seed = [make_space(prob, d, seed=s) for s in range(S)]
    spaces = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *per_seed)
    states = jax.vmap(trainer.init)(jnp.zeros((S, d)), spaces)
    k_train = seeds.SeedKeys.from_seed(0).train_keys(S)
    runners = {mode: train.seed_runner(trainer, mode) for mode in seeds.SEED_MODES}
    return types.SimpleNamespace(
        prob=prob,
        S=S,
        d=d,
        spec=spec,
        trainer=trainer,
        per_seed=per_seed,
        spaces=spaces,
        states=states,
        k_train=k_train,
        runners=runners,
        single=run_jit(trainer),
    )


def test_seeds_vmap_and_map_equal_python_loop_over_seeds():
    """seeds.map_seeds around trainer.run (keys, states and subspaces per seed), as the experiments
    do, equals a Python loop over seeds; two calls of one epoch each (epoch0 = 0, 1)."""
    c = seeds_setup()
    data = c.prob.data

    loop = []
    for s in range(c.S):
        state0 = c.trainer.init(jnp.zeros(c.d), c.per_seed[s])
        st, h0 = c.single(state0, c.k_train[s], data, c.per_seed[s], 0, 1)
        st, h1 = c.single(st, c.k_train[s], data, c.per_seed[s], 1, 1)
        loop.append((st, {k: np.concatenate([h0[k], h1[k]]) for k in h0}))
    # seeds really differ (different points, subspaces and batch orders)
    assert float(jnp.max(jnp.abs(loop[0][0].params - loop[1][0].params))) > 1e-3
    assert not np.allclose(loop[0][1]["loss"], loop[1][1]["loss"])
    np.testing.assert_array_equal(loop[0][1]["step"], [[2, 4], [6, 8]])
    for seed_mode, run_seeds in c.runners.items():
        state, h0 = run_seeds(c.states, c.k_train, c.spaces, 0, data, 1)
        state, h1 = run_seeds(state, c.k_train, c.spaces, 1, data, 1)
        hist = {k: np.concatenate([h0[k], h1[k]], axis=1) for k in h0}  # [S, epoch, ...]
        for s in range(c.S):
            close = dict(rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(state.params[s], loop[s][0].params, **close, err_msg=seed_mode)
            for k in ("loss", "accuracy", "radius", "test_loss", "test_accuracy", "update_sq", "step"):
                np.testing.assert_allclose(hist[k][s], loop[s][1][k], **close, err_msg=f"{seed_mode} {k}")


# --------------------------------------------------------------------------- data parallel

DATA_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    sys.path.insert(0, "tests")
    from test_train import make_problem, N_TRAIN
    from gzone import train

    assert len(jax.devices()) == 4, jax.devices()
    prob = make_problem()
    spec = train.spec_for(N_TRAIN, batch_size=16, lr=0.02, record_every=2)
    mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    out = {}
    for name, sharding in (("one", None), ("four", NamedSharding(mesh, PartitionSpec("batch")))):
        trainer = train.make_trainer(prob.fm, spec, batch_sharding=sharding)
        state0 = trainer.init(prob.theta0)
        args = (state0, jax.random.key(2), prob.data, None, 0)
        compiled = jax.jit(trainer.run, static_argnums=5).lower(*args, 3).compile()
        state, hist = compiled(*args)
        out[name] = {"params": np.asarray(state.params).tolist(), "loss": np.asarray(hist["loss"]).tolist(),
                     "test_accuracy": np.asarray(hist["test_accuracy"]).tolist(),
                     "all_reduce": "all-reduce" in compiled.as_text()}
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module", autouse=True)
def data_parallel_run(request, tmp_path_factory):
    """Starts the 4-device subprocess when the module starts, so that it runs beside the other
    tests (it is mostly single-threaded compilation); only when its test is selected."""
    if not any("data_parallel" in item.name for item in request.session.items):
        yield None
        return
    env = {
        **os.environ,
        "XLA_FLAGS": f"{conftest.XLA_FLAGS} --xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": ROOT,
    }
    folder = tmp_path_factory.mktemp("data_parallel")
    with open(folder / "out", "w+") as out, open(folder / "err", "w+") as err:
        cmd = [sys.executable, "-c", DATA_PARALLEL_SCRIPT]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)
        yield proc, folder
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_data_parallel_over_four_cpu_devices_matches_one_device(data_parallel_run):
    proc, folder = data_parallel_run
    assert proc.wait(timeout=300) == 0, (folder / "err").read_text()[-3000:]
    line = [ln for ln in (folder / "out").read_text().splitlines() if ln.startswith("RESULT")][-1]
    out = json.loads(line[len("RESULT") :])
    one, four = out["one"], out["four"]
    assert four["all_reduce"] and not one["all_reduce"]  # the sharded run really is data-parallel
    np.testing.assert_allclose(four["params"], one["params"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(four["loss"], one["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(four["test_accuracy"], one["test_accuracy"])


# --------------------------------------------------------------------------- fit, checkpoints


def test_fit_in_chunks_equals_one_call_and_resumes_from_checkpoint(tmp_path):
    """train.fit with epochs_per_call=1 equals calls of 2 epochs and of the 1 left; a run resumed from the
    checkpoint written after epoch 1 (records.save/load_checkpoint) continues bitwise identically. (The
    runner and chunk lengths of the trace-count test below: its programs compile once for both.)"""
    c = seeds_setup()
    S, epochs = c.S, 3
    run_fn = lambda st, e0, n: c.runners["map"](st, c.k_train, c.spaces, e0, c.prob.data, n)  # noqa: E731

    whole_state, whole = train.fit(run_fn, c.states, epochs=epochs, epochs_per_call=2)
    saved = []
    os.makedirs(tmp_path / "units")

    def on_chunk(epoch, st, hist):
        saved.append((epoch, hist["loss"].shape))
        if epoch == 1:
            records.save_checkpoint(str(tmp_path), "u", epoch=epoch, state=st, history=hist)

    chunk_state, chunked = train.fit(run_fn, c.states, epochs=epochs, epochs_per_call=1, on_chunk=on_chunk)
    assert saved == [(1, (S, 1, 2)), (2, (S, 2, 2)), (3, (S, 3, 2))]
    assert set(chunked) == set(whole)
    for k in whole:
        assert chunked[k].shape == whole[k].shape, k
        assert whole[k].shape[:2] == (S, epochs), k  # seed axis first, epochs second
        np.testing.assert_allclose(chunked[k], whole[k], rtol=1e-6, atol=1e-7, err_msg=k)
    np.testing.assert_allclose(chunk_state.params, whole_state.params, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(whole["step"][0], np.arange(epochs)[:, None] * 4 + np.array([2, 4]))

    # Resume from the checkpoint after epoch 1: identical (bitwise) to the uninterrupted chunked run.
    epoch, state, history = records.load_checkpoint(str(tmp_path), "u", c.states)
    assert epoch == 1 and history["loss"].shape == (S, 1, 2)
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(c.states)
    res_state, resumed = train.fit(
        run_fn, state, epochs=epochs, epochs_per_call=1, start_epoch=epoch, history=history
    )
    for a, b in zip(jax.tree_util.tree_leaves(res_state), jax.tree_util.tree_leaves(chunk_state)):
        np.testing.assert_array_equal(a, b)
    for k in chunked:
        np.testing.assert_array_equal(resumed[k], chunked[k], err_msg=k)
    # ... and differs from a run that forgot the history or restarted the epochs
    _, restarted = train.fit(run_fn, state, epochs=2, epochs_per_call=1, start_epoch=0)
    assert not np.allclose(restarted["loss"][:, 1], chunked["loss"][:, 2])
    assert records.load_checkpoint(str(tmp_path), "missing", c.states) is None

    # Without a seed axis the epochs are axis 0 (seed 0 of the run above).
    one_fn = lambda st, e0, n: c.single(st, c.k_train[0], c.prob.data, c.per_seed[0], e0, n)  # noqa: E731
    state0 = c.trainer.init(jnp.zeros(c.d), c.per_seed[0])
    s_one, h_one = train.fit(one_fn, state0, epochs=2, epochs_per_call=1)
    assert h_one["loss"].shape == (2, 2) and h_one["test_accuracy"].shape == (2,)
    np.testing.assert_allclose(h_one["loss"], whole["loss"][0, :2], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(h_one["step"], whole["step"][0, :2])


def test_spec_validation():
    with pytest.raises(ValueError, match="fixed_radius"):
        train.TrainSpec(mode="hyperplane", fixed_radius=True)
    with pytest.raises(ValueError, match="mode"):
        train.TrainSpec(mode="cube")
    with pytest.raises(ValueError, match="positive"):
        train.TrainSpec(lr=0.0)
    with pytest.raises(ValueError, match="exceeds"):
        train.spec_for(10, batch_size=11)


def test_a_training_run_in_chunks_traces_once_per_chunk_length():
    """The hot function of training: `fit` with epochs_per_call=2 over 5 epochs calls chunks of 2, 2 and 1
    epochs: two traces of the trainer's run (lengths 2 and 1), never one per call."""
    chex.clear_trace_counter()
    c = seeds_setup()
    guarded = c.trainer._replace(run=chex.assert_max_traces(c.trainer.run, n=2))
    runner = train.seed_runner(guarded, "map")
    run_fn = lambda st, e0, n: runner(st, c.k_train, c.spaces, e0, c.prob.data, n)  # noqa: E731
    train.fit(run_fn, c.states, epochs=5, epochs_per_call=2)
    with pytest.raises(AssertionError, match="traced > 2 times"):
        run_fn(c.states, 0, 3)  # a third chunk length would compile again
