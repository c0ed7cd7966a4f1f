"""Tests for gzone.spectra against exact algebra (eigh, traces of known matrices) in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gzone.curvature import spectra

pytestmark = pytest.mark.usefixtures("x64")  # float64 per test (tests/conftest.py)


def _orthogonal(rng, n):
    return np.linalg.qr(rng.normal(size=(n, n)))[0]


def _with_eigs(rng, eigs):
    q = _orthogonal(rng, len(eigs))
    return q @ np.diag(eigs) @ q.T


def _matrix(name, n=24):
    rng = np.random.default_rng(0)
    if name == "random":
        m = rng.normal(size=(n, n))
        return (m + m.T) / 2
    if name == "identity":
        return 3.0 * np.eye(n)
    if name == "zero":
        return np.zeros((n, n))
    if name == "repeated":  # multiplicities 8, 8, 8
        return _with_eigs(rng, np.repeat([2.0, 0.0, -1.5], n // 3))
    if name == "low_rank":  # B B^T: n - 3 zero eigenvalues
        b = rng.normal(size=(n, 3))
        return b @ b.T
    if name == "near_degenerate":  # clusters of eigenvalues 1e-9 apart
        return _with_eigs(rng, np.repeat([1.0, -2.0], n // 2) + 1e-9 * np.arange(n))
    if name == "diagonal":  # e_i eigenvectors, distinct and repeated values
        return np.diag(np.arange(n) % 5 - 2.0)
    raise ValueError(name)


def _mv(a):
    a = jnp.asarray(a)
    return lambda v: a @ v


# Matrices are jit arguments (not closed-over constants), so each shape compiles once.
@jax.jit
def _lanczos_full(a, key):
    n = a.shape[0]
    return spectra.lanczos(key, _mv(a), dim=n, order=n)


@jax.jit
def _lanczos_from(a, key, start):
    return spectra.lanczos(key, _mv(a), dim=a.shape[0], order=4, start=start)


@pytest.mark.parametrize(
    "name", ["random", "identity", "zero", "repeated", "low_rank", "near_degenerate", "diagonal"]
)
def test_lanczos_full_order_equals_eigh(name):
    a = _matrix(name)
    n = a.shape[0]
    alphas, betas, basis = _lanczos_full(a, jax.random.key(1))
    assert alphas.dtype == jnp.float64 and basis.shape == (n, n) and betas.shape == (n - 1,)
    assert np.all(np.isfinite(alphas)) and np.all(np.isfinite(betas)) and np.all(betas >= 0)
    np.testing.assert_allclose(basis @ basis.T, np.eye(n), atol=1e-12)
    t = spectra.tridiagonal(alphas, betas)
    np.testing.assert_allclose(basis @ a @ basis.T, t, atol=1e-10)
    values, vectors = spectra.ritz(alphas, betas, basis)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(a), atol=1e-10)
    np.testing.assert_allclose(vectors @ a - values[:, None] * vectors, 0.0, atol=1e-9)


def test_lanczos_partial_order_is_a_krylov_projection():
    a = _matrix("random", n=40)
    start = jnp.asarray(np.random.default_rng(3).normal(size=40))
    alphas, betas, basis = _lanczos_from(a, jax.random.key(0), start)
    np.testing.assert_allclose(basis[0], start / np.linalg.norm(start), atol=1e-14)
    np.testing.assert_allclose(basis @ basis.T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(basis @ a @ basis.T, spectra.tridiagonal(alphas, betas), atol=1e-10)
    # The basis spans the Krylov space {v, A v, A^2 v, A^3 v}: each A^j v lies in it.
    krylov = np.stack([np.linalg.matrix_power(a, j) @ np.asarray(start) for j in range(4)])
    krylov /= np.linalg.norm(krylov, axis=1, keepdims=True)
    np.testing.assert_allclose(krylov @ basis.T @ basis, krylov, atol=1e-8)


def test_lanczos_float32_without_x64():
    a = _matrix("random", n=30)
    with jax.enable_x64(False):
        alphas, betas, basis = spectra.lanczos(
            jax.random.key(0), _mv(a.astype(np.float32)), dim=30, order=30
        )
        assert basis.dtype == jnp.float32
        values, _ = spectra.ritz(alphas, betas, basis)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(a), atol=1e-4)


def test_lanczos_rejects_order_above_dim():
    with pytest.raises(ValueError, match="order"):
        spectra.lanczos(jax.random.key(0), _mv(np.eye(3)), dim=3, order=4)


def _outliers():
    rng = np.random.default_rng(1)
    bulk = rng.uniform(-1.0, 1.0, size=195)
    eigs = np.concatenate([bulk, [10.0, 8.0, 6.0, -7.0, -5.0]])
    return _with_eigs(rng, eigs), np.sort(eigs)


def test_extreme_eigs_find_planted_outliers():
    a, eigs = _outliers()

    @jax.jit
    def run(a, key):  # one compile for the three variants
        ks = {"top": 3, "bottom": 2, "both": 2}
        return {
            w: spectra.extreme_eigs(key, _mv(a), dim=200, k=ks[w], order=40, which=w)
            for w in spectra.WHICH
        }

    out = run(a, jax.random.key(2))
    expected = {"top": eigs[::-1][:3], "bottom": eigs[:2], "both": np.r_[eigs[:2], eigs[::-1][:2]]}
    for which, (values, vectors) in out.items():
        np.testing.assert_allclose(values, expected[which], atol=1e-8, err_msg=which)
        assert vectors.shape == (len(values), 200)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-12)
        residual = np.linalg.norm(vectors @ a - values[:, None] * vectors, axis=1)
        assert np.all(residual < 1e-6), (which, residual)


def test_extreme_eigs_validates_arguments():
    with pytest.raises(ValueError, match="which"):
        spectra.extreme_eigs(jax.random.key(0), _mv(np.eye(4)), dim=4, k=1, order=4, which="mid")
    with pytest.raises(ValueError, match="fit"):
        spectra.extreme_eigs(jax.random.key(0), _mv(np.eye(4)), dim=4, k=3, order=4, which="both")


def test_gauss_quadrature_is_exact_to_degree_2m_minus_1():
    a = _matrix("random", n=40)
    v = np.asarray(jax.random.rademacher(jax.random.key(5), (40,), jnp.float64))
    alphas, betas, _ = _lanczos_from(a, jax.random.key(0), v)
    nodes, weights = spectra.gauss_quadrature(alphas, betas)
    np.testing.assert_allclose(np.sum(weights), 1.0, atol=1e-14)
    for k in range(8):  # 2m - 1 = 7
        exact = v @ np.linalg.matrix_power(a, k) @ v / 40
        np.testing.assert_allclose(np.sum(weights * nodes**k), exact, rtol=1e-10, atol=1e-12)
    # Degree 2m = 8 is not integrated exactly (checks the test itself can fail).
    exact8 = v @ np.linalg.matrix_power(a, 8) @ v / 40
    assert abs(np.sum(weights * nodes**8) - exact8) > 1e-3 * abs(exact8)


def test_slq_moments_match_traces():
    a = _matrix("random", n=20) + 0.5 * np.eye(20)
    run = jax.jit(lambda key: spectra.slq(key, _mv(a), dim=20, order=20, num_probes=400))
    nodes, weights = run(jax.random.key(3))
    assert nodes.shape == weights.shape == (400, 20)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    for k in (1, 2, 3):
        per_probe = np.sum(weights * np.asarray(nodes) ** k, axis=1)
        exact = np.trace(np.linalg.matrix_power(a, k)) / 20
        se = per_probe.std(ddof=1) / np.sqrt(400)
        assert abs(per_probe.mean() - exact) < 4 * se, (k, per_probe.mean(), exact, se)


def test_slq_density_integrates_to_one_and_keeps_moments():
    a = _with_eigs(np.random.default_rng(4), np.r_[np.full(10, -2.0), np.linspace(1, 3, 20)])
    grid = jnp.linspace(-6.0, 7.0, 2001)
    run = jax.jit(
        lambda key: spectra.slq_density(
            key, _mv(a), dim=30, order=12, num_probes=8, grid=grid, sigma=0.1
        )
    )
    density, nodes, weights = run(jax.random.key(4))
    assert density.shape == (2001,) and np.all(density >= 0)
    np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, atol=1e-8)
    # Smoothing keeps the mean and adds sigma^2 to the second moment of the quadrature.
    m1 = np.mean(np.sum(weights * nodes, axis=1))
    m2 = np.mean(np.sum(weights * nodes**2, axis=1))
    np.testing.assert_allclose(np.trapezoid(grid * density, grid), m1, atol=1e-8)
    np.testing.assert_allclose(np.trapezoid(grid**2 * density, grid), m2 + 0.01, atol=1e-8)
    # One third of the eigenvalues sit at -2: about a third of the mass is below zero.
    below = np.trapezoid(jnp.where(grid < 0, density, 0.0), grid)
    assert 0.15 < below < 0.5, below


def _runs(fn, num_runs, seed=0):
    keys = jax.random.split(jax.random.key(seed), num_runs)
    return jax.jit(jax.vmap(fn))(keys)


def test_hutchinson_is_unbiased_with_honest_stderr():
    a = _matrix("random", n=50) + 5.0 * np.eye(50)
    est, se = _runs(lambda k: spectra.hutchinson(k, _mv(a), dim=50, num_probes=10), 2000)
    spread = np.std(est, ddof=1)
    assert abs(np.mean(est) - np.trace(a)) < 4 * spread / np.sqrt(2000)
    assert 0.8 < np.mean(se) / spread < 1.25  # stderr is a noisy (biased-low) estimate of spread
    # Rademacher probes: Var(v^T A v) = 2 (||A||_F^2 - sum_i A_ii^2), half of Gaussian's here.
    var = 2 * (np.sum(a**2) - np.sum(np.diag(a) ** 2))
    np.testing.assert_allclose(10 * spread**2, var, rtol=0.15)


def _low_rank_plus_noise(n=60):
    rng = np.random.default_rng(6)
    u = np.linalg.qr(rng.normal(size=(n, 5)))[0]
    noise = rng.normal(size=(n, n)) * 0.05
    return u @ np.diag([50.0, 40.0, 30.0, 20.0, 10.0]) @ u.T + (noise + noise.T) / 2


def test_hutch_pp_is_unbiased_and_beats_hutchinson():
    a = _low_rank_plus_noise()
    pp = _runs(lambda k: spectra.hutch_pp(k, _mv(a), dim=60, num_matvecs=30), 2000)
    hutch, _ = _runs(lambda k: spectra.hutchinson(k, _mv(a), dim=60, num_probes=30), 2000)
    assert abs(np.mean(pp) - np.trace(a)) < 4 * np.std(pp, ddof=1) / np.sqrt(2000)
    assert abs(np.mean(hutch) - np.trace(a)) < 4 * np.std(hutch, ddof=1) / np.sqrt(2000)
    assert np.var(pp) < 0.1 * np.var(hutch), (np.var(pp), np.var(hutch))


def test_hutch_pp_validates_budget():
    with pytest.raises(ValueError, match="multiple of 3"):
        spectra.hutch_pp(jax.random.key(0), _mv(np.eye(4)), dim=4, num_matvecs=4)


@pytest.mark.parametrize("dist", ["rademacher", "gaussian"])
def test_frobenius_estimator_is_unbiased(dist):
    a = _matrix("random", n=40)
    est, se = _runs(
        lambda k: spectra.frobenius_sq(k, _mv(a), dim=40, num_probes=5, dist=dist), 2000
    )
    spread = np.std(est, ddof=1)
    assert abs(np.mean(est) - np.sum(a**2)) < 4 * spread / np.sqrt(2000)
    assert 0.7 < np.mean(se) / spread < 1.3


def test_estimators_validate_arguments():
    with pytest.raises(ValueError, match="probe distribution"):
        spectra.frobenius_sq(jax.random.key(0), _mv(np.eye(3)), dim=3, num_probes=2, dist="x")
    with pytest.raises(ValueError, match="num_probes >= 2"):
        spectra.hutchinson(jax.random.key(0), _mv(np.eye(3)), dim=3, num_probes=1)


def test_trace_over_frob_and_delta_method_stderr():
    # A dominant direction makes t = v^T A v and f = |A v|^2 strongly correlated, so the
    # covariance term of the delta method matters.
    u = np.random.default_rng(7).normal(size=40)
    a = 0.3 * _matrix("random", n=40) + 0.5 * np.outer(u, u)
    out = _runs(lambda k: spectra.trace_over_frob(k, _mv(a), dim=40, num_probes=100), 1000)
    true = np.trace(a) / np.linalg.norm(a)
    spread = np.std(out["ratio"], ddof=1)
    assert abs(np.mean(out["ratio"]) - true) < 4 * spread / np.sqrt(1000) + 0.01 * abs(true)
    assert 0.8 < np.mean(out["ratio_se"]) / spread < 1.25
    np.testing.assert_allclose(out["frob"] ** 2, out["frob_sq"], rtol=1e-12)
    np.testing.assert_allclose(out["ratio"], out["trace"] / out["frob"], rtol=1e-12)
