"""The loss of theta (gzone.flat, gzone.models.apply): BatchNorm modes against a hand-written reference,
temperature against scaled logits, MSE's Hessian in closed form, the Gauss-Newton split with both losses,
and the temperature equivalence of a homogeneous network in a radius scan (and what biases change)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gzone
from gzone import flat, models, problem, train
from gzone.curvature import gauss_newton

EPS = 1e-5  # flax BatchNorm's epsilon


class BNNet(nn.Module):
    """Dense(4, no bias) -> BatchNorm -> relu -> Dense(3): the smallest net with batch statistics."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(4, use_bias=False, name="dense_00")(x)
        h = nn.BatchNorm(use_running_average=not train, epsilon=EPS, name="bn")(h)
        return nn.Dense(3, name="dense_01")(nn.relu(h))


def _bn_reference(params, x, *, batch: bool):
    """The same network by hand: batch statistics (mean, biased variance over the batch) or the stored
    ones at their init values (mean 0, variance 1)."""
    h = x @ params["dense_00"]["kernel"]
    mean, var = (h.mean(0, keepdims=True), h.var(0, keepdims=True)) if batch else (0.0, 1.0)
    h = (h - mean) / jnp.sqrt(var + EPS) * params["bn"]["scale"][None] + params["bn"]["bias"][None]
    return jnp.maximum(h, 0) @ params["dense_01"]["kernel"] + params["dense_01"]["bias"][None]


@pytest.mark.parametrize("mode", models.STATE_MODES)
def test_batchnorm_modes_equal_a_hand_written_reference(mode, x64):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((7, 5)))
    prob = problem.build(BNNet(), input_shape=(5,), dtype="float64", model_state=mode)
    assert prob.state == ("batch_stats",) and prob.fm.state == mode
    assert prob.identity()["state"] == {"collections": ["batch_stats"], "mode": mode}
    assert [s.name for s in prob.fm.segments] == ["bn/bias", "bn/scale", "dense_00/kernel", "dense_01/bias",
                                                  "dense_01/kernel"]  # theta: the 'params' only
    theta = jnp.asarray(rng.standard_normal(prob.D))
    v = jnp.asarray(rng.standard_normal(prob.D))
    f = flat.loss_fn(prob.fm, x, jnp.arange(7) % 3)

    @jax.jit  # one program (op by op, each operation would compile on its own)
    def compute(theta, v):
        return {"logits": flat.logits(prob.fm, theta, x), "head": flat.logits(prob.fm, theta, x[:3]),
                "expected": _bn_reference(prob.fm.unravel(theta), x, batch=mode == "batch"),
                "grad_v": jnp.vdot(jax.grad(f)(theta), v),
                "fd": (f(theta + 1e-6 * v) - f(theta - 1e-6 * v)) / 2e-6}

    out = compute(theta, v)
    expected = out["expected"]
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-12, atol=1e-12)
    if mode == "batch":  # the logits of an example depend on the batch it is in
        assert not np.allclose(out["head"], expected[:3])
    # A loss on fixed examples is a deterministic function of theta, differentiated through the stats.
    assert float(out["grad_v"]) == pytest.approx(float(out["fd"]), rel=1e-6)


def test_batch_statistics_evaluation_never_pads_a_batch(x64):
    """train.evaluate in chunks: each chunk its own batch, the remainder too (zero padding would change
    the statistics of the last chunk)."""
    rng = np.random.default_rng(1)
    x, y = jnp.asarray(rng.standard_normal((10, 5))), jnp.asarray(rng.integers(0, 3, 10))
    prob = problem.build(BNNet(), input_shape=(5,), dtype="float64")
    theta = jnp.asarray(rng.standard_normal(prob.D))
    chunks = [(0, 4), (4, 8), (8, 10)]

    @jax.jit
    def compute(theta):
        by_hand = [flat.example_losses(prob.fm, _bn_reference(prob.fm.unravel(theta), x[a:b], batch=True),
                                       y[a:b]) for a, b in chunks]
        return train.evaluate(prob.fm, theta, x, y, chunk=4), jnp.concatenate(by_hand).mean()

    (loss, acc), by_hand = compute(theta)
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-12)
    assert 0 <= float(acc) <= 1


def test_a_module_with_state_but_no_train_keyword_is_refused():
    class NoTrain(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.BatchNorm(use_running_average=False)(x))

    with pytest.raises(ValueError, match="must take train: bool"):
        problem.build(NoTrain(), input_shape=(4,))


def test_temperature_divides_the_logits_and_enters_the_gauss_newton_matrix(x64):
    rng = np.random.default_rng(2)
    module = models.MLP(widths=(6,), num_classes=4, activation="tanh")
    x, y = jnp.asarray(rng.standard_normal((9, 5))), jnp.asarray(rng.integers(0, 4, 9))
    T = 0.37
    fm1 = flat.flat_model(module, (5,), jnp.float64)
    fmT = flat.flat_model(module, (5,), jnp.float64, temperature=T)
    theta = jnp.asarray(rng.standard_normal(fm1.D))
    v = jnp.asarray(rng.standard_normal(fm1.D))

    @jax.jit
    def compute(theta, v):
        z = flat.logits(fm1, theta, x)
        # G = J^T (H_CE(z / T) / T^2) J in the raw logits, from a dense Jacobian
        J = jax.jacfwd(lambda th: flat.logits(fm1, th, x))(theta)  # [N, C, D]
        p = jax.nn.softmax(z / T)
        blocks = jax.vmap(lambda q: jnp.diag(q) - jnp.outer(q, q))(p) / (9 * T**2)
        G = jnp.einsum("nci,ncd,ndj->ij", J, blocks, J)
        return {"z": z, "zT": flat.logits(fmT, theta, x), "loss": flat.loss(fmT, theta, x, y),
                "expected": -jnp.mean(jax.nn.log_softmax(z / T)[jnp.arange(9), y]),
                "mv": gauss_newton.make_gauss_newton_mv(fmT, theta, x)(v), "Gv": G @ v}

    out = compute(theta, v)
    np.testing.assert_allclose(out["zT"], out["z"] / T, rtol=1e-14)
    assert float(out["loss"]) == pytest.approx(float(out["expected"]), rel=1e-13)
    np.testing.assert_allclose(out["mv"], out["Gv"], rtol=1e-10, atol=1e-14)
    # a traced temperature gives what a static one gives
    traced = jax.jit(lambda t: flat.loss(flat.with_temperature(fm1, t), theta, x, y))(T)
    assert float(traced) == pytest.approx(float(out["loss"]), rel=1e-13)


