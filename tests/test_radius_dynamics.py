"""Radius dynamics end to end, in-process: the command line's records and analysis, the numbers of the
committed reference, the API on the same settings, resume (in-process, and after a SIGKILL inside a
unit's training), one-line errors."""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references
import stops
from background import environment

import gzone
from experiments import cli, radius_dynamics
from gzone import flat, seeds, subspace, train
from gzone.analysis import dynamics
from gzone.runs import records, schema

REPO = Path(__file__).resolve().parents[1]
FLAGFILE = REPO / "experiments" / "flagfiles" / "radius_dynamics_smoke.flags"
SMOKE = f"--flagfile={FLAGFILE}"
DATA = REPO / "tests" / "data"
EXPERIMENT = "radius_dynamics"
STEPS = 16  # 256 // 16 steps per epoch, record_every 4: 4 records per epoch
SIZES = {"mode": 2, "r0": 3, "seed": 2, "epoch": 2, "record": 4, "layer": 2}
R0_OVER_RX = (0.1, 1.0, 10.0)
MODES = ("free", "fixed")
UNITS = {f"{m}_r0{i:02d}" for m in MODES for i in range(3)}
STOP_UNIT = "free_r001"  # the kill lands after this unit's first epoch (one unit done before it)


def _run(workdir, *flags, plots=True):
    lines, progress = [], []
    argv = [SMOKE, f"--workdir={workdir}", *flags, *([] if plots else ["--noplots"])]
    config = radius_dynamics.config_from_argv(argv)
    path = radius_dynamics.run(config, log=lines.append, progress=progress.append)
    return {"path": path, "log": lines, "progress": progress, "config": config}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("smoke"))


def _read(path):
    analysis = json.loads(Path(path, "analysis.json").read_text())
    return records.read_config(path), records.load_arrays(path), analysis


def _assert_equal_runs(path, expected_path):
    got, expected = records.load_arrays(path), records.load_arrays(expected_path)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)  # bitwise
    assert _read(path)[2] == _read(expected_path)[2]


