"""The full Hessian's spectral density (SLQ) through the one point measurement, the radius scan and emergent
geometry, against exact algebra: dense float64 Hessians of tiny models, each probe's own quadratic forms
u^T H^k u, the exact spectral measure; the records' axes, resume, the figures and one-line errors."""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from shared_data import generated_once

from experiments import config as config_lib
from experiments import emergent_geometry, radius_scan
from gzone import flat, models, plots, seeds, subspace
from gzone.analysis import spectral_density as sd
from gzone.curvature import fullspace
from gzone.plots import emergent_geometry as emergent_figures
from gzone.runs import records, schema

REPO = Path(__file__).resolve().parents[1]
SCAN = f"--flagfile={REPO}/experiments/flagfiles/smoke.flags"
EMERGENT = f"--flagfile={REPO}/experiments/flagfiles/emergent_smoke.flags"
N, C, IN, WIDTH = 24, 4, 6, 7
R, S, P, M = 3, 2, 3, 6  # the scans below: radii, seeds, density probes, Lanczos steps

_data_generated_once = pytest.fixture(scope="module", autouse=True)(generated_once)


def _probes(key, num_probes: int, D: int, dtype=jnp.float64) -> np.ndarray:
    """The density probes [P, D] of a point key, drawn as `fullspace.estimates` and `spectra.slq` do."""
    keys = jax.random.split(jax.random.fold_in(key, fullspace.DENSITY_STREAM), num_probes)
    return np.stack([np.asarray(jax.random.rademacher(jax.random.split(k)[0], (D,), dtype)) for k in keys])


def _per_probe_moments(nodes, weights, H, v, ks):
    """(sum_i w_i theta_i^k, v^T H^k v / D) per k, both scaled by ||H||_2^k."""
    rho = np.abs(np.linalg.eigvalsh(H)).max()
    out, hv = [], v.copy()
    for k in range(max(ks) + 1):
        if k in ks:
            out.append((np.sum(weights * (nodes / rho) ** k), v @ hv / v.size / rho**k))
        hv = H @ hv
    return out


@functools.lru_cache
def _tiny():
    """ReLU MLP 6-7-4 (D = 81) at 3 x a Xavier point, its examples and the dense float64 Hessian."""
    with jax.enable_x64(True):
        module = models.build(models.ModelSpec("mlp", (WIDTH,), "relu"), C)
        k_init, k_x, k_y = jax.random.split(jax.random.key(0), 3)
        theta, fm = flat.flatten(module, models.init_params(k_init, module, (IN,), "xavier", jnp.float64))
        x = jax.random.normal(k_x, (N, IN), jnp.float64)
        y = jax.random.randint(k_y, (N,), 0, C)
        H = np.asarray(jax.jit(jax.hessian(flat.loss_fn(fm, x, y)))(3.0 * theta))
        return fm, 3.0 * theta, x, y, H


@functools.lru_cache  # a program per (order, probes), shared by the tests (a fresh jit would recompile)
def _estimate(order: int, num_probes: int):
    fm, theta, x, y, _ = _tiny()
    spec = fullspace.Spec(density_probes=num_probes, density_order=order)
    with jax.enable_x64(True):
        run = jax.jit(lambda k, th: fullspace.estimates(k, fm, th, x, y, spec=spec))
        out = run(jax.random.key(5), theta)
    nodes, weights = np.asarray(out["density_nodes"]), np.asarray(out["density_weights"])
    nodes.flags.writeable = weights.flags.writeable = False  # shared: no test may change them
    return nodes, weights


@pytest.mark.usefixtures("x64")
def test_each_probes_quadrature_reproduces_its_own_moments_to_degree_2m_minus_1():
    fm, *_, H = _tiny()
    nodes, weights = _estimate(M, P)
    assert nodes.shape == weights.shape == (P, M) and nodes.dtype == np.float64
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-12)
    assert np.all(np.diff(nodes, axis=-1) > 0)
    for p, v in enumerate(_probes(jax.random.key(5), P, fm.D)):
        pairs = _per_probe_moments(nodes[p], weights[p], H, v, range(2 * M + 1))
        for k, (quad, exact) in enumerate(pairs[: 2 * M]):  # float64 rounding: ~1e-15
            assert quad == pytest.approx(exact, rel=1e-11, abs=1e-14), (p, k)
        quad, exact = pairs[2 * M]  # degree 2m is beyond Gauss quadrature: ~1e-7..1e-5 off here
        assert abs(quad - exact) > 1e-9 * abs(exact), p


