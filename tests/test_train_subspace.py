"""Subspace training end to end, in-process: the command line's records, the numbers of the committed
reference, the API on the same settings, resume (in-process; after a SIGKILL inside a unit, slow),
one-line errors.

The fast tests run the smoke flagfile at d = 4 only (2 compiled (mode, d) programs instead of 4) and
compare with the d = 4 slice of the reference, which the flagfile as shipped wrote (the units of one
d do not depend on the other dimensions of the run); a slow test runs it as shipped."""

from __future__ import annotations

import glob
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
from experiments import cli, train_subspace
from gzone import flat, projections, seeds, subspace, train
from gzone.runs import records, schema

REPO = Path(__file__).resolve().parents[1]
SMOKE = f"--flagfile={REPO}/experiments/flagfiles/train_subspace_smoke.flags"
DATA = REPO / "tests" / "data"
EXPERIMENT = "train_subspace"
FAST = ["--dims=4"]
STEPS = 8  # 256 // 32 steps per epoch, record_every 4: 2 records per epoch
SIZES = {"mode": 2, "d": 1, "radius": 3, "seed": 2, "epoch": 2, "record": 2}
MODES = ("hyperplane", "hypersphere")
STOP_UNIT = "hyperplane_d4_r001"  # the kill lands after this unit's first epoch (one unit done before it)


def _run(workdir, *flags, plots=True):
    lines, progress = [], []
    argv = [SMOKE, f"--workdir={workdir}", *flags, *([] if plots else ["--noplots"])]
    config = train_subspace.config_from_argv(argv)
    path = train_subspace.run(config, log=lines.append, progress=progress.append)
    return {"path": path, "log": lines, "progress": progress, "config": config}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("smoke"), *FAST)


def _units(dims, radii=3):
    return {f"{m}_d{d}_r{ri:03d}" for m in MODES for d in dims for ri in range(radii)}


