"""gzone.scan: points at a radius, seeds by vmap / lax.map / a loop / 4 devices, one compile per d."""

from __future__ import annotations

import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gzone import flat, measure, models, projections, seeds, subspace

N_IN, WIDTHS, D_SUB, S = 12, (8,), 3, 3
RADII = (1e-3, 1.0, 1e3)


@pytest.fixture(scope="module")
def problem():
    """A small MLP 12-8-10, 16 fixed examples, the scan's key streams."""
    module = models.build(models.ModelSpec("mlp", WIDTHS), 10)
    fm = flat.flat_model(module, (N_IN,))
    rng = np.random.default_rng(0)
    return {
        "module": module,
        "fm": fm,
        "r_x": models.xavier_radius(module, (N_IN,)),
        "sample": flat.sample_fn(module, (N_IN,), "xavier"),
        "x": jnp.asarray(rng.standard_normal((16, N_IN)), jnp.float32),
        "y": jnp.asarray(rng.integers(0, 10, 16), jnp.int32),
        "keys": seeds.SeedKeys.from_seed(0),
    }


def _point(problem, key, radius, convention):
    return subspace.point_at_radius(
        key, radius, convention=convention, sample_fn=problem["sample"], D=problem["fm"].D, r_x=problem["r_x"]
    )


# --------------------------------------------------------------------------- points at a radius


@pytest.fixture(scope="module")
def points(problem):
    """convention -> [3 radii, 2 keys, D] points, jitted with the radius as data."""
    out = {}
    for convention in subspace.POINT_CONVENTIONS:
        fn = jax.jit(lambda key, radius, c=convention: _point(problem, key, radius, c))
        keys = jax.random.split(jax.random.key(5), 2)
        out[convention] = np.stack([
            np.stack([np.asarray(fn(k, jnp.float32(r))) for k in keys]) for r in RADII
        ])
    return out


@pytest.mark.parametrize("convention", ["xavier_rescaled", "isotropic"])
def test_point_has_the_exact_radius(points, convention):
    norms = np.linalg.norm(points[convention].astype(np.float64), axis=-1)
    np.testing.assert_allclose(norms, np.broadcast_to(np.asarray(RADII)[:, None], norms.shape), rtol=1e-5)


def test_scaled_init_is_alpha_times_the_sample(problem, points):
    keys = jax.random.split(jax.random.key(5), 2)
    sample = jax.jit(problem["sample"])
    for ri, r in enumerate(RADII):
        for ki in range(2):
            expected = (r / problem["r_x"]) * np.asarray(sample(keys[ki]), np.float64)
            np.testing.assert_allclose(points["scaled_init"][ri, ki], expected, rtol=1e-5, atol=1e-7 * r)


def test_scaled_init_radius_is_about_r(problem, points):
    # |theta| / r = |sample| / r_X, and |sample|^2 has mean r_X^2 and variance sum_i 2 sigma_i^4.
    fm, r_x = problem["fm"], problem["r_x"]
    var = sum(2 * s.size * (2 / sum(s.shape)) ** 2 for s in fm.segments if s.name.endswith("kernel"))
    tolerance = 5 * np.sqrt(var) / r_x**2 / 2  # relative, for |theta| (half that of |theta|^2)
    ratio = np.linalg.norm(points["scaled_init"].astype(np.float64), axis=-1) / np.asarray(RADII)[:, None]
    assert np.all(np.abs(ratio - 1) < tolerance) and tolerance < 0.5
    # The same factor at every radius.
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[0], ratio.shape), rtol=1e-5)


@pytest.mark.parametrize("convention", subspace.POINT_CONVENTIONS)
def test_same_key_same_direction_at_every_radius(points, convention):
    p = points[convention].astype(np.float64)
    units = p / np.linalg.norm(p, axis=-1, keepdims=True)
    for ri in range(1, len(RADII)):
        np.testing.assert_allclose(units[ri], units[0], rtol=1e-5, atol=1e-6)
    assert abs(np.dot(units[0, 0], units[0, 1])) < 0.9  # different keys, different directions


def test_xavier_rescaled_points_have_zero_biases(problem, points):
    fm = problem["fm"]
    for seg in fm.segments:
        block = points["xavier_rescaled"][..., seg.start : seg.start + seg.size]
        if seg.name.endswith("bias"):
            assert np.all(block == 0), seg.name
        else:
            assert np.all(np.any(block != 0, axis=-1)), seg.name


def test_unknown_names_are_rejected(problem):
    with pytest.raises(ValueError, match="convention"):
        subspace.point_at_radius(
            jax.random.key(0), 1.0, convention="gaussian", sample_fn=lambda k: jnp.ones(4), D=4, r_x=1.0
        )
    kwargs = dict(sample_fn=problem["sample"], r_x=problem["r_x"])
    with pytest.raises(ValueError, match="convention"):
        measure.make_point_fn(problem["fm"], d=2, projection="sparse", convention="nope", **kwargs)
    with pytest.raises(ValueError, match="projection"):
        measure.make_point_fn(problem["fm"], d=2, projection="nope", convention="isotropic", **kwargs)
    with pytest.raises(ValueError, match="d=0"):
        measure.make_point_fn(problem["fm"], d=0, projection="sparse", convention="isotropic", **kwargs)
    with pytest.raises(ValueError, match="seed mode"):
        seeds.map_seeds(lambda a, b: a, "pmap")


