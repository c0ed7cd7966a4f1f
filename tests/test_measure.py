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


@pytest.fixture(scope="module")
def _tiny():
    """MLP 4-5-3 tanh (D = 43), 12 examples of 3 classes, a point theta and a dense P [D, 6] (float64);
    the dense references (`_dense_fn`) as a function of theta and at that theta (computed once)."""
    with jax.enable_x64(True):
        module = models.build(models.ModelSpec("mlp", (5,), "tanh"), C)
        fm = flat.flat_model(module, (4,), jnp.float64)
        theta = jax.jit(flat.sample_fn(module, (4,), "xavier", jnp.float64))(jax.random.key(0)) * 2.0
        x = jax.random.normal(jax.random.key(1), (12, 4), jnp.float64)
        y = jnp.arange(12) % C
        make = jax.jit(projections.make, static_argnums=0, static_argnames=("D", "d", "dtype"))
        P = make("dense", jax.random.key(2), D=fm.D, d=6, dtype=jnp.float64)
        dense_at = _dense_fn(fm, x, y)
        return (module, fm, theta, x, y, P), dense_at, dense_at(theta)


@pytest.fixture
def tiny(x64, _tiny):
    return _tiny[0]


@pytest.fixture
def dense(x64, _tiny):
    """(loss, gradient, H, G, J, z) at the tiny problem's theta, as numpy."""
    return _tiny[2]


@pytest.fixture
def dense_at(x64, _tiny):
    """theta -> (loss, gradient, H, G, J, z) of the tiny problem, as numpy."""
    return _tiny[1]


def _dense_fn(fm, x, y):
    """theta -> (loss, gradient, H = jax.hessian of the loss, G = sum_n J_n^T H_CE,n J_n / N, J [N, C, D],
    the logits z [N, C]) as numpy."""
    f = flat.loss_fn(fm, x, y)

    @jax.jit
    def run(theta):  # one program (op by op, jax.hessian and jacfwd compiled ~150 primitives)
        J = jax.jacfwd(lambda th: flat.logits(fm, th, x))(theta)
        loss, g = jax.value_and_grad(f)(theta)
        z = flat.logits(fm, theta, x)
        return loss, g, jax.hessian(f)(theta), J, jax.nn.softmax(z), z

    def dense(theta):
        loss, g, H, J, p, z = map(np.asarray, run(theta))
        N = x.shape[0]
        G = sum(J[n].T @ (np.diag(p[n]) - np.outer(p[n], p[n])) @ J[n] for n in range(N)) / N
        return loss, g, H, G, J, z

    return dense


def test_subspace_hessian_and_split_equal_dense_references(tiny, dense):
    _, fm, theta, x, y, P = tiny
    spec = measure.Spec(subspace=True, gn_split=True)
    out = jax.jit(measure.make_measure_fn(fm, spec))(None, theta, P, x, y)
    loss, g, H, G, _, _ = dense
    Pm = np.asarray(P.matrix)
    eig, g_eig, r_eig = (np.linalg.eigvalsh(Pm.T @ A @ Pm) for A in (H, G, H - G))
    np.testing.assert_allclose(out["eigvals"], eig, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(out["gn_eigvals"], g_eig, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(out["res_eigvals"], r_eig, rtol=1e-8, atol=1e-12)
    assert out["frac_pos"] == pytest.approx(np.mean(eig > 0)) and out["n_pos"] == np.sum(eig > 0)
    assert out["trace_over_frob"] == pytest.approx(eig.sum() / np.sqrt(np.sum(eig**2)), rel=1e-8)
    assert out["gn_frac_pos"] == 1.0  # G is positive semidefinite: P^T G P too
    assert out["loss"] == pytest.approx(float(loss), rel=1e-12)
    assert out["grad_norm"] == pytest.approx(np.linalg.norm(g), rel=1e-10)
    assert out["grad_radial"] == pytest.approx(g @ np.asarray(theta) / np.linalg.norm(theta), rel=1e-10)
    assert out["radius"] == pytest.approx(float(np.linalg.norm(theta)), rel=1e-12)


@pytest.fixture(scope="module")
def with_key_options(_tiny):
    """One measurement with every option that takes the key (full space, top-k pairs) and the Gram and
    logit-variance options: one compile for the two tests below. Lanczos with order = D is exact."""
    (_, fm, theta, x, y, _), _, _ = _tiny
    spec = measure.Spec(
        full=fullspace.Spec(num_probes=400, top_k=3, order=fm.D, gn=True),
        top_k=6,
        order=fm.D,
        gram=measure.Gram(num_classes=C, chunk=4),
        logit_var=True,
    )
    with jax.enable_x64(True):
        return jax.jit(measure.make_measure_fn(fm, spec))(jax.random.key(5), theta, None, x, y, x, y)


def test_full_space_statistics_are_unbiased_and_lanczos_is_exact_at_order_D(tiny, dense, with_key_options):
    out = with_key_options
    _, _, H, G, _, _ = dense
    for prefix, A in (("full_", H), ("full_gn_", G), ("full_res_", H - G)):
        exact = np.trace(A)
        assert abs(out[f"{prefix}trace"] - exact) < 5 * out[f"{prefix}trace_se"] + 1e-9, prefix
        exact = np.linalg.norm(A)
        assert abs(out[f"{prefix}frob"] - exact) < 5 * out[f"{prefix}frob_se"] + 1e-9, prefix
    eig = np.linalg.eigvalsh(H)
    np.testing.assert_allclose(out["full_top"], eig[::-1][:3], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out["full_bottom"], eig[:3], rtol=1e-8, atol=1e-10)


def test_top_pairs_overlap_and_logit_groups_equal_dense_references(tiny, dense, with_key_options):
    """Lanczos with order = D is exact: the top eigenvalues and the gradient overlap against eigh of the dense
    Hessian; the grouped cosines against a loop over pairs of the dense Jacobian's rows; the logit
    variance."""
    _, fm, theta, x, y, _ = tiny
    out = with_key_options
    _, g, H, _, J, logits_ = dense
    eigval, eigvec = np.linalg.eigh(H)
    np.testing.assert_allclose(out["top_eigs"], eigval[::-1][:6], rtol=1e-8, atol=1e-10)
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
    assert out["logit_var"] == pytest.approx(np.mean(np.var(logits_, axis=1)), rel=1e-12)


def test_the_scan_point_is_the_core_at_a_point_at_radius(tiny, dense_at):
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

    @jax.jit
    def point_and_subspace(k_init, k_proj):
        theta = subspace.point_at_radius(
            k_init, 3.0, convention="xavier_rescaled", sample_fn=sample, D=fm.D, r_x=r_x, dtype=jnp.float64
        )
        return theta, projections.todense(projections.make("sparse", k_proj, D=fm.D, d=5, dtype=jnp.float64))

    theta, Pm = point_and_subspace(k_init, k_proj)
    H = dense_at(theta)[2]
    Pm = np.asarray(Pm)
    np.testing.assert_allclose(got["eigvals"], np.linalg.eigvalsh(Pm.T @ H @ Pm), rtol=1e-8, atol=1e-12)
    assert got["radius"] == pytest.approx(3.0, rel=1e-12) and set(got) == {*measure.SCALAR_METRICS, "eigvals"}


def test_spec_checks_its_options():
    with pytest.raises(ValueError, match="gn_split"):
        measure.Spec(gn_split=True)
    with pytest.raises(ValueError, match="top_k"):
        measure.Spec(top_k=7, order=6)
    with pytest.raises(ValueError, match="method"):
        measure.Spec(subspace=True, hessian_method="fast")
