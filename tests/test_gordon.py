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
    the quadrature seen from b the exact moments b^T H^j b / |b|^2, and cone_terms what the dense M gives
    (H the Hessian; the Gauss-Newton default in the next test)."""
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
    out = jax.jit(lambda k: wells.well_spectrum(k, fm, theta, x, y, starts, top_k=4, order=fm.D, probes=3,
                                                matrix="hessian"))(jax.random.key(4))
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


def test_predictions_read_the_well_as_the_exact_algebra_does():
    """`predictions` on a well whose spectra are exact (H's eigenvalues as one SLQ probe of weight 1/D
    each, H's spectral measure seen from each start): per [target, start, seed], eps = target - L*, the
    cone terms and eq. (4) of the exact spectrum, eq. (3') within the interlacing error of the exact
    cone (3); a target at or below L* gives NaN."""
    k, targets = 5, (0.3, 1.0, 0.05)
    lams = [np.concatenate([np.geomspace(1e-3, 10, D - 10), np.zeros(10)]), np.geomspace(1e-2, 3, D)]
    losses = [0.02, 0.2]
    well = {name: [] for name in ("top", "nodes", "weights", "start_nodes", "start_weights", "start_sq")}
    cases = []
    for g, lam in enumerate(lams):
        H, b0, rng = _quadratic(lam, seed=10 + g)
        bs = [b0, 2.0 * rng.normal(size=D) / np.sqrt(D)]
        eig, V = np.linalg.eigh(H)
        well["top"].append(eig[::-1][:k])
        well["nodes"].append(eig[None])
        well["weights"].append(np.full((1, D), 1.0 / D))
        well["start_nodes"].append(np.stack([eig] * 2))
        well["start_weights"].append(np.stack([(V.T @ b) ** 2 / (b @ b) for b in bs]))
        well["start_sq"].append(np.array([b @ b for b in bs]))
        cases.append((H, eig, bs))
    well = {name: np.stack(v) for name, v in well.items()}
    well["loss"] = np.array(losses)
    out = gordon.predictions(well, targets=targets, dimension=D)
    assert out["cone"].shape == (3, 2, 2) and out["distance"].shape == (2, 2) and out["top"].shape == (2,)
    for g, (H, eig, bs) in enumerate(cases):
        assert out["loss"][g] == losses[g] and out["top"][g] == pytest.approx(eig.max())
        for si, b in enumerate(bs):
            assert out["distance"][si, g] == pytest.approx(np.linalg.norm(b), rel=1e-12)
            assert out["start_curvature"][si, g] == pytest.approx(b @ H @ b / (b @ b), rel=1e-9)
            for ti, target in enumerate(targets):
                eps = target - losses[g]
                if eps <= 0:
                    assert all(np.isnan(out[key][ti, si, g]) for key in ("epsilon", "cone", "larsen"))
                    continue
                A = H / (2 * eps)
                beta = b @ A @ b - 1
                assert out["epsilon"][ti, si, g] == pytest.approx(eps, rel=1e-12)
                assert out["beta"][ti, si, g] == pytest.approx(beta, rel=1e-9)
                terms = np.where(eig > 0, 2 * eps / (np.maximum(eig, 0) * (b @ b) + 2 * eps), 1.0)
                assert out["larsen"][ti, si, g] == pytest.approx(np.clip(D - terms.sum(), 0, D), rel=1e-9)
                if beta <= 0:  # the start is inside the sublevel set
                    assert out["cone"][ti, si, g] == 0.0
                    continue
                mu = np.linalg.eigvalsh(np.outer(A @ b, A @ b) - beta * A)
                assert out["mu0"][ti, si, g] == pytest.approx(mu[-1], rel=1e-8)
                exact = gordon.cone_dimension(H, b, epsilon=eps)
                assert abs(out["cone"][ti, si, g] - exact) < 3, (out["cone"][ti, si, g], exact)
    assert np.isnan(out["cone"][2, :, 1]).all() and np.isfinite(out["cone"][2, :, 0]).all()


def test_the_gauss_newton_well_equals_the_dense_gauss_newton_matrix(x64):
    """The default well (matrix="gauss_newton") at a point of a small MLP: its top eigenvalues and the
    moments seen from b are those of the dense G = J^T H_out J (J the logits' Jacobian, H_out the
    cross-entropy's Hessian in the logits, blockdiag (diag p - p p^T) / N), not of the Hessian."""
    import jax
    import jax.numpy as jnp

    from gzone import flat, models
    from gzone.curvature import wells

    module = models.build(models.ModelSpec("mlp", (6,), "tanh"), 3)
    fm = flat.flat_model(module, (4,), jnp.float64)
    y = jnp.arange(20) % 3

    @jax.jit  # one program for the point and every dense reference (op by op, each would compile alone)
    def setup():
        theta = flat.sample_fn(module, (4,), "xavier", jnp.float64)(jax.random.key(0)) * 1.5
        x = jax.random.normal(jax.random.key(1), (20, 4), jnp.float64)
        starts = (theta + 0.3 * jax.random.normal(jax.random.key(2), (fm.D,), jnp.float64))[None]
        loss = flat.loss_fn(fm, x, y)
        J = jax.jacobian(lambda th: flat.logits(fm, th, x))(theta).reshape(20 * 3, fm.D)
        p = jax.nn.softmax(flat.logits(fm, theta, x))
        line = jnp.stack([loss(theta + s * starts[0] - s * theta) for s in wells.FRACTIONS])
        return theta, x, starts, J, p, jax.hessian(loss)(theta), line

    theta, x, starts, J, p, H, line = setup()
    out = jax.jit(lambda k: wells.well_spectrum(k, fm, theta, x, y, starts, top_k=4, order=fm.D, probes=2))(
        jax.random.key(4))
    J, p, H = np.asarray(J), np.asarray(p), np.asarray(H)
    H_out = np.zeros((60, 60))
    for n in range(20):
        H_out[3 * n:3 * n + 3, 3 * n:3 * n + 3] = (np.diag(p[n]) - np.outer(p[n], p[n])) / 20
    G = J.T @ H_out @ J
    eig = np.linalg.eigvalsh(G)
    np.testing.assert_allclose(out["top"], eig[::-1][:4], rtol=1e-8)
    assert np.abs(np.linalg.eigvalsh(H)[::-1][:4] - eig[::-1][:4]).max() > 1e-3  # G is not H here
    b = np.asarray(starts[0] - theta)
    nodes, weights = np.asarray(out["start_nodes"][0]), np.asarray(out["start_weights"][0])
    for j in (1, 2, 3):
        assert np.sum(weights * nodes**j) == pytest.approx(b @ np.linalg.matrix_power(G, j) @ b / (b @ b),
                                                           rel=1e-6)
    np.testing.assert_allclose(out["line_loss"][0], np.asarray(line), rtol=1e-10)