# --------------------------------------------------------------------------- seeds


@pytest.fixture(scope="module")
def unit_results(problem):
    """Results of the same S seeds by vmap, lax.map and a Python loop, plus trace counts."""
    point_fn = measure.make_point_fn(
        problem["fm"],
        d=D_SUB,
        projection="sparse",
        convention="isotropic",
        sample_fn=problem["sample"],
        r_x=problem["r_x"],
    )
    traces = {"vmap": 0, "map": 0}

    def counted(mode):
        def fn(*args):
            traces[mode] += 1
            return point_fn(*args)

        return fn

    keys = problem["keys"]
    k_init, k_proj = keys.init_keys(S), keys.proj_keys(D_SUB, S)
    x, y = problem["x"], problem["y"]
    out = {"traces": traces, "point_fn": point_fn}
    for mode in ("vmap", "map"):
        unit_fn = seeds.make_unit_fn(counted(mode), seed_mode=mode)
        out[mode] = {
            r: jax.tree_util.tree_map(np.asarray, unit_fn(k_init, k_proj, jnp.float32(r), x, y))
            for r in (0.5, 2.0, 8.0)
        }
    one = jax.jit(point_fn)
    out["loop"] = [
        jax.tree_util.tree_map(np.asarray, one(k_init[s], k_proj[s], jnp.float32(2.0), x, y))
        for s in range(S)
    ]
    return out


def test_vmap_equals_map_equals_a_loop(unit_results):
    vm, mp, loop = unit_results["vmap"][2.0], unit_results["map"][2.0], unit_results["loop"]
    assert set(vm) == set(measure.SCALAR_METRICS) | {"eigvals"}
    assert vm["eigvals"].shape == (S, D_SUB) and vm["loss"].shape == (S,)
    for key in vm:
        stacked = np.stack([seed[key] for seed in loop])
        scale = np.max(np.abs(stacked)) + 1e-30
        np.testing.assert_allclose(vm[key], stacked, rtol=1e-5, atol=1e-6 * scale, err_msg=key)
        np.testing.assert_allclose(mp[key], stacked, rtol=1e-5, atol=1e-6 * scale, err_msg=key)
    assert len(np.unique(vm["loss"])) == S  # the seeds really differ


def test_one_trace_per_d_reused_across_radii(unit_results):
    assert unit_results["traces"] == {"vmap": 1, "map": 1}
    losses = [unit_results["map"][r]["loss"] for r in (0.5, 2.0, 8.0)]
    assert not np.allclose(losses[0], losses[2])  # the radius is data, not a baked-in constant
    for r in (0.5, 2.0, 8.0):
        np.testing.assert_allclose(unit_results["map"][r]["radius"], r, rtol=1e-5)