@pytest.mark.usefixtures("x64")
def test_the_probe_mean_estimates_the_traces_of_powers():
    fm, *_, H = _tiny()
    nodes, weights = _estimate(M, 64)
    eig = np.linalg.eigvalsh(H)
    for k in (1, 2, 3):
        per_probe = np.sum(weights * nodes**k, -1)
        se = per_probe.std(ddof=1) / np.sqrt(per_probe.size)
        assert abs(per_probe.mean() - np.mean(eig**k)) < 4 * se, k
        assert sd.moment(nodes, weights, k) == pytest.approx(per_probe.mean(), rel=1e-12)


@pytest.mark.usefixtures("x64")
def test_with_order_D_the_nodes_are_the_eigenvalues_and_the_weights_the_probes_overlaps():
    fm, *_, H = _tiny()
    nodes, weights = _estimate(fm.D, 2)
    eig, q = np.linalg.eigh(H)
    for p, v in enumerate(_probes(jax.random.key(5), 2, fm.D)):
        np.testing.assert_allclose(nodes[p], eig, atol=1e-9 * np.abs(eig).max())
        exact = (q.T @ v) ** 2 / fm.D  # the probe's own measure nu_v
        gaps = np.flatnonzero(np.diff(eig) > 1e-6 * np.abs(eig).max())  # not within a degenerate cluster
        assert gaps.size > 20
        for x in (eig[gaps] + eig[gaps + 1]) / 2:  # the CDF between eigenvalues
            assert np.sum(weights[p][nodes[p] > x]) == pytest.approx(np.sum(exact[eig > x]), abs=1e-9)


@pytest.mark.usefixtures("x64")
def test_the_mass_bracket_holds_each_probes_exact_measure():
    fm, *_, H = _tiny()
    nodes, weights = _estimate(M, P)
    eig, q = np.linalg.eigh(H)
    widths = []
    for p, v in enumerate(_probes(jax.random.key(5), P, fm.D)):
        exact = (q.T @ v) ** 2 / fm.D
        for x in np.linspace(eig[0], eig[-1], 23):
            point, lo, hi = sd.mass_above(nodes[p][None], weights[p][None], x)
            truth = np.sum(exact[eig > x])
            assert lo - 1e-12 <= truth <= hi + 1e-12, (p, x, lo, truth, hi)
            assert lo <= point <= hi
            widths.append(hi - lo)
    assert np.max(widths) > 0.05 and np.min(widths) < np.max(widths)  # a bracket, not a point
    point, lo, hi = sd.mass_above(nodes, weights, 0.0)  # pooled: the mean of the per-probe values
    per = [sd.mass_above(nodes[p][None], weights[p][None], 0.0) for p in range(P)]
    np.testing.assert_allclose([point, lo, hi], np.mean(per, axis=0), rtol=1e-12)


@pytest.mark.usefixtures("x64")
def test_the_largest_ritz_values_bound_the_top_eigenvalues_and_reach_them_at_order_D():
    fm, *_, H = _tiny()
    eig = np.linalg.eigvalsh(H)[::-1]
    nodes, _ = _estimate(M, P)
    bounds = sd.ritz_largest(nodes, 4)
    assert np.all(bounds <= eig[:4] + 1e-12)  # Cauchy interlacing, each probe and so their maximum
    assert bounds[0] == pytest.approx(eig[0], rel=1e-3)  # the top converges first
    assert np.all(np.max(np.sort(nodes, -1)[:, ::-1][:, :4], 0) == bounds)
    assert np.isnan(sd.ritz_largest(nodes, M + 1)[-1])
    full, _ = _estimate(fm.D, 2)  # at order D every probe's nodes are the eigenvalues
    np.testing.assert_allclose(sd.ritz_largest(full, 10), eig[:10], atol=1e-9 * eig[0])
    np.testing.assert_allclose(sd.ritz_largest(full[:1], 10), eig[:10], atol=1e-9 * eig[0])


