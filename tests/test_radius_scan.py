"""The radius scan end to end, in-process: the command line's records, the numbers of the committed
references, an independent float64 route, the API on the same settings, resume, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references

import gzone
from experiments import radius_scan
from gzone import flat, layer_metric, projections, seeds, subspace
from gzone.curvature import gauss_newton
from gzone.runs import records, schema

REPO = Path(__file__).resolve().parents[1]
SMOKE = f"--flagfile={REPO}/experiments/flagfiles/smoke.flags"
DATA = REPO / "tests" / "data"
RADII_REL, DIMS, SEEDS = [-2.0, 0.0, 2.0], [4, 8], 2  # what smoke.flags asks for
UNITS = {f"r{ri:03d}_d{d}" for ri in range(3) for d in DIMS}
OPTIONS = [
    "--name=opts",
    "--gn_split",
    "--fullspace_probes=4",
    "--fullspace_top_k=2",
    "--projection_metric=inv_std",
    "--noplots",
]


def _run(workdir, *flags, plots=True):
    lines, progress = [], []
    config = radius_scan.config_from_argv([
        SMOKE,
        f"--workdir={workdir}",
        *flags,
        *([] if plots else ["--noplots"]),
    ])
    path = radius_scan.run(config, log=lines.append, progress=progress.append)
    return {"path": path, "log": lines, "progress": progress, "config": config}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("smoke"))


@pytest.fixture(scope="module")
def with_options(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("options"), *OPTIONS)


def _reference(name):
    with np.load(DATA / f"radius_scan_{name}_reference.npz") as archive:
        return {k: archive[k] for k in archive.files}


def _assert_close_to_reference(arrays, reference):
    """Equal to float rounding: the references were written by the code before the library layout."""
    for key, expected in reference.items():
        if key == "hessian_examples":  # now recorded in config.json's derived values
            continue
        got = arrays[key]
        assert got.shape == expected.shape and got.dtype == expected.dtype, key
        references.assert_close(got, expected, key)


def test_records_are_complete_and_consistent(smoke):
    path = smoke["path"]
    config = records.read_config(path)
    assert (
        config["status"] == "complete"
        and config["experiment"] == "radius_scan"
        and config["schema"] == schema.VERSION
    )
    settings, derived = config["settings"], config["derived"]
    assert (
        settings["dims"] == DIMS
        and settings["num_seeds"] == SEEDS
        and settings["log10_r2_over_rx2"] == RADII_REL
    )
    assert settings["data"]["examples"] == 64 and settings["model"]["class"] == "gzone.models.mlp.MLP"
    assert settings["seed_mode"] in ("vmap", "map") and derived["D"] == 40 * 16 + 16 + 16 * 10 + 10
    assert derived["dataset"]["name"] == "mnist1d" and len(derived["hessian_examples"]) == 64

    lines = records.read_jsonl(path)
    assert {line["unit"] for line in lines} == UNITS and len(lines) == len(UNITS)
    for line in lines:
        assert (
            line["radius"] == pytest.approx(derived["radii"][line["radius_index"]]) and line["seconds"] >= 0
        )
    arrays = records.load_arrays(path)
    schema.check(config, arrays)
    R, n_d, S = len(RADII_REL), len(DIMS), SEEDS
    for key in schema.SCAN_SCALARS:
        assert arrays[key].shape == (R, n_d, S), key
    np.testing.assert_allclose(
        arrays["radii"], derived["r_x"] * 10 ** (np.asarray(RADII_REL) / 2), rtol=1e-12
    )
    np.testing.assert_allclose(
        arrays["radius"], np.broadcast_to(arrays["radii"][:, None, None], (R, n_d, S)), rtol=1e-5
    )
    assert arrays["layer_sq_frac"].shape == (n_d, S, 4)
    np.testing.assert_allclose(arrays["layer_sq_frac"].sum(axis=-1), 1.0, rtol=1e-5)
    for line in lines:  # the per-unit means in metrics.jsonl summarise the same arrays
        ri, di = line["radius_index"], DIMS.index(line["d"])
        assert line["mean"]["loss"] == pytest.approx(float(np.mean(arrays["loss"][ri, di])), rel=1e-6)
    np.testing.assert_array_equal(
        arrays["loss"][:, 0, :], arrays["loss"][:, 1, :]
    )  # the point does not depend on d
    for figure in ("goldilocks.png", "loss_accuracy.png"):
        assert Path(path, figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    flags_txt = Path(path, "flags.txt").read_text()
    assert "--dims=4,8" in flags_txt and "--num_seeds=2" in flags_txt and "--overwrite" not in flags_txt
    assert any(line.startswith("records:") for line in smoke["log"])
    assert len(smoke["progress"]) == 2 + len(UNITS) and "ETA" in smoke["progress"][-1]


def test_the_numbers_do_not_move(smoke, with_options):
    """The arrays equal those the code wrote before the library layout (tests/data/README.md)."""
    _assert_close_to_reference(records.load_arrays(smoke["path"]), _reference("smoke"))
    _assert_close_to_reference(records.load_arrays(with_options["path"]), _reference("options"))


@pytest.mark.slow
def test_the_quick_scan_numbers_do_not_move(tmp_path):
    config = radius_scan.config_from_argv([
        f"--flagfile={REPO}/experiments/flagfiles/quick.flags",
        f"--workdir={tmp_path}",
        "--noplots",
    ])
    path = radius_scan.run(config, log=lambda s: None, progress=None)
    _assert_close_to_reference(records.load_arrays(path), _reference("quick"))


@pytest.mark.slow
def test_the_numbers_do_not_move_under_xlas_default_compiler(tmp_path, run_python, subprocess_env):
    """The tests compile with XLA:CPU at optimisation level 0 and its older emitters (conftest.py);
    real runs use XLA's defaults: the smoke scan run that way equals the same reference."""
    env = {**subprocess_env, "XLA_FLAGS": ""}
    args = ["-m", "experiments.radius_scan", SMOKE, f"--workdir={tmp_path}", "--noplots"]
    result = run_python(args, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    _assert_close_to_reference(records.load_arrays(tmp_path / "radius_scan" / "smoke"), _reference("smoke"))


def test_recorded_spectra_equal_a_dense_float64_route(smoke, with_options):
    """One point recomputed independently: theta and P from the recorded keys, then jax.hessian of the
    loss and the Gauss-Newton matrix J^T H_CE J from dense Jacobians, in float64. (Each route is one
    jitted function: op by op, its ~200 primitives compiled one at a time took longer than the scan.)"""
    derived = records.read_config(smoke["path"])["derived"]
    dataset = smoke["config"].data.load()
    index = np.asarray(derived["hessian_examples"])
    module = smoke["config"].model.build(dataset.num_classes)
    keys, ri, d, s = seeds.SeedKeys.from_seed(0), 1, 8, 1
    fm32 = flat.flat_model(module, (40,))
    metrics = {"none": smoke, "inv_std": with_options}

    @jax.jit
    def point_and_subspaces(k_init, radius, k_proj):  # float32, as the scan draws them
        theta32 = subspace.point_at_radius(
            k_init,
            radius,
            convention="xavier_rescaled",
            sample_fn=flat.sample_fn(module, (40,)),
            D=fm32.D,
            r_x=derived["r_x"],
        )
        base = projections.make("sparse", k_proj, D=fm32.D, d=d)
        return theta32, {
            m: projections.todense(layer_metric.apply(base, fm32, metric=m, renormalise=False))
            for m in metrics
        }

    theta32, P32 = point_and_subspaces(
        keys.init_keys(SEEDS)[s], jnp.float32(derived["radii"][ri]), keys.proj_keys(d, SEEDS)[s]
    )
    with jax.enable_x64(True):
        fm = flat.flat_model(module, (40,), jnp.float64)

        @jax.jit
        def dense(theta, x, y, p):
            H = jax.hessian(flat.loss_fn(fm, x, y))(theta)
            J = jax.jacfwd(lambda th: flat.logits(fm, th, x))(theta)  # [N, C, D]
            q = jax.nn.softmax(flat.logits(fm, theta, x))
            blocks = (
                jax.vmap(lambda q: jnp.diag(q) - jnp.outer(q, q))(q) / x.shape[0]
            )  # the softmax Hessians [N, C, C]
            G = jnp.einsum("nci,ncd,ndj->ij", J, blocks, J)
            return H, G, gauss_newton.make_gauss_newton_mv(fm, theta, x)(p)

        x, y = jnp.asarray(dataset.x_train[index], jnp.float64), jnp.asarray(dataset.y_train[index])
        P = {m: np.asarray(v, np.float64) for m, v in P32.items()}
        theta = jnp.asarray(theta32, jnp.float64)
        H, G, gn = map(np.asarray, dense(theta, x, y, jnp.asarray(P["inv_std"][:, 0])))
    for metric, run in metrics.items():
        arrays = records.load_arrays(run["path"])
        expected = np.linalg.eigvalsh(P[metric].T @ H @ P[metric])
        atol = 2e-4 * np.abs(expected).max()
        np.testing.assert_allclose(arrays[f"eigvals_d{d}"][ri, s], expected, rtol=2e-3, atol=atol)
        if metric != "none":
            np.testing.assert_allclose(
                arrays[f"gn_eigvals_d{d}"][ri, s],
                np.linalg.eigvalsh(P[metric].T @ G @ P[metric]),
                rtol=2e-3,
                atol=atol,
            )
    np.testing.assert_allclose(gn, G @ P["inv_std"][:, 0], rtol=1e-8, atol=1e-12)


def test_the_api_on_the_same_settings_gives_the_command_lines_arrays(smoke):
    config = smoke["config"]
    dataset = config.data.load()
    index = np.asarray(records.read_config(smoke["path"])["derived"]["hessian_examples"])
    result = gzone.radius_scan(
        config.model.build(10),
        dataset.x_train[index],
        dataset.y_train[index],
        log10_r2_over_rx2=RADII_REL,
        dims=DIMS,
        num_seeds=SEEDS,
        seed=0,
        log=None,
    )
    cli_arrays = records.load_arrays(smoke["path"])
    assert set(result.arrays) == set(cli_arrays)
    for key, value in cli_arrays.items():
        np.testing.assert_array_equal(result.arrays[key], value, err_msg=key)


def test_resume_computes_only_the_missing_units(smoke, tmp_path):
    copy = tmp_path / "radius_scan" / "smoke"
    shutil.copytree(smoke["path"], copy)
    metrics = copy / "metrics.jsonl"
    kept = metrics.read_text().splitlines(keepends=True)[:2]
    metrics.write_text("".join(kept) + kept[0][:10])  # as if killed in the middle of the third line
    os.remove(copy / "arrays.npz")
    run = _run(tmp_path, plots=False)
    assert f"resuming: {copy}  (2/{len(UNITS)} units done)" in run["progress"][0]
    assert len(run["progress"]) == 2 + len(UNITS) - 2  # only the missing units were computed
    got, expected = records.load_arrays(copy), records.load_arrays(smoke["path"])
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert sorted(line["unit"] for line in records.read_jsonl(copy)) == sorted(UNITS)


def test_a_temperature_axis_in_the_records_and_the_zone_map(smoke, tmp_path):
    """--temperatures: scalars [radius, d, temperature, seed], a unit per (radius, d, T), the zone map;
    T = 1 on the axis gives the scan without one (the same points and subspaces)."""
    run = _run(tmp_path, "--name=temps", "--temperatures=0.5,1", "--dims=8")
    config, arrays = records.read_config(run["path"]), records.load_arrays(run["path"])
    assert config["settings"]["temperatures"] == [0.5, 1.0]
    assert config["axes"]["frac_pos"] == ["radius", "d", "temperature", "seed"]
    assert arrays["frac_pos"].shape == (3, 1, 2, 2) and arrays["eigvals_d8"].shape == (3, 2, 2, 8)
    assert {line["unit"] for line in records.read_jsonl(run["path"])} == {
        f"r{ri:03d}_d8_t{ti:02d}" for ri in range(3) for ti in range(2)
    }
    assert Path(run["path"], "zone_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plain = records.load_arrays(smoke["path"])
    for key in (*schema.SCAN_SCALARS, "eigvals_d8"):
        got = arrays[key][:, 0, 1] if key != "eigvals_d8" else arrays[key][:, 1]
        want = plain[key][:, 1] if key != "eigvals_d8" else plain[key]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max(), err_msg=key)
    assert not np.allclose(arrays["eigvals_d8"][:, 0], arrays["eigvals_d8"][:, 1])  # T = 0.5 differs
    assert "temperature T = 0.5" in "\n".join(run["log"])


def test_options_are_recorded(with_options):
    config = records.read_config(with_options["path"])
    settings, derived = config["settings"], config["derived"]
    assert (
        settings["gn_split"] is True
        and settings["fullspace_probes"] == 4
        and settings["projection_metric"] == "inv_std"
    )
    assert derived["projection_metric"]["name"] == "inv_std" and derived["fullspace_order"] == 30
    arrays = records.load_arrays(with_options["path"])
    assert arrays["full_top"].shape == (3, 2, 2, 2) and np.all(
        arrays["full_top"][..., 0] >= arrays["full_top"][..., 1]
    )
    assert "full H Tr/F" in "\n".join(with_options["log"])


def test_an_old_run_folder_is_refused_with_one_line(smoke, tmp_path, capsys):
    copy = tmp_path / "radius_scan" / "smoke"
    shutil.copytree(smoke["path"], copy)
    config = json.loads((copy / "config.json").read_text())
    config.pop("schema")
    (copy / "config.json").write_text(json.dumps(config))
    code, out, err = _main([SMOKE, f"--workdir={tmp_path}"], capsys)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "record schema 1" in err and "--overwrite" in err


def _main(argv, capsys):
    from experiments import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(
            radius_scan.config_from_argv,
            lambda c: radius_scan.run(c, progress=None),
            groups=radius_scan.GROUPS,
            argv=argv,
        )
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err.strip()


BAD_INPUTS = {
    "unknown_dataset": (["--dataset=no_such_dataset"], "no_such_dataset"),
    "unknown_model": (["--model=resnet"], "--model"),
    "d_exceeds_D": (["--dims=4,100000"], "--dims"),
    "non_positive_radius": (["--log10_r2_over_rx2=", "--radii=1.0,0"], "--radii"),
    "negative_radius": (["--log10_r2_over_rx2=", "--radii=-2"], "--radii"),
    "both_radius_flags": (["--radii=2"], "--log10_r2_over_rx2"),
    "empty_dims": (["--dims="], "--dims"),
    "repeated_dims": (["--dims=4,4"], "--dims"),
    "not_an_integer": (["--num_seeds=two"], "num_seeds"),
    "zero_seeds": (["--num_seeds=0"], "--num_seeds"),
    "too_many_examples": (["--n_hessian=5000"], "--n_hessian"),
    "missing_data_folder": (["--data_dir={tmp}/absent"], "--data_dir"),
    "unknown_flag_in_flagfile": (["--flagfile={tmp}/bad.flags"], "nosuchflag"),
    "missing_flagfile": (["--flagfile={tmp}/absent.flags"], "absent.flags"),
    "positional_argument": (["extra"], "positional"),
    "one_probe": (["--fullspace_probes=1"], "--fullspace_probes"),
    "order_below_2k": (["--fullspace_top_k=4", "--fullspace_order=6"], "--fullspace_order"),
    "order_above_D": (["--fullspace_top_k=2", "--fullspace_order=100000"], "--fullspace_order"),
    "unknown_metric": (["--projection_metric=fisher"], "--projection_metric"),
    "factory_not_importable": (["--model=no_such_package_q:make"], "--model"),
    "factory_not_module_path": (["--model=:make"], "--model"),
    "bias_switch_of_resnet": (["--model=resnet20", "--nouse_bias"], "--use_bias"),
    "zero_temperature": (["--temperatures=1,0"], "--temperatures"),
    "temperature_and_axis": (["--temperatures=1,2", "--temperature=2"], "--temperature"),
    "unknown_loss": (["--loss=hinge"], "--loss"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_run_folder(case, tmp_path, capsys):
    (tmp_path / "bad.flags").write_text("--dims=4\n--nosuchflag=1\n")
    flags, expected = BAD_INPUTS[case]
    workdir = tmp_path / "work"
    code, out, err = _main([SMOKE, f"--workdir={workdir}", *(f.format(tmp=tmp_path) for f in flags)], capsys)
    assert code == 2 and out == "", err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert not workdir.exists()


def test_other_settings_in_the_same_folder_are_refused(with_options, capsys):
    workdir = Path(with_options["path"]).parents[1]
    code, out, err = _main([SMOKE, f"--workdir={workdir}", "--name=opts", "--projection_metric=std"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "projection_metric" in err and "gn_split" in err, err