def test_point_fn_metrics_from_their_definitions(problem, unit_results):
    """Seed 0 recomputed step by step: the point, P, the loss, the gradient and P^T H P."""
    keys, fm, x, y = problem["keys"], problem["fm"], problem["x"], problem["y"]
    got = unit_results["loop"][0]
    f = flat.loss_fn(fm, x, y)

    @jax.jit
    def reference(k_init, k_proj):
        theta = _point(problem, k_init, 2.0, "isotropic")
        P = projections.todense(projections.make("sparse", k_proj, D=fm.D, d=D_SUB))
        return theta, P, f(theta), flat.accuracy(fm, theta, x, y), jax.grad(f)(theta), jax.hessian(f)(theta)

    outputs = reference(keys.init_keys(S)[0], keys.proj_keys(D_SUB, S)[0])
    theta, M, loss, accuracy, grad, H = map(np.asarray, outputs)
    M, H = M.astype(np.float64), H.astype(np.float64)
    eig = np.linalg.eigvalsh(M.T @ H @ M)
    assert got["radius"] == pytest.approx(2.0, rel=1e-6)
    assert got["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert got["accuracy"] == pytest.approx(float(accuracy))
    assert got["grad_norm"] == pytest.approx(float(np.linalg.norm(grad)), rel=1e-5)
    assert got["grad_radial"] == pytest.approx(float(np.dot(grad, theta)) / 2.0, rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(got["eigvals"], eig, rtol=1e-3, atol=1e-4 * np.max(np.abs(eig)))
    assert got["frac_pos"] == pytest.approx(np.mean(got["eigvals"] > 0))
    assert got["trace"] == pytest.approx(np.sum(eig), rel=1e-3, abs=1e-4 * np.max(np.abs(eig)))
    assert got["trace_over_frob"] == pytest.approx(
        np.sum(got["eigvals"]) / np.sqrt(np.sum(got["eigvals"].astype(np.float64) ** 2)), rel=1e-4
    )
    assert got["top"] == got["eigvals"][-1] and got["bottom"] == got["eigvals"][0]


SHARD_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from gzone import flat, measure, models, seeds, subspace

    assert jax.device_count() == 4, jax.devices()
    module = models.build(models.ModelSpec("mlp", (8,)), 10)
    fm = flat.flat_model(module, (12,))
    point_fn = measure.make_point_fn(
        fm, d=3, projection="sparse", convention="isotropic",
        sample_fn=flat.sample_fn(module, (12,)), r_x=models.xavier_radius(module, (12,)))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((16, 12)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 16), jnp.int32)
    keys = seeds.SeedKeys.from_seed(0)
    radius = jnp.float32(2.0)
    single = seeds.make_unit_fn(point_fn, seed_mode="map")
    reference = single(keys.init_keys(5), keys.proj_keys(3, 5), radius, x, y)
    for S in (1, 4, 5):  # 1, 5: padded to a multiple of 4 (pad > S for S = 1), 4: one seed per device
        sharded = seeds.make_unit_fn(point_fn, seed_mode="map", devices=jax.devices())  # one seed count each
        out = sharded(keys.init_keys(S), keys.proj_keys(3, S), radius, x, y)
        for k, v in out.items():
            assert v.shape[0] == S, (k, v.shape)
            np.testing.assert_allclose(v, reference[k][:S], rtol=1e-6, atol=1e-7, err_msg=f"{k} S={S}")
    print("SHARDED_OK")
    """
)


@pytest.mark.slow  # a fresh Python process with 4 host devices (~12 s); experiments on 4: test_processes.py
def test_sharded_over_4_cpu_devices_equals_one_device(tmp_path, subprocess_env, run_python):
    script = tmp_path / "shard_check.py"
    script.write_text(SHARD_SCRIPT)
    env = dict(
        subprocess_env, XLA_FLAGS=f"{subprocess_env['XLA_FLAGS']} --xla_force_host_platform_device_count=4"
    )
    proc = run_python([str(script)], env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SHARDED_OK" in proc.stdout


# --------------------------------------------------------------------------- keys and examples


def test_seed_keys_streams():
    keys = seeds.SeedKeys.from_seed(3)
    data = lambda k: np.asarray(jax.random.key_data(k))  # noqa: E731
    np.testing.assert_array_equal(data(keys.init_keys(5))[:3], data(keys.init_keys(3)))
    np.testing.assert_array_equal(data(keys.proj_keys(4, 5))[:2], data(keys.proj_keys(4, 2)))
    assert not np.array_equal(data(keys.proj_keys(4, 3)), data(keys.proj_keys(8, 3)))
    streams = [data(k) for k in (keys.k_init, keys.k_proj, keys.k_data, keys.k_train)]
    assert len({s.tobytes() for s in streams}) == 4
    np.testing.assert_array_equal(data(seeds.SeedKeys.from_seed(3).init_keys(2)), data(keys.init_keys(2)))
    assert not np.array_equal(data(seeds.SeedKeys.from_seed(4).init_keys(2)), data(keys.init_keys(2)))


def test_pick_examples():
    key = jax.random.key(0)
    index = seeds.pick_examples(key, 100, 30)
    assert len(index) == 30 and len(np.unique(index)) == 30
    assert np.all(np.diff(index) > 0) and index.min() >= 0 and index.max() < 100
    np.testing.assert_array_equal(index, seeds.pick_examples(key, 100, 30))
    np.testing.assert_array_equal(np.sort(seeds.pick_examples(key, 100, 100)), np.arange(100))
    for bad in (0, 101):
        with pytest.raises(ValueError, match="examples"):
            seeds.pick_examples(key, 100, bad)


def test_default_seed_mode():
    assert seeds.default_seed_mode("cpu") == "map" and seeds.default_seed_mode("cpu", "train") == "map"
    assert seeds.default_seed_mode("cpu", "scan") == "vmap"
    for workload in seeds.SEED_WORKLOADS:
        assert (
            seeds.default_seed_mode("gpu", workload) == "vmap"
            and seeds.default_seed_mode("tpu", workload) == "vmap"
        )
    with pytest.raises(ValueError, match="workload"):
        seeds.default_seed_mode("cpu", "eval")


def test_a_scan_unit_compiles_once_for_every_radius(problem):
    """The hot function of a scan: one trace for all radii (data), a new one only for other shapes.
    (S seeds as in `unit_results`: the same program, so the compilation cache serves it.)"""
    chex.clear_trace_counter()
    point_fn = chex.assert_max_traces(
        measure.make_point_fn(
            problem["fm"],
            d=D_SUB,
            projection="sparse",
            convention="isotropic",
            sample_fn=problem["sample"],
            r_x=problem["r_x"],
        ),
        n=1,
    )
    unit_fn = seeds.make_unit_fn(point_fn, seed_mode="vmap")
    keys, x, y = problem["keys"], problem["x"], problem["y"]
    for r in (0.5, 2.0, 8.0):
        unit_fn(keys.init_keys(S), keys.proj_keys(D_SUB, S), jnp.float32(r), x, y)
    with pytest.raises(AssertionError, match="traced > 1 times"):
        unit_fn(keys.init_keys(S - 1), keys.proj_keys(D_SUB, S - 1), jnp.float32(1.0), x, y)