def _planted(D=400, k=6):
    """An exact spectral measure as a one-probe quadrature: k outliers above a shifted bulk."""
    rng = np.random.default_rng(0)
    bulk = 0.3 + rng.normal(size=D - k)
    eig = np.sort(np.r_[bulk, 20 + 5 * np.arange(k)])
    return eig, eig[None], np.full((1, D), 1.0 / D)


def test_summary_of_an_exact_measure_equals_the_spectrums_own_statistics():
    eig, nodes, weights = _planted()
    D, k = eig.size, 8
    got = sd.summary(nodes, weights, D=D, k=k)
    assert set(got) == set(sd.SUMMARY_KEYS)
    rest = eig[:-(k - 1)]
    expected = {
        "trace": eig.mean(),
        "trace_over_frob": eig.sum() / np.linalg.norm(eig),
        "mass_pos": np.mean(eig > 0),
        "top": eig[-1],
        "bottom": eig[0],
        "edge": eig[-k],
        "top_over_edge": eig[-1] / eig[-k],
        "top_trace_share": eig[-(k - 1):].sum() / eig.sum(),
        "bulk_shift": rest.mean() / rest.std(),
        "mass_pos_eps": np.mean(eig > got["eps"]),
        "mass_neg_eps": np.mean(eig < -got["eps"]),
        "pos_share_eps": np.sum(eig > got["eps"]) / np.sum(np.abs(eig) > got["eps"]),
    }
    for key, value in expected.items():
        assert float(got[key]) == pytest.approx(value, rel=1e-10), key
    assert float(got["eps"]) == pytest.approx(sd.EPS_FRACTION * (eig[-k] - eig[0]) / 2)
    assert got["mass_pos_lo"] <= got["mass_pos"] <= got["mass_pos_hi"]
    short = sd.summary(nodes[:, -5:], weights[:, -5:] * D / 5, D=D, k=k)  # order < k: no edge
    assert all(np.isnan(short[key]) for key in ("edge", "top_over_edge", "top_trace_share", "bulk_shift"))
    assert short["top"] == eig[-1] and np.isfinite(short["eps"])
    stacked = sd.summary(np.stack([nodes, nodes]), np.stack([weights, weights]), D=D, k=k)  # leading axes
    assert stacked["edge"].shape == (2,) and np.all(stacked["edge"] == eig[-k])


def test_the_smoothed_density_is_a_probability_density_in_s_with_the_nodes_mean():
    eig, nodes, weights = _planted()
    nodes, weights = np.concatenate([nodes, nodes[:, ::2].repeat(2, 1)]), np.concatenate([weights, weights])
    scale, width = 0.05, 0.1
    s = np.arcsinh(nodes / scale)
    grid = np.linspace(s.min() - 6 * width, s.max() + 6 * width, 20001)
    density = sd.smoothed(nodes, weights, grid, scale=scale, width=width)
    step = grid[1] - grid[0]
    assert np.sum(density) * step == pytest.approx(1.0, rel=1e-4)
    assert np.sum(grid * density) * step == pytest.approx(np.sum(weights * s) / 2, rel=1e-3)


# --------------------------------------------------------------------------- the radius scan


def _scan(workdir, *flags):
    progress = []
    config = radius_scan.config_from_argv([
        SCAN, f"--workdir={workdir}", "--dtype=float64", "--name=density", f"--density_probes={P}",
        f"--density_order={M}", *flags,
    ])
    with jax.enable_x64(True), pytest.MonkeyPatch.context() as patch:  # float64 for this run only
        patch.setattr(config_lib, "enable_x64_if", lambda dtype: None)
        path = radius_scan.run(config, log=lambda s: None, progress=progress.append)
    return {"path": path, "progress": progress, "config": config}


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return _scan(tmp_path_factory.mktemp("density"), "--noplots")  # the density figures drawn below only