def test_mse_hessian_of_a_linear_model_in_closed_form(x64):
    """z = x W + b, L = (1/(N C)) |z / T - onehot(y)|^2: H = 2 / (N C T^2) (A^T A) kron I_C with
    A = [1, x]; the Gauss-Newton matrix is all of it (R = 0)."""
    rng = np.random.default_rng(3)
    N, p, C, T = 6, 3, 4, 1.7
    module = nn.Dense(C)
    prob = problem.build(module, input_shape=(p,), dtype="float64", loss="mse", temperature=T)
    fm = prob.fm
    x, y = jnp.asarray(rng.standard_normal((N, p))), jnp.asarray(rng.integers(0, C, N))
    theta = jnp.asarray(rng.standard_normal(fm.D))
    u = jnp.asarray(rng.standard_normal((N, C)))
    target = jax.nn.one_hot(y, C)

    @jax.jit
    def compute(theta, u):
        z = x @ fm.unravel(theta)["kernel"] + fm.unravel(theta)["bias"][None]
        return {"loss": flat.loss(fm, theta, x, y), "expected": jnp.mean((z / T - target) ** 2),
                "H": jax.hessian(flat.loss_fn(fm, x, y))(theta),
                "G": jax.vmap(gauss_newton.make_gauss_newton_mv(fm, theta, x))(jnp.eye(fm.D)),
                "output_hessian_u": flat.output_hessian_mv(fm, z, u)}

    out = compute(theta, u)
    assert float(out["loss"]) == pytest.approx(float(out["expected"]), rel=1e-13)
    A = np.concatenate([np.ones((N, 1)), np.asarray(x)], axis=1)  # theta = [bias (C), kernel (p x C)]
    closed = 2.0 / (N * C * T**2) * np.kron(A.T @ A, np.eye(C))
    np.testing.assert_allclose(out["H"], closed, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out["G"], closed, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out["output_hessian_u"], 2 * u / (N * C), rtol=1e-15)


def _scan(module, x, y, **kwargs):
    return gzone.radius_scan(module, x, y, dims=[5], num_seeds=2, seed=1, projection="dense",
                             dtype="float64", log=None, **kwargs)


@pytest.fixture(scope="module")
def homogeneous_data():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 5)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32) + 2 * (x[:, 1] > 0)


@pytest.mark.parametrize("use_bias", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_scaling_the_weights_is_scaling_the_temperature_in_a_homogeneous_net(homogeneous_data, use_bias):
    """Bias-free ReLU MLP, L = 3 layers: at radius alpha r0 and T = 1 the subspace Hessian is that at r0
    and T = alpha^-L divided by alpha^2 (same P, same direction), so frac+ and Tr/||H||_F agree. With
    biases (zero at Xavier-rescaled points) the bias directions break it. One scan of the (radius,
    temperature) grid alpha x alpha^-3 (one compile): its T = 1 column is the radius scan, its alpha = 1
    row the temperature scan (that T = 1 on the axis is the scan without one: tests/test_radius_scan.py)."""
    module = models.MLP(widths=(7, 6), num_classes=4, use_bias=use_bias)
    alphas = np.array([0.3, 1.0, 4.0])
    temps = alphas ** -3.0
    grid = _scan(module, *homogeneous_data, r_over_rx=list(alphas), temperature=list(temps))
    assert grid.axes["frac_pos"] == ["radius", "d", "temperature", "seed"]
    assert grid.axes["eigvals_d5"] == ["radius", "temperature", "seed", "eigenvalue"]
    assert grid.arrays["frac_pos"].shape == (3, 1, 3, 2)
    np.testing.assert_allclose(grid.arrays["temperatures"], temps)
    one, at_r0 = list(temps).index(1.0), list(alphas).index(1.0)
    radius = grid.arrays["radius"][:, 0, one]  # [alpha, seed]
    np.testing.assert_allclose(radius, np.repeat(alphas[:, None] * grid.r_x, 2, 1), rtol=1e-6)
    for d in (5,):
        scaled = grid.arrays[f"eigvals_d{d}"][:, one] * alphas[:, None, None] ** 2  # [alpha, seed, e], T = 1
        at_t = grid.arrays[f"eigvals_d{d}"][at_r0]  # [T, seed, e] at r0
        if use_bias:
            assert np.max(np.abs(scaled[0] - at_t[0])) > 1e-3 * np.max(np.abs(at_t[0]))
        else:
            np.testing.assert_allclose(scaled, at_t, rtol=1e-7, atol=1e-10 * np.abs(at_t).max())
    if not use_bias:
        ratio = grid.arrays["trace_over_frob"]  # [radius, d, T, seed]
        np.testing.assert_allclose(ratio[:, :, one], ratio[at_r0].transpose(1, 0, 2), rtol=1e-7)
    rows = grid.zone()
    assert {r["temperature"] for r in rows} == set(temps) and "T = " in grid.table()
