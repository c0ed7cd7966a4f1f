"""The point measurement with its examples in chunks (`measure.Spec.example_chunk`): equal to all examples at
once and to a dense float64 route, its option checks, and the radius scan with ``example_chunk``."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gzone
from gzone import flat, measure, models, projections
from gzone.curvature import fullspace
from gzone.options import OptionError

C = 3
N = 24


@pytest.fixture(scope="module")
def _small():
    """MLP 4-6-3 tanh (D = 51), N = 24 examples of 3 classes, a point theta, sparse P [D, 5] (float64),
    and the measurement jitted once per example chunk (the tests share the compiles)."""
    with jax.enable_x64(True):
        module = models.build(models.ModelSpec("mlp", (6,), "tanh"), C)
        fm = flat.flat_model(module, (4,), jnp.float64)
        theta = jax.jit(flat.sample_fn(module, (4,), "xavier", jnp.float64))(jax.random.key(0)) * 2.0
        x = jax.random.normal(jax.random.key(1), (N, 4), jnp.float64)
        y = jnp.arange(N) % C
        make = jax.jit(projections.make, static_argnums=0, static_argnames=("D", "d", "dtype"))
        P = make("sparse", jax.random.key(2), D=fm.D, d=5, dtype=jnp.float64)  # jitted: 3x less CPU
    fns = {}

    def measure_with(example_chunk):
        if example_chunk not in fns:
            spec = measure.Spec(subspace=True, gn_split=True, example_chunk=example_chunk)
            fns[example_chunk] = jax.jit(measure.make_measure_fn(fm, spec))
        return fns[example_chunk]

    return (fm, theta, x, y, P), measure_with


@pytest.fixture
def small(x64, _small):
    return _small[0]


@pytest.fixture
def measure_with(x64, _small):
    """example_chunk -> the jitted `measure.make_measure_fn` with the subspace and gn_split options."""
    return _small[1]


def test_chunked_measurement_equals_all_at_once_and_the_dense_route(small, measure_with):
    fm, theta, x, y, P = small
    whole = measure_with(None)(None, theta, P, x, y)
    for example_chunk in (1, 8):
        got = measure_with(example_chunk)(None, theta, P, x, y)
        assert set(got) == set(whole)
        for k in whole:
            np.testing.assert_allclose(got[k], whole[k], rtol=1e-10, atol=1e-12, err_msg=k)
    # the dense route: jax.hessian of the mean loss over all N, P^T H P with P dense (one jitted program)
    f = flat.loss_fn(fm, x, y)

    @jax.jit
    def dense(theta):
        z = flat.logits(fm, theta, x)
        J = jax.jacfwd(lambda th: flat.logits(fm, th, x))(theta)  # [N, C, D]
        loss, grad = jax.value_and_grad(f)(theta)
        return projections.todense(P), jax.hessian(f)(theta), J, jax.nn.softmax(z), loss, grad, z

    Pm, H, J, p, loss, grad, z = map(np.asarray, dense(theta))
    np.testing.assert_allclose(got["eigvals"], np.linalg.eigvalsh(Pm.T @ H @ Pm), rtol=1e-10, atol=1e-12)
    G = sum(J[n].T @ (np.diag(p[n]) - np.outer(p[n], p[n])) @ J[n] for n in range(N)) / N
    np.testing.assert_allclose(got["gn_eigvals"], np.linalg.eigvalsh(Pm.T @ G @ Pm), rtol=1e-10, atol=1e-12)
    assert got["loss"] == pytest.approx(float(loss), rel=1e-12)
    assert got["grad_norm"] == pytest.approx(np.linalg.norm(grad), rel=1e-10)
    assert got["accuracy"] == pytest.approx(np.mean(z.argmax(-1) == np.asarray(y)), abs=1e-15)


def test_chunked_non_finite_policy(small, measure_with):
    fm, theta, x, y, P = small
    out = measure_with(8)(None, theta, P, x.at[9, 0].set(jnp.nan), y)  # in the second of three chunks
    assert np.isnan(out["loss"]) and np.isnan(out["accuracy"]) and np.all(np.isnan(out["eigvals"]))
    assert np.isfinite(out["radius"])


def test_bad_chunks_and_unsupported_options_raise(small, measure_with):
    fm, theta, x, y, P = small
    with pytest.raises(ValueError, match="must divide the number of examples N=24"):
        measure_with(5)(None, theta, P, x, y)
    for bad, name in (
        (dict(full=fullspace.Spec(num_probes=4)), "full"),
        (dict(top_k=2, order=6), "top_k"),
        (dict(gram=measure.Gram(num_classes=C)), "gram"),
        (dict(logit_var=True), "logit_var"),
    ):
        with pytest.raises(ValueError, match=f"example_chunk does not support {name}"):
            measure.Spec(example_chunk=4, **bad)
    with pytest.raises(ValueError, match="example_chunk must be >= 1"):
        measure.Spec(example_chunk=0)


class _BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.BatchNorm(use_running_average=not train)(nn.Dense(5)(x))
        return nn.Dense(C)(jnp.tanh(x))


def test_batch_statistics_refuse_example_chunks():
    fm = flat.flat_model(_BatchNormNet(), (4,), jnp.float32, model_state="batch")
    with pytest.raises(ValueError, match="batch statistics"):
        measure.check_example_chunk(fm, N, 6)
    x = np.random.default_rng(0).standard_normal((N, 4)).astype(np.float32)
    y = np.arange(N) % C
    with pytest.raises(OptionError, match="example_chunk: .*batch statistics"):
        gzone.radius_scan(_BatchNormNet(), x, y, r_over_rx=[1.0], dims=[3], example_chunk=6, log=None)
    with pytest.raises(OptionError, match="example_chunk: .*must divide"):
        gzone.radius_scan(
            _BatchNormNet(), x, y, r_over_rx=[1.0], dims=[3], model_state="frozen", example_chunk=5, log=None
        )
    with pytest.raises(OptionError, match="example_chunk: not with --fullspace_probes"):
        gzone.radius_scan(
            _BatchNormNet(), x, y, r_over_rx=[1.0], dims=[3], fullspace_probes=2, example_chunk=6, log=None
        )


def test_radius_scan_with_example_chunks_equals_without():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0)
    module = models.build(models.ModelSpec("mlp", (8,), "tanh"), C)
    kwargs = dict(r_over_rx=[2.0], dims=[3], num_seeds=2, seed=1, gn_split=True, log=None)
    whole = gzone.radius_scan(module, x, y, **kwargs)
    chunked = gzone.radius_scan(module, x, y, example_chunk=8, **kwargs)
    assert set(chunked.arrays) == set(whole.arrays)
    for k, v in whole.arrays.items():
        np.testing.assert_allclose(chunked.arrays[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    assert "example_chunk" not in chunked.settings  # a how, not a what: resuming with another chunk is fine