def test_the_scan_records_the_quadratures_on_the_schemas_axes(scan, tmp_path):
    config, arrays = records.read_config(scan["path"]), records.load_arrays(scan["path"])
    schema.check(config, arrays)
    assert config["settings"]["density_probes"] == P and config["derived"]["density_order"] == M
    for key in fullspace.DENSITY_KEYS:
        assert config["axes"][key] == ["radius", "d", "seed", "probe", "node"]
        assert arrays[key].shape == (R, 2, S, P, M) and arrays[key].dtype == np.float64
    np.testing.assert_allclose(arrays["density_weights"].sum(-1), 1.0, rtol=1e-10)
    # The probes come from the seed's point key, not from d: the same quadrature at d = 4 and d = 8.
    np.testing.assert_allclose(arrays["density_nodes"][:, 0], arrays["density_nodes"][:, 1], rtol=1e-10)
    # The scan's figures from its records through the dispatcher, which adds the density figures when
    # the records hold the density (the other figures' content: tests/test_radius_scan.py).
    paths = plots.draw_records(str(tmp_path), schema.read(scan["path"]))
    density = ["spectral_density.png", "spectral_density_summary.png"]
    assert [os.path.basename(f) for f in paths][-2:] == density
    for f in paths:
        assert Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
    assert "density: top Ritz" in scan["progress"][-1]


def test_the_scans_quadrature_is_exact_for_the_dense_hessian_at_its_point(scan):
    """theta and the probes rebuilt from the recorded keys; jax.hessian of the loss in float64."""
    derived, arrays = records.read_config(scan["path"])["derived"], records.load_arrays(scan["path"])
    c = scan["config"]
    dataset = c.data.load()
    index = np.asarray(derived["hessian_examples"])
    module = c.model.build(dataset.num_classes)
    ri, s = 2, 1
    with jax.enable_x64(True):
        fm = flat.flat_model(module, (40,), jnp.float64)
        k_init = seeds.SeedKeys.from_seed(0).init_keys(S)[s]
        theta = subspace.point_at_radius(
            k_init, jnp.float64(derived["radii"][ri]), convention="xavier_rescaled",
            sample_fn=flat.sample_fn(module, (40,), "xavier", jnp.float64), D=fm.D, r_x=derived["r_x"],
            dtype=jnp.float64)
        x, y = jnp.asarray(dataset.x_train[index], jnp.float64), jnp.asarray(dataset.y_train[index])
        H = np.asarray(jax.jit(jax.hessian(flat.loss_fn(fm, x, y)))(theta))
        v = _probes(fullspace.probe_key(k_init), P, fm.D)
    assert float(arrays["radius"][ri, 0, s]) == pytest.approx(float(np.linalg.norm(theta)), rel=1e-12)
    for p in range(P):
        nodes, weights = arrays["density_nodes"][ri, 0, s, p], arrays["density_weights"][ri, 0, s, p]
        for k, (quad, exact) in enumerate(_per_probe_moments(nodes, weights, H, v[p], range(2 * M))):
            assert quad == pytest.approx(exact, rel=1e-7, abs=1e-12), (p, k)


def test_resume_computes_only_the_missing_units_and_equals_the_whole_run(scan, tmp_path):
    copy = tmp_path / "radius_scan" / "density"
    shutil.copytree(scan["path"], copy)
    metrics = copy / "metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:4]))
    os.remove(copy / "arrays.npz")
    run = _scan(tmp_path, "--noplots")
    assert "(4/6 units done)" in run["progress"][0] and len(run["progress"]) == 2 + 2
    got, expected = records.load_arrays(copy), records.load_arrays(scan["path"])
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


# --------------------------------------------------------------------------- emergent geometry


def _emergent(workdir, name, *flags):
    lines = []
    config_ = emergent_geometry.config_from_argv([EMERGENT, f"--workdir={workdir}", "--parts=radius",
                                                  f"--name={name}", *flags])
    return emergent_geometry.run(config_, log=lines.append, progress=None), lines


