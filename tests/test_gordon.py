"""gzone.analysis.gordon where the answer is known exactly: true quadratics in 120 dimensions, random
subspaces through a point outside the well, exact hit tests, and the threshold dimension they give
against the tangent-cone formula, its matrix-free form and Larsen's approximation."""

from __future__ import annotations

import numpy as np
import pytest

from gzone.analysis import gordon

D = 120


def _quadratic(lam, seed):
    rng = np.random.default_rng(seed)
    V = np.linalg.qr(rng.normal(size=(D, D)))[0]
    H = (V * lam) @ V.T
    u = rng.normal(size=D)
    return H, 3.0 * u / np.linalg.norm(u), rng


def _hit_rate(H, b, epsilon, d, rng, trials=60):
    """The fraction of random d-dimensional subspaces through theta_0 = b that reach the sublevel set of
    the well at theta* = 0 (exact hit tests, the subspaces drawn Haar-random)."""
    if d == 0:
        return float(0.5 * b @ H @ b <= epsilon)
    frames = np.linalg.qr(rng.normal(size=(trials, D, d)))[0]
    return float(np.mean([gordon.subspace_hits(H, np.zeros(D), b, P, epsilon=epsilon)[0] for P in frames]))


SPECTRA = {
    "log-spaced": np.geomspace(1e-3, 10, D),
    "outliers and a bulk": np.concatenate([np.full(12, 10.0), np.geomspace(1e-3, 0.1, D - 12)]),
    "with flat directions": np.concatenate([np.geomspace(0.01, 5, D - 20), np.zeros(20)]),
}


@pytest.mark.parametrize("name", sorted(SPECTRA))
@pytest.mark.parametrize("epsilon", [0.05, 1.0])
def test_the_tangent_cone_predicts_the_monte_carlo_threshold(name, epsilon):
    """The exact cone (3) and its matrix-free form (3') sit inside the measured phase transition (the
    hit rate of random subspaces rises through 1/2 within +-8 dimensions of them; the transition is
    O(sqrt(D)) ~ 11 wide); Larsen's (4) overshoots it when the well is wide."""
    lam = SPECTRA[name]
    H, b, rng = _quadratic(lam, seed=len(name))
    exact_cone = gordon.cone_dimension(H, b, epsilon=epsilon)
    eigvals, V = np.linalg.eigh(H)
    weights = (V.T @ b) ** 2 / (b @ b)  # H's spectral measure seen from b
    beta, mu0 = gordon.cone_terms(eigvals, weights, b_norm_sq=float(b @ b), epsilon=epsilon)
    A = H / (2 * epsilon)
    assert beta == pytest.approx(b @ A @ b - 1, rel=1e-10)
    assert mu0 == pytest.approx(np.linalg.eigvalsh(np.outer(A @ b, A @ b) - beta * A)[-1], rel=1e-8)
    matrix_free = gordon.cone_prediction(lam, dimension=D, epsilon=epsilon, beta=beta, mu0=mu0)
    assert abs(matrix_free - exact_cone) < 3, (matrix_free, exact_cone)
    below, above = (_hit_rate(H, b, epsilon, int(round(exact_cone)) + k, rng) for k in (-8, 8))
    assert below < 0.5 < above, (exact_cone, below, above)
    larsen = gordon.larsen_prediction(lam, dimension=D, epsilon=epsilon, distance=float(np.linalg.norm(b)))
    assert larsen >= exact_cone - 2
    if epsilon == 1.0 and name == "log-spaced":  # a wide well: (4) lands far past the transition
        assert larsen - exact_cone > 10 and _hit_rate(H, b, epsilon, int(larsen) - 4, rng) > 0.9, larsen


