"""Smoke tests of experiments/threshold_dimension.py: records, kill-and-resume, bad flags.

Every run is a subprocess (`python -m experiments.threshold_dimension --flagfile=<smoke flags>`).
The reference run starts in the background when the module's first test asks for it, and the
bad-flag runs overlap with it. It fills a JAX compilation cache in a temporary folder that the
kill/resume runs reuse, which keeps them short (the cached executables are the ones the reference
ran, so the bitwise comparison is unaffected).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys

import numpy as np
import pytest
import stops
from background import ROOT, Background, check_bad_flags, environment, finished, read_jsonl

MODULE = "experiments.threshold_dimension"
EXPERIMENT = "threshold_dimension"
FLAGFILE = os.path.join(ROOT, "experiments", "flagfiles", "threshold_dimension_smoke.flags")
STARTS = ["t0", "t8", "lottery"]
SEEDS, EPOCHS, TARGET = 4, 2, 0.2
STOP_UNIT = "t0_d8"  # the kill lands after this unit's first epoch (the first subspace unit)
FIGURES = ("success_probability.png", "intrinsic_dimension.png", "threshold_vs_t0.png")


def command(workdir, *extra) -> list[str]:
    return [sys.executable, "-m", MODULE, f"--flagfile={FLAGFILE}", f"--workdir={workdir}", *extra]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """The uninterrupted smoke run, started in the background; `.wait()` it before use."""
    workdir = tmp_path_factory.mktemp("reference")
    run = Background(command(workdir), str(workdir / "logs"), environment(cache_dir))
    run.path = os.path.join(workdir, EXPERIMENT, "smoke")
    yield run
    run.close()


def load(path, name):
    with np.load(os.path.join(path, name), allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def check_records(path):
    """config.json complete, each unit once, arrays shaped by their named axes, analysis, figures."""
    with open(os.path.join(path, "config.json")) as fh:
        config = json.load(fh)
    assert config["status"] == "complete" and config["experiment"] == EXPERIMENT
    assert config["derived"]["start_names"] == STARTS and config["derived"]["grid"] == [8, 64, 512]
    arrays = load(path, "arrays.npz")
    assert set(arrays) == set(config["axes"])
    units = [line["unit"] for line in read_jsonl(path)]
    assert len(units) == len(set(units))  # each unit exactly once
    subspace_units = sorted(u for u in units if re.match(r"^(t\d+|lottery)_d\d+$", u))
    dims = sorted({int(u.rsplit("_d", 1)[1]) for u in subspace_units})
    rank = arrays["lottery_singular_values"].shape[1]
    sizes = {"target": 1, "start": 3, "d": len(dims), "seed": SEEDS, "epoch": EPOCHS, "t0": 2, "stat": 3, "rank": rank, "grid": 3}
    for key, axes in config["axes"].items():
        assert arrays[key].shape == tuple(sizes[a] for a in axes), (key, axes, arrays[key].shape)
    assert {"baseline", "lottery_basis", "burnin_t0", "burnin_t8"} <= set(units)
    np.testing.assert_array_equal(arrays["dims"], dims)
    evaluated = {f"{s}_d{d}" for si, s in enumerate(STARTS) for di, d in enumerate(dims) if arrays["evaluated"][si, di]}
    assert evaluated == set(subspace_units)
    for unit in units:
        assert os.path.exists(os.path.join(path, "units", f"{unit}.npz"))
    assert not [f for f in os.listdir(os.path.join(path, "units")) if f.endswith(".ckpt.npz")]  # dropped when done
    for figure in FIGURES:
        with open(os.path.join(path, figure), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(path, "flags.txt")) as fh:
        flags_text = fh.read()
    assert "--burn_in=0,8" in flags_text and "--lottery\n" in flags_text and "--targets=0.2" in flags_text
    with open(os.path.join(path, "analysis.json")) as fh:
        analysis = json.load(fh)
    return config, arrays, analysis


def check_semantics(arrays, analysis):
    """P_s, intervals, thresholds and d_int recomputed from the per-seed arrays."""
    acc, ev = arrays["final_test_accuracy"], arrays["evaluated"]
    assert np.all(np.isnan(acc[~ev])) and np.all((acc[ev] >= 0) & (acc[ev] <= 1))
    k = (acc >= TARGET).sum(-1)
    np.testing.assert_array_equal(arrays["successes"][0][ev], k[ev])
    np.testing.assert_allclose(arrays["p_success"][0][ev], k[ev] / SEEDS)
    assert np.all(arrays["p_low"][0][ev] <= arrays["p_success"][0][ev]) and np.all(arrays["p_success"][0][ev] <= arrays["p_high"][0][ev])
    dims = arrays["dims"]
    for si, start in enumerate(STARTS):
        passes = k[si][ev[si]] >= SEEDS / 2
        d_ev = dims[ev[si]]
        # the smallest evaluated d with every evaluated d' >= d passing
        expected = next((float(d) for i, d in enumerate(d_ev) if passes[i:].all()), math.nan)
        got = arrays["threshold"][0, si]
        assert (math.isnan(got) and math.isnan(expected)) or got == expected, (start, got, expected)
        row = next(r for r in analysis["thresholds"] if r["start"] == start)
        search = row["search"]
        assert len(search["evaluated"]) <= 3  # a 3-point grid, each point at most once
        assert arrays["search_evaluations"][0, si] == len(search["evaluated"])
        found = search["threshold"]
        assert (found is None and math.isnan(got)) or found == got  # the search and the records agree
        np.testing.assert_array_equal(sorted(search["evaluated"]), d_ev)  # the search trained exactly these
    assert arrays["lottery_singular_values"].shape[1] <= 16  # at most the 2 epochs x 8 snapshots
    sv = arrays["lottery_singular_values"]
    assert np.all(np.diff(sv, axis=1) <= 0) and np.all(sv > 0)
    base = arrays["baseline_test_accuracy"][:, -1].mean()
    estimate, low, high = arrays["d_int"]
    si = STARTS.index("t0")
    means = np.nanmean(acc[si][ev[si]], axis=-1)
    reached = [d for i, d in enumerate(dims[ev[si]]) if (means[i:] >= 0.9 * base).all()]
    assert (math.isnan(estimate) and not reached) or estimate == reached[0]
    assert low <= high and (math.isnan(estimate) or low <= estimate <= high)
    interp, low, high = arrays["d_int_interp"]
    assert (math.isnan(interp) and math.isnan(estimate)) or (interp <= estimate and low <= interp <= high)
    # burn-in moves the start point: t0 = 8 is not the initialisation
    assert not np.array_equal(arrays["anchor_test_accuracy"][0], arrays["anchor_test_accuracy"][1])


# --------------------------------------------------------------------------- bad flags

BAD_FLAGS = [
    (["--targets=1.5"], "--targets"),
    (["--delta=0"], "--delta"),
    (["--d_max=4"], "--d_max"),  # below d_min = 8
    (["--burn_in=0,-4"], "--burn_in"),
    (["--nosearch"], "--dims"),  # nothing to train
    (["--no_such_flag=1"], "no_such_flag"),
    (["--d_max=100000"], "--d_max"),  # larger than D (known after building the model)
    (["--snapshot_every=1000"], "--snapshot_every"),  # longer than an epoch (known after loading)
    (["--data_dir={tmp}/missing"], "--data_dir"),
]


def test_bad_flags_fail_with_one_line_and_no_run_folder(tmp_path, reference):
    del reference  # started here so that it runs beside these short runs
    check_bad_flags(BAD_FLAGS, command, tmp_path, EXPERIMENT)


# --------------------------------------------------------------------------- smoke and resume


def test_smoke_records(reference):
    path = finished(reference)
    config, arrays, analysis = check_records(path)
    assert config["settings"]["burn_in"] == [0, 8] and config["settings"]["lottery"] is True
    check_semantics(arrays, analysis)
    out, err = reference.result[1], reference.result[2]
    assert "threshold training dimension d*" in out and "d_int90 = " in out and "interpolated" in out
    assert "[threshold_dimension] unit " in err and "ETA" in err  # progress on stderr


def test_other_settings_in_an_existing_run_folder_fail_with_one_line(reference):
    path = finished(reference)
    before = sorted(os.listdir(path))
    workdir = os.path.dirname(os.path.dirname(path))
    rc, out, err = Background(command(workdir, "--targets=0.3"), os.path.join(workdir, "log_other"), environment()).wait()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: --name: ") and "differs in: targets" in lines[0], lines[0]
    assert sorted(os.listdir(path)) == before  # the run folder is left as it was


@pytest.mark.slow  # the shared resume path (cli.resumable_fit) is killed in the fast suite by test_radius_dynamics
def test_sigkill_mid_unit_then_rerun_resumes_and_matches_uninterrupted(tmp_path, reference, cache_dir):
    ref_path = finished(reference)  # also fills the compilation cache
    workdir = tmp_path / "killed"
    path = os.path.join(workdir, EXPERIMENT, "smoke")
    env = {**environment(cache_dir), "GZONE_TEST_STOP_UNIT": STOP_UNIT}
    run = Background(stops.command(stops.AT_CHECKPOINT, ["-m", MODULE, f"--flagfile={FLAGFILE}", f"--workdir={workdir}"]),
                     str(tmp_path / "log_killed"), env)
    try:
        stops.kill_when_stopped(run.proc, describe=lambda: (run.text("stdout")[-2000:], run.text("stderr")[-2000:]))
    finally:
        run.close()

    # What the kill left: the baseline, lottery basis and init anchors done, t0_d8 after epoch 1.
    done = [line["unit"] for line in read_jsonl(path)]
    assert sorted(done) == ["baseline", "burnin_t0", "lottery_basis"], done
    with np.load(os.path.join(path, "units", f"{STOP_UNIT}.ckpt.npz"), allow_pickle=False) as archive:
        assert int(archive["epoch"]) == 1 and archive["hist_test_accuracy"].shape == (SEEDS, 1)
    assert not os.path.exists(os.path.join(path, "arrays.npz"))

    # The same command again resumes: done units are read back, the stopped one continues at epoch 1.
    rc, out, err = Background(command(workdir), str(tmp_path / "log_resumed"), environment(cache_dir)).wait()
    assert rc == 0, err[-3000:]
    assert "resuming: " in out and "(3 units done)" in out, out
    assert f"{STOP_UNIT}: resuming after epoch 1" in out, out
    assert "baseline:" not in err and "lottery_basis:" not in err  # not trained again
    check_records(path)
    arrays, reference_arrays = load(path, "arrays.npz"), load(ref_path, "arrays.npz")
    assert set(arrays) == set(reference_arrays)
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], reference_arrays[key], err_msg=key)  # bitwise
    with open(os.path.join(path, "analysis.json")) as fh, open(os.path.join(ref_path, "analysis.json")) as ref:
        assert json.load(fh) == json.load(ref)
