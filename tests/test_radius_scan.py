"""experiments.radius_scan end to end on the smoke flags: records, resume after SIGKILL,
determinism, and one-line errors (exit 2, no run folder) for bad input."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import stops

from gzone import measure
from gzone.runs import records

REPO = Path(__file__).resolve().parents[1]
SMOKE = "experiments/flagfiles/smoke.flags"
RADII_REL, DIMS, SEEDS = [-2.0, 0.0, 2.0], [4, 8], 2  # what smoke.flags asks for
UNITS = {f"r{ri:03d}_d{d}" for ri in range(3) for d in DIMS}


def _command(workdir, *extra):
    module = ["-m", "experiments.radius_scan"]
    return [sys.executable, *module, f"--flagfile={SMOKE}", f"--workdir={workdir}", *extra]


def _popen(args, env, **kwargs):
    pipe = subprocess.PIPE
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=pipe, stderr=pipe, text=True, **kwargs)


def _run_dir(workdir):
    return os.path.join(str(workdir), "radius_scan", "smoke")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, subprocess_env):
    """Two uninterrupted runs of the same command in different folders, run side by side."""
    workdirs = [tmp_path_factory.mktemp(f"run_{i}") for i in range(2)]
    procs = [_popen(_command(w), subprocess_env) for w in workdirs]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return [{"path": _run_dir(w), "stdout": out, "stderr": err} for w, (out, err) in zip(workdirs, outputs)]


def test_smoke_run_records_are_complete_and_consistent(two_runs):
    run = two_runs[0]
    path = run["path"]
    config = records.read_config(path)
    assert config["status"] == "complete" and config["experiment"] == "radius_scan"
    settings, derived = config["settings"], config["derived"]
    assert settings["dims"] == DIMS and settings["num_seeds"] == SEEDS
    assert settings["radius_values"] == RADII_REL
    assert settings["n_hessian"] == 64 and settings["widths"] == [16] and settings["projection"] == "sparse"
    assert derived["D"] == 40 * 16 + 16 + 16 * 10 + 10
    # The later options (metric, Gauss-Newton split, full space) stay out of default settings.
    new_options = {"projection_metric", "metric_renormalise", "gn_split", "fullspace_probes", "fullspace_top_k", "fullspace_order"}
    assert not set(settings) & new_options and derived["projection_metric"]["name"] == "none"

    lines = records.read_jsonl(path)
    assert len(lines) == len(UNITS) and {line["unit"] for line in lines} == UNITS
    for line in lines:
        assert line["radius"] == pytest.approx(derived["radii"][line["radius_index"]])
        assert line["d"] in DIMS and line["seconds"] >= 0
    assert sorted(os.listdir(os.path.join(path, "units"))) == sorted(f"{u}.npz" for u in UNITS)

    arrays = records.load_arrays(path)
    R, n_d, S = len(RADII_REL), len(DIMS), SEEDS
    for key in measure.SCALAR_METRICS:
        assert arrays[key].shape == (R, n_d, S), key
        assert len(config["axes"][key]) == arrays[key].ndim
    np.testing.assert_allclose(arrays["log10_r2_over_rx2"], RADII_REL)
    radii = derived["r_x"] * 10 ** (np.asarray(RADII_REL) / 2)
    np.testing.assert_allclose(arrays["radii"], radii, rtol=1e-12)
    np.testing.assert_array_equal(arrays["dims"], DIMS)
    assert not any(k.startswith(("gn_", "res_", "full_")) for k in arrays)
    assert arrays["layer_sq_frac"].shape == (n_d, S, 4)  # every run: P's columns split over the 4 arrays
    np.testing.assert_allclose(arrays["layer_sq_frac"].sum(axis=-1), 1.0, rtol=1e-5)
    radius = np.broadcast_to(arrays["radii"][:, None, None], (R, n_d, S))
    np.testing.assert_allclose(arrays["radius"], radius, rtol=1e-5)
    examples = arrays["hessian_examples"]
    assert len(examples) == 64 and np.all(np.diff(examples) > 0) and examples.max() < 200

    for di, d in enumerate(DIMS):
        eig = arrays[f"eigvals_d{d}"].astype(np.float64)
        assert eig.shape == (R, S, d) and np.all(np.isfinite(eig))
        assert np.all(np.diff(eig, axis=-1) >= 0)  # ascending
        np.testing.assert_array_equal(arrays["frac_pos"][:, di, :], np.mean(eig > 0, axis=-1))
        np.testing.assert_allclose(arrays["trace_over_frob"][:, di, :],
                                   eig.sum(-1) / np.sqrt((eig**2).sum(-1)), rtol=1e-4, atol=1e-6)
        atol = 1e-5 * np.abs(eig).max()
        np.testing.assert_allclose(arrays["trace"][:, di, :], eig.sum(-1), rtol=1e-4, atol=atol)
        np.testing.assert_array_equal(arrays["top"][:, di, :], eig[..., -1].astype(np.float32))
        np.testing.assert_array_equal(arrays["bottom"][:, di, :], eig[..., 0].astype(np.float32))
        # The per-unit means in metrics.jsonl summarise the same arrays.
        for line in (entry for entry in lines if entry["d"] == d):
            ri = line["radius_index"]
            assert line["mean"]["frac_pos"] == pytest.approx(float(np.mean(arrays["frac_pos"][ri, di])))
            assert line["mean"]["loss"] == pytest.approx(float(np.mean(arrays["loss"][ri, di])), rel=1e-6)
    # The point (and so its loss) does not depend on d: same key, same radius.
    np.testing.assert_array_equal(arrays["loss"][:, 0, :], arrays["loss"][:, 1, :])

    for figure in ("goldilocks.png", "loss_accuracy.png"):
        with open(os.path.join(path, figure), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n", figure
    flags_txt = Path(path, "flags.txt").read_text()
    assert "--dims=4,8" in flags_txt and "--num_seeds=2" in flags_txt
    assert "Traceback" not in run["stderr"] and "records:" in run["stdout"]


def test_two_runs_with_the_same_flags_are_bitwise_identical(two_runs):
    a, b = (records.load_arrays(run["path"]) for run in two_runs)
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert a[key].dtype == b[key].dtype


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, subprocess_env, run_python, two_runs):
    path = _run_dir(tmp_path)
    metrics = os.path.join(path, "metrics.jsonl")
    cmd = stops.command(stops.AFTER_UNITS, _command(tmp_path))
    proc = _popen(cmd, {**subprocess_env, "GZONE_TEST_STOP_AFTER_UNITS": "2"})
    try:  # stopped right after the second unit is on disk (polling for it raced the run)
        stops.kill_when_stopped(proc)
    finally:
        proc.kill()
        proc.communicate()
    assert len(records.read_jsonl(metrics)) == 2
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(path, "arrays.npz"))
    assert records.read_config(path)["status"] == "running"
    done_before = records.completed_units(path)
    assert 2 <= len(done_before) < len(UNITS)

    resumed = run_python(_command(tmp_path)[1:])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming: {path}" in resumed.stdout
    assert f"({len(done_before)}/{len(UNITS)} units done)" in resumed.stdout
    lines = records.read_jsonl(path)
    assert sorted(line["unit"] for line in lines) == sorted(UNITS)  # each unit recorded once
    assert records.read_config(path)["status"] == "complete"
    expected = records.load_arrays(two_runs[0]["path"])
    got = records.load_arrays(path)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


@pytest.mark.slow
def test_replaying_flags_txt_resumes_the_finished_run(tmp_path, run_python, two_runs):
    copy = os.path.join(str(tmp_path), "radius_scan", "smoke")
    shutil.copytree(two_runs[0]["path"], copy)
    flags_txt = os.path.join(copy, "flags.txt")
    args = [f"--flagfile={flags_txt}", f"--workdir={tmp_path}", "--noplots"]
    proc = run_python(["-m", "experiments.radius_scan", *args])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming: {copy}" in proc.stdout and f"({len(UNITS)}/{len(UNITS)} units done)" in proc.stdout
    assert len(records.read_jsonl(copy)) == len(UNITS)


# --------------------------------------------------------------------------- bad input


BAD_INPUTS = {
    "unknown_dataset": (["--dataset=no_such_dataset"], "no_such_dataset"),
    "unknown_model": (["--model=resnet"], "--model"),
    "d_exceeds_D": (["--dims=4,100000"], "--dims"),
    "non_positive_radius": (["--log10_r2_over_rx2=", "--radii=1.0,0"], "--radii"),
    "negative_radius": (["--log10_r2_over_rx2=", "--radii=-2"], "--radii"),
    "empty_dims": (["--dims="], "--dims"),
    "missing_data_folder": (["--data_dir={tmp}/absent"], "--data_dir"),
    "unknown_flag_in_flagfile": (["--flagfile={tmp}/bad.flags"], "nosuchflag"),
    "missing_flagfile": (["--flagfile={tmp}/absent.flags"], "absent.flags"),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory, subprocess_env):
    """Every bad input run at once (they fail fast); case -> (returncode, stdout, stderr, workdir)."""
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "bad.flags").write_text("--dims=4\n--nosuchflag=1\n")
    procs = {}
    for case, (extra, _) in BAD_INPUTS.items():
        workdir = tmp / f"work_{case}"
        args = _command(workdir, *(e.format(tmp=tmp) for e in extra))
        procs[case] = (_popen(args, subprocess_env), workdir)
    out = {}
    for case, (proc, workdir) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        out[case] = (proc.returncode, stdout, stderr, workdir)
    return out


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_run_folder(bad_runs, case):
    returncode, stdout, stderr, workdir = bad_runs[case]
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and BAD_INPUTS[case][1] in lines[0], lines[0]
    assert "Traceback" not in stderr and stdout == ""
    assert not os.path.exists(workdir), os.listdir(workdir)
