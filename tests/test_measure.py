"""gzone.measure, the one point measurement, against dense float64 references: the subspace Hessian and
its Gauss-Newton split, full-space statistics, Lanczos top pairs with the gradient overlap, the grouped
logit-gradient cosines, and the radius scan's point function."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gzone import flat, measure, models, projections, subspace
from gzone.curvature import fullspace

C = 3


@pytest.fixture
def tiny(x64):
    """MLP 4-5-3 tanh (D = 43), 12 examples of 3 classes, a point theta and a dense P [D, 6] (float64)."""
    module = models.build(models.ModelSpec("mlp", (5,), "tanh"), C)
    fm = flat.flat_model(module, (4,), jnp.float64)
    theta = flat.sample_fn(module, (4,), "xavier", jnp.float64)(jax.random.key(0)) * 2.0
    x = jax.random.normal(jax.random.key(1), (12, 4), jnp.float64)
    y = jnp.arange(12) % C
    P = projections.make("dense", jax.random.key(2), D=fm.D, d=6, dtype=jnp.float64)
    return module, fm, theta, x, y, P


def _dense(fm, theta, x, y):
    f = flat.loss_fn(fm, x, y)
    H = np.asarray(jax.hessian(f)(theta))
    J = np.asarray(jax.jacfwd(lambda th: flat.logits(fm, th, x))(theta))  # [N, C, D]
    p = np.asarray(jax.nn.softmax(flat.logits(fm, theta, x)))
    G = sum(J[n].T @ (np.diag(p[n]) - np.outer(p[n], p[n])) @ J[n] for n in range(x.shape[0])) / x.shape[0]
    return f, H, G, J


def test_subspace_hessian_and_split_equal_dense_references(tiny):
    _, fm, theta, x, y, P = tiny
    spec = measure.Spec(subspace=True, gn_split=True)
    out = jax.jit(measure.make_measure_fn(fm, spec))(None, theta, P, x, y)
    f, H, G, _ = _dense(fm, theta, x, y)
    Pm = np.asarray(P.matrix)
    eig, g_eig, r_eig = (np.linalg.eigvalsh(Pm.T @ A @ Pm) for A in (H, G, H - G))
    np.testing.assert_allclose(out["eigvals"], eig, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(out["gn_eigvals"], g_eig, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(out["res_eigvals"], r_eig, rtol=1e-8, atol=1e-12)
    assert out["frac_pos"] == pytest.approx(np.mean(eig > 0)) and out["n_pos"] == np.sum(eig > 0)
    assert out["trace_over_frob"] == pytest.approx(eig.sum() / np.sqrt(np.sum(eig**2)), rel=1e-8)
    assert out["gn_frac_pos"] == 1.0  # G is positive semidefinite: P^T G P too
    g = np.asarray(jax.grad(f)(theta))
    assert out["loss"] == pytest.approx(float(f(theta)), rel=1e-12)
    assert out["grad_norm"] == pytest.approx(np.linalg.norm(g), rel=1e-10)
    assert out["grad_radial"] == pytest.approx(g @ np.asarray(theta) / np.linalg.norm(theta), rel=1e-10)
    assert out["radius"] == pytest.approx(float(np.linalg.norm(theta)), rel=1e-12)


def test_full_space_statistics_are_unbiased_and_lanczos_is_exact_at_order_D(tiny):
    _, fm, theta, x, y, _ = tiny
    spec = measure.Spec(full=fullspace.Spec(num_probes=400, top_k=3, order=fm.D, gn=True))
    out = jax.jit(measure.make_measure_fn(fm, spec))(jax.random.key(5), theta, None, x, y)
    _, H, G, _ = _dense(fm, theta, x, y)
    for prefix, A in (("full_", H), ("full_gn_", G), ("full_res_", H - G)):
        exact = np.trace(A)
        assert abs(out[f"{prefix}trace"] - exact) < 5 * out[f"{prefix}trace_se"] + 1e-9, prefix
        exact = np.linalg.norm(A)
        assert abs(out[f"{prefix}frob"] - exact) < 5 * out[f"{prefix}frob_se"] + 1e-9, prefix
    eig = np.linalg.eigvalsh(H)
    np.testing.assert_allclose(out["full_top"], eig[::-1][:3], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out["full_bottom"], eig[:3], rtol=1e-8, atol=1e-10)


def test_top_pairs_overlap_and_logit_groups_equal_dense_references(tiny):
    """Lanczos with order = D is exact: the top eigenvalues and the gradient overlap against eigh of the dense
    Hessian; the grouped cosines against a loop over pairs of the dense Jacobian's rows; the logit
    variance."""
    _, fm, theta, x, y, _ = tiny
    spec = measure.Spec(top_k=6, order=fm.D, gram=measure.Gram(num_classes=C, chunk=4), logit_var=True)
    out = jax.jit(measure.make_measure_fn(fm, spec))(jax.random.key(3), theta, None, x, y, x, y)
    f, H, _, J = _dense(fm, theta, x, y)
    eigval, eigvec = np.linalg.eigh(H)
    np.testing.assert_allclose(out["top_eigs"], eigval[::-1][:6], rtol=1e-8, atol=1e-10)
    g = np.asarray(jax.grad(f)(theta))
    np.testing.assert_allclose(
        out["overlap"], np.cumsum((eigvec[:, ::-1][:, :6].T @ g) ** 2) / (g @ g), rtol=1e-6, atol=1e-10
    )
    rows = J.reshape(-1, fm.D)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    pools = {"slsc": [], "sl": [], "sldc": [], "dl": []}
    for r, s in itertools.product(range(rows.shape[0]), repeat=2):
        (n, k), (m, l) = divmod(r, C), divmod(s, C)
        if n == m:
            continue
        cos = unit[r] @ unit[s]
        if k == l:
            pools["sl"].append(cos)
            pools["slsc" if y[n] == y[m] else "sldc"].append(cos)
        else:
            pools["dl"].append(cos)
    for name, values in pools.items():
        assert out[f"q_{name}"] == pytest.approx(np.mean(values), rel=1e-10), name
        assert out[f"n_{name}"] == len(values)
    logits_ = np.asarray(flat.logits(fm, theta, x))
    assert out["logit_var"] == pytest.approx(np.mean(np.var(logits_, axis=1)), rel=1e-12)


def test_the_scan_point_is_the_core_at_a_point_at_radius(tiny):
    module, fm, _, x, y, _ = tiny
    sample = flat.sample_fn(module, (4,), "xavier", jnp.float64)
    r_x = models.xavier_radius(module, (4,))
    k_init, k_proj = jax.random.key(7), jax.random.key(8)
    point_fn = measure.make_point_fn(
        fm,
        d=5,
        projection="sparse",
        convention="xavier_rescaled",
        sample_fn=sample,
        r_x=r_x,
        dtype=jnp.float64,
    )
    got = jax.jit(point_fn)(k_init, k_proj, jnp.float64(3.0), x, y)
    theta = subspace.point_at_radius(
        k_init, 3.0, convention="xavier_rescaled", sample_fn=sample, D=fm.D, r_x=r_x, dtype=jnp.float64
    )
    P = projections.make("sparse", k_proj, D=fm.D, d=5, dtype=jnp.float64)
    _, H, _, _ = _dense(fm, theta, x, y)
    Pm = np.asarray(projections.todense(P))
    np.testing.assert_allclose(got["eigvals"], np.linalg.eigvalsh(Pm.T @ H @ Pm), rtol=1e-8, atol=1e-12)
    assert got["radius"] == pytest.approx(3.0, rel=1e-12) and set(got) == {*measure.SCALAR_METRICS, "eigvals"}


def test_spec_checks_its_options():
    with pytest.raises(ValueError, match="gn_split"):
        measure.Spec(gn_split=True)
    with pytest.raises(ValueError, match="top_k"):
        measure.Spec(top_k=7, order=6)
    with pytest.raises(ValueError, match="method"):
        measure.Spec(subspace=True, hessian_method="fast")
