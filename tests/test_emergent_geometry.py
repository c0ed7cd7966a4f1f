"""experiments.emergent_geometry end to end on the smoke flags: records checked against their definitions,
a run resumed from its completed units equal to an uninterrupted one, one-line errors (exit 2, no run
folder) for bad input; the SIGKILL in the middle of training is a slow test.

The reference run starts in the background when the first test asks for it (the bad-flag runs overlap
with it) and fills a JAX compilation cache that the resumed runs reuse.
"""

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

from gzone.analysis import emergent
from gzone.runs import records

REPO = Path(__file__).resolve().parents[1]
SMOKE = "experiments/flagfiles/emergent_smoke.flags"
EXPERIMENT = "emergent_geometry"
S, C, K, N_GRAM = 2, 10, 12, 20  # seeds, classes, top_k, Gram examples (what the smoke flags ask for)
STEPS = [0, 4, 8, 12, 16]
UNITS = ["train"] + [f"ckpt_{i:03d}" for i in range(5)] + [f"radius_{i:03d}" for i in range(3)]
FIGURES = ("gradient_clustering.png", "hessian_outliers.png", "gradient_overlap.png", "logit_variance.png")


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
    "parts": ["--parts=training,bogus"],
    "gram_per_class": ["--gram_per_class=1"],
    "lanczos_order": ["--lanczos_order=5"],
    "outlier_min_ratio": ["--outlier_min_ratio=1"],
    "gram_chunk": ["--gram_chunk=3"],  # found after loading: N = 20 examples
    "log10_r2_over_rx2": ["--log10_r2_over_rx2=1,2"],
    "nosuchflag": ["--nosuchflag=1"],
}


AFTER_LOADING = {  # more checks that need the data (each run imports jax and loads the data: slow)
    "snapshot_every": ["--snapshot_every=9"],  # 8 steps per epoch
    "n_hessian": ["--n_hessian=300"],  # 256 training examples
    "lanczos_order": ["--lanczos_order=900", "--top_k=2"],  # D = 826
}


def test_bad_input_gives_one_line_exit_2_and_no_run_folder(tmp_path, env, reference):
    del reference  # started first, so that it runs beside these short runs
    _check_bad_runs(tmp_path, env, BAD)


@pytest.mark.slow
def test_bad_input_found_after_loading(tmp_path, env):
    _check_bad_runs(tmp_path, env, AFTER_LOADING)


def _check_bad_runs(tmp_path, env, bad):
    procs = {flag: (_popen(_command(tmp_path / flag, *extra), env), tmp_path / flag) for flag, extra in bad.items()}
    for flag, (proc, workdir) in procs.items():
        out, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert proc.returncode == 2, (flag, err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0], (flag, err)
        assert "Traceback" not in out + err and not os.path.exists(workdir / EXPERIMENT), flag