DENSITY = [f"--density_probes={P}", f"--density_order={M}"]


def test_emergent_geometry_records_the_density_on_the_schemas_axes(tmp_path):
    path, lines = _emergent(tmp_path, "dens", "--noplots", *DENSITY)
    config, arrays = records.read_config(path), records.load_arrays(path)
    assert set(arrays) == set(config["axes"]) == set(schema.emergent_geometry_axes(["radius"], density=True))
    for key in fullspace.DENSITY_KEYS:
        assert config["axes"][f"radius_{key}"] == ["radius", "seed", "probe", "node"]
        assert arrays[f"radius_{key}"].shape == (R, S, P, M)
    np.testing.assert_allclose(arrays["radius_density_weights"].sum(-1), 1.0, rtol=1e-5)
    analysis = json.loads(Path(path, "analysis.json").read_text())
    assert set(analysis["radius"][0]["density"]) == set(sd.SUMMARY_KEYS)
    top = np.max(arrays["radius_density_nodes"], axis=(-2, -1))  # [radius, seed]
    np.testing.assert_allclose([row["density"]["top"] for row in analysis["radius"]], top, rtol=1e-6)
    assert "full Hessian spectral density" in "\n".join(lines)
    # The run's figures through the dispatcher, which adds the density figures of each part that
    # holds one (the other four figures stubbed here; drawn in tests/test_emergent_geometry.py).
    others = ("draw_clustering", "draw_outliers", "draw_overlap", "draw_logit_variance")
    with pytest.MonkeyPatch.context() as patch:
        for name in others:
            patch.setattr(emergent_figures, name, lambda *args, name=name: name)
        paths = plots.draw_records(str(tmp_path), schema.read(path))
    names = ["spectral_density_radius.png", "spectral_density_summary_radius.png"]
    assert tuple(paths[:4]) == others and [os.path.basename(f) for f in paths[4:]] == names
    paths = paths[4:]
    for f in paths:
        assert Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f


@pytest.mark.slow
def test_emergent_geometry_with_the_density_leaves_the_other_measurements_as_they_were(tmp_path):
    plain, _ = _emergent(tmp_path, "plain", "--noplots")
    dens, _ = _emergent(tmp_path, "dens", "--noplots", *DENSITY)
    with_density = records.load_arrays(dens)
    for key, value in records.load_arrays(plain).items():  # the density probes are a stream of their own
        np.testing.assert_array_equal(with_density[key], value, err_msg=key)


# --------------------------------------------------------------------------- bad input


def _main(module, argv, capsys):
    from experiments import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(module.config_from_argv, lambda c: module.run(c, progress=None), groups=module.GROUPS,
                 argv=argv)
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err.strip()


BAD_INPUTS = {
    "order_without_probes": (["--density_order=10"], "--density_order"),
    "order_above_D": (["--density_probes=2", "--density_order=100000"], "--density_order"),
    "negative_probes": (["--density_probes=-1"], "--density_probes"),
    "not_an_integer": (["--density_probes=two"], "density_probes"),
}


@pytest.mark.parametrize("experiment", ["radius_scan", "emergent_geometry"])
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_density_options_are_one_line_exit_2_and_no_run_folder(experiment, case, tmp_path, capsys):
    module, smoke = (radius_scan, SCAN) if experiment == "radius_scan" else (emergent_geometry, EMERGENT)
    flags, expected = BAD_INPUTS[case]
    workdir = tmp_path / "work"
    code, out, err = _main(module, [smoke, f"--workdir={workdir}", *flags], capsys)
    assert code == 2 and out == "", err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert not workdir.exists()


def test_density_with_example_chunks_is_refused(tmp_path, capsys):
    flags = [SCAN, f"--workdir={tmp_path}", "--density_probes=2", "--example_chunk=32"]
    code, _, err = _main(radius_scan, flags, capsys)
    assert code == 2 and "--example_chunk" in err and "--density_probes" in err, err
