"""Smoke tests of experiments/train_subspace.py: records, kill-and-resume, bad flags.

Every run is a subprocess (`python -m experiments.train_subspace --flagfile=<smoke flags>`).
The reference run (fast flags: --dims=4, so 2 compiled (mode, d) programs instead of 4, and
--epochs=3 --epochs_per_call=1 so a unit has interior checkpoints) starts in the background when
the module's first test asks for it; the bad-flag runs overlap with it. It fills a JAX compilation
cache in a temporary folder that the kill/resume runs reuse, which keeps them short; the cached
executables are the ones the reference ran, so bitwise comparisons are unaffected.
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

MODULE = "experiments.train_subspace"
EXPERIMENT = "train_subspace"
FLAGFILE = os.path.join(ROOT, "experiments", "flagfiles", "train_subspace_smoke.flags")
FAST = ["--dims=4", "--epochs=3", "--epochs_per_call=1"]
# 256 // 32 = 8 steps per epoch, record_every 4: 2 records per epoch
FAST_SIZES = {"mode": 2, "d": 1, "radius": 3, "seed": 2, "epoch": 3, "record": 2}
STOP_UNIT = "hyperplane_d4_r001"  # the kill lands after this unit's first epoch (one unit done before it)
FIGURE = "subspace_training.png"


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


def check_records(path, sizes, *, dims, modes=("hyperplane", "hypersphere")):
    """config.json complete, one metrics line per unit, arrays shaped by their named axes, figure."""
    with open(os.path.join(path, "config.json")) as fh:
        config = json.load(fh)
    assert config["status"] == "complete"
    assert config["experiment"] == EXPERIMENT
    with np.load(os.path.join(path, "arrays.npz"), allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    assert set(arrays) == set(config["axes"])
    for key, axes in config["axes"].items():
        assert arrays[key].shape == tuple(sizes[a] for a in axes), (key, axes, arrays[key].shape)
    units = [line["unit"] for line in read_jsonl(path)]
    expected = {f"{m}_d{d}_r{ri:03d}" for m in modes for d in dims for ri in range(sizes["radius"])}
    assert sorted(units) == sorted(expected)  # each unit exactly once
    for unit in expected:
        assert os.path.exists(os.path.join(path, "units", f"{unit}.npz"))
    assert not glob.glob(os.path.join(path, "units", "*.ckpt.npz"))  # checkpoints dropped when done
    with open(os.path.join(path, FIGURE), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(path, "flags.txt")) as fh:
        flags_text = fh.read()
    assert "--n_train=256" in flags_text and f"--dims={','.join(map(str, dims))}" in flags_text
    return config, arrays


def check_semantics(arrays, sizes):
    steps = 8
    R = sizes["record"]
    np.testing.assert_array_equal(
        arrays["step"], np.arange(sizes["epoch"])[:, None] * steps + (np.arange(R) + 1) * (steps // R)
    )
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


# --------------------------------------------------------------------------- bad flags

BAD_FLAGS = [
    (["--modes=cube"], "--modes"),
    (["--dims=0"], "--dims"),
    (["--dims=4,x"], "--dims"),
    (["--batch_size=0"], "--batch_size"),
    (["--lr=0"], "--lr"),
    (["--num_seeds=0"], "--num_seeds"),
    (["--log10_r2_over_rx2=1,2"], "--log10_r2_over_rx2"),
    (["--no_such_flag=1"], "no_such_flag"),
    (["--batch_size=1000"], "--batch_size"),  # larger than n_train = 256 (known after loading)
    (["--dataset=no_such_dataset"], "--dataset"),
    (["--data_dir={tmp}/missing"], "--data_dir"),
]


def test_bad_flags_fail_with_one_line_and_no_run_folder(tmp_path, reference):
    del reference  # started here so that it runs beside these short runs
    check_bad_flags(BAD_FLAGS, command, tmp_path, EXPERIMENT)


# --------------------------------------------------------------------------- smoke and resume


def test_smoke_records(reference):
    path = finished(reference)
    config, arrays = check_records(path, FAST_SIZES, dims=(4,))
    assert config["settings"]["epochs"] == 3 and config["settings"]["dims"] == [4]
    check_semantics(arrays, FAST_SIZES)
    lines = read_jsonl(path)
    assert all(len(line["final_test_accuracy"]) == 2 for line in lines)
    assert "final test accuracy" in reference.text("stdout")


@pytest.mark.slow  # the shared resume path (cli.resumable_fit) is killed in the fast suite by test_radius_dynamics
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
    assert [line["unit"] for line in read_jsonl(path)] == ["hyperplane_d4_r000"]
    ckpt = os.path.join(path, "units", f"{STOP_UNIT}.ckpt.npz")
    with np.load(ckpt, allow_pickle=False) as archive:
        assert int(archive["epoch"]) == 1
        assert archive["hist_loss"].shape == (2, 1, 2)  # [seed, epochs so far, record]
    assert not os.path.exists(os.path.join(path, "arrays.npz"))
    with open(os.path.join(path, "config.json")) as fh:
        assert json.load(fh)["status"] == "running"

    # The same command again resumes: the done unit is skipped, the stopped one continues at epoch 1.
    resumed = Background(command(workdir, *FAST), str(tmp_path / "log_resumed"), environment(cache_dir))
    rc, out, err = resumed.wait()
    assert rc == 0, err[-3000:]
    assert "resuming: " in out and "(1/6 units done)" in out, out
    assert f"{STOP_UNIT}: resuming after epoch 1" in out, out
    assert "unit 1/6" not in err  # the completed unit was not trained again
    _, arrays = check_records(path, FAST_SIZES, dims=(4,))
    with np.load(os.path.join(ref_path, "arrays.npz"), allow_pickle=False) as archive:
        reference_arrays = {k: archive[k] for k in archive.files}
    assert set(arrays) == set(reference_arrays)
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], reference_arrays[key], err_msg=key)  # bitwise


@pytest.mark.slow
def test_smoke_flagfile_unchanged(tmp_path):
    """The smoke flagfile exactly as shipped (d = 4, 8; 2 epochs): 4 compiled programs."""
    rc, out, err = Background(command(tmp_path), str(tmp_path / "logs"), environment()).wait()
    assert rc == 0, err[-3000:]
    sizes = {**FAST_SIZES, "d": 2, "epoch": 2}
    _, arrays = check_records(os.path.join(tmp_path, EXPERIMENT, "smoke"), sizes, dims=(4, 8))
    check_semantics(arrays, sizes)
    np.testing.assert_array_equal(arrays["dims"], [4, 8])
