"""Smoke tests of experiments/radius_dynamics.py: records and analysis, kill-and-resume, bad flags.

Every run is a subprocess (`python -m experiments.radius_dynamics --flagfile=<smoke flags>`).
The reference run (the smoke flagfile with --epochs=3 --epochs_per_call=1, so a unit has interior
checkpoints) starts in the background when the module's first test asks for it; the bad-flag runs
overlap with it. It fills a JAX compilation cache in a temporary folder that the kill/resume runs
reuse, which keeps them short; the cached executables are the ones the reference ran, so bitwise
comparisons are unaffected.
"""

from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np
import pytest
import stops
from background import ROOT, Background, check_bad_flags, environment, finished, read_jsonl

from gzone.analysis import dynamics

MODULE = "experiments.radius_dynamics"
EXPERIMENT = "radius_dynamics"
FLAGFILE = os.path.join(ROOT, "experiments", "flagfiles", "radius_dynamics_smoke.flags")
FAST = ["--epochs=3", "--epochs_per_call=1"]
STEPS = 16  # 256 // 16 steps per epoch, record_every 4: 4 records per epoch
SIZES = {"mode": 2, "r0": 3, "seed": 2, "epoch": 3, "record": 4, "layer": 2}
R0_OVER_RX = (0.1, 1.0, 10.0)
STOP_UNIT = "free_r001"  # the kill lands after this unit's first epoch (one unit done before it)
FIGURE = "radius_dynamics.png"


def command(workdir, *extra) -> list[str]:
    return [sys.executable, "-m", MODULE, f"--flagfile={FLAGFILE}", f"--workdir={workdir}", *extra]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """The uninterrupted fast smoke run, started in the background; `.wait()` it before use."""
    workdir = tmp_path_factory.mktemp("reference")
    run = Background(command(workdir, *FAST), str(workdir / "logs"), environment(cache_dir))
    run.path = os.path.join(workdir, EXPERIMENT, "smoke")
    yield run
    run.close()


def read_json(path, name):
    with open(os.path.join(path, name)) as fh:
        return json.load(fh)