def test_smoke_records_match_their_definitions(reference):
    run = reference.result()
    path = run["path"]
    config = records.read_config(path)
    assert config["status"] == "complete" and config["experiment"] == EXPERIMENT
    assert config["derived"]["checkpoint_steps"] == STEPS and config["derived"]["steps_per_epoch"] == 8
    assert sorted(line["unit"] for line in records.read_jsonl(path)) == sorted(UNITS)
    assert not [f for f in os.listdir(os.path.join(path, "units")) if "ckpt.npz" in f]
    arrays = records.load_arrays(path)
    assert set(arrays) == set(config["axes"])
    sizes = {"checkpoint": 5, "radius": 3, "seed": S, "eigen": K, "logit": C, "class": C, "logit2": C, "class2": C,
             "epoch": 2, "record": 2}
    for key, axes in config["axes"].items():
        assert arrays[key].shape == tuple(sizes[a] for a in axes), key
    np.testing.assert_array_equal(arrays["checkpoint_step"], STEPS)
    # |theta| at checkpoints 1.. is the radius the trainer recorded at the end of each record block (steps 4, 8, 12, 16).
    np.testing.assert_allclose(arrays["train_radius"][1:], arrays["radius_curve"].reshape(S, -1).T, rtol=1e-5)
    np.testing.assert_allclose(arrays["radius_radius"], np.repeat(arrays["radii"][:, None], S, 1), rtol=1e-5)
    r_x = config["derived"]["r_x"]
    np.testing.assert_allclose(arrays["radii"], r_x * 10 ** (np.asarray([-2.0, 0.0, 2.0]) / 2), rtol=1e-12)
    for part in ("train", "radius"):
        eigs, overlap = arrays[f"{part}_top_eigs"], arrays[f"{part}_overlap"]
        assert np.all(np.diff(eigs, axis=-1) <= 1e-6 * np.abs(eigs).max())  # largest first
        assert np.all(np.diff(overlap, axis=-1) >= -1e-6) and np.all((overlap >= 0) & (overlap <= 1 + 1e-5))
        for rule, suffix in (("last", ""), ("largest", "_largest")):
            expected = [[emergent.count_outliers(e, min_ratio=1.5, rule=rule) for e in row] for row in eigs]
            np.testing.assert_array_equal(arrays[f"{part}_outliers{suffix}"], expected)
        # Ordered pairs of distinct examples: 2 per (logit, class) same-class; 20 x 19 per logit; 20 x 19 x 90.
        assert np.all(arrays[f"{part}_n_slsc"] == C * C * 2) and np.all(arrays[f"{part}_n_sl"] == C * N_GRAM * (N_GRAM - 1))
        assert np.all(arrays[f"{part}_n_dl"] == N_GRAM * (N_GRAM - 1) * C * (C - 1))
        blocks = arrays[f"{part}_block_mean"]
        diag = np.stack([blocks[..., k, c, k, c] for k in range(C) for c in range(C)], -1)
        np.testing.assert_allclose(arrays[f"{part}_q_slsc"], diag.mean(-1), rtol=1e-4)  # equal pair counts per block
        assert np.all(np.abs(arrays[f"{part}_q_dl"]) < arrays[f"{part}_q_sl"])
    assert not np.array_equal(arrays["train_q_sl"][:, 0], arrays["train_q_sl"][:, 1])  # seeds differ
    analysis = json.loads(Path(path, "analysis.json").read_text())
    assert [row["step"] for row in analysis["train"]] == STEPS
    for i, row in enumerate(analysis["train"]):
        assert row["q_slsc"] == pytest.approx(float(np.mean(arrays["train_q_slsc"][i])), rel=1e-6)
        assert row["outliers"] == arrays["train_outliers"][i].tolist()
        assert row["overlap_top_C"] == pytest.approx(arrays["train_overlap"][i, :, C - 1].tolist(), rel=1e-6)
    for figure in FIGURES:
        assert Path(path, figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    assert "--gram_per_class=2" in Path(path, "flags.txt").read_text()
    assert "Traceback" not in run["stderr"] and "records:" in run["stdout"]


def _truncate(path, keep: int) -> None:
    """What a kill after the first `keep` units leaves: their lines and files, no later ones, no arrays.npz."""
    lines = records.read_jsonl(path)
    Path(path, "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines[:keep]))
    for line in lines[keep:]:
        os.remove(records.unit_file(path, line["unit"]))
    for name in ("arrays.npz", "analysis.json", *FIGURES):
        os.remove(os.path.join(path, name))
    records.update_config(path, status="running")


def _assert_same_arrays(path, reference_path):
    got, expected = records.load_arrays(path), records.load_arrays(reference_path)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_resume_from_completed_units_equals_the_uninterrupted_run(tmp_path, env, reference, run_python):
    ref = reference.result()["path"]
    path = _run_dir(tmp_path)
    shutil.copytree(ref, path)
    _truncate(path, keep=3)  # train, ckpt_000, ckpt_001 done
    resumed = run_python(_command(tmp_path)[1:], env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming: {path}  (3/9 units done)" in resumed.stdout
    assert "unit 4/9 ckpt_002" in resumed.stderr and "unit 1/9" not in resumed.stderr
    assert [line["unit"] for line in records.read_jsonl(path)] == [line["unit"] for line in records.read_jsonl(ref)]
    _assert_same_arrays(path, ref)
    assert records.read_config(path)["status"] == "complete"


def test_other_settings_in_an_existing_run_folder_fail_with_one_line(env, reference, run_python):
    ref = reference.result()
    proc = run_python(_command(ref["path"].rsplit(f"/{EXPERIMENT}/", 1)[0], "--lr=0.02")[1:], env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "--name" in lines[0] and "lr" in lines[0], proc.stderr
    assert records.read_config(ref["path"])["settings"]["lr"] == 0.01  # untouched


@pytest.mark.slow
def test_sigkill_mid_training_then_rerun_resumes_and_matches(tmp_path, env, reference, run_python):
    ref = reference.result()["path"]
    cmd = stops.command(stops.AT_CHECKPOINT, _command(tmp_path))
    proc = subprocess.Popen(cmd, cwd=REPO, env={**env, "GZONE_TEST_STOP_UNIT": "train"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        stops.kill_when_stopped(proc, timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    path = _run_dir(tmp_path)
    assert records.read_jsonl(path) == [] and os.path.exists(records.checkpoint_file(path, "train"))
    resumed = run_python(_command(tmp_path)[1:], env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "train: resuming after epoch 1" in resumed.stdout
    _assert_same_arrays(path, ref)
