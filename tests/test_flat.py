"""gzone.flat: the loss against a float64 numpy reference, huge radii, jax transformations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from gzone import flat, models

N_IN, WIDTHS, N_CLASSES, N_EXAMPLES = 7, (5, 6), 4, 9


def _problem(activation="relu", dtype=np.float64):
    module = models.build(models.ModelSpec("mlp", WIDTHS, activation), N_CLASSES)
    fm = flat.flat_model(module, (N_IN,), dtype)
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(fm.D).astype(dtype)
    x = rng.standard_normal((N_EXAMPLES, N_IN)).astype(dtype)
    y = rng.integers(0, N_CLASSES, N_EXAMPLES).astype(np.int32)
    return module, fm, theta, x, y


def _numpy_logits(fm, theta, x, activation):
    """The MLP by hand in float64 from the flat vector's segments."""
    theta = np.asarray(theta, np.float64)
    arrays = {s.name: theta[s.start : s.start + s.size].reshape(s.shape) for s in fm.segments}
    act = {"relu": lambda a: np.maximum(a, 0), "tanh": np.tanh}[activation]
    h = np.asarray(x, np.float64)
    n_layers = len(fm.layers)
    for i in range(n_layers):
        h = h @ arrays[f"dense_{i:02d}/kernel"] + arrays[f"dense_{i:02d}/bias"]
        if i < n_layers - 1:
            h = act(h)
    return h


def _numpy_loss(logits, y):
    return float(np.mean(logsumexp(logits, axis=1) - logits[np.arange(len(y)), y]))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_loss_and_accuracy_equal_a_float64_numpy_reference(x64, activation):
    _, fm, theta, x, y = _problem(activation)
    theta_j, x_j = jnp.asarray(theta), jnp.asarray(x)
    logits = _numpy_logits(fm, theta, x, activation)
    np.testing.assert_allclose(flat.logits(fm, theta_j, x_j), logits, rtol=1e-12, atol=1e-12)
    assert float(flat.loss(fm, theta_j, x_j, y)) == pytest.approx(_numpy_loss(logits, y), rel=1e-12)
    accuracy = np.mean(logits.argmax(1) == y)
    assert float(flat.accuracy(fm, theta_j, x_j, y)) == pytest.approx(accuracy, rel=1e-7)


def test_float32_loss_is_close_to_the_float64_reference():
    _, fm, theta, x, y = _problem("relu", np.float32)
    reference = _numpy_loss(_numpy_logits(fm, theta, x, "relu"), y)
    value = flat.loss(fm, jnp.asarray(theta), jnp.asarray(x), y)
    assert value.dtype == jnp.float32
    assert float(value) == pytest.approx(reference, rel=1e-5)


def test_cross_entropy_is_finite_at_huge_logits():
    logits = jnp.array([[1e30, -1e30, 0.0], [3e37, 3e37, -3e37]], jnp.float32)
    ce = flat.cross_entropy(logits, jnp.array([1, 0]))
    np.testing.assert_allclose(ce, [2e30, np.log(2.0)], rtol=1e-6)
    assert float(flat.cross_entropy(logits[:1], jnp.array([0]))[0]) == 0.0


def test_loss_and_grad_finite_far_from_the_origin():
    module = models.build(models.ModelSpec("mlp", (16, 16)), 10)
    fm = flat.flat_model(module, (20,))
    r_x = models.xavier_radius(module, (20,))
    rng = np.random.default_rng(1)
    direction = rng.standard_normal(fm.D)
    theta = jnp.asarray(1e4 * r_x * direction / np.linalg.norm(direction), jnp.float32)
    x = jnp.asarray(rng.standard_normal((32, 20)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 32), jnp.int32)
    value, grad = jax.jit(jax.value_and_grad(flat.loss_fn(fm, x, y)))(theta)
    assert np.isfinite(float(value)) and float(value) > 1e6  # logits ~ (1e4)^3: huge but finite
    assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.linalg.norm(grad)) > 0


def test_jit_vmap_grad_jvp(x64):
    _, fm, theta, x, y = _problem("tanh")
    f = flat.loss_fn(fm, jnp.asarray(x), jnp.asarray(y))
    theta = jnp.asarray(theta)
    value = float(f(theta))
    f_jit = jax.jit(f)
    assert float(f_jit(theta)) == pytest.approx(value, rel=1e-13)
    thetas = jnp.asarray(np.random.default_rng(2).standard_normal((3, fm.D)))
    np.testing.assert_allclose(jax.jit(jax.vmap(f))(thetas), [float(f_jit(t)) for t in thetas], rtol=1e-13)
    v = jnp.asarray(np.random.default_rng(3).standard_normal(fm.D))
    grad = jax.jit(jax.grad(f))(theta)
    # Directional derivative against central differences (tanh: smooth), float64.
    eps = 1e-5
    fd = (float(f_jit(theta + eps * v)) - float(f_jit(theta - eps * v))) / (2 * eps)
    assert float(jnp.vdot(grad, v)) == pytest.approx(fd, rel=1e-7)
    _, tangent = jax.jit(lambda t, u: jax.jvp(f, (t,), (u,)))(theta, v)
    assert float(tangent) == pytest.approx(float(jnp.vdot(grad, v)), rel=1e-12)
    # Per-example gradients by vmap(grad) average to the batch gradient.
    per_example = jax.jit(jax.vmap(lambda xi, yi: jax.grad(flat.loss_fn(fm, xi[None], yi[None]))(theta)))(
        jnp.asarray(x), jnp.asarray(y)
    )
    np.testing.assert_allclose(per_example.mean(0), grad, rtol=1e-12, atol=1e-14)


def test_layer_norms_match_numpy():
    _, fm, theta, _, _ = _problem("relu", np.float32)
    expected = []
    for layer in fm.layers:
        blocks = [theta[s.start : s.start + s.size] for s in fm.segments if s.layer == layer]
        expected.append(np.sqrt(sum(np.sum(b.astype(np.float64) ** 2) for b in blocks)))
    np.testing.assert_allclose(flat.layer_norms(fm, jnp.asarray(theta)), expected, rtol=1e-6)
    assert fm.layers == ("dense_00", "dense_01", "dense_02")
    sizes = [N_IN * 5 + 5, 5 * 6 + 6, 6 * N_CLASSES + N_CLASSES]
    np.testing.assert_array_equal(np.bincount(flat.layer_index(fm)), sizes)
    assert list(np.bincount(flat.segment_index(fm))) == [s.size for s in fm.segments]


def test_flatten_and_sample_fn_agree_with_init_params():
    module = models.build(models.ModelSpec("mlp", WIDTHS), N_CLASSES)
    key = jax.random.key(4)
    params = models.init_params(key, module, (N_IN,), "he")
    theta, fm = flat.flatten(module, params)
    assert theta.shape == (fm.D,) and fm.D == N_IN * 5 + 5 + 5 * 6 + 6 + 6 * N_CLASSES + N_CLASSES
    np.testing.assert_array_equal(flat.sample_fn(module, (N_IN,), "he")(key), theta)
    back = fm.unravel(theta)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)
