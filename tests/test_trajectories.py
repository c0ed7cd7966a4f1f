"""experiments.trajectories end to end on the smoke flags: records checked against the snapshots on
disk, resume after SIGKILL equal to an uninterrupted run, and one-line errors (exit 2, no run folder)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import stops

from gzone.analysis import trajectory
from gzone.runs import records

REPO = Path(__file__).resolve().parents[1]
SMOKE = "experiments/flagfiles/trajectories_smoke.flags"
S, EPOCHS, T0, N_SNAP, D = 2, 4, 2, 2, 40 * 16 + 16 + 16 * 10 + 10  # what the smoke flags ask for
TRAIN_UNITS = ["train_single", "train_inits", "train_orders", "train_clones_parent", "train_clones"]
UNITS = set(TRAIN_UNITS) | {f"analysis_{g}" for g in ("single", "inits", "orders", "clones")}


def _command(workdir, *extra):
    return [sys.executable, "-m", "experiments.trajectories", f"--flagfile={SMOKE}", f"--workdir={workdir}", *extra]


def _popen(args, env):
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_dir(workdir):
    return os.path.join(str(workdir), "trajectories", "smoke")


@pytest.fixture(scope="module")
def env(tmp_path_factory, subprocess_env):
    """The subprocess environment plus a JAX compilation cache shared by this module's runs (a resumed
    run then loads the executables instead of compiling them again: ~4x faster on 2 cores)."""
    cache = tmp_path_factory.mktemp("jax_cache")
    return {**subprocess_env, "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, env):
    """A run killed by SIGKILL in the middle of a training unit (train_inits, after its epoch 1), then
    (sharing its compiled code through the cache) an uninterrupted run of the same flags."""
    full_dir, killed_dir = tmp_path_factory.mktemp("full"), tmp_path_factory.mktemp("killed")
    cmd = stops.command(stops.AT_CHECKPOINT, _command(killed_dir, "--noplots"))
    victim = _popen(cmd, {**env, "GZONE_TEST_STOP_UNIT": "train_inits"})
    killed = _run_dir(killed_dir)
    try:  # stopped right after train_inits' epoch-1 checkpoint (polling for it raced the smoke run)
        stops.kill_when_stopped(victim)
    finally:
        victim.kill()
        victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert os.path.exists(records.checkpoint_file(killed, "train_inits"))
    assert records.completed_units(killed) == {"train_single"}
    full = _popen(_command(full_dir), env)
    out, err = full.communicate(timeout=600)
    assert full.returncode == 0, err[-3000:]
    return {"path": _run_dir(full_dir), "stdout": out, "stderr": err, "killed": killed, "killed_workdir": killed_dir}


def test_smoke_records_are_complete_and_consistent(runs):
    path = runs["path"]
    config = records.read_config(path)
    assert config["status"] == "complete" and config["experiment"] == "trajectories"
    settings, derived = config["settings"], config["derived"]
    assert settings["groups"] == ["single", "inits", "orders", "clones"] and settings["num_models"] == S
    assert derived["D"] == D and derived["steps_per_epoch"] == 8 and derived["snapshot_steps_in_epoch"] == [4, 8]
    lines = records.read_jsonl(path)
    assert sorted(line["unit"] for line in lines) == sorted(UNITS)
    # Only the parent keeps its checkpoint (the clones start from it).
    assert sorted(f for f in os.listdir(os.path.join(path, "units")) if "ckpt" in f) == ["train_clones_parent.ckpt.npz"]

    # Snapshots on disk: one file per epoch, [S, n_snap, D].
    shapes = {"train_single": (1, range(EPOCHS)), "train_inits": (S, range(EPOCHS)), "train_orders": (S, range(EPOCHS)),
              "train_clones_parent": (1, range(T0)), "train_clones": (S, range(T0, EPOCHS))}
    snaps = {}
    for unit, (n_models, epochs) in shapes.items():
        store = trajectory.SnapshotStore(os.path.join(path, "snapshots", unit))
        assert store.epochs() == list(epochs), unit
        snaps[unit] = np.stack([np.asarray(store.read(e)) for e in epochs], axis=1)  # [S, E, n_snap, D]
        assert snaps[unit].shape == (n_models, len(epochs), N_SNAP, D)
        final = records.load_unit(path, unit)["theta_final"]
        np.testing.assert_array_equal(snaps[unit][:, -1, -1], final)  # the last snapshot is the final theta
    # Determinism across units: the parent is (a)'s run up to t0; (c) shares (a)'s init; (b) does not.
    np.testing.assert_array_equal(snaps["train_clones_parent"][0], snaps["train_single"][0, :T0])
    single, orders, inits = (records.load_unit(path, u) for u in ("train_single", "train_orders", "train_inits"))
    np.testing.assert_array_equal(orders["theta_start"], np.repeat(single["theta_start"], S, axis=0))
    assert np.linalg.norm(inits["theta_start"][0] - inits["theta_start"][1]) > 1.0
    clones = records.load_unit(path, "train_clones")
    np.testing.assert_array_equal(clones["theta_start"], np.repeat(snaps["train_clones_parent"][:, -1, -1], S, axis=0))
    assert np.linalg.norm(clones["theta_final"][0] - clones["theta_final"][1]) > 1e-3  # the clones do diverge

    arrays = records.load_arrays(path)
    for key, value in arrays.items():
        group, name = key.split("_", 1)
        assert len(config["axes"][key]) == value.ndim, key
    for group, unit in (("single", "train_single"), ("inits", "train_inits"), ("orders", "train_orders")):
        u = records.load_unit(path, unit)
        x = np.concatenate([np.concatenate([u["theta_start"][m : m + 1], snaps[unit][m].reshape(-1, D)])
                            for m in range(u["theta_start"].shape[0])]).astype(np.float64)
        _check_group(arrays, group, x, u["theta_start"], u["theta_final"])
    parent = records.load_unit(path, "train_clones_parent")
    x = np.concatenate([parent["theta_start"], snaps["train_clones_parent"][0].reshape(-1, D)]
                       + [snaps["train_clones"][m].reshape(-1, D) for m in range(S)]).astype(np.float64)
    _check_group(arrays, "clones", x, clones["theta_start"], clones["theta_final"])
    init_dist = np.linalg.norm(clones["theta_final"] - parent["theta_start"], axis=1)
    np.testing.assert_allclose(arrays["clones_dist_init"], init_dist, rtol=1e-6)
    assert arrays["clones_traj_model"].tolist() == [-1] * 5 + [0] * 4 + [1] * 4
    assert arrays["clones_test_accuracy"].shape == (S, EPOCHS)  # the parent's epochs, then each clone's
    np.testing.assert_array_equal(arrays["clones_test_accuracy"][:, :T0], np.repeat(parent["test_accuracy"], S, axis=0))

    for figure in ("pca.png", "loss_surface.png", "interpolation.png", "distances.png", "radius.png"):
        with open(os.path.join(path, figure), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n", figure
    assert "--groups=single,inits,orders,clones" in Path(path, "flags.txt").read_text()
    assert "Traceback" not in runs["stderr"] and "records:" in runs["stdout"]


def _check_group(arrays, g, x, starts, finals):
    """A group's recorded analysis against numpy on the snapshots read back from disk."""
    T = x.shape[0]
    assert arrays[f"{g}_traj_model"].shape == (T,)
    np.testing.assert_allclose(arrays[f"{g}_traj_radius"], np.linalg.norm(x, axis=1), rtol=1e-10)
    xc = x - x.mean(0)
    sv = np.linalg.svd(xc, compute_uv=False)
    ratio = sv**2 / np.sum(sv**2)
    K = arrays[f"{g}_pca_ratio_centred"].size
    np.testing.assert_allclose(arrays[f"{g}_pca_ratio_centred"], ratio[:K], rtol=1e-6, atol=1e-12)
    sv_u = np.linalg.svd(x, compute_uv=False)
    np.testing.assert_allclose(arrays[f"{g}_pca_ratio_uncentred"], (sv_u**2 / np.sum(sv_u**2))[:K], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(np.abs(arrays[f"{g}_scores_centred"][:, 0]), np.abs(xc @ np.linalg.svd(xc)[2][0]), rtol=1e-5,
                               atol=1e-6)
    n = finals.shape[0]
    pw = np.linalg.norm(finals[:, None].astype(np.float64) - finals[None], axis=-1)
    np.testing.assert_allclose(arrays[f"{g}_dist_pairwise"], pw, rtol=1e-6)
    from_start = np.linalg.norm(finals - starts.astype(np.float64), axis=1)
    np.testing.assert_allclose(arrays[f"{g}_dist_start"], from_start, rtol=1e-6)
    np.testing.assert_allclose(arrays[f"{g}_dist_origin"], np.linalg.norm(finals.astype(np.float64), axis=1), rtol=1e-6)
    t = arrays[f"{g}_interp_t"]
    i0, i1 = np.flatnonzero(t == 0)[0], np.flatnonzero(t == 1)[0]
    np.testing.assert_allclose(arrays[f"{g}_start_radius"][:, i0], np.linalg.norm(starts, axis=1), rtol=1e-5)
    np.testing.assert_allclose(arrays[f"{g}_start_radius"][:, i1], np.linalg.norm(finals, axis=1), rtol=1e-5)
    assert arrays[f"{g}_pair_loss"].shape == (n * (n - 1) // 2, t.size)
    assert np.all(arrays[f"{g}_start_barrier"] >= 0) and np.all(np.isfinite(arrays[f"{g}_grid_loss"]))
    assert arrays[f"{g}_grid_loss"].shape == (7, 7)


def test_sigkill_then_resume_equals_an_uninterrupted_run(runs, run_python, env):
    path = runs["killed"]
    assert not os.path.exists(os.path.join(path, "arrays.npz"))
    assert records.read_config(path)["status"] == "running"
    done_before = records.completed_units(path)
    assert "train_single" in done_before and len(done_before) < len(UNITS)
    resumed = run_python(_command(runs["killed_workdir"], "--noplots")[1:], env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming: {path}" in resumed.stdout
    assert sorted(line["unit"] for line in records.read_jsonl(path)) == sorted(UNITS)  # each unit once
    expected, got = records.load_arrays(runs["path"]), records.load_arrays(path)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    for unit in TRAIN_UNITS:
        a = trajectory.SnapshotStore(os.path.join(runs["path"], "snapshots", unit))
        b = trajectory.SnapshotStore(os.path.join(path, "snapshots", unit))
        assert a.epochs() == b.epochs()
        for e in a.epochs():
            np.testing.assert_array_equal(np.asarray(a.read(e)), np.asarray(b.read(e)), err_msg=f"{unit} epoch {e}")


BAD = {  # flags -> the flag named in the one-line error
    "groups": ["--groups=single,bogus"],
    "clone_epoch": ["--clone_epoch=4"],
    "interp_range": ["--interp_range=0.5,1"],
    "snapshot_every": ["--snapshot_every=9"],  # found after the data are loaded: 8 steps per epoch
    "nosuchflag": ["--nosuchflag=1"],
}


def test_bad_input_gives_one_line_exit_2_and_no_run_folder(tmp_path, env):
    procs = {flag: (_popen(_command(tmp_path / flag, *extra), env), tmp_path / flag) for flag, extra in BAD.items()}
    for flag, (proc, workdir) in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, (flag, err[-2000:])
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0], (flag, err)
        assert "Traceback" not in err and not os.path.exists(workdir / "trajectories"), flag
