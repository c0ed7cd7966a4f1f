"""gzone.dimension: binomial intervals, the adaptive threshold search, crossings and d_int, lottery
subspaces, the measured threshold of a problem with a known geometry, and train.make_step_runner
(the burn-in's step-count runs).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gzone import flat, models, projections, train
from gzone.analysis import dimension, subspaces

# --------------------------------------------------------------------------- binomial intervals


@pytest.mark.parametrize("method, scipy_method", [("wilson", "wilson"), ("clopper_pearson", "exact")])
@pytest.mark.parametrize("confidence", [0.95, 0.8])
def test_binomial_intervals_match_scipy_binomtest(method, scipy_method, confidence):
    """Every k in 0..n for several n against scipy.stats.binomtest(...).proportion_ci (its own
    implementation: root finding on the binomial cdf for 'exact', its Wilson formula)."""
    for n in (1, 2, 5, 8, 20, 37):
        k = np.arange(n + 1)
        low, high = dimension.binomial_interval(k, n, method=method, confidence=confidence)
        for ki in k:
            ref = stats.binomtest(int(ki), n).proportion_ci(confidence_level=confidence, method=scipy_method)
            np.testing.assert_allclose(
                [low[ki], high[ki]], [ref.low, ref.high], rtol=1e-7, atol=1e-10, err_msg=f"k={ki} n={n}"
            )


def test_wilson_against_the_closed_form_and_edges():
    """Wilson written out independently (Agresti & Coull's form); n = 0 gives NaN; broadcasting."""
    z = stats.norm.ppf(0.975)
    k, n = np.array([0, 3, 7, 10]), 10
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    low, high = dimension.binomial_interval(k, n)
    np.testing.assert_allclose(low, np.maximum(centre - half, 0), atol=1e-12)
    np.testing.assert_allclose(high, np.minimum(centre + half, 1), atol=1e-12)
    assert low[0] == 0.0 and high[-1] == 1.0 and high[0] > 0.2  # 0/10 is not "certainly 0"
    for n in range(1, 60):  # exact ends: p = k/n always lies inside [low, high]
        k = np.arange(n + 1)
        low, high = dimension.binomial_interval(k, n)
        assert np.all(low <= k / n) and np.all(k / n <= high) and high[-1] == 1.0 and low[0] == 0.0
    low, high = dimension.binomial_interval([[0], [0]], [0, 4])
    assert low.shape == (2, 2) and np.isnan(low[0, 0]) and np.isnan(high[1, 0]) and high[0, 1] < 1
    with pytest.raises(ValueError):
        dimension.binomial_interval(5, 4)


def test_success_curve_counts_accuracy_and_loss_targets():
    acc = np.array([[0.5, 0.9, 0.95, np.nan], [0.91, 0.92, 0.93, 0.99]])
    curve = dimension.success_curve(acc, 0.9, "test_accuracy")
    np.testing.assert_array_equal(curve["successes"], [2, 4])
    np.testing.assert_array_equal(curve["p"], [0.5, 1.0])
    loss = np.array([0.1, 0.3, np.nan])
    assert dimension.success_curve(loss, 0.2, "train_loss")["successes"] == 1
    assert np.all(curve["low"] <= curve["p"]) and np.all(curve["p"] <= curve["high"])


# --------------------------------------------------------------------------- adaptive search


def test_log_grid():
    g = dimension.log_grid(10, 10_000, 8)
    assert g[0] == 10 and g[-1] == 10_000 and np.all(np.diff(g) > 0)
    ratios = g[1:] / g[:-1]
    np.testing.assert_allclose(ratios, 10 ** (1 / 8), rtol=0.06)
    assert list(dimension.log_grid(1, 5, 100)) == [1, 2, 3, 4, 5]
    assert list(dimension.log_grid(7, 7, 4)) == [7]


@pytest.mark.parametrize("grid_kind", ["integers", "log"])
def test_search_finds_a_planted_threshold_in_log_evaluations(grid_kind):
    grid = np.arange(1, 10_001) if grid_kind == "integers" else dimension.log_grid(1, 10**6, 64)
    m = len(grid)
    budget = 2 * math.ceil(math.log2(m)) + 2
    rng = np.random.default_rng(0)
    planted = list(rng.choice(grid, 30)) + [grid[0], grid[1], grid[-1], grid[-2]]
    for true in planted:
        for start in (None, int(grid[m // 3]), int(grid[-1])):
            calls = []

            def success(d, true=true, calls=calls):
                calls.append(d)
                return (10, 10) if d >= true else (3, 10)

            result = dimension.threshold_search(success, grid, delta=0.5, start=start)
            assert result.threshold == true, (true, start)
            i = int(np.searchsorted(grid, true))
            assert result.below == (grid[i - 1] if i > 0 else None)
            assert len(calls) == len(set(calls)) == len(result.evaluated) <= budget, (len(calls), budget)
            assert tuple(calls) == result.evaluated
            assert result.counts == tuple((10, 10) if d >= true else (3, 10) for d in calls)
    # above the grid: no threshold, the largest value is the failing bracket end
    result = dimension.threshold_search(lambda d: (0, 4), grid)
    assert result.threshold is None and result.below == grid[-1] and len(result.evaluated) <= budget


def test_search_on_a_smooth_success_probability_matches_brute_force_and_replays():
    """P_s(d) logistic in log d with exact expected counts of n = 40 trials; delta = 1/2 and 0.1."""
    grid = dimension.log_grid(2, 5000, 16)
    n = 40
    counts = {int(d): int(round(n / (1 + math.exp(-4 * (math.log(d) - math.log(300)))))) for d in grid}
    for delta in (0.5, 0.1):
        brute = next(int(d) for d in grid if counts[int(d)] >= (1 - delta) * n)
        result = dimension.threshold_search(lambda d: (counts[d], n), grid, delta=delta)
        assert result.threshold == brute
        # A resumed run answers from its cache: the same questions in the same order.
        cache = dict(zip(result.evaluated, result.counts))
        replay = dimension.threshold_search(lambda d: cache[d], grid, delta=delta)
        assert replay == result
    assert (
        dimension.threshold_search(lambda d: (counts[d], n), grid, delta=0.5).threshold < brute
    )  # delta matters


def test_search_grid_validates():
    with pytest.raises(ValueError):
        dimension.search_grid(lambda d: True, [3, 2])
    with pytest.raises(ValueError):
        dimension.threshold_search(lambda d: (1, 1), [1, 2], delta=1.0)


def test_crossing_uses_all_evaluated_points_conservatively():
    assert dimension.crossing([10, 20, 40, 80], [False, False, True, True]) == (40.0, 20.0)
    t, b = dimension.crossing([80, 10, 40, 20], [True, True, False, True])  # unsorted; a fluke at 10
    assert (t, b) == (80.0, 40.0)
    t, b = dimension.crossing([10, 20], [False, False])
    assert math.isnan(t) and b == 20.0
    t, b = dimension.crossing([10, 20], [True, True])
    assert t == 10.0 and math.isnan(b)


def test_intrinsic_dimension_and_bootstrap():
    dims = np.array([10, 30, 100, 300, 1000])
    base = np.array([0.98, 0.97, 0.99, 0.98])  # mean 0.98, goal 0.882
    mean_acc = np.array([0.3, 0.7, 0.86, 0.9, 0.95])
    flat_acc = np.repeat(mean_acc[:, None], 4, axis=1)
    assert dimension.intrinsic_dimension(dims, flat_acc, base) == 300
    assert dimension.intrinsic_dimension(dims, flat_acc, base, fraction=0.8) == 100
    assert math.isnan(dimension.intrinsic_dimension(dims, flat_acc, base, fraction=0.99))
    # log-linear between d = 100 (0.86) and 300 (0.9): goal 0.882 is 55 % of the way
    np.testing.assert_allclose(
        dimension.intrinsic_dimension(dims, flat_acc, base, interpolate=True), 100 * 3**0.55
    )
    assert (
        dimension.intrinsic_dimension(dims, flat_acc, base, fraction=0.2, interpolate=True) == 10
    )  # nothing below
    key = jax.random.key(0)
    same = dimension.bootstrap_intrinsic_dimension(key, dims, flat_acc, np.full(4, 0.98), num_resamples=200)
    assert same == (300.0, 300.0, 300.0, 1.0)  # no spread over seeds: no spread in d_int
    # Seeds disagree at d = 100 (mean 0.865 just under the goal): resamples land on 100 or 300.
    noisy = flat_acc.copy()
    noisy[2] = [0.80, 0.83, 0.92, 0.91]
    out = dimension.bootstrap_intrinsic_dimension(key, dims, noisy, base, num_resamples=400)
    assert out.estimate == 300 and out.low == 100 and out.high == 300 and out.found == 1.0
    fine = dimension.bootstrap_intrinsic_dimension(
        key, dims, noisy, base, interpolate=True, num_resamples=400
    )
    # continuous, spanning the two brackets that resamples pick: (30, 100] and (100, 300]
    assert 30 < fine.low < 100 < fine.estimate < fine.high < 300
    # Paired: one seed resample for subspace runs and baseline (seed s shares its init). Here every
    # seed reaches 90 % of its own baseline at d = 100 while seeds differ a lot: only a paired
    # resample keeps d_int = 100 every time.
    base_s = np.array([0.6, 0.7, 0.9, 1.0])
    paired = np.stack([0.5 * base_s, 0.8 * base_s, 0.905 * base_s, 0.95 * base_s, 0.99 * base_s])
    out = dimension.bootstrap_intrinsic_dimension(key, dims, paired, base_s, num_resamples=400)
    assert out == (100.0, 100.0, 100.0, 1.0)
    unreachable = dimension.bootstrap_intrinsic_dimension(key, dims, flat_acc * 0.5, base, num_resamples=50)
    assert math.isnan(unreachable.estimate) and unreachable.high == math.inf and unreachable.found == 0.0


# --------------------------------------------------------------------------- lottery subspaces


def principal_cosines(a, b):
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    return np.linalg.svd(qa.T @ qb, compute_uv=False)


def test_lottery_subspace_of_a_planar_trajectory_is_that_plane():
    rng = np.random.default_rng(1)
    D, T = 700, 40
    plane, _ = np.linalg.qr(rng.normal(size=(D, 2)))
    t = np.linspace(0, 1, T)[:, None]
    coords = np.hstack([3 * np.sqrt(t), np.sin(5 * t)])  # a curved path inside the plane
    theta0 = rng.normal(size=D)
    snapshots = (theta0 + coords @ plane.T).astype(np.float32)
    basis = subspaces.lottery_basis(snapshots - theta0.astype(np.float32), block=256)  # 3 column blocks
    assert basis.directions.shape == (D, 2)  # rank found: the plane is all there is
    np.testing.assert_allclose(basis.directions.T @ basis.directions, np.eye(2), atol=1e-6)
    np.testing.assert_allclose(principal_cosines(basis.directions, plane), 1.0, atol=1e-5)
    # The first direction is the larger-variance one; singular values match numpy's SVD.
    svd = np.linalg.svd((coords @ plane.T).astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(basis.singular_values, svd[:2], rtol=1e-5)
    # The projection pytree trains like any other: a Dense with the top d columns.
    space = subspaces.lottery_space(jnp.asarray(theta0, jnp.float32), jnp.asarray(basis.directions), 1)
    assert isinstance(space.P, projections.Dense) and space.P.shape == (D, 1)
    with pytest.raises(ValueError):
        subspaces.lottery_space(space.anchor, jnp.asarray(basis.directions), 3)


def test_lottery_basis_equals_svd_and_centred_option():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(12, 300)) * np.geomspace(10, 0.5, 12)[:, None]
    basis = subspaces.lottery_basis(X, rank=5)
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    np.testing.assert_allclose(basis.singular_values, s[:5], rtol=1e-10)
    np.testing.assert_allclose(np.abs(np.sum(basis.directions * vt[:5].T, axis=0)), 1.0, atol=1e-8)
    # A jump m, then motion along u: uncentred SVD's top axis is mostly m, centred PCA's is u.
    u, m = np.eye(300)[0], 20 * np.eye(300)[1]
    traj = np.array([m + a * u for a in np.linspace(-1, 1, 30)])
    top_unc = subspaces.lottery_basis(traj, rank=1).directions[:, 0]
    top_cen = subspaces.lottery_basis(traj, rank=1, centred=True).directions[:, 0]
    assert abs(top_unc @ m) / 20 > 0.99 and abs(top_cen @ u) > 0.999


def test_lottery_basis_is_orthonormal_for_an_ill_conditioned_trajectory():
    """Singular values over 5 decades: the Gram route alone leaves ~1e-7 of non-orthogonality in
    float64; the re-orthonormalisation brings it to rounding, keeping the columns' order."""
    rng = np.random.default_rng(4)
    u, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    v, _ = np.linalg.qr(rng.normal(size=(400, 20)))
    X = (u * np.geomspace(1, 1e-5, 20)) @ v.T
    basis = subspaces.lottery_basis(X)
    assert basis.directions.shape == (400, 20)
    np.testing.assert_allclose(basis.directions.T @ basis.directions, np.eye(20), atol=1e-12)
    np.testing.assert_allclose(np.abs(np.sum(basis.directions[:, :5] * v[:, :5], axis=0)), 1.0, atol=1e-9)


# --------------------------------------------------------------------------- known geometry


def test_measured_threshold_matches_the_geometry_of_a_k_direction_loss(x64):
    """L(theta) = |U^T theta - c|^2 / 2 depends on k known directions only (U [D, k] orthonormal).

    From a start a, a random d-plane a + P z (d < k) reaches min L = |(I - Pi)(c - U^T a)|^2 / 2,
    Pi the projection on the column space of U^T P: a uniformly random d-dim subspace of R^k for
    Haar-random P. So |(I - Pi) v|^2 / |v|^2 ~ Beta((k - d)/2, d/2), and the target L <= q L(a)
    succeeds with P_s(d) = BetaCDF(q; (k - d)/2, d/2) (1 for d >= k). The search, training n = 48
    random dense subspaces per d, must land on the predicted threshold within a grid step or two.
    """
    D, k, n, q = 96, 24, 48, 0.3
    rng = np.random.default_rng(3)
    U, _ = np.linalg.qr(rng.normal(size=(D, k)))
    anchor = rng.normal(size=D)
    c = U.T @ anchor + rng.normal(size=k)
    U, c, anchor = jnp.asarray(U), jnp.asarray(c), jnp.asarray(anchor)
    loss_fn = lambda th: 0.5 * jnp.sum((U.T @ th - c) ** 2)  # noqa: E731
    target = q * float(loss_fn(anchor))
    fit = jax.jit(jax.vmap(subspaces.make_subspace_minimizer(loss_fn, optimizer="sgd", lr=0.8, steps=1500)))
    # One compile for every d: the first d columns of a Haar-random frame of d_max columns are a
    # Haar-random d-frame, so a column mask (projections.Scaled) gives the d-dimensional subspace.
    d_max = k + 8
    frames = jax.vmap(lambda key: subspaces.random_space(key, anchor, kind="dense", d=d_max))(
        jax.random.split(jax.random.key(4), n)
    )

    @functools.lru_cache(maxsize=None)
    def success(d):
        mask = jnp.broadcast_to((jnp.arange(d_max) < min(d, d_max)).astype(jnp.float64), (n, d_max))
        P = projections.Scaled(frames.P, jnp.ones((n, D), jnp.float64), mask)
        final, _ = fit(train.Space(frames.anchor, P))
        return int(dimension.reached(np.asarray(final), target * (1 + 1e-9), "train_loss").sum()), n

    predicted_p = {d: (stats.beta.cdf(q, (k - d) / 2, d / 2) if d < k else 1.0) for d in range(1, D + 1)}
    predicted = next(d for d in range(1, D + 1) if predicted_p[d] >= 0.5)
    assert 12 <= predicted <= 20  # the geometry puts it well inside (1, k): a real test of the search
    grid = np.arange(1, D + 1)
    result = dimension.threshold_search(success, grid, delta=0.5)
    assert abs(result.threshold - predicted) <= 2, (
        result.threshold,
        predicted,
        result.evaluated,
        result.counts,
    )
    assert len(result.evaluated) <= 2 * math.ceil(math.log2(D)) + 2
    # Each evaluated P_s agrees with the prediction within a 99.9 % Clopper-Pearson interval.
    for d, (s, m) in zip(result.evaluated, result.counts):
        low, high = dimension.binomial_interval(s, m, method="clopper_pearson", confidence=0.999)
        assert low <= predicted_p[d] <= high, (d, s, m, predicted_p[d])
    assert success(k)[0] == n and success(4)[0] == 0  # d >= k always reaches it; far below never


# --------------------------------------------------------------------------- burn-in: runs of t steps


def tiny_problem(dtype):
    rng = np.random.default_rng(5)
    centers = 1.5 * rng.normal(size=(3, 6))
    y = rng.integers(0, 3, 60)
    x = centers[y] + rng.normal(size=(60, 6))
    module = models.build(models.ModelSpec("mlp", (5,), "tanh"), 3)
    fm = flat.flat_model(module, (6,), dtype)
    data = train.Data(
        jnp.asarray(x[:40], dtype), jnp.asarray(y[:40]), jnp.asarray(x[40:], dtype), jnp.asarray(y[40:])
    )
    return fm, data, jnp.asarray(0.4 * rng.normal(size=fm.D), dtype)


@pytest.mark.parametrize("mode", ["full", pytest.param("hyperplane", marks=pytest.mark.slow)])
def test_step_runner_splits_anywhere_and_equals_the_epoch_trainer(x64, mode):
    """run_steps over 4 x 4 = 16 steps (2 epochs of 8, split mid-epoch) reaches the state of
    trainer.run over 2 epochs; per-step losses average to the epoch trainer's record blocks."""
    fm, data, theta0 = tiny_problem(jnp.float64)
    spec = train.spec_for(40, batch_size=5, lr=0.05, record_every=8, mode=mode)
    assert spec.steps_per_epoch == 8
    trainer = train.make_trainer(fm, spec)
    space = None
    params0 = theta0
    if mode == "hyperplane":
        space = subspaces.random_space(jax.random.key(1), theta0, kind="dense", d=4)
        params0 = jnp.zeros(4, jnp.float64)
    key = jax.random.key(7)
    state_ref, hist = jax.jit(trainer.run, static_argnums=5)(
        trainer.init(params0, space), key, data, space, 0, 2
    )
    run_steps = jax.jit(train.make_step_runner(fm, spec), static_argnums=4)
    state, losses, steps = trainer.init(params0, space), [], []
    for n in (4, 4, 4, 4):  # one compile; splits mid-epoch and at the epoch's end
        state, per_step = run_steps(state, key, data, space, n)
        losses.append(per_step["loss"])
        steps.append(per_step["step"])
    np.testing.assert_allclose(state.params, state_ref.params, rtol=1e-12, atol=1e-14)
    assert int(state.step) == 16
    np.testing.assert_array_equal(np.concatenate(steps), np.arange(1, 17))
    np.testing.assert_allclose(np.concatenate(losses).reshape(2, 8).mean(-1), hist["loss"][:, 0], rtol=1e-12)
    assert float(jnp.max(jnp.abs(state.params - params0))) > 1e-3  # it trained
    # A different key is a different batch order (the key is used).
    first, _ = run_steps(trainer.init(params0, space), key, data, space, 4)
    other, _ = run_steps(trainer.init(params0, space), jax.random.key(8), data, space, 4)
    assert float(jnp.max(jnp.abs(other.params - first.params))) > 1e-6


# --------------------------------------------------------------------------- large d


LARGE_D, LARGE_d = 656_810, 10_000  # the CIFAR-10 MLP 3072-200-200-10 with d = 10^4


def check_large(kind, limit):
    """O(d sqrt(D)) / O(D) bytes, not the 26 GB of a dense P; P and P^T are adjoint."""
    P = jax.jit(projections.make, static_argnums=0, static_argnames=("D", "d"))(
        kind, jax.random.key(2), D=LARGE_D, d=LARGE_d
    )
    assert projections.nbytes(P) < limit, (kind, projections.nbytes(P))
    z = jax.random.normal(jax.random.key(0), (LARGE_d,))
    v = jax.random.normal(jax.random.key(1), (LARGE_D,))
    pz, ptv = jax.jit(projections.apply)(P, z), jax.jit(projections.apply_T)(P, v)
    assert pz.shape == (LARGE_D,) and ptv.shape == (LARGE_d,)
    np.testing.assert_allclose(float(jnp.vdot(pz, v)), float(jnp.vdot(z, ptv)), rtol=1e-3)
    return P


# Sparse P holds its nonzeros twice (column-major for P^T v, row-major for P z): 84 + 91 MB here.
LIMITS = {"sparse": 200e6, "sparse_fixed": 200e6, "fastfood": 30e6}


@pytest.mark.parametrize("kind", list(LIMITS))
def test_cheap_projections_at_D_656810_d_10000_need_little_memory(kind):
    """Bytes of every array of P from its shapes alone (jax.eval_shape: nothing is allocated)."""
    shapes = jax.eval_shape(lambda key: projections.make(kind, key, D=LARGE_D, d=LARGE_d), jax.random.key(0))
    size = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(shapes))
    assert 1e6 < size < LIMITS[kind], (kind, size)  # a dense P would be 2.6e10 bytes
    dense = jax.eval_shape(
        lambda key: projections.make("dense", key, D=LARGE_D, d=LARGE_d), jax.random.key(0)
    )
    assert dense.matrix.size * 4 > 2e10  # (the check above can tell the difference)


@pytest.mark.slow
def test_sparse_at_D_656810_d_10000_is_built_and_adjoint():
    check_large("sparse", LIMITS["sparse"])


@pytest.mark.slow
def test_fastfood_at_D_656810_d_10000_trains_the_cifar_mlp():
    P = check_large("fastfood", LIMITS["fastfood"])
    module = models.build(models.ModelSpec("mlp", (200, 200), "relu"), 10)
    fm = flat.flat_model(module, (32, 32, 3))
    assert fm.D == LARGE_D
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 64))
    data = train.Data(x, y, x[:16], y[:16])
    theta0 = flat.sample_fn(module, (32, 32, 3))(jax.random.key(3))
    spec = train.spec_for(64, batch_size=64, lr=0.1, mode="hyperplane")
    trainer = train.make_trainer(fm, spec)
    space = train.Space(theta0, P)
    state, per_step = jax.jit(train.make_step_runner(fm, spec), static_argnums=4)(
        trainer.init(jnp.zeros(LARGE_d), space), jax.random.key(4), data, space, 20
    )
    assert float(per_step["loss"][-1]) < 0.5 * float(per_step["loss"][0])  # it fits the random labels
