"""experiments.radius_scan with the metric / Gauss-Newton split / full-space options: records,
resume, one-line errors for bad option values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gzone import flat, layer_metric, models
from gzone.curvature import fullspace
from gzone.runs import records

REPO = Path(__file__).resolve().parents[1]
SMOKE = "experiments/flagfiles/smoke.flags"
OPTIONS = ["--dims=3", "--log10_r2_over_rx2=-1,1,2", "--projection_metric=inv_layer_radius", "--metric_renormalise",
           "--gn_split", "--fullspace_probes=6", "--fullspace_top_k=2", "--fullspace_order=10"]
DIMS, R, S = [3], 2, 2
UNITS = {f"r{ri:03d}_d{d}" for ri in range(R) for d in DIMS}


def _command(workdir, *extra):
    return [sys.executable, "-m", "experiments.radius_scan", f"--flagfile={SMOKE}", f"--workdir={workdir}", *extra]


def _popen(args, env):
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


BAD_INPUTS = {
    "one_probe": (["--fullspace_probes=1"], "--fullspace_probes"),
    "order_below_2k": (["--fullspace_top_k=4", "--fullspace_order=6"], "--fullspace_order"),
    "order_above_D": (["--fullspace_top_k=2", "--fullspace_order=100000"], "--fullspace_order"),
    "unknown_metric": (["--projection_metric=fisher"], "--projection_metric"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, subprocess_env):
    """The options run, every bad input alongside it, then a resume after dropping arrays.npz."""
    work = tmp_path_factory.mktemp("options")
    main = _popen(_command(work, *OPTIONS), subprocess_env)
    bad = {case: (_popen(_command(work / case, *extra), subprocess_env), work / case) for case, (extra, _) in BAD_INPUTS.items()}
    bad_out = {case: (p.communicate(timeout=300), p.returncode, w) for case, (p, w) in bad.items()}
    out, err = main.communicate(timeout=600)
    assert main.returncode == 0, err[-3000:]
    path = os.path.join(str(work), "radius_scan", "smoke")
    first = records.load_arrays(path)
    # As if killed after the last unit: the resume assembles the units and the layer split again.
    os.remove(os.path.join(path, "arrays.npz"))
    other = _popen(_command(work, *OPTIONS[:-6], "--projection_metric=std", "--noplots"), subprocess_env)
    resumed = subprocess.run(_command(work, *OPTIONS, "--noplots"), cwd=REPO, env=subprocess_env, capture_output=True,
                             text=True, timeout=600)
    conflict = (*other.communicate(timeout=300), other.returncode)
    return {"path": path, "stdout": out, "first": first, "resumed": resumed, "bad": bad_out, "conflict": conflict}


def test_options_are_recorded(runs):
    path = runs["path"]
    config = records.read_config(path)
    settings, derived, axes = config["settings"], config["derived"], config["axes"]
    assert settings["projection_metric"] == "inv_layer_radius" and settings["metric_renormalise"] is True
    assert settings["gn_split"] is True and settings["fullspace_probes"] == 6
    assert settings["fullspace_top_k"] == 2 and settings["fullspace_order"] == 10
    module = models.build(models.ModelSpec("mlp", (16,)), 10)
    fm = flat.flat_model(module, (40,))
    expected = dict(zip([s.name for s in fm.segments], layer_metric.segment_scales(fm, "inv_layer_radius")))
    assert derived["projection_metric"]["renormalise"] is True
    for name, value in derived["projection_metric"]["segment_scales"].items():
        assert value == pytest.approx(expected[name], rel=1e-12)
    arrays = records.load_arrays(path)
    for key, names in axes.items():
        assert arrays[key].ndim == len(names), key
    spec = fullspace.Spec(6, 2, 10, True)
    for key in (*fullspace.SPLIT_SCALARS, *spec.scalar_names()):
        assert arrays[key].shape == (R, len(DIMS), S) and np.all(np.isfinite(arrays[key])), key
    for d in DIMS:
        assert arrays[f"gn_eigvals_d{d}"].shape == arrays[f"res_eigvals_d{d}"].shape == (R, S, d)
    assert arrays["full_top"].shape == arrays["full_bottom"].shape == (R, len(DIMS), S, 2)
    assert np.all(arrays["full_top"][..., 0] >= arrays["full_top"][..., 1])
    assert np.all(arrays["full_bottom"][..., 0] <= arrays["full_bottom"][..., 1])
    scale = np.abs(arrays["trace"]).max()  # H = G + R in the subspace
    np.testing.assert_allclose(arrays["gn_trace"] + arrays["res_trace"], arrays["trace"], rtol=1e-4, atol=1e-5 * scale)
    # The layer split: [d, seed, segment], fractions summing to 1.
    split = arrays["layer_sq_frac"]
    assert split.shape == (len(DIMS), S, len(fm.segments)) and axes["layer_sq_frac"] == ["d", "seed", "segment"]
    np.testing.assert_allclose(split.sum(axis=-1), 1.0, rtol=1e-5)
    line = records.read_jsonl(path)[0]
    assert {"gn_trace_over_frob", "full_trace_over_frob", "full_res_trace_over_frob"} <= set(line["mean"])
    assert "full H Tr/F" in runs["stdout"] and "share of |P e_j|^2" in runs["stdout"]
    with open(os.path.join(path, "curvature_split.png"), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "--projection_metric=inv_layer_radius" in Path(path, "flags.txt").read_text()


def test_resume_completes_the_same_records(runs):
    resumed = runs["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming: {runs['path']}  ({len(UNITS)}/{len(UNITS)} units done)" in resumed.stdout
    got = records.load_arrays(runs["path"])
    assert set(got) == set(runs["first"])
    for key, value in runs["first"].items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert sorted(line["unit"] for line in records.read_jsonl(runs["path"])) == sorted(UNITS)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_option_is_one_line_exit_2_and_no_run_folder(runs, case):
    (stdout, stderr), returncode, workdir = runs["bad"][case]
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and BAD_INPUTS[case][1] in lines[0], stderr
    assert stdout == "" and not os.path.exists(workdir)


def test_other_options_in_the_same_folder_are_refused(runs):
    stdout, stderr, returncode = runs["conflict"]
    assert returncode == 2 and stdout == "", stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for option in ("projection_metric", "metric_renormalise", "gn_split", "fullspace_probes"):
        assert option in lines[0], lines[0]


def test_metric_flag_offers_every_variant():
    text = (REPO / "experiments" / "radius_scan.py").read_text()
    line = next(ln for ln in text.splitlines() if 'DEFINE_enum("projection_metric"' in ln)
    assert all(f'"{m}"' in line for m in layer_metric.METRICS)
