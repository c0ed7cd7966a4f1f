"""gzone.fullspace and the scan's new options against dense float64 references on a tiny net."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gzone import curvature, flat, layer_metric, measure, models, projections, seeds, subspace
from gzone.curvature import fullspace, gauss_newton, spectra

N, C, IN, WIDTH, d = 24, 4, 6, 7, 5

pytestmark = pytest.mark.usefixtures("x64")  # float64 per test (tests/conftest.py)


@functools.lru_cache
def _problem():
    """ReLU MLP 6-7-4 (D = 81) at a Xavier point scaled to 3 r_X (large curvature, R != 0)."""
    module = models.build(models.ModelSpec("mlp", (WIDTH,), "relu"), C)
    k_init, k_x, k_y = jax.random.split(jax.random.key(0), 3)
    theta, fm = flat.flatten(module, models.init_params(k_init, module, (IN,), "xavier", jnp.float64))
    x = jax.random.normal(k_x, (N, IN), jnp.float64)
    y = jax.random.randint(k_y, (N,), 0, C)
    return module, fm, 3.0 * theta, x, y


@functools.lru_cache
def _dense():
    """Dense H and G = J^T H_CE J (jacfwd of the logits, jax.hessian of the CE), as numpy."""
    _, fm, theta, x, y = _problem()

    @jax.jit
    def run(theta):
        z = flat.logits(fm, theta, x)
        jac = jax.jacfwd(lambda th: flat.logits(fm, th, x))(theta)
        h_ce = jax.hessian(lambda zz: jnp.mean(flat.cross_entropy(zz, y)))(z)
        return jnp.einsum("ncd,ncme,mef->df", jac, h_ce, jac), jax.hessian(flat.loss_fn(fm, x, y))(theta)

    g, h = map(np.asarray, run(theta))
    assert np.linalg.norm(h - g) > 0.05 * np.linalg.norm(h)  # the residual is a real part of H
    return h, g


def test_subspace_split_equals_dense_gauss_newton_pulled_back():
    _, fm, theta, x, y = _problem()
    H, G = _dense()

    @jax.jit
    def run(theta, key):
        base = projections.make("sparse", key, D=fm.D, d=d, dtype=jnp.float64)
        P = layer_metric.apply(base, fm, metric="inv_layer_radius", renormalise=True)
        h_sub = curvature.subspace_hessian(flat.loss_fn(fm, x, y), theta, P)
        return projections.todense(P), h_sub, fullspace.subspace_split(fm, theta, x, P, h_sub)

    M, h_sub, out = run(theta, jax.random.key(1))
    M, h_sub = np.asarray(M), np.asarray(h_sub)
    np.testing.assert_allclose(h_sub, M.T @ H @ M, atol=1e-12)
    g_sub, r_sub = M.T @ G @ M, M.T @ (H - G) @ M
    np.testing.assert_allclose(out["gn_eigvals"], np.linalg.eigvalsh(g_sub), atol=1e-12)
    np.testing.assert_allclose(out["res_eigvals"], np.linalg.eigvalsh(r_sub), atol=1e-12)
    # The parts sum to the subspace Hessian: traces add, and the Frobenius norms obey it too.
    assert out["gn_trace"] + out["res_trace"] == pytest.approx(np.trace(h_sub), rel=1e-10)
    assert out["res_frob"] == pytest.approx(np.linalg.norm(h_sub - g_sub), rel=1e-10)
    assert out["gn_frac_pos"] == 1.0 and out["gn_bottom"] > 0  # P^T G P is positive definite
    assert out["res_frac_pos"] == pytest.approx(np.mean(np.linalg.eigvalsh(r_sub) > 0))
    assert out["gn_trace_over_frob"] == pytest.approx(np.trace(g_sub) / np.linalg.norm(g_sub), rel=1e-10)
    assert set(out) == set(fullspace.SPLIT_SCALARS) | {"gn_eigvals", "res_eigvals"}


def test_estimates_agree_with_dense_traces_and_eigenvalues():
    _, fm, theta, x, y = _problem()
    H, G = _dense()
    spec = fullspace.Spec(num_probes=300, top_k=3, order=fm.D, gn=True)

    @jax.jit
    def run(key, theta):  # plus item 1's Lanczos for G and R: extreme_eigs on their products
        mvs = gauss_newton.make_curvature_mvs(fm, theta, x, y)
        extremes = {
            name: spectra.extreme_eigs(key, mvs[name], dim=fm.D, k=3, order=fm.D, which="both")
            for name in ("gauss_newton", "residual")
        }
        return fullspace.estimates(key, fm, theta, x, y, spec=spec), extremes

    out, extremes = run(jax.random.key(2), theta)
    assert set(out) == set(spec.scalar_names()) | set(spec.array_names())
    for prefix, A in (("full_", H), ("full_gn_", G), ("full_res_", H - G)):
        frob = np.linalg.norm(A)
        exact = {
            "trace": (np.trace(A), frob),
            "frob": (frob, frob),
            "trace_over_frob": (np.trace(A) / frob, 1.0),
        }
        for stat, (value, scale) in exact.items():
            est, se = float(out[prefix + stat]), float(out[prefix + stat + "_se"])
            assert 0 < se < 0.15 * scale, (prefix, stat, se, value)  # sharp enough to fail
            assert abs(est - value) < 4 * se, (prefix, stat, est, value, se)
    # ReLU: each layer's logits are piecewise linear in its own weights, so R's diagonal is zero.
    assert abs(np.trace(H - G)) < 1e-10 * np.linalg.norm(H - G)
    eig = np.linalg.eigvalsh(H)
    np.testing.assert_allclose(out["full_top"], eig[::-1][:3], atol=1e-9)  # order = D: exact
    np.testing.assert_allclose(out["full_bottom"], eig[:3], atol=1e-9)
    for name, A in (("gauss_newton", G), ("residual", H - G)):
        values, vectors = map(np.asarray, extremes[name])
        eig = np.linalg.eigvalsh(A)
        np.testing.assert_allclose(values, np.r_[eig[:3], eig[::-1][:3]], atol=1e-9, err_msg=name)
        np.testing.assert_allclose(vectors @ A, values[:, None] * vectors, atol=1e-7, err_msg=name)
    assert np.linalg.eigvalsh(H - G)[0] < -1e-3  # R is indefinite: its bottom end is a real test


def test_spec_validation_and_record_keys():
    for bad in (dict(num_probes=1), dict(num_probes=-2), dict(top_k=-1), dict(top_k=3, order=5)):
        with pytest.raises(ValueError):
            fullspace.Spec(**bad)
    spec = fullspace.Spec(num_probes=4, top_k=2, order=10, gn=False)
    assert spec.scalar_names() == tuple(f"full_{s}" for s in fullspace.STATS)
    scalars, per_d, per_k = fullspace.record_keys(gn_split=True, spec=spec)
    assert scalars[: len(fullspace.SPLIT_SCALARS)] == fullspace.SPLIT_SCALARS
    assert per_d == ("gn_eigvals", "res_eigvals") and per_k == ("full_top", "full_bottom")
    assert fullspace.record_keys(gn_split=False, spec=None) == ((), (), ())
    assert fullspace.default_order(5, 1000) == 30 and fullspace.default_order(20, 1000) == 80
    assert fullspace.default_order(20, 50) == 50


def test_predicted_subspace_ratio_matches_gaussian_projections():
    rng = np.random.default_rng(3)
    D, dd, draws = 200, 20, 600
    u = rng.normal(size=(D, 3))
    A = u @ u.T + 0.3 * (lambda m: (m + m.T) / 2)(rng.normal(size=(D, D)))
    P = rng.normal(size=(draws, D, dd)) / np.sqrt(D)
    sub = np.swapaxes(P, 1, 2) @ (A @ P)
    tr, fsq = np.trace(sub, axis1=1, axis2=2), np.sum(sub**2, axis=(1, 2))
    rho = np.trace(A) / np.linalg.norm(A)
    predicted = float(fullspace.predicted_subspace_ratio(rho, dd))
    measured = tr.mean() / np.sqrt(fsq.mean())
    assert 1.2 < rho and abs(predicted - rho) > 0.1  # a regime where the two differ
    assert measured == pytest.approx(predicted, rel=0.03)


def test_point_fn_options():
    """make_point_fn with every option against dense references at the same point."""
    module, fm, _, x, y = _problem()
    kw = dict(
        projection="sparse",
        convention="xavier_rescaled",
        sample_fn=flat.sample_fn(module, (IN,), "xavier", jnp.float64),
        r_x=models.xavier_radius(module, (IN,)),
        dtype=jnp.float64,
    )
    spec = fullspace.Spec(num_probes=4, gn=True)  # top_k: test_estimates_* and the smoke run
    keys = seeds.SeedKeys.from_seed(0)
    k_init, k_proj, radius = keys.init_keys(1)[0], keys.proj_keys(d, 1)[0], jnp.float64(5.0)

    fn = jax.jit(
        measure.make_point_fn(
            fm, d=d, **kw, metric="std", renormalise=True, gn_split=True, fullspace_spec=spec
        )
    )
    full = jax.tree_util.tree_map(np.asarray, fn(k_init, k_proj, radius, x, y))
    assert set(full) == set(measure.SCALAR_METRICS) | {"eigvals"} | set(fullspace.SPLIT_SCALARS) | {
        "gn_eigvals",
        "res_eigvals",
    } | set(spec.scalar_names()) | set(spec.array_names())
    f = flat.loss_fn(fm, x, y)

    @jax.jit
    def reference(k_init, k_proj, radius):  # the references in one program (op by op: ~100 compiles)
        theta = subspace.point_at_radius(
            k_init,
            radius,
            convention="xavier_rescaled",
            sample_fn=kw["sample_fn"],
            D=fm.D,
            r_x=kw["r_x"],
            dtype=jnp.float64,
        )
        M0 = projections.todense(projections.make("sparse", k_proj, D=fm.D, d=d, dtype=jnp.float64))
        direct = fullspace.estimates(fullspace.probe_key(k_init), fm, theta, x, y, spec=spec)
        return f(theta), jax.hessian(f)(theta), M0, direct

    loss, H, M0, direct = jax.tree_util.tree_map(np.asarray, reference(k_init, k_proj, radius))
    assert full["loss"] == pytest.approx(float(loss), rel=1e-12)  # the point is unchanged
    assert full["radius"] == pytest.approx(5.0, rel=1e-12)
    eta = np.repeat(layer_metric.segment_scales(fm, "std"), [s.size for s in fm.segments])
    M = eta[:, None] * M0
    M /= np.linalg.norm(M, axis=0)
    np.testing.assert_allclose(full["eigvals"], np.linalg.eigvalsh(M.T @ H @ M), atol=1e-10)
    assert not np.allclose(
        full["eigvals"], np.linalg.eigvalsh(M0.T @ H @ M0), atol=1e-4
    )  # the metric matters
    assert full["gn_trace"] + full["res_trace"] == pytest.approx(full["trace"], rel=1e-10)
    # The probes come from the point's key alone (the same at every d and metric).
    for k in spec.scalar_names():
        assert full[k] == pytest.approx(float(direct[k]), rel=1e-10), k