def check_records(path, sizes, *, dims):
    """config.json complete, one metrics line per unit, arrays shaped by their named axes, figure."""
    config = records.read_config(path)
    assert config["status"] == "complete" and config["experiment"] == EXPERIMENT
    assert config["schema"] == schema.VERSION and config["axes"] == schema.train_subspace_axes()
    arrays = records.load_arrays(path)
    assert set(arrays) == set(config["axes"])
    for key, axes in config["axes"].items():
        assert arrays[key].shape == tuple(sizes[a] for a in axes), (key, axes, arrays[key].shape)
    lines = records.read_jsonl(path)
    assert sorted(line["unit"] for line in lines) == sorted(_units(dims))  # each unit exactly once
    for line in lines:
        mi, di = MODES.index(line["mode"]), list(dims).index(line["d"])
        assert line["radius"] == pytest.approx(arrays["radii"][line["radius_index"]], rel=1e-12)
        assert line["final_test_accuracy"] == pytest.approx(
            arrays["final_test_accuracy"][mi, di, line["radius_index"]].tolist())
    assert not glob.glob(os.path.join(path, "units", "*.ckpt.npz"))  # checkpoints dropped when done
    assert Path(path, "subspace_training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    flags_txt = Path(path, "flags.txt").read_text()
    assert "--n_train=256" in flags_txt and f"--dims={','.join(map(str, dims))}" in flags_txt
    return config, arrays


def check_semantics(arrays, sizes):
    """What the records must say whatever the numbers (ported from the old smoke tests)."""
    R = sizes["record"]
    np.testing.assert_array_equal(arrays["step"], np.arange(sizes["epoch"])[:, None] * STEPS
                                  + (np.arange(R) + 1) * (STEPS // R))
    np.testing.assert_allclose(arrays["log10_r2_over_rx2"], [-2.0, 0.0, 2.0], atol=1e-12)
    radii = arrays["radii"]
    np.testing.assert_allclose(radii[1:] / radii[:-1], 10.0, rtol=1e-12)  # r^2 grows 100x per step
    curve = arrays["radius_curve"]  # [mode, d, radius, seed, epoch, record]
    relative = curve / radii[None, None, :, None, None, None] - 1
    assert np.max(np.abs(relative[1])) < 1e-5  # hypersphere: |theta| = r exactly
    assert np.max(np.abs(relative[0])) > 1e-3  # hyperplane: the radius moves
    np.testing.assert_array_equal(arrays["final_test_accuracy"], arrays["test_accuracy"][..., -1])
    np.testing.assert_array_equal(arrays["best_test_accuracy"], arrays["test_accuracy"].max(-1))
    np.testing.assert_array_equal(arrays["final_train_loss"], arrays["train_loss"][..., -1, -1])
    assert np.all((arrays["test_accuracy"] >= 0) & (arrays["test_accuracy"] <= 1))
    assert np.all(np.isfinite(arrays["train_loss"]))


def _reference(dims=(4,)):
    """The reference arrays (the smoke flagfile, d = 4, 8) restricted to `dims`."""
    with np.load(DATA / "train_subspace_smoke_reference.npz") as archive:
        reference = {k: archive[k] for k in archive.files}
    index = [list(reference["dims"]).index(d) for d in dims]
    axes = schema.train_subspace_axes()
    return {k: np.take(v, index, axis=axes[k].index("d")) if "d" in axes[k] else v
            for k, v in reference.items()}


def _assert_equal_arrays(arrays, expected):
    assert set(arrays) == set(expected)
    for key, value in expected.items():
        assert arrays[key].dtype == value.dtype, key
        np.testing.assert_array_equal(arrays[key], value, err_msg=key)


def test_records_are_complete_and_consistent(smoke):
    config, arrays = check_records(smoke["path"], SIZES, dims=(4,))
    settings, derived = config["settings"], config["derived"]
    assert settings["epochs"] == 2 and settings["dims"] == [4] and settings["modes"] == list(MODES)
    assert settings["lr"] == 0.05 and settings["batch_size"] == 32 and settings["num_seeds"] == 2
    assert settings["log10_r2_over_rx2"] == [-2.0, 0.0, 2.0] and settings["radii"] is None
    assert settings["data"]["n_train"] == 256 and settings["data"]["n_test"] == 128
    assert settings["model"]["class"] == "gzone.models.mlp.MLP" and settings["seed_mode"] in ("vmap", "map")
    assert derived["D"] == 40 * 16 + 16 + 16 * 10 + 10 and derived["mode_names"] == list(MODES)
    assert derived["dataset"]["name"] == "mnist1d" and derived["steps_per_epoch"] == STEPS
    check_semantics(arrays, SIZES)
    assert "final test accuracy" in "\n".join(smoke["log"])
    assert smoke["log"][-1] == f"records: {smoke['path']}"
    assert len([p for p in smoke["progress"] if "] unit " in p]) == 6 and "ETA" in smoke["progress"][-1]


@pytest.mark.slow  # a compile per mode (seconds)
def test_a_recorded_run_equals_the_step_by_step_route_from_its_key_streams(smoke):
    """Seed 0 at r = r_X, d = 4, in both modes, retrained step by step (`train.make_step_runner`, not the
    epoch scan): its point from fold_in(k_init, 0), its subspace from fold_in(fold_in(k_proj, 4), 0), its
    batches from fold_in(k_train, 0) (`seeds.SeedKeys`)."""
    arrays, r_x = records.load_arrays(smoke["path"]), records.read_config(smoke["path"])["derived"]["r_x"]
    dataset = smoke["config"].data.load()
    module = smoke["config"].model.build(dataset.num_classes)
    fm, keys, s, ri, d = flat.flat_model(module, (40,)), seeds.SeedKeys.from_seed(0), 0, 1, 4
    data = train.Data(*map(jnp.asarray, (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)))
    anchor = subspace.point_at_radius(keys.init_keys(2)[s], jnp.float32(arrays["radii"][ri]),
                                      convention="xavier_rescaled", sample_fn=flat.sample_fn(module, (40,)),
                                      D=fm.D, r_x=r_x)
    space = train.Space(anchor, projections.make("sparse", keys.proj_keys(d, 2)[s], D=fm.D, d=d))
    for mi, mode in enumerate(MODES):
        spec = train.spec_for(256, optimizer="adam", lr=0.05, batch_size=32, record_every=4, mode=mode)
        trainer = train.make_trainer(fm, spec)
        run_steps = jax.jit(train.make_step_runner(fm, spec), static_argnums=4)
        state, per_step = run_steps(trainer.init(jnp.zeros(d), space), keys.train_keys(2)[s], data, space,
                                    2 * STEPS)
        block_loss = np.asarray(per_step["loss"]).reshape(2, -1, 4).mean(-1)  # [epoch, record]
        np.testing.assert_allclose(arrays["train_loss"][mi, 0, ri, s], block_loss, rtol=1e-4)
        theta = trainer.theta(state, space)
        radius = float(jnp.linalg.norm(theta))
        assert arrays["radius_curve"][mi, 0, ri, s, -1, -1] == pytest.approx(radius, rel=1e-5)
        _, accuracy = train.evaluate(fm, theta, data.x_test, data.y_test)
        assert arrays["final_test_accuracy"][mi, 0, ri, s] == pytest.approx(float(accuracy), abs=1.5 / 128)


def _assert_close_to_reference(arrays, reference):
    """Equal to float rounding (bitwise on the machine that wrote them): tests/data/README.md."""
    assert set(arrays) == set(reference)
    for key, expected in reference.items():
        assert arrays[key].dtype == expected.dtype, key
        references.assert_close(arrays[key], expected, key)


def test_the_numbers_do_not_move(smoke):
    """The arrays equal those the code wrote before the library layout."""
    _assert_close_to_reference(records.load_arrays(smoke["path"]), _reference())


@pytest.mark.slow
def test_the_smoke_flagfile_as_shipped(tmp_path):
    run = _run(tmp_path)
    sizes = {**SIZES, "d": 2}
    _, arrays = check_records(run["path"], sizes, dims=(4, 8))
    check_semantics(arrays, sizes)
    _assert_close_to_reference(arrays, _reference((4, 8)))


def test_the_api_on_the_same_settings_gives_the_command_lines_arrays(smoke, tmp_path):
    dataset = smoke["config"].data.load()
    result = gzone.train_subspace(smoke["config"].model.build(10), (dataset.x_train, dataset.y_train),
                                  (dataset.x_test, dataset.y_test), log10_r2_over_rx2=[-2, 0, 2], dims=[4],
                                  num_seeds=2, epochs=2, batch_size=32, record_every=4, lr=0.05, log=None)
    assert isinstance(result, gzone.TrainSubspaceResult) and result.path is None and result.modes == MODES
    _assert_equal_arrays(result.arrays, records.load_arrays(smoke["path"]))
    table = result.table().splitlines()
    assert table[0].startswith("final test accuracy") and len(table) == 3 + 2
    figures = result.plot(str(tmp_path))  # from the records in memory (no dataset description there)
    assert [Path(f).name for f in figures] == ["subspace_training.png"]


def test_resume_computes_only_the_missing_units(smoke, tmp_path):
    copy = tmp_path / EXPERIMENT / "smoke"
    shutil.copytree(smoke["path"], copy)
    metrics = copy / "metrics.jsonl"
    kept = metrics.read_text().splitlines(keepends=True)[:2]
    metrics.write_text("".join(kept) + kept[0][:10])  # as if killed in the middle of the third line
    os.remove(copy / "arrays.npz")
    run = _run(tmp_path, *FAST, plots=False)
    assert f"resuming: {copy}  (2/6 units done)" in run["progress"][0]
    assert len([p for p in run["progress"] if "] unit " in p]) == 6 - 2  # only the missing units
    _assert_equal_arrays(records.load_arrays(copy), records.load_arrays(smoke["path"]))


@pytest.mark.slow  # the checkpoint path of Engine.fit is killed in the fast suite by test_radius_dynamics
def test_sigkill_inside_a_unit_then_rerun_resumes_from_its_checkpoint(smoke, tmp_path):
    env = {**environment(jax.config.jax_compilation_cache_dir), "JAX_NUMPY_RANK_PROMOTION": "raise"}
    args = ["-m", "experiments.train_subspace", SMOKE, *FAST, f"--workdir={tmp_path}", "--noplots"]
    stops.kill_at_checkpoint(args, unit=STOP_UNIT, folder=str(tmp_path / "log_killed"), env=env)
    path = tmp_path / EXPERIMENT / "smoke"
    assert [line["unit"] for line in records.read_jsonl(path)] == ["hyperplane_d4_r000"]
    with np.load(path / "units" / f"{STOP_UNIT}.ckpt.npz") as ckpt:
        assert int(ckpt["epoch"]) == 1
        assert ckpt["hist_loss"].shape == (2, 1, 2)  # [seed, epochs so far, record]
    assert not (path / "arrays.npz").exists() and records.read_config(path)["status"] == "running"

    run = _run(tmp_path, *FAST, plots=False)
    assert f"resuming: {path}  (1/6 units done)" in run["progress"][0]
    assert f"  {STOP_UNIT}: resuming after epoch 1" in run["progress"]
    assert not any("unit 1/6" in p for p in run["progress"])  # the completed unit was not trained again
    _assert_equal_arrays(records.load_arrays(path), records.load_arrays(smoke["path"]))


def _main(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(train_subspace.config_from_argv, lambda c: train_subspace.run(c, progress=None),
                 groups=train_subspace.GROUPS, argv=argv)
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err.strip()


BAD_INPUTS = {
    "unknown_mode": (["--modes=cube"], "--modes"),
    "repeated_mode": (["--modes=hyperplane,hyperplane"], "--modes"),
    "zero_dim": (["--dims=0"], "--dims"),
    "dim_not_an_integer": (["--dims=4,x"], "--dims"),
    "repeated_dims": (["--dims=4,4"], "--dims"),
    "d_exceeds_D": (["--dims=4,100000"], "--dims"),  # known after building the model: D = 826
    "zero_batch": (["--batch_size=0"], "--batch_size"),
    "batch_above_n_train": (["--batch_size=1000"], "--batch_size"),  # known after loading: n_train = 256
    "zero_lr": (["--lr=0"], "--lr"),
    "zero_seeds": (["--num_seeds=0"], "--num_seeds"),
    "bad_radius_grid": (["--log10_r2_over_rx2=1,2"], "--log10_r2_over_rx2"),
    "both_radius_flags": (["--radii=2"], "--log10_r2_over_rx2"),
    "non_positive_radius": (["--log10_r2_over_rx2=", "--radii=1.0,0"], "--radii"),
    "unknown_projection": (["--projection=fancy"], "--projection"),
    "unknown_flag": (["--no_such_flag=1"], "no_such_flag"),
    "unknown_dataset": (["--dataset=no_such_dataset"], "no_such_dataset"),
    "missing_data_folder": (["--data_dir={tmp}/absent"], "--data_dir"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_run_folder(case, tmp_path, capsys):
    flags, expected = BAD_INPUTS[case]
    workdir = tmp_path / "work"
    code, out, err = _main([SMOKE, f"--workdir={workdir}", *(f.format(tmp=tmp_path) for f in flags)], capsys)
    assert code == 2 and out == "", err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert not workdir.exists()
