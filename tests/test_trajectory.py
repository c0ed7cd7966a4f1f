"""Tests of gzone.trajectory: streamed PCA against planted planes and numpy's SVD, distances against
numpy/scipy, snapshots recorded inside the training scan against a Python loop, and the loss grid and
lines on a quadratic against their closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.spatial import distance

from gzone import flat, models, seeds, train
from gzone.analysis import trajectory
from gzone.runs import snapshots


def planted(rng, *, T=40, D=300, center_norm=5.0, noise=0.0):
    """A curved path in a 2-D plane through a point c: x_t = c + a_t u1 + b_t u2 (+ isotropic noise)."""
    q, _ = np.linalg.qr(rng.normal(size=(D, 3)))
    c, u1, u2 = center_norm * q[:, 0], q[:, 1], q[:, 2]
    t = np.linspace(0, 1, T)
    a, b = 4 * t - 2, 3 * (t - 0.5) ** 2  # a parabola: non-linear in t, inside the plane
    x = c + a[:, None] * u1 + b[:, None] * u2 + noise * rng.normal(size=(T, D))
    return x, c, np.stack([u1, u2])


# --------------------------------------------------------------------------- PCA


def test_pca_recovers_a_planted_plane():
    rng = np.random.default_rng(0)
    x, c, plane = planted(rng)
    stats = trajectory.gram([x])
    result = trajectory.pca_from_gram(stats, centred=True)
    assert result.ratio[:2].sum() == pytest.approx(1.0, abs=1e-12)
    assert result.ratio[2] < 1e-12
    U = trajectory.directions([x], result, mean=stats.mean, k=2)
    np.testing.assert_allclose(U @ U.T, np.eye(2), atol=1e-10)  # unit, orthogonal axes
    np.testing.assert_allclose(
        np.linalg.svd(U @ plane.T, compute_uv=False), [1.0, 1.0], atol=1e-10
    )  # span the plane
    np.testing.assert_allclose(
        stats.mean + result.scores[:, :2] @ U, x, atol=1e-10
    )  # the path is reconstructed
    # Against numpy's SVD of the centred matrix: eigenvalues and scores (up to each axis' sign).
    _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(result.variance[:2], s[:2] ** 2, rtol=1e-10)
    np.testing.assert_allclose(np.abs(result.scores[:, :2]), np.abs((x - x.mean(0)) @ vt[:2].T), atol=1e-9)
    # Uncentred PCA also needs the direction of c: three components, the first mostly c.
    unc = trajectory.pca_from_gram(stats, centred=False)
    assert unc.ratio[:3].sum() == pytest.approx(1.0, abs=1e-12) and unc.ratio[2] > 1e-4
    u_unc = trajectory.directions([x], unc, k=1)[0]
    assert abs(u_unc @ c) / np.linalg.norm(c) > 0.9
    with pytest.raises(ValueError, match="mean"):
        trajectory.directions([x], result)


def test_pca_with_noise_and_a_random_walk_is_not_two_dimensional():
    """Controls: the planted test can fail. Off-plane noise lowers PC1-2 below 1; a random walk spreads
    out."""
    rng = np.random.default_rng(1)
    x, _, _ = planted(rng, noise=0.01)
    ratio = trajectory.pca(x).ratio
    assert 0.9 < ratio[:2].sum() < 0.999
    walk = np.cumsum(rng.normal(size=(200, 2000)), axis=0)
    ratio = trajectory.pca(walk).ratio
    # A random walk's PCA: lambda_k ~ 1/k^2, PC1 ~ 6/pi^2 = 0.61 of the variance (Antognini &
    # Sohl-Dickstein 2018).
    assert 0.45 < ratio[0] < 0.8 and ratio[:2].sum() < 0.92


def test_random_walk_ratio_matches_simulated_walks_and_the_asymptote():
    rng = np.random.default_rng(5)
    steps = np.array([0, 1, 2, 3, 5, 8, 13, 21, 34, 55])  # uneven spacing
    expected = trajectory.random_walk_ratio(steps, num_components=4)
    walk = np.cumsum(rng.normal(size=(steps[-1] + 1, 50_000)), axis=0)[
        steps
    ]  # D = 50,000: close to the D -> inf limit
    np.testing.assert_allclose(trajectory.pca(walk, num_components=4).ratio, expected, atol=0.01)
    even = trajectory.random_walk_ratio(np.arange(400), num_components=10)
    k = np.arange(1, 11)
    np.testing.assert_allclose(even, 6 / (np.pi**2 * k**2), rtol=0.02, atol=1e-3)
    assert abs(even[:2].sum() - 0.76) < 0.01 and abs(even.sum() - 0.94) < 0.01
    assert not np.allclose(expected, trajectory.random_walk_ratio(np.arange(10), num_components=4), atol=0.01)


def test_streamed_gram_equals_in_memory_and_disk(tmp_path):
    rng = np.random.default_rng(2)
    S, D = 2, 257
    epochs = [rng.normal(size=(S, 3 + e % 2, D)).astype(np.float32) for e in range(5)]  # uneven chunks
    store = snapshots.SnapshotStore(str(tmp_path / "snaps"))
    for e, arr in enumerate(epochs):
        store.write(e, arr)
    assert store.epochs() == list(range(5))
    m = 1
    x = np.concatenate([arr[m] for arr in epochs]).astype(np.float64)
    T = x.shape[0]
    ref = trajectory.gram([x], block_bytes=1 << 30)
    np.testing.assert_allclose(ref.gram, x @ x.T, rtol=1e-12)
    np.testing.assert_allclose(ref.mean, x.mean(0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ref.sq_norms, np.sum(x**2, 1), rtol=1e-12)
    np.testing.assert_allclose(ref.centred, (x - x.mean(0)) @ (x - x.mean(0)).T, atol=1e-10)
    small = 8 * T * 7  # 7 columns per block: 37 blocks, the last one partial
    chunks = store.chunks(m)
    assert all(isinstance(c, np.memmap) for c in chunks)
    streamed = trajectory.gram(chunks, block_bytes=small)
    np.testing.assert_allclose(streamed.gram, ref.gram, rtol=1e-12)
    np.testing.assert_allclose(streamed.mean, ref.mean, rtol=1e-12, atol=1e-15)
    res = trajectory.pca_from_gram(streamed, centred=True, num_components=3)
    assert res.scores.shape == (T, 3) and res.ratio.shape == (3,)
    np.testing.assert_allclose(
        trajectory.directions(chunks, res, mean=streamed.mean, k=3, block_bytes=small),
        trajectory.directions([x], res, mean=ref.mean, k=3),
        atol=1e-12,
    )
    with pytest.raises(ValueError, match="one D"):
        trajectory.gram([x, x[:, :5]])
    with pytest.raises(ValueError, match=r"\[S, n_snap, D\]"):
        store.write(9, x)


def test_pca_of_identical_snapshots_has_zero_ratios_and_path_length():
    x = np.tile(np.arange(5.0), (4, 1))
    res = trajectory.pca(x)
    assert np.all(res.ratio == 0) and np.all(np.isfinite(res.scores))
    assert trajectory.path_length(trajectory.gram([x]).gram) == 0.0
    line = np.outer(np.arange(6.0), [3.0, 4.0])  # steps of length 5 along a straight line
    assert trajectory.path_length(trajectory.gram([line]).gram) == pytest.approx(25.0, rel=1e-12)


def test_path_statistics_of_paths_inside_a_joint_gram_matrix():
    rng = np.random.default_rng(6)
    zigzag = np.array([
        [0.0, 0.0],
        [1.0, 1.0],
        [2.0, 0.0],
        [3.0, 1.0],
    ])  # length 3 sqrt(2), displacement sqrt(10)
    line = np.outer(np.arange(5.0), [3.0, 4.0])
    walk = np.cumsum(rng.normal(size=(7, 2)), axis=0)
    x = np.concatenate([zigzag, line, walk])
    paths = [np.arange(4), np.arange(4, 9), np.arange(9, 16), np.array([0, 2])]  # the last: 2 points < K
    steps = np.concatenate([np.arange(4), 10 * np.arange(5), np.arange(7) ** 2])
    out = trajectory.path_statistics(trajectory.gram([x]).gram, paths, steps, num_components=3)
    np.testing.assert_allclose(out["length"][:2], [3 * np.sqrt(2), 20.0], rtol=1e-12)
    np.testing.assert_allclose(out["straightness"][:2], [np.sqrt(10) / (3 * np.sqrt(2)), 1.0], rtol=1e-12)
    for i, p in enumerate(paths):  # each path's own PCA and random-walk baseline, zero-padded to K = 3
        pad = lambda r: np.pad(r, (0, 3))[:3]  # noqa: E731
        np.testing.assert_allclose(out["ratio"][i], pad(trajectory.pca(x[p]).ratio), atol=1e-12)
        np.testing.assert_allclose(
            out["random_walk"][i], pad(trajectory.random_walk_ratio(steps[p])), atol=1e-12
        )
    assert (
        out["ratio"][1, 0] == pytest.approx(1.0)
        and out["ratio"][3, 2] == 0.0
        and out["random_walk"][3, 2] == 0.0
    )


# --------------------------------------------------------------------------- distances


def test_distances_agree_with_numpy_and_scipy():
    rng = np.random.default_rng(3)
    finals, starts = rng.normal(size=(5, 11)), rng.normal(size=(5, 11))
    pw = trajectory.pairwise_distances(finals)
    np.testing.assert_allclose(pw, distance.squareform(distance.pdist(finals)), rtol=1e-13)
    np.testing.assert_allclose(pw, np.linalg.norm(finals[:, None] - finals[None], axis=-1), rtol=1e-13)
    out = trajectory.distance_summary(finals, starts, inits=starts[0])
    upper = pw[np.triu_indices(5, 1)]
    assert out["pairwise_stats"] == pytest.approx({
        "mean": upper.mean(),
        "std": upper.std(),
        "min": upper.min(),
        "max": upper.max(),
        "n": 10,
    })
    np.testing.assert_allclose(out["origin"], np.linalg.norm(finals, axis=1), rtol=1e-13)
    np.testing.assert_allclose(out["start"], np.linalg.norm(finals - starts, axis=1), rtol=1e-13)
    np.testing.assert_allclose(out["init"], np.linalg.norm(finals - starts[0], axis=1), rtol=1e-13)
    assert out["start_stats"]["std"] == pytest.approx(np.std(out["start"]))
    shared = trajectory.distance_summary(finals, starts[2])  # a shared start, broadcast; init = start
    np.testing.assert_allclose(shared["init"], shared["start"])
    assert shared["start"][2] == pytest.approx(np.linalg.norm(finals[2] - starts[2]))
    one = trajectory.distance_summary(finals[:1], starts[:1])
    assert one["pairwise_stats"]["n"] == 0 and np.isnan(one["pairwise_stats"]["mean"])
    # float32 inputs: differences are taken in float64, so a tiny distance between huge vectors survives.
    big = np.full((2, 3), 1e4, np.float32)
    big[1, 0] += 1.0
    assert trajectory.pairwise_distances(big)[0, 1] == 1.0


# --------------------------------------------------------------------------- snapshots inside the scan


def _problem(dtype):
    rng = np.random.default_rng(0)
    centers = 1.5 * rng.normal(size=(3, 6))
    y = rng.integers(0, 3, 64 + 16)
    x = centers[y] + rng.normal(size=(y.size, 6))
    module = models.build(models.ModelSpec("mlp", (5,), "tanh"), 3)
    fm = flat.flat_model(module, (6,), dtype)
    data = train.Data(
        jnp.asarray(x[:64], dtype), jnp.asarray(y[:64]), jnp.asarray(x[64:], dtype), jnp.asarray(y[64:])
    )
    return fm, data, [jnp.asarray(0.4 * rng.normal(size=fm.D), dtype) for _ in range(2)]


def _python_loop(fm, data, theta0, key, *, lr, batch, epochs):
    """theta after every step [epochs, steps, D] by optax Adam steps in a Python loop (batch order as
    documented)."""
    opt = optax.adam(lr)
    n = data.x_train.shape[0]
    steps = n // batch

    @jax.jit
    def step(th, st, xb, yb):
        def loss(p):
            return jnp.mean(
                optax.softmax_cross_entropy_with_integer_labels(fm.apply_fn(fm.unravel(p), xb), yb)
            )

        g = jax.grad(loss)(th)
        u, st = opt.update(g, st, th)
        return th + u, st

    th, st, out = theta0, opt.init(theta0), []
    for e in range(epochs):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, e), n))[: steps * batch].reshape(
            steps, batch
        )
        for idx in order:
            th, st = step(th, st, data.x_train[idx], data.y_train[idx])
            out.append(np.asarray(th))
    return np.asarray(out).reshape(epochs, steps, -1)


def test_snapshots_recorded_in_the_scan_and_moved_to_disk_equal_a_python_loop(tmp_path, x64):
    fm, data, thetas0 = _problem(jnp.float64)
    lr, batch, epochs, every = 0.05, 8, 4, 3  # 8 steps per epoch: snapshots after steps 3 and 6
    spec = train.spec_for(64, lr=lr, batch_size=batch, record_every=4, snapshot_every=every)
    trainer = train.make_trainer(fm, spec)
    keys = jax.random.split(jax.random.key(5), 2)
    ref = np.stack([
        _python_loop(fm, data, th, k, lr=lr, batch=batch, epochs=epochs) for th, k in zip(thetas0, keys)
    ])
    snap_steps = np.array([3, 6])

    # Two seeds (lax.map over seeds), chunks of 2 epochs: snapshots leave for the disk, one file per epoch.
    run_seeds = jax.jit(
        seeds.map_seeds(lambda st, k, e0, d, n: trainer.run(st, k, d, None, e0, n), "map"), static_argnums=4
    )
    store = snapshots.SnapshotStore(str(tmp_path / "seeds"))
    fn = snapshots.to_store(lambda st, e0, n: run_seeds(st, keys, e0, data, n), store)
    state, hist = train.fit(fn, jax.vmap(trainer.init)(jnp.stack(thetas0)), epochs=epochs, epochs_per_call=2)
    assert "snapshots" not in hist and hist["loss"].shape[:2] == (2, epochs)  # the history holds no snapshots
    assert store.epochs() == list(range(epochs))
    got = np.stack([np.stack(store.chunks(s)) for s in range(2)])  # [S, epochs, n_snap, D]
    np.testing.assert_allclose(got, ref[:, :, snap_steps - 1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(state.params, ref[:, -1, -1], rtol=1e-10, atol=1e-12)
    assert np.ptp(got[0, :, :, 0]) > 1e-3  # the parameters do move

    # One model (no seed axis) continuing after epoch 1 with an epoch offset, as the clones do.
    run1 = jax.jit(
        lambda st, e0, n, offset: trainer.run(st, keys[1], data, None, e0 + offset, n), static_argnums=2
    )
    st1, _ = run1(trainer.init(thetas0[1]), 0, 1, 0)
    store1 = snapshots.SnapshotStore(str(tmp_path / "one"))
    train.fit(
        snapshots.to_store(lambda st, e0, n: run1(st, e0, n, 1), store1, epoch_offset=1),
        st1,
        epochs=epochs - 1,
    )
    assert store1.epochs() == list(range(1, epochs))
    np.testing.assert_allclose(
        np.stack(store1.chunks(0)), ref[1, 1:][:, snap_steps - 1], rtol=1e-10, atol=1e-12
    )


# --------------------------------------------------------------------------- loss on planes and lines


def _quadratic(rng, D=6):
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    A = q @ np.diag(np.linspace(-1.0, 3.0, D)) @ q.T  # indefinite, so lines can have barriers
    return A, rng.normal(size=D)


def quad_metrics(theta, batch):
    A, m = batch
    r = theta - m
    return {"loss": 0.5 * r @ A @ r, "radius": jnp.linalg.norm(theta)}


def test_loss_grid_and_lines_on_a_quadratic_equal_closed_forms(x64):
    rng = np.random.default_rng(4)
    A, m = _quadratic(rng)
    c, u1, u2 = rng.normal(size=(3, 6))
    alphas, betas = np.linspace(-2, 1.5, 5), np.linspace(-1, 3, 4)  # not square: a transposition shows
    fns = trajectory.make_surface_fns(quad_metrics, batch_size=3)  # 3 does not divide 20 points
    batch = (jnp.asarray(A), jnp.asarray(m))
    grid = fns.plane(*map(jnp.asarray, (c, u1, u2, alphas, betas)), batch)
    r = c - m
    a, b = alphas[:, None], betas[None, :]
    closed = (
        0.5 * r @ A @ r
        + a * (u1 @ A @ r)
        + b * (u2 @ A @ r)
        + 0.5 * a**2 * (u1 @ A @ u1)
        + a * b * (u1 @ A @ u2)
        + 0.5 * b**2 * (u2 @ A @ u2)
    )
    assert grid["loss"].shape == (5, 4)
    np.testing.assert_allclose(grid["loss"], closed, rtol=1e-12, atol=1e-12)
    points = c + a[..., None] * u1 + b[..., None] * u2
    np.testing.assert_allclose(grid["radius"], np.linalg.norm(points, axis=-1), rtol=1e-12)

    ts = trajectory.interpolation_ts(-0.5, 1.5, num=6)  # 0 and 1 are added to the 6 even points
    assert ts.size == 8 and 0.0 in ts and 1.0 in ts and np.all(np.diff(ts) > 0)
    ta, tb = rng.normal(size=(2, 6))
    line = fns.line(jnp.asarray(ta), jnp.asarray(tb), jnp.asarray(ts), batch)
    d = tb - ta
    f0, g, q = 0.5 * (ta - m) @ A @ (ta - m), d @ A @ (ta - m), d @ A @ d
    np.testing.assert_allclose(line["loss"], f0 + g * ts + 0.5 * q * ts**2, rtol=1e-12, atol=1e-12)
    # The bump over the chord is -q t (1 - t) / 2: a barrier -q/8 at t = 1/2 when q < 0, none when q > 0.
    fine = trajectory.interpolation_ts(0.0, 1.0, num=11)
    for direction in np.linalg.eigh(A)[1][:, [0, -1]].T:
        tb = ta + 2 * direction
        q = 4 * direction @ A @ direction
        bar = trajectory.barrier(
            fine, fns.line(jnp.asarray(ta), jnp.asarray(tb), jnp.asarray(fine), batch)["loss"]
        )
        if q < 0:
            assert bar["barrier"] == pytest.approx(-q / 8, rel=1e-10) and bar["t_peak"] == pytest.approx(0.5)
        else:
            assert bar["barrier"] == pytest.approx(0.0, abs=1e-12)


def test_barrier_and_axes_helpers():
    ts = np.array([-0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
    losses = np.array([9.0, 1.0, 2.5, 3.0, 2.0, 2.0, 9.0])  # outside [0, 1] ignored
    out = trajectory.barrier(ts, losses)
    assert out["barrier"] == pytest.approx(3.0 - 1.5) and out["t_peak"] == 0.5
    assert out["barrier_over_max"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="contain 0 and 1"):
        trajectory.barrier(np.array([0.0, 0.5]), np.zeros(2))
    with pytest.raises(ValueError, match="must contain"):
        trajectory.interpolation_ts(0.2, 1.0, num=5)
    scores = np.array([[0.0, -1.0], [2.0, 1.0], [1.0, 0.0]])
    a, b = trajectory.grid_axes(scores, num=5, margin=0.5)
    np.testing.assert_allclose([a[0], a[-1], b[0], b[-1]], [-1.0, 3.0, -2.0, 2.0])
    a, _ = trajectory.grid_axes(np.zeros((3, 2)), num=3, margin=0.5)  # a point: a unit box around it
    np.testing.assert_allclose(a, [-1.0, 0.0, 1.0])
