"""experiments.init_selection end to end on the smoke flags: scores, selection and tests checked against the
records, a run resumed from its completed units equal to an uninterrupted one, one-line errors (exit 2, no
run folder) for bad input; the SIGKILL in the middle of a training unit is a slow test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import stops
from background import PipedRun

from gzone.analysis import selection
from gzone.runs import records

REPO = Path(__file__).resolve().parents[1]
SMOKE = "experiments/flagfiles/init_selection_smoke.flags"
EXPERIMENT = "init_selection"
K, M, S, D_SUB = 6, 2, 2, 4  # inits, selected per group, seeds, subspace d (what the smoke flags ask for)
UNITS = ["score_b000", "score_b001", "train_top", "train_other"]
OUTCOMES = ("final_test_loss", "final_test_accuracy", "final_train_loss", "mean_train_loss")


def _command(workdir, *extra):
    return [sys.executable, "-m", f"experiments.{EXPERIMENT}", f"--flagfile={SMOKE}", f"--workdir={workdir}", *extra]


def _popen(args, env):
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_dir(workdir):
    return os.path.join(str(workdir), EXPERIMENT, "smoke")


@pytest.fixture(scope="module")
def env(tmp_path_factory, subprocess_env):
    cache = tmp_path_factory.mktemp("jax_cache")
    return {**subprocess_env, "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
    """The uninterrupted smoke run, started in the background; `result()` waits for it."""
    workdir = tmp_path_factory.mktemp("reference")
    run = PipedRun(_command(workdir), _run_dir(workdir), env)
    yield run
    run.close()


BAD = {  # flags -> the flag named in the one-line error
    "num_selected": ["--num_selected=4"],  # two groups of 4 do not fit in 6 inits
    "num_probes": ["--num_probes=1"],
    "r_over_rx": ["--r_over_rx=0"],
    "score": ["--score=sharpness"],
    "d": ["--d=100000"],  # found after loading: D = 826
    "nosuchflag": ["--nosuchflag=1"],
}
AFTER_LOADING = {  # more checks that need the data (each run imports jax and loads the data: slow)
    "n_score": ["--n_score=300"],  # 256 training examples
    "batch_size": ["--batch_size=512"],
}


def test_bad_input_gives_one_line_exit_2_and_no_run_folder(tmp_path, env, reference):
    del reference  # started first, so that it runs beside these short runs
    _check_bad_runs(tmp_path, env, BAD)


@pytest.mark.slow
def test_bad_input_found_after_loading(tmp_path, env):
    _check_bad_runs(tmp_path, env, AFTER_LOADING)


def _check_bad_runs(tmp_path, env, bad):
    procs = {flag: (_popen(_command(tmp_path / flag, *extra), env), tmp_path / flag) for flag, extra in bad.items()}
    procs["num_probes_for_score"] = (_popen(_command(tmp_path / "fs", "--score=full_trace_over_frob", "--num_probes=0"), env),
                                     tmp_path / "fs")
    for flag, (proc, workdir) in procs.items():
        out, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        name = "num_probes" if flag == "num_probes_for_score" else flag
        assert proc.returncode == 2, (flag, err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error:") and name in lines[0], (flag, err)
        assert "Traceback" not in out + err and not os.path.exists(workdir / EXPERIMENT), flag


def test_smoke_records_selection_and_tests(reference):
    run = reference.result()
    path = run["path"]
    config = records.read_config(path)
    assert config["status"] == "complete" and config["experiment"] == EXPERIMENT
    assert [line["unit"] for line in records.read_jsonl(path)] == UNITS
    arrays = records.load_arrays(path)
    assert set(arrays) == set(config["axes"])
    sizes = {"init": K, "eigenvalue": D_SUB, "group": 2, "member": M, "seed": S, "epoch": 2, "record": 2}
    for key, axes in config["axes"].items():
        assert arrays[key].shape == tuple(sizes[a] for a in axes), key
    # Scores: subspace statistics from their eigenvalues; points at |theta| ~ r_X (scaled_init of Xavier samples).
    eig = arrays["score_eigvals"].astype(np.float64)
    np.testing.assert_allclose(arrays["score_trace_over_frob"], eig.sum(1) / np.sqrt((eig**2).sum(1)), rtol=1e-4)
    np.testing.assert_array_equal(arrays["score_n_pos"], (eig > 0).sum(1))
    np.testing.assert_allclose(arrays["score_radius"], config["derived"]["r_x"], rtol=0.2)
    assert len(set(np.round(arrays["score_loss"], 6))) == K  # K different inits
    # Selection: the best 2 by trace_over_frob against the worst 2 (worst first).
    order = np.argsort(-arrays["score_trace_over_frob"], kind="stable")
    np.testing.assert_array_equal(arrays["selected"], [order[:M], order[::-1][:M]])
    # Outcomes from the curves, and the tests from the outcomes.
    np.testing.assert_array_equal(arrays["final_test_loss"], arrays["test_loss"][..., -1])
    np.testing.assert_allclose(arrays["mean_train_loss"], arrays["train_loss"].reshape(2, M, S, -1).mean(-1), rtol=1e-6)
    analysis = json.loads(Path(path, "analysis.json").read_text())
    assert analysis["selected"] == {"top": order[:M].tolist(), "other": order[::-1][:M].tolist()}
    assert analysis["steps"] == 2 * 8
    for name in OUTCOMES:
        expected = selection.mann_whitney(arrays[name][0], arrays[name][1])
        assert analysis["tests"][name] == pytest.approx(expected)
        assert analysis["tests"][name]["n_a"] == M * S
        assert analysis["tests_init_means"][name]["n_a"] == M
    # Runs from one init with different batch orders differ; the seed-s orders are shared by both groups.
    assert not np.array_equal(arrays["train_loss"][0, 0, 0], arrays["train_loss"][0, 0, 1])
    assert Path(path, "init_selection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "--num_inits=6" in Path(path, "flags.txt").read_text()
    assert "Traceback" not in run["stderr"] and "rank-biserial" in run["stdout"]


def _truncate(path, keep: int) -> None:
    """What a kill after the first `keep` units leaves: their lines and files, no later ones, no arrays.npz."""
    lines = records.read_jsonl(path)
    Path(path, "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines[:keep]))
    for line in lines[keep:]:
        os.remove(records.unit_file(path, line["unit"]))
    for name in ("arrays.npz", "analysis.json", "init_selection.png"):
        os.remove(os.path.join(path, name))
    records.update_config(path, status="running")


def _assert_same_arrays(path, reference_path):
    got, expected = records.load_arrays(path), records.load_arrays(reference_path)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert json.loads(Path(path, "analysis.json").read_text()) == json.loads(Path(reference_path, "analysis.json").read_text())


def test_resume_from_completed_units_equals_the_uninterrupted_run(tmp_path, env, reference, run_python):
    ref = reference.result()["path"]
    path = _run_dir(tmp_path)
    shutil.copytree(ref, path)
    _truncate(path, keep=1)  # the first score block done
    resumed = run_python(_command(tmp_path)[1:], env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming: {path}  (1/4 units done)" in resumed.stdout
    assert "unit 2/4 score_b001" in resumed.stderr and "unit 1/4" not in resumed.stderr
    assert [line["unit"] for line in records.read_jsonl(path)] == UNITS
    _assert_same_arrays(path, ref)


@pytest.mark.slow
def test_sigkill_mid_training_then_rerun_resumes_and_matches(tmp_path, env, reference, run_python):
    ref = reference.result()["path"]
    cmd = stops.command(stops.AT_CHECKPOINT, _command(tmp_path))
    proc = subprocess.Popen(cmd, cwd=REPO, env={**env, "GZONE_TEST_STOP_UNIT": "train_other"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        stops.kill_when_stopped(proc, timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    path = _run_dir(tmp_path)
    assert [line["unit"] for line in records.read_jsonl(path)] == UNITS[:3]
    resumed = run_python(_command(tmp_path)[1:], env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "train_other: resuming after epoch 1" in resumed.stdout
    _assert_same_arrays(path, ref)