def load(path, name):
    with np.load(os.path.join(path, name), allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def check_records(path, sizes, *, modes=("free", "fixed")):
    """config.json complete, one metrics line per unit, arrays shaped by their named axes, figure."""
    with open(os.path.join(path, "config.json")) as fh:
        config = json.load(fh)
    assert config["status"] == "complete"
    assert config["experiment"] == EXPERIMENT
    arrays = load(path, "arrays.npz")
    assert set(arrays) == set(config["axes"])
    for key, axes in config["axes"].items():
        assert arrays[key].shape == tuple(sizes[a] for a in axes), (key, axes, arrays[key].shape)
    units = [line["unit"] for line in read_jsonl(path)]
    expected = {f"{m}_r0{i:02d}" for m in modes for i in range(sizes["r0"])}
    assert sorted(units) == sorted(expected)  # each unit exactly once
    for unit in expected:
        assert os.path.exists(os.path.join(path, "units", f"{unit}.npz"))
    assert not glob.glob(os.path.join(path, "units", "*.ckpt.npz"))  # checkpoints dropped when done
    with open(os.path.join(path, FIGURE), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    return config, arrays


def check_semantics(config, arrays, analysis, sizes):
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
    expected_rows = [(m, r) for m in ("free", "fixed") for r in R0_OVER_RX]
    assert [(row["mode"], row["r0_over_rx"]) for row in rows] == expected_rows
    steps = arrays["step"].reshape(-1)
    for mi, i, row in ((mi, i, rows[mi * 3 + i]) for mi in range(2) for i in range(3)):
        if row["mode"] == "free" and row["r0_over_rx"] < 1:
            fit = row["alpha"]
            assert np.isfinite(fit["alpha"]) and fit["ci_low"] <= fit["alpha"] <= fit["ci_high"]
            assert len(row["alpha_per_seed"]) == sizes["seed"] and row["D_sigma2"] > 0
            radius = arrays["radius"][mi, i].reshape(sizes["seed"], -1)
            again = dynamics.fit_power_law(steps, np.mean(radius**2, axis=0) - arrays["r0"][i] ** 2)
            assert fit["alpha"] == pytest.approx(again.alpha, rel=1e-9)  # the analysis is of these arrays
        else:
            assert "alpha" not in row, row
        if row["mode"] == "fixed":
            assert row["final_radius_over_rx"] == pytest.approx(row["r0_over_rx"], rel=1e-5)
        final = arrays["test_accuracy"][mi, i, :, -1]
        np.testing.assert_allclose(row["final_test_accuracy_seeds"], final, rtol=1e-12)


# --------------------------------------------------------------------------- bad flags

BAD_FLAGS = [
    (["--r0_over_rx=-1"], "--r0_over_rx"),
    (["--r0_over_rx=0,1"], "--r0_over_rx"),
    (["--r0_over_rx=a"], "--r0_over_rx"),
    (["--radius_modes=loose"], "--radius_modes"),
    (["--batch_size=0"], "--batch_size"),
    (["--lr=0"], "--lr"),
    (["--lr=-0.1"], "--lr"),
    (["--epochs=0"], "--epochs"),
    (["--num_seeds=0"], "--num_seeds"),
    (["--widths=0"], "--widths"),
    (["--activation=sigmoid"], "activation"),
    (["--batch_size=1000"], "--batch_size"),  # larger than n_train = 256 (known after loading)
    (["--dataset=no_such_dataset"], "--dataset"),
    (["--data_dir={tmp}/missing"], "--data_dir"),
]


def test_bad_flags_fail_with_one_line_and_no_run_folder(tmp_path, reference):
    del reference  # started here so that it runs beside these short runs
    check_bad_flags(BAD_FLAGS, command, tmp_path, EXPERIMENT)


# --------------------------------------------------------------------------- smoke and resume


def test_smoke_records_and_analysis(reference):
    path = finished(reference)
    config, arrays = check_records(path, SIZES)
    assert config["settings"]["epochs"] == 3 and config["settings"]["radius_modes"] == ["free", "fixed"]
    check_semantics(config, arrays, read_json(path, "analysis.json"), SIZES)
    lines = read_jsonl(path)
    assert all(len(line["final_test_accuracy"]) == 2 for line in lines)
    assert "alpha [95% CI]" in reference.text("stdout")


def test_sigkill_mid_unit_then_rerun_resumes_and_matches_uninterrupted(tmp_path, reference, cache_dir):
    ref_path = finished(reference)  # also fills the compilation cache
    workdir = tmp_path / "killed"
    path = os.path.join(workdir, EXPERIMENT, "smoke")
    env = {**environment(cache_dir), "GZONE_TEST_STOP_UNIT": STOP_UNIT}
    cmd = stops.command(stops.AT_CHECKPOINT, command(workdir, *FAST)[1:])
    run = Background(cmd, str(tmp_path / "log_killed"), env)
    try:
        stops.kill_when_stopped(run.proc, describe=lambda: (run.text("stdout")[-2000:], run.text("stderr")[-2000:]))
    finally:
        run.close()

    # What the kill left: one completed unit, the stopped unit's checkpoint after epoch 1, no arrays.npz.
    assert [line["unit"] for line in read_jsonl(path)] == ["free_r000"]
    ckpt = load(os.path.join(path, "units"), f"{STOP_UNIT}.ckpt.npz")
    assert int(ckpt["epoch"]) == 1
    assert ckpt["hist_radius"].shape == (2, 1, 4)  # [seed, epochs so far, record]
    assert not os.path.exists(os.path.join(path, "arrays.npz"))
    assert not os.path.exists(os.path.join(path, "analysis.json"))
    with open(os.path.join(path, "config.json")) as fh:
        assert json.load(fh)["status"] == "running"

    # The same command again resumes: the done unit is skipped, the stopped one continues at epoch 1.
    resumed = Background(command(workdir, *FAST), str(tmp_path / "log_resumed"), environment(cache_dir))
    rc, out, err = resumed.wait()
    assert rc == 0, err[-3000:]
    assert "resuming: " in out and "(1/6 units done)" in out, out
    assert f"{STOP_UNIT}: resuming after epoch 1" in out, out
    assert "unit 1/6" not in err  # the completed unit was not trained again
    _, arrays = check_records(path, SIZES)
    reference_arrays = load(ref_path, "arrays.npz")
    assert set(arrays) == set(reference_arrays)
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], reference_arrays[key], err_msg=key)  # bitwise
    assert read_json(path, "analysis.json") == read_json(ref_path, "analysis.json")


@pytest.mark.slow
def test_smoke_flagfile_unchanged(tmp_path):
    """The smoke flagfile exactly as shipped (2 epochs)."""
    rc, out, err = Background(command(tmp_path), str(tmp_path / "logs"), environment()).wait()
    assert rc == 0, err[-3000:]
    path = os.path.join(tmp_path, EXPERIMENT, "smoke")
    sizes = {**SIZES, "epoch": 2}
    config, arrays = check_records(path, sizes)
    check_semantics(config, arrays, read_json(path, "analysis.json"), sizes)