def test_limits_and_bad_input():
    lam = np.geomspace(1e-2, 1, 50)
    # A far, narrow well: every direction is stiff and nearly every dimension is needed; the cone's count
    # is Larsen's less the cone's own axis.
    b = np.full(50, 100.0)
    beta, mu0 = gordon.cone_terms(lam, b**2 / (b @ b), b_norm_sq=float(b @ b), epsilon=1e-6)
    far = gordon.cone_prediction(lam, dimension=50, epsilon=1e-6, beta=beta, mu0=mu0)
    larsen = gordon.larsen_prediction(lam, dimension=50, epsilon=1e-6, distance=np.sqrt(50) * 100)
    assert far == pytest.approx(larsen - 1, abs=0.01) and far > 48.9
    # A flat Hessian: every direction is free.
    assert gordon.larsen_prediction(np.zeros(10), dimension=10, epsilon=1.0, distance=1.0) == 0.0
    # theta_0 inside the sublevel set: d* = 0.
    assert gordon.cone_dimension(np.eye(5), np.full(5, 0.1), epsilon=1.0) == 0.0
    values, mult = gordon.combine_spectrum(
        [5.0, 3.0], np.array([[0.1, 1.0, 4.0]]), np.array([[0.5, 0.4, 0.1]]), dimension=100
    )
    np.testing.assert_allclose(values, [5.0, 3.0, 0.1, 1.0])
    np.testing.assert_allclose(mult, [1, 1, 98 * 0.5 / 0.9, 98 * 0.4 / 0.9])
    with pytest.raises(ValueError):
        gordon.larsen_prediction(lam, dimension=50, epsilon=0.0, distance=1.0)
    with pytest.raises(ValueError):
        gordon.cone_prediction(lam, dimension=50, epsilon=1.0, beta=-1.0, mu0=1.0)


def test_the_well_spectrum_equals_a_dense_hessian(x64):
    """curvature.wells at a point of a small MLP: Lanczos at order D gives the top eigenvalues exactly,
    the quadrature seen from b the exact moments b^T H^j b / |b|^2, and cone_terms what the dense M gives."""
    import jax
    import jax.numpy as jnp

    from gzone import flat, models
    from gzone.curvature import wells

    module = models.build(models.ModelSpec("mlp", (6,), "tanh"), 3)
    fm = flat.flat_model(module, (4,), jnp.float64)
    y = jnp.asarray(np.arange(20) % 3)

    @jax.jit  # a program each (op by op, every operation would compile on its own)
    def setup():
        theta = flat.sample_fn(module, (4,), "xavier", jnp.float64)(jax.random.key(0)) * 1.5
        x = jax.random.normal(jax.random.key(1), (20, 4), jnp.float64)
        starts = jnp.stack([theta + 0.3 * jax.random.normal(jax.random.key(k), (fm.D,), jnp.float64)
                            for k in (2, 3)])
        return theta, x, starts

    theta, x, starts = setup()
    out = jax.jit(lambda k: wells.well_spectrum(k, fm, theta, x, y, starts, top_k=4, order=fm.D, probes=3))(
        jax.random.key(4))
    H = jax.jit(jax.hessian(flat.loss_fn(fm, x, y)))(theta)
    out, H, theta, starts = jax.tree_util.tree_map(np.asarray, (out, H, theta, starts))
    eig = np.linalg.eigvalsh(H)
    np.testing.assert_allclose(out["top"], eig[::-1][:4], rtol=1e-8)
    for k in range(2):
        b = starts[k] - theta
        assert out["start_sq"][k] == pytest.approx(b @ b, rel=1e-12)
        nodes, weights = out["start_nodes"][k], out["start_weights"][k]
        for j in (1, 2, 3):
            assert np.sum(weights * nodes**j) == pytest.approx(b @ np.linalg.matrix_power(H, j) @ b / (b @ b),
                                                               rel=1e-6)
        # cone_terms treats negative curvature as flat (0); at order D the quadrature is exact, so its
        # terms equal those of the clipped Hessian Hp. eps is chosen so that beta = 3.
        V = np.linalg.eigh(H)[1]
        Hp = (V * np.maximum(eig, 0)) @ V.T
        epsilon = float(b @ Hp @ b) / 8
        beta, mu0 = gordon.cone_terms(nodes, weights, b_norm_sq=float(b @ b), epsilon=epsilon)
        A = Hp / (2 * epsilon)
        assert beta == pytest.approx(b @ A @ b - 1, rel=1e-6)
        assert mu0 == pytest.approx(np.linalg.eigvalsh(np.outer(A @ b, A @ b) - beta * A)[-1], rel=1e-5)