def check_semantics(config, arrays, analysis, sizes):
    """What the records must say whatever the numbers (ported from the old smoke tests)."""
    r_x = config["derived"]["r_x"]
    assert analysis["r_x"] == pytest.approx(r_x, rel=1e-12)
    np.testing.assert_allclose(arrays["r0"], r_x * np.asarray(R0_OVER_RX), rtol=1e-12)
    R = sizes["record"]
    expected_steps = np.arange(sizes["epoch"])[:, None] * STEPS + (np.arange(R) + 1) * (STEPS // R)
    np.testing.assert_array_equal(arrays["step"], expected_steps)
    r0 = arrays["r0"][None, :, None, None, None]
    relative = arrays["radius"] / r0 - 1  # [mode, r0, seed, epoch, record]
    assert np.max(np.abs(relative[1])) < 1e-5  # fixed: |theta| stays at r0
    assert np.max(np.abs(relative[0, 0])) > 1e-2  # free from 0.1 r_X: the radius grows
    np.testing.assert_allclose(np.sqrt(np.sum(arrays["layer_norms"] ** 2, -1)), arrays["radius"], rtol=1e-5)
    assert np.all(arrays["update_sq"] > 0) and np.all(np.isfinite(arrays["train_loss"]))
    assert np.all((arrays["test_accuracy"] >= 0) & (arrays["test_accuracy"] <= 1))

    rows = analysis["rows"]
    assert [(row["mode"], row["r0_over_rx"]) for row in rows] == [(m, r) for m in MODES for r in R0_OVER_RX]
    steps = arrays["step"].reshape(-1)
    for mi, i, row in ((mi, i, rows[mi * 3 + i]) for mi in range(2) for i in range(3)):
        radius = arrays["radius"][mi, i].reshape(sizes["seed"], -1)
        if row["mode"] == "free" and row["r0_over_rx"] < 1:
            fit = row["alpha"]
            assert np.isfinite(fit["alpha"]) and fit["ci_low"] <= fit["alpha"] <= fit["ci_high"]
            assert len(row["alpha_per_seed"]) == sizes["seed"] and row["D_sigma2"] > 0
            r0_sq = arrays["r0"][i] ** 2
            again = dynamics.fit_power_law(steps, np.mean(radius**2, axis=0) - r0_sq)
            assert fit["alpha"] == pytest.approx(again.alpha, rel=1e-9)  # the analysis is of these arrays
            seed0 = dynamics.fit_power_law(steps, radius[0] ** 2 - r0_sq)
            assert row["alpha_per_seed"][0] == pytest.approx(seed0.alpha, rel=1e-9)
            # the random walk from the recorded update sizes: r0^2 + sum over steps of |dtheta|^2
            upd = arrays["update_sq"][mi, i].reshape(sizes["seed"], -1).mean(axis=0)
            walk = np.sum(upd * (STEPS // R))  # r^2 - r0^2 of the walk
            measured = np.mean(radius[:, -1] ** 2) - r0_sq
            assert row["rw_ratio_cumulative"] == pytest.approx(measured / walk, rel=1e-6)
            # the walk of Adam's per-coordinate step lr: r^2 - r0^2 = D lr^2 t at the last step t
            D, lr = config["derived"]["D"], config["settings"]["lr"]
            assert row["D_lr2"] == pytest.approx(D * lr**2, rel=1e-12)
            assert row["rw_lr_ratio"] == pytest.approx(measured / (D * lr**2 * steps[-1]), rel=1e-6)
        else:
            assert "alpha" not in row, row
        if row["mode"] == "fixed":
            assert row["final_radius_over_rx"] == pytest.approx(row["r0_over_rx"], rel=1e-5)
        assert row["final_radius_over_rx"] == pytest.approx(np.mean(radius[:, -1]) / r_x, rel=1e-12)
        final = arrays["test_accuracy"][mi, i, :, -1]
        np.testing.assert_allclose(row["final_test_accuracy_seeds"], final, rtol=1e-12)


def test_records_and_analysis_are_complete_and_consistent(smoke):
    path = smoke["path"]
    config, arrays, analysis = _read(path)
    assert config["status"] == "complete" and config["experiment"] == EXPERIMENT
    assert config["schema"] == schema.VERSION
    settings, derived = config["settings"], config["derived"]
    assert settings["epochs"] == 2 and settings["radius_modes"] == list(MODES) and settings["num_seeds"] == 2
    assert settings["r0_over_rx"] == list(R0_OVER_RX) and settings["batch_size"] == 16
    assert settings["lr"] == 0.003 and "epochs_per_call" not in settings  # how, not what
    assert settings["data"]["n_train"] == 256 and settings["data"]["n_test"] == 128
    assert settings["model"]["class"] == "gzone.models.mlp.MLP" and settings["seed_mode"] in ("vmap", "map")
    assert derived["D"] == 40 * 16 + 16 + 16 * 10 + 10 and derived["mode_names"] == list(MODES)
    assert derived["dataset"]["name"] == "mnist1d" and derived["steps_per_epoch"] == STEPS
    assert config["axes"] == schema.radius_dynamics_axes() and set(arrays) == set(config["axes"])
    for key, axes in config["axes"].items():
        assert arrays[key].shape == tuple(SIZES[a] for a in axes), (key, axes, arrays[key].shape)
    lines = records.read_jsonl(path)
    assert sorted(line["unit"] for line in lines) == sorted(UNITS)  # each unit exactly once
    for line in lines:
        mi, i = MODES.index(line["mode"]), R0_OVER_RX.index(line["r0_over_rx"])
        assert line["final_test_accuracy"] == pytest.approx(arrays["test_accuracy"][mi, i, :, -1].tolist())
        assert line["final_radius"] == pytest.approx(arrays["radius"][mi, i, :, -1, -1].tolist())
    assert not glob.glob(os.path.join(path, "units", "*.ckpt.npz"))  # checkpoints dropped when done
    check_semantics(config, arrays, analysis, SIZES)
    assert Path(path, "radius_dynamics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    flags_txt = Path(path, "flags.txt").read_text()
    assert "--r0_over_rx=0.1,1,10" in flags_txt and "--n_train=256" in flags_txt
    assert "alpha [95% CI]" in "\n".join(smoke["log"]) and smoke["log"][-1] == f"records: {path}"
    assert len([p for p in smoke["progress"] if "] unit " in p]) == len(UNITS)
    assert "ETA" in smoke["progress"][-1]


@pytest.mark.slow  # a compile per mode (seconds)
def test_a_recorded_run_equals_the_step_by_step_route_from_its_key_streams(smoke):
    """Seed 1 from 0.1 r_X, free and fixed, retrained step by step (`train.make_step_runner`, not the
    epoch scan): its point from fold_in(k_init, 1), its batches from fold_in(k_train, 1)
    (`seeds.SeedKeys`)."""
    arrays, r_x = records.load_arrays(smoke["path"]), records.read_config(smoke["path"])["derived"]["r_x"]
    dataset = smoke["config"].data.load()
    module = smoke["config"].model.build(dataset.num_classes)
    fm, keys, s = flat.flat_model(module, (40,)), seeds.SeedKeys.from_seed(0), 1
    data = train.Data(*map(jnp.asarray, (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)))
    theta0 = subspace.point_at_radius(keys.init_keys(2)[s], jnp.float32(arrays["r0"][0]),
                                      convention="xavier_rescaled", sample_fn=flat.sample_fn(module, (40,)),
                                      D=fm.D, r_x=r_x)
    for mi, fixed in enumerate((False, True)):
        spec = train.spec_for(256, optimizer="adam", lr=0.003, batch_size=16, record_every=4,
                              fixed_radius=fixed)
        run_steps = jax.jit(train.make_step_runner(fm, spec), static_argnums=4)
        state0 = train.make_trainer(fm, spec).init(theta0)
        state, per_step = run_steps(state0, keys.train_keys(2)[s], data, None, 2 * STEPS)
        block_loss = np.asarray(per_step["loss"]).reshape(2, -1, 4).mean(-1)  # [epoch, record]
        np.testing.assert_allclose(arrays["train_loss"][mi, 0, s], block_loss, rtol=1e-4)
        radius = float(jnp.linalg.norm(state.params))
        assert arrays["radius"][mi, 0, s, -1, -1] == pytest.approx(radius, rel=1e-5)
        _, accuracy = train.evaluate(fm, state.params, data.x_test, data.y_test)
        assert arrays["test_accuracy"][mi, 0, s, -1] == pytest.approx(float(accuracy), abs=1.5 / 128)


def test_the_numbers_do_not_move(smoke):
    """The arrays and analysis equal those the code wrote before the library layout (tests/data/README.md),
    to float rounding (bitwise on the machine that wrote them)."""
    arrays = records.load_arrays(smoke["path"])
    with np.load(DATA / "radius_dynamics_smoke_reference.npz") as archive:
        reference = {k: archive[k] for k in archive.files}
    assert set(arrays) == set(reference)
    for key, expected in reference.items():
        assert arrays[key].dtype == expected.dtype, key
        references.assert_close(arrays[key], expected, key)
    expected = json.loads((DATA / "radius_dynamics_smoke_analysis_reference.json").read_text())
    got = _read(smoke["path"])[2]
    assert got["r_x"] == pytest.approx(expected["r_x"], rel=1e-12)
    assert got["reference_radius"] == "xavier" and got["r_x_xavier"] == got["r_x"]  # the default r_X
    assert len(got["rows"]) == len(expected["rows"])
    for row, want in zip(got["rows"], expected["rows"]):
        # added since the reference: the Adam-lr random walk, on the rows with an alpha fit
        assert set(row) - set(want) == ({"D_lr2", "rw_lr_ratio"} if "alpha" in want else set())
        row = {k: v for k, v in row.items() if k in want}
        np.testing.assert_allclose(_numbers(row), _numbers(want), rtol=1e-5, err_msg=str(want))
    config = records.read_config(smoke["path"])
    settings, derived = config["settings"], config["derived"]
    assert "reference_radius" not in settings and settings["convention"] == "xavier_rescaled"  # a default
    assert derived["r_ref"] == derived["r_x"] and derived["dataset"]["scaling"] == "standardise"


def _numbers(row: dict) -> list[float]:
    out = []
    for key in sorted(row):
        value = row[key]
        if isinstance(value, dict):
            out.extend(_numbers(value))
        elif isinstance(value, list):
            out.extend(value)
        elif not isinstance(value, str):
            out.append(value)
    return out


def test_the_api_on_the_same_settings_gives_the_command_lines_arrays(smoke, tmp_path):
    dataset = smoke["config"].data.load()
    result = gzone.radius_dynamics(smoke["config"].model.build(10), (dataset.x_train, dataset.y_train),
                                   (dataset.x_test, dataset.y_test), r0_over_rx=R0_OVER_RX, num_seeds=2,
                                   epochs=2, batch_size=16, record_every=4, lr=0.003, log=None)
    assert isinstance(result, gzone.RadiusDynamicsResult) and result.path is None and result.modes == MODES
    cli_arrays = records.load_arrays(smoke["path"])
    assert set(result.arrays) == set(cli_arrays)
    for key, value in cli_arrays.items():
        np.testing.assert_array_equal(result.arrays[key], value, err_msg=key)
    assert result.analysis == _read(smoke["path"])[2]
    table = result.table().splitlines()
    assert table[0].startswith("mode") and "alpha" in table[0] and len(table) == 2 + len(UNITS)
    figures = result.plot(str(tmp_path))  # from the records in memory (no dataset description there)
    assert [Path(f).name for f in figures] == ["radius_dynamics.png"]


def test_resume_computes_only_the_missing_units(smoke, tmp_path):
    copy = tmp_path / EXPERIMENT / "smoke"
    shutil.copytree(smoke["path"], copy)
    metrics = copy / "metrics.jsonl"
    kept = metrics.read_text().splitlines(keepends=True)[:2]
    metrics.write_text("".join(kept) + kept[0][:10])  # as if killed in the middle of the third line
    for name in ("arrays.npz", "analysis.json"):
        os.remove(copy / name)
    run = _run(tmp_path, plots=False)
    assert f"resuming: {copy}  (2/{len(UNITS)} units done)" in run["progress"][0]
    assert len([p for p in run["progress"] if "] unit " in p]) == len(UNITS) - 2  # only the missing units
    _assert_equal_runs(copy, smoke["path"])


def test_sigkill_inside_a_unit_then_rerun_resumes_from_its_checkpoint(smoke, tmp_path):
    """A subprocess killed right after the epoch-1 checkpoint of the second unit; the rerun (in-process)
    skips the finished unit, continues the stopped one at epoch 2, and ends with the uninterrupted arrays."""
    env = {**environment(jax.config.jax_compilation_cache_dir), "JAX_NUMPY_RANK_PROMOTION": "raise"}
    args = ["-m", "experiments.radius_dynamics", SMOKE, f"--workdir={tmp_path}", "--noplots"]
    stops.kill_at_checkpoint(args, unit=STOP_UNIT, folder=str(tmp_path / "log_killed"), env=env)
    path = tmp_path / EXPERIMENT / "smoke"
    # What the kill left: one completed unit, the stopped unit's checkpoint after epoch 1, no arrays.npz.
    assert [line["unit"] for line in records.read_jsonl(path)] == ["free_r000"]
    with np.load(path / "units" / f"{STOP_UNIT}.ckpt.npz") as ckpt:
        assert int(ckpt["epoch"]) == 1
        assert ckpt["hist_radius"].shape == (2, 1, 4)  # [seed, epochs so far, record]
    assert not (path / "arrays.npz").exists() and not (path / "analysis.json").exists()
    assert records.read_config(path)["status"] == "running"

    run = _run(tmp_path, plots=False)
    assert f"resuming: {path}  (1/{len(UNITS)} units done)" in run["progress"][0]
    assert f"  {STOP_UNIT}: resuming after epoch 1" in run["progress"]
    assert not any("unit 1/6" in p for p in run["progress"])  # the completed unit was not trained again
    assert not glob.glob(str(path / "units" / "*.ckpt.npz"))
    _assert_equal_runs(path, smoke["path"])


def _main(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(radius_dynamics.config_from_argv, lambda c: radius_dynamics.run(c, progress=None),
                 groups=radius_dynamics.GROUPS, argv=argv)
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err.strip()


BAD_INPUTS = {
    "negative_r0": (["--r0_over_rx=-1"], "--r0_over_rx"),
    "zero_r0": (["--r0_over_rx=0,1"], "--r0_over_rx"),
    "r0_not_a_number": (["--r0_over_rx=a"], "--r0_over_rx"),
    "repeated_r0": (["--r0_over_rx=1,1"], "--r0_over_rx"),
    "unknown_radius_mode": (["--radius_modes=loose"], "--radius_modes"),
    "zero_batch": (["--batch_size=0"], "--batch_size"),
    "zero_lr": (["--lr=0"], "--lr"),
    "negative_lr": (["--lr=-0.1"], "--lr"),
    "zero_epochs": (["--epochs=0"], "--epochs"),
    "zero_seeds": (["--num_seeds=0"], "--num_seeds"),
    "zero_width": (["--widths=0"], "--widths"),
    "unknown_activation": (["--activation=sigmoid"], "activation"),
    "batch_above_n_train": (["--batch_size=1000"], "--batch_size"),  # known after loading: n_train = 256
    "unknown_dataset": (["--dataset=no_such_dataset"], "no_such_dataset"),
    "missing_data_folder": (["--data_dir={tmp}/absent"], "--data_dir"),
    "positional_argument": (["extra"], "positional"),
    "unknown_reference_radius": (["--reference_radius=lecun"], "--reference_radius"),
    "unknown_input_scaling": (["--input_scaling=minmax"], "--input_scaling"),
    "unit_range_of_float_inputs": (["--input_scaling=unit_range"], "--input_scaling"),  # mnist1d: floats
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_run_folder(case, tmp_path, capsys):
    flags, expected = BAD_INPUTS[case]
    workdir = tmp_path / "work"
    code, out, err = _main([SMOKE, f"--workdir={workdir}", *(f.format(tmp=tmp_path) for f in flags)], capsys)
    assert code == 2 and out == "", err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert not workdir.exists()


def test_other_settings_in_the_same_folder_are_refused(smoke, capsys):
    workdir = Path(smoke["path"]).parents[1]
    code, out, err = _main([SMOKE, f"--workdir={workdir}", "--lr=0.01"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "lr" in err and "--overwrite" in err, err



def test_full_batch_gradient_descent_with_the_learning_rate_scaled_by_the_radius(x64):
    """Vysogorets et al.'s protocol: every step is lr (r0 / r_X)^-p times the gradient on all training
    examples. The first step's |theta_1 - theta_0|^2 equals lr_i^2 |grad L(theta_0)|^2, with theta_0
    and the full-batch gradient computed here independently."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((24, 6))
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0)
    module = gzone.models.MLP(widths=(5,), num_classes=3, use_bias=False)
    alphas, lr, p = (0.5, 2.0), 0.1, 1.0
    result = gzone.radius_dynamics(module, (x, y), (x[:8], y[:8]), r0_over_rx=alphas, radius_modes=["free"],
                                   full_batch=True, optimizer="sgd", lr=lr, lr_radius_power=p, epochs=2,
                                   record_every=1, num_seeds=1, dtype="float64", log=None)
    assert result.derived["batch_size"] == 24 and result.derived["steps_per_epoch"] == 1
    np.testing.assert_allclose(result.derived["lr_per_r0"], [lr * a**-p for a in alphas], rtol=1e-15)
    fm = flat.flat_model(module, (6,), jnp.float64)
    k_init = seeds.SeedKeys.from_seed(0).init_keys(1)[0]
    loss = flat.loss_fn(fm, jnp.asarray(x), jnp.asarray(y))

    @jax.jit  # one program for every radius (op by op, each operation would compile on its own)
    def grad_sq(radius):
        theta0 = subspace.point_at_radius(
            k_init, radius, convention="xavier_rescaled", D=fm.D, r_x=result.r_x,
            sample_fn=flat.sample_fn(module, (6,), dtype=jnp.float64), dtype=jnp.float64)
        grad = jax.grad(loss)(theta0)
        return jnp.vdot(grad, grad)

    for i, alpha in enumerate(alphas):
        step_sq = result.arrays["update_sq"][0, i, 0, 0, 0]  # [mode, r0, seed, epoch, record]
        expected = (lr * alpha**-p) ** 2 * float(grad_sq(jnp.float64(alpha * result.r_x)))
        assert step_sq == pytest.approx(expected, rel=1e-10)


def test_the_poster_flagfile_is_the_cpu_flagfile_with_the_posters_protocol():
    """cifar10_chang_poster_cpu.flags differs from cifar10_chang_cpu.flags only in the three protocol
    choices (isotropic points, units r_X, inputs in [-1, 1]) and the run name."""
    flagfiles = REPO / "experiments" / "flagfiles"
    xavier, poster = (radius_dynamics.config_from_argv([f"--flagfile={flagfiles / name}"])
                      for name in ("cifar10_chang_cpu.flags", "cifar10_chang_poster_cpu.flags"))
    assert poster.dynamics == xavier.dynamics.replace(convention="isotropic", reference_radius="units")
    assert xavier.dynamics.reference_radius == "xavier" and xavier.data.input_scaling == "standardise"
    assert poster.data == xavier.data.replace(input_scaling="unit_range")
    assert poster.model == xavier.model and poster.output.name == "cifar10_chang_poster_cpu"


def test_isotropic_points_are_exactly_at_r0_and_isotropic_biases_included(x64):
    """--convention=isotropic (the poster's initial weights): theta = r0 g / |g|, g ~ N(0, I_D) over all D
    parameters. |theta| = r0 to rounding; the bias coordinates are non-zero (zero under xavier_rescaled);
    the direction is uniform on the sphere: the share |u_B|^2 of any k coordinates, the biases or a
    random permutation's k, is Beta(k/2, (D-k)/2) distributed (Kolmogorov-Smirnov), E u = 0 and
    E u u^T = I / D."""
    from scipy import stats

    module = gzone.models.MLP(widths=(6,), num_classes=3)
    fm = flat.flat_model(module, (4,), jnp.float64)
    D, r0, n = fm.D, 3.7, 4000
    bias = np.concatenate([np.arange(s.start, s.start + s.size) for s in fm.segments if "bias" in s.name])
    assert D == 4 * 6 + 6 + 6 * 3 + 3 and bias.size == 9
    sample = flat.sample_fn(module, (4,), dtype=jnp.float64)
    r_x = gzone.models.xavier_radius(module, (4,))

    def points(convention):
        keys = jax.random.split(jax.random.key(11), n)
        return np.asarray(jax.vmap(lambda k: subspace.point_at_radius(
            k, jnp.float64(r0), convention=convention, sample_fn=sample, D=D, r_x=r_x, dtype=jnp.float64
        ))(keys))

    theta = points("isotropic")
    np.testing.assert_allclose(np.linalg.norm(theta, axis=1), r0, rtol=1e-14)
    assert np.all(theta[:, bias] != 0)
    assert np.all(points("xavier_rescaled")[:, bias] == 0)  # the default convention has no bias part
    u = theta / r0
    block = np.random.default_rng(0).permutation(D)[: bias.size]
    beta = stats.beta(bias.size / 2, (D - bias.size) / 2)
    for coords in (bias, block):
        share = np.sum(u[:, coords] ** 2, axis=1)
        assert stats.kstest(share, beta.cdf).pvalue > 1e-3
    assert np.max(np.abs(u.mean(axis=0))) < 5 / np.sqrt(D * n)  # each u_i has std 1/sqrt(D)
    cov = u.T @ u / n
    np.testing.assert_allclose(np.diag(cov), 1 / D, rtol=5 * np.sqrt(2 / n))  # var(u_i^2) ~ 2 / D^2
    assert np.max(np.abs(cov - np.diag(np.diag(cov)))) < 5 / (D * np.sqrt(n))


def test_the_posters_protocol_starts_isotropic_at_r0_times_the_units_radius(x64):
    """reference_radius=units: r0 = (r0 / r_X) sqrt(units after the input) = (r0 / r_X) sqrt(5 + 3),
    the analysis and the reported radii in that r_X, the Xavier radius kept beside it; the first
    full-batch SGD step is lr^2 |grad L(theta_0)|^2 at the isotropic point of that radius."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((20, 10))
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0)
    module = gzone.models.MLP(widths=(5,), num_classes=3)
    alphas, lr = (0.5, 2.0), 0.05
    result = gzone.radius_dynamics(module, (x, y), (x[:8], y[:8]), r0_over_rx=alphas, radius_modes=["free"],
                                   convention="isotropic", reference_radius="units", full_batch=True,
                                   optimizer="sgd", lr=lr, epochs=2, record_every=1, num_seeds=1,
                                   dtype="float64", log=None)
    r_units, r_xavier = np.sqrt(5 + 3), gzone.models.xavier_radius(module, (10,))
    assert abs(r_units - r_xavier) > 0.1  # the two references differ here
    np.testing.assert_allclose(result.arrays["r0"], r_units * np.asarray(alphas), rtol=1e-15)
    assert result.derived["r_ref"] == pytest.approx(r_units, rel=1e-15)
    assert result.derived["r_x"] == pytest.approx(r_xavier, rel=1e-15)
    assert result.settings["reference_radius"] == "units"
    assert result.analysis["r_x"] == pytest.approx(r_units, rel=1e-15)
    assert result.analysis["reference_radius"] == "units"
    assert result.analysis["r_x_xavier"] == pytest.approx(r_xavier, rel=1e-15)
    fm = flat.flat_model(module, (10,), jnp.float64)
    k_init = seeds.SeedKeys.from_seed(0).init_keys(1)[0]
    for i, alpha in enumerate(alphas):
        row = result.analysis["rows"][i]
        radius = result.arrays["radius"][0, i, 0, -1, -1]
        assert row["final_radius_over_rx"] == pytest.approx(radius / r_units, rel=1e-12)
        assert ("alpha" in row) == (alpha < 1) and "rw_lr_ratio" not in row  # sgd: no Adam-lr walk
        g = jax.random.normal(k_init, (fm.D,), jnp.float64)
        theta0 = alpha * r_units * g / jnp.linalg.norm(g)
        grad = jax.grad(flat.loss_fn(fm, jnp.asarray(x), jnp.asarray(y)))(theta0)
        step_sq = result.arrays["update_sq"][0, i, 0, 0, 0]
        assert step_sq == pytest.approx(lr**2 * float(jnp.vdot(grad, grad)), rel=1e-10)


def test_adams_first_step_moves_every_coordinate_by_lr(x64):
    """The premise of the lr random walk: Adam's first update is -lr g / (|g| + eps) per coordinate
    (bias-corrected moments m = g, v = g^2), so |dtheta_1|^2 = D lr^2 up to eps / |g| (tanh: no
    coordinate has a zero gradient), and the analysis compares with r0^2 + D lr^2 t."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 4))
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0)
    module = gzone.models.MLP(widths=(6,), num_classes=3, activation="tanh")
    lr = 0.01
    result = gzone.radius_dynamics(module, (x, y), (x[:8], y[:8]), r0_over_rx=(0.3,), radius_modes=["free"],
                                   convention="isotropic", full_batch=True, optimizer="adam", lr=lr,
                                   epochs=3, record_every=1, num_seeds=1, dtype="float64", log=None)
    D = result.derived["D"]
    assert result.arrays["update_sq"][0, 0, 0, 0, 0] == pytest.approx(D * lr**2, rel=1e-4)
    row, r0 = result.analysis["rows"][0], result.arrays["r0"][0]
    steps = result.arrays["step"].reshape(-1)
    np.testing.assert_array_equal(steps, [1, 2, 3])
    np.testing.assert_allclose(dynamics.adam_walk_r2(r0, steps, D=D, lr=lr), r0**2 + D * lr**2 * steps,
                               rtol=1e-15)
    measured = result.arrays["radius"][0, 0, 0, -1, -1] ** 2 - r0**2
    assert row["D_lr2"] == pytest.approx(D * lr**2, rel=1e-15)
    assert row["rw_lr_ratio"] == pytest.approx(measured / (3 * D * lr**2), rel=1e-12)
