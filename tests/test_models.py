"""gzone.models: parameter counts, init conventions against their closed forms, CNNs, layer order."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gzone import flat, models


def _mlp(widths, num_classes=10, activation="relu"):
    return models.build(models.ModelSpec("mlp", tuple(widths), activation), num_classes)


def _kernels(params):
    """(name, kernel) pairs and (name, bias) pairs of a params pytree."""
    kernels = [(k, np.asarray(v["kernel"])) for k, v in params.items()]
    biases = [(k, np.asarray(v["bias"])) for k, v in params.items()]
    return kernels, biases


@pytest.mark.parametrize("input_shape,expected_D", [((784,), 199_210), ((28, 28, 1), 199_210),
                                                    ((3072,), 656_810), ((32, 32, 3), 656_810)])
def test_mlp_200_200_parameter_counts(input_shape, expected_D):
    fm = flat.flat_model(_mlp((200, 200)), input_shape)
    assert fm.D == expected_D


def test_xavier_radius_closed_form():
    module = _mlp((200, 200))
    by_hand = 784 * 200 * 2 / (784 + 200) + 200 * 200 * 2 / 400 + 200 * 10 * 2 / 210
    assert models.xavier_radius(module, (784,)) == pytest.approx(math.sqrt(by_hand), rel=1e-12)
    radii = models.layer_xavier_radii(module, (784,))
    assert list(radii) == ["dense_00", "dense_01", "dense_02"]
    assert sum(r**2 for r in radii.values()) == pytest.approx(by_hand, rel=1e-12)


def test_fans():
    assert models.fans((784, 200)) == (784, 200)
    assert models.fans((3, 3, 16, 32)) == (144, 288)
    assert models.fans((3, 4, 8)) == (12, 24)  # 1-D conv: window 3


# One model for every sampling test: eager calls reuse the compiled random kernels per shape.
SAMPLED_WIDTHS, SAMPLED_INPUT, NUM_SAMPLES = (100, 100), (40,), 16


@pytest.fixture(scope="module")
def samples():
    """convention -> [S, D] float64 flat samples of MLP 40-100-100-10 (one key per sample)."""
    module = _mlp(SAMPLED_WIDTHS)
    keys = jax.random.split(jax.random.key(0), NUM_SAMPLES)
    out = {}
    for convention in models.INIT_CONVENTIONS:
        fn = flat.sample_fn(module, SAMPLED_INPUT, convention)
        out[convention] = np.stack([np.asarray(fn(keys[i]), np.float64) for i in range(NUM_SAMPLES)])
    return out


def test_xavier_radius_equals_sqrt_of_mean_squared_norm_of_samples(samples):
    module, shape = _mlp(SAMPLED_WIDTHS), SAMPLED_INPUT
    r_x = models.xavier_radius(module, shape)
    sq = np.sum(samples["xavier"] ** 2, axis=1)
    # |theta|^2 = sum_i sigma_i^2 chi^2_1: variance sum_i 2 sigma_i^4 per sample.
    shapes = models.param_shapes(module, shape)
    stds = jax.tree_util.tree_leaves(models.xavier_std_tree(shapes))
    sizes = [int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes)]
    se = math.sqrt(sum(2 * n * s**4 for n, s in zip(sizes, stds)) / NUM_SAMPLES)
    assert abs(sq.mean() - r_x**2) < 5 * se
    assert 5 * se < 0.05 * r_x**2  # the check is sharp enough to matter


@pytest.mark.parametrize("convention", ["xavier", "he"])
def test_per_leaf_std_and_zero_biases(samples, convention):
    fm = flat.flat_model(_mlp(SAMPLED_WIDTHS), SAMPLED_INPUT)
    thetas = samples[convention]
    for seg in fm.segments:
        block = thetas[:, seg.start : seg.start + seg.size]
        if seg.name.endswith("bias"):
            assert np.all(block == 0), seg.name
            continue
        fan_in, fan_out = seg.shape
        expected = math.sqrt(2 / (fan_in + fan_out) if convention == "xavier" else 2 / fan_in)
        n = block.size
        assert abs(block.std() / expected - 1) < 5 / math.sqrt(2 * n), seg.name
        assert abs(block.mean()) < 5 * expected / math.sqrt(n), seg.name
        # Not truncated: a normal puts 4.55% of its mass beyond 2 sigma (a 2-sigma truncation none).
        beyond = np.mean(np.abs(block) > 2 * expected)
        assert abs(beyond - 0.0455) < 5 * math.sqrt(0.0455 * 0.9545 / n), seg.name


def test_samples_differ_between_keys(samples):
    for thetas in samples.values():
        assert np.linalg.matrix_rank(thetas) == NUM_SAMPLES


def test_conv_kernel_std_uses_receptive_field():
    module = models.build(models.ModelSpec("cnn_fs", (32, 64)), 10)
    params = models.init_params(jax.random.key(2), module, (8, 8, 3), "he")
    w = np.asarray(params["conv_01"]["kernel"])
    assert w.shape == (3, 3, 32, 64)
    expected = math.sqrt(2 / (9 * 32))
    assert abs(w.std() / expected - 1) < 5 / math.sqrt(2 * w.size)
    assert np.all(np.asarray(params["conv_01"]["bias"]) == 0)


def test_isotropic_init(samples):
    module, shape = _mlp(SAMPLED_WIDTHS), SAMPLED_INPUT
    r_x = models.xavier_radius(module, shape)
    fm = flat.flat_model(module, shape)
    thetas = samples["isotropic"]
    sq = np.sum(thetas**2, axis=1)
    # |theta|^2 = (r_X^2 / D) chi^2_D: mean r_X^2, variance 2 r_X^4 / D per sample.
    assert abs(sq.mean() - r_x**2) < 5 * r_x**2 * math.sqrt(2 / fm.D / NUM_SAMPLES)
    # Every coordinate, biases included, has the same std r_X / sqrt(D).
    for seg in fm.segments:
        block = thetas[:, seg.start : seg.start + seg.size]
        assert abs(block.std() / (r_x / math.sqrt(fm.D)) - 1) < 5 / math.sqrt(2 * block.size), seg.name


def test_units_radius_is_the_square_root_of_the_units_after_the_input():
    """The poster's r_X: sqrt(sum of kernel size / fan_in) = sqrt(number of units after the input) for an
    MLP (widths and logits), with or without biases; output channels for conv kernels."""
    for use_bias in (True, False):
        module = models.MLP(widths=(7, 5), num_classes=4, use_bias=use_bias)
        assert models.units_radius(module, (3,)) == pytest.approx(math.sqrt(7 + 5 + 4), rel=1e-15)
    poster = models.build(models.ModelSpec("mlp", (200, 200)), 10)
    assert models.units_radius(poster, (32, 32, 3)) == pytest.approx(math.sqrt(410), rel=1e-15)
    assert models.xavier_radius(poster, (32, 32, 3)) == pytest.approx(24.384, abs=1e-3)  # another radius
    cnn = models.build(models.ModelSpec("cnn_fs", (16, 8)), 10)
    assert models.units_radius(cnn, (8, 8, 3)) == pytest.approx(math.sqrt(16 + 8 + 10), rel=1e-15)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="init convention"):
        models.init_params(jax.random.key(0), _mlp((4,)), (3,), "lecun")
    with pytest.raises(ValueError, match="model kind"):
        models.ModelSpec("resnet")
    with pytest.raises(ValueError, match="activation"):
        models.ModelSpec("mlp", (4,), "swish")
    with pytest.raises(ValueError, match="widths"):
        models.ModelSpec("mlp", (4, 0))
    with pytest.raises(ValueError):
        models.ModelSpec("cnn_fs", ())


def _conv_net_D(channels, input_shape, num_classes=10):
    """Parameter count of models.ConvNet by hand: 3^k windows, 'SAME' convs, 2-pools (floor)."""
    if len(input_shape) == 1:
        input_shape = (*input_shape, 1)
    *spatial, c_in = input_shape
    window = 3 ** len(spatial)
    D = 0
    for c in channels:
        D += window * c_in * c + c
        spatial = [s // 2 for s in spatial]
        c_in = c
    return D + int(np.prod(spatial)) * c_in * num_classes + num_classes


@pytest.mark.parametrize("kind", ["cnn_fs", "small_cnn"])
@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3), (40,)])
def test_cnns_build_and_run(kind, input_shape):
    spec = models.ModelSpec(kind, models.default_widths(kind))
    module = models.build(spec, 10)
    fm = flat.flat_model(module, input_shape)
    assert fm.D == _conv_net_D(spec.widths, input_shape)
    assert fm.layers == tuple(f"conv_{i:02d}" for i in range(len(spec.widths))) + ("dense_00",)
    rng = np.random.default_rng(0)
    theta = jnp.asarray(0.1 * rng.standard_normal(fm.D), jnp.float32)
    x = jnp.asarray(rng.standard_normal((2, *input_shape)), jnp.float32)
    out = jax.jit(flat.logits, static_argnums=0)(fm, theta, x)
    assert out.shape == (2, 10) and bool(jnp.all(jnp.isfinite(out)))
    assert float(jnp.std(out)) > 0


def test_cnn_block_orders_agree_for_monotone_activations():
    # max-pool commutes with a non-decreasing activation, so pool->act (cnn_fs) and act->pool
    # (small_cnn) compute the same function with the same parameters.
    x = jnp.asarray(np.random.default_rng(1).standard_normal((3, 12, 12, 1)), jnp.float32)
    for activation in ("relu", "tanh"):
        a = models.build(models.ModelSpec("cnn_fs", (4,), activation), 5)
        b = models.build(models.ModelSpec("small_cnn", (4,), activation), 5)
        fm = flat.flat_model(a, (12, 12, 1))
        params = fm.unravel(jnp.asarray(np.random.default_rng(0).standard_normal(fm.D), jnp.float32))
        out_a, out_b = models.apply_fn(a)(params, x), models.apply_fn(b)(params, x)
        np.testing.assert_allclose(out_a, out_b, rtol=1e-5, atol=1e-6)
        assert float(jnp.std(out_a)) > 0


def test_ravel_order_follows_depth():
    module = _mlp([3] * 11, num_classes=2)  # 12 Dense layers: dense_00 ... dense_11
    fm = flat.flat_model(module, (4,))
    assert fm.layers == tuple(f"dense_{i:02d}" for i in range(12))
    starts = [s.start for s in fm.segments]
    assert starts == sorted(starts) and starts[0] == 0
    assert all(a.start + a.size == b.start for a, b in zip(fm.segments, fm.segments[1:]))
    assert fm.segments[-1].start + fm.segments[-1].size == fm.D
    # The segments say where each array really sits in theta.
    theta = jnp.arange(fm.D, dtype=jnp.float32)
    params = fm.unravel(theta)
    np.testing.assert_array_equal(ravel_pytree(params)[0], theta)  # unravel inverts ravel_pytree
    for seg in fm.segments:
        layer, name = seg.name.split("/")
        expected = np.arange(seg.start, seg.start + seg.size).reshape(seg.shape)
        np.testing.assert_array_equal(params[layer][name], expected)
