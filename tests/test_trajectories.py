"""The trajectories experiment end to end, in-process: records checked against the snapshots on disk and
numpy, the numbers of the committed reference, the API on the same settings (nothing left on disk),
resume from completed units and from the middle of a training unit, one-line errors."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import background
import jax
import numpy as np
import pytest
import references
import stops
from shared_data import generated_once

import gzone
from experiments import trajectories
from gzone.runs import records, schema, snapshots

REPO = Path(__file__).resolve().parents[1]
SMOKE = f"--flagfile={REPO}/experiments/flagfiles/trajectories_smoke.flags"
S, EPOCHS, T0, N_SNAP, D = 2, 4, 2, 2, 40 * 16 + 16 + 16 * 10 + 10  # what the smoke flags ask for
TRAIN_UNITS = ["train_single", "train_inits", "train_orders", "train_clones_parent", "train_clones"]
UNITS = TRAIN_UNITS + [f"analysis_{g}" for g in ("single", "inits", "orders", "clones")]
FIGURES = ("pca.png", "loss_surface.png", "interpolation.png", "distances.png", "radius.png")
SMOKE_OPTIONS = dict(groups=["single", "inits", "orders", "clones"], num_models=S, clone_epoch=T0,
                     epochs=EPOCHS, batch_size=32, snapshot_every=4, record_every=4, lr=0.01, n_eval=128,
                     grid_size=7, interp_points=7, num_components=4)

_data_generated_once = pytest.fixture(scope="module", autouse=True)(generated_once)


def _run(workdir, *flags):
    lines, progress = [], []
    config_ = trajectories.config_from_argv([SMOKE, f"--workdir={workdir}", "--noplots", *flags])
    path = trajectories.run(config_, log=lines.append, progress=progress.append)
    return {"path": path, "log": lines, "progress": progress, "config": config_}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("smoke"))  # the figures: test_*figure*


def _snapshots(path, unit):
    return snapshots.SnapshotStore(os.path.join(path, "snapshots", unit))


def test_records_are_complete_and_consistent(smoke):
    path = smoke["path"]
    config_ = records.read_config(path)
    assert config_["status"] == "complete" and config_["experiment"] == "trajectories"
    assert config_["schema"] == schema.VERSION
    settings, derived = config_["settings"], config_["derived"]
    assert settings["groups"] == ["single", "inits", "orders", "clones"] and settings["num_models"] == S
    assert settings["seed_mode"] in ("vmap", "map") and settings["model"]["class"] == "gzone.models.mlp.MLP"
    assert settings["data"]["train_examples"] == 256 and "surface_batch" not in settings
    assert derived["D"] == D and derived["steps_per_epoch"] == 8
    assert derived["snapshot_steps_in_epoch"] == [4, 8]
    assert derived["dataset"]["name"] == "mnist1d" and len(derived["eval_examples"]) == 128
    lines = records.read_jsonl(path)
    assert [line["unit"] for line in lines] == UNITS
    # Only the parent keeps its checkpoint (the clones start from it).
    checkpoints = sorted(f for f in os.listdir(os.path.join(path, "units")) if "ckpt" in f)
    assert checkpoints == ["train_clones_parent.ckpt.npz"]

    # Snapshots on disk: one file per epoch, [S, n_snap, D].
    shapes = {"train_single": (1, range(EPOCHS)), "train_inits": (S, range(EPOCHS)),
              "train_orders": (S, range(EPOCHS)), "train_clones_parent": (1, range(T0)),
              "train_clones": (S, range(T0, EPOCHS))}
    snaps = {}
    for unit, (n_models, epochs) in shapes.items():
        store = _snapshots(path, unit)
        assert store.epochs() == list(epochs), unit
        snaps[unit] = np.stack([np.asarray(store.read(e)) for e in epochs], axis=1)  # [S, E, n_snap, D]
        assert snaps[unit].shape == (n_models, len(epochs), N_SNAP, D)
        final = records.load_unit(path, unit)["theta_final"]
        np.testing.assert_array_equal(snaps[unit][:, -1, -1], final)  # the last snapshot is the final theta
    # Determinism across units: the parent is (a)'s run up to t0; (c) shares (a)'s init; (b) does not.
    np.testing.assert_array_equal(snaps["train_clones_parent"][0], snaps["train_single"][0, :T0])
    single, orders, inits = (records.load_unit(path, f"train_{g}") for g in ("single", "orders", "inits"))
    np.testing.assert_array_equal(orders["theta_start"], np.repeat(single["theta_start"], S, axis=0))
    assert np.linalg.norm(inits["theta_start"][0] - inits["theta_start"][1]) > 1.0
    clones = records.load_unit(path, "train_clones")
    parent_end = snaps["train_clones_parent"][:, -1, -1]
    np.testing.assert_array_equal(clones["theta_start"], np.repeat(parent_end, S, axis=0))
    assert np.linalg.norm(clones["theta_final"][0] - clones["theta_final"][1]) > 1e-3  # the clones do diverge

    arrays = records.load_arrays(path)
    assert set(arrays) == set(config_["axes"]) == set(schema.trajectories_axes(settings["groups"]))
    schema.check(config_, arrays)
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
    np.testing.assert_array_equal(arrays["clones_test_accuracy"][:, :T0],
                                  np.repeat(parent["test_accuracy"], S, axis=0))

    analysis = schema.read(path).analysis
    for g, line in zip(settings["groups"], lines[len(TRAIN_UNITS):]):
        top2 = arrays[f"{g}_pca_ratio_centred"][:2].sum()
        assert analysis["groups"][g]["pca_top2_centred"] == pytest.approx(top2)
        assert analysis["groups"][g]["T"] == line["T"] == arrays[f"{g}_traj_model"].size
    assert "--groups=single,inits,orders,clones" in Path(path, "flags.txt").read_text()
    assert smoke["log"][-1] == f"records: {path}" and "PC1-2" in smoke["log"][0]
    assert len([p for p in smoke["progress"] if p.startswith("[trajectories] unit")]) == len(UNITS)


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
    np.testing.assert_allclose(arrays[f"{g}_pca_ratio_uncentred"], (sv_u**2 / np.sum(sv_u**2))[:K], rtol=1e-6,
                               atol=1e-12)
    pc1 = np.linalg.svd(xc)[2][0]
    np.testing.assert_allclose(np.abs(arrays[f"{g}_scores_centred"][:, 0]), np.abs(xc @ pc1), rtol=1e-5,
                               atol=1e-6)
    n = finals.shape[0]
    pw = np.linalg.norm(finals[:, None].astype(np.float64) - finals[None], axis=-1)
    np.testing.assert_allclose(arrays[f"{g}_dist_pairwise"], pw, rtol=1e-6)
    from_start = np.linalg.norm(finals - starts.astype(np.float64), axis=1)
    np.testing.assert_allclose(arrays[f"{g}_dist_start"], from_start, rtol=1e-6)
    np.testing.assert_allclose(arrays[f"{g}_dist_origin"], np.linalg.norm(finals.astype(np.float64), axis=1),
                               rtol=1e-6)
    t = arrays[f"{g}_interp_t"]
    i0, i1 = np.flatnonzero(t == 0)[0], np.flatnonzero(t == 1)[0]
    np.testing.assert_allclose(arrays[f"{g}_start_radius"][:, i0], np.linalg.norm(starts, axis=1), rtol=1e-5)
    np.testing.assert_allclose(arrays[f"{g}_start_radius"][:, i1], np.linalg.norm(finals, axis=1), rtol=1e-5)
    assert arrays[f"{g}_pair_loss"].shape == (n * (n - 1) // 2, t.size)
    assert np.all(arrays[f"{g}_start_barrier"] >= 0) and np.all(np.isfinite(arrays[f"{g}_grid_loss"]))
    assert arrays[f"{g}_grid_loss"].shape == (7, 7)


def _assert_equal_arrays(got: dict, expected: dict):
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_the_numbers_do_not_move(smoke):
    """The arrays equal those the code wrote before the library layout (tests/data/README.md)."""
    with np.load(REPO / "tests" / "data" / "trajectories_smoke_reference.npz") as archive:
        reference = {k: archive[k] for k in archive.files}
    arrays = records.load_arrays(smoke["path"])
    assert set(arrays) == set(reference)
    for key, expected in reference.items():
        got = arrays[key]
        assert got.shape == expected.shape and got.dtype == expected.dtype, key
        references.assert_close(got, expected, key)


@pytest.fixture(scope="module")
def api(smoke, tmp_path_factory):
    """gzone.trajectories on the smoke settings without a run_dir, with the temporary folders and the
    working directory watched: (result, [what is left in them])."""
    import tempfile

    scratch, cwd = tmp_path_factory.mktemp("scratch"), tmp_path_factory.mktemp("cwd")
    dataset = smoke["config"].data.load()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(scratch))  # where the snapshots go without a run_dir
        patch.chdir(cwd)
        result = gzone.trajectories(smoke["config"].model.build(10), (dataset.x_train, dataset.y_train),
                                    (dataset.x_test, dataset.y_test), log=None, **SMOKE_OPTIONS)
    return result, os.listdir(scratch) + os.listdir(cwd)


def test_the_api_gives_the_command_lines_arrays_and_leaves_nothing_on_disk(smoke, api, tmp_path):
    result, left = api
    assert left == []
    _assert_equal_arrays(result.arrays, records.load_arrays(smoke["path"]))
    assert result.path is None and result.groups == tuple(SMOKE_OPTIONS["groups"])
    assert result.table() in smoke["log"]  # the command line printed the same table
    saved = schema.read(result.save(str(tmp_path / "saved")))
    _assert_equal_arrays(saved.arrays, result.arrays)
    assert saved.analysis == result.analysis and len(records.read_jsonl(saved.path)) == len(UNITS)


def _is_png(path) -> bool:
    return Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_figure_drawn_from_the_records(smoke, tmp_path):
    """One drawer on the run's records (all of them, from the folder and from memory: the slow test below)."""
    from gzone.plots import trajectories as figures

    records_ = schema.read(smoke["path"])
    assert _is_png(figures.draw_distances(str(tmp_path), records_.config, records_.arrays))


@pytest.mark.slow
def test_figures_drawn_from_the_run_folder_and_from_memory(smoke, api, tmp_path):
    from gzone import plots

    copy = shutil.copytree(smoke["path"], tmp_path / "run")
    assert [os.path.basename(f) for f in plots.draw(str(copy))] == list(FIGURES)
    assert all(_is_png(copy / name) for name in FIGURES)
    assert [os.path.basename(f) for f in api[0].plot(str(tmp_path / "figures"))] == list(FIGURES)


def test_bad_options_raise_naming_the_option(smoke):
    dataset = smoke["config"].data.load()
    data = (dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)
    module = smoke["config"].model.build(10)
    for kwargs, match in ((dict(groups=["clones"], clone_epoch=0), "clone_epoch: must be in"),
                          (dict(interp_range=[0.2, 1.5]), "interp_range"), (dict(num_models=1), "num_models"),
                          (dict(n_eval=1000), "n_eval: 1000 exceeds"),
                          (dict(snapshot_every=5, batch_size=64), "snapshot_every: 5 exceeds the 4 steps")):
        with pytest.raises(gzone.OptionError, match=match):
            gzone.trajectories(module, *data, log=None, **{**SMOKE_OPTIONS, **kwargs})
    with pytest.raises(ValueError, match="test examples: labels must be in"):
        gzone.trajectories(module, data[0], (dataset.x_test, dataset.y_test + 10), log=None)


def test_resume_computes_only_the_missing_units(smoke, tmp_path):
    copy = tmp_path / "trajectories" / "smoke"
    shutil.copytree(smoke["path"], copy)
    metrics = copy / "metrics.jsonl"
    kept = metrics.read_text().splitlines(keepends=True)[:4]  # up to the clones' parent, whose checkpoint the
    metrics.write_text("".join(kept) + kept[0][:10])  # clones start from; as if killed in the fifth line
    os.remove(copy / "arrays.npz")
    shutil.rmtree(copy / "snapshots" / "train_clones")
    run = _run(tmp_path)
    assert run["progress"][0] == f"resuming: {copy}  (4/{len(UNITS)} units done)"
    computed = [p.split()[3].rstrip(":") for p in run["progress"] if p.startswith("[trajectories] unit")]
    assert computed == UNITS[4:]
    _assert_equal_arrays(records.load_arrays(copy), records.load_arrays(smoke["path"]))
    assert [line["unit"] for line in records.read_jsonl(copy)] == UNITS
    for e in _snapshots(smoke["path"], "train_clones").epochs():
        np.testing.assert_array_equal(_snapshots(copy, "train_clones").read(e),
                                      _snapshots(smoke["path"], "train_clones").read(e))


def test_lost_snapshots_of_a_finished_unit_end_with_one_line(smoke, tmp_path, capsys):
    copy = tmp_path / "trajectories" / "smoke"
    shutil.copytree(smoke["path"], copy)
    metrics = copy / "metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:len(TRAIN_UNITS)]))
    os.remove(copy / "arrays.npz")
    os.remove(copy / "snapshots" / "train_inits" / "e00001.npy")
    code, out, err = _main([SMOKE, f"--workdir={tmp_path}", "--noplots"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "snapshots of train_inits are incomplete" in err, err


class _Stop(Exception):
    pass


def test_a_run_stopped_inside_a_training_unit_resumes_from_its_checkpoint(smoke, tmp_path, monkeypatch):
    """Stopped right after train_inits' epoch-1 checkpoint (its first snapshot file on disk), then rerun:
    training continues at epoch 1 and every array and snapshot equals the uninterrupted run's."""
    save = records.save_checkpoint

    def save_then_stop(path, unit, *, epoch, state, history):
        save(path, unit, epoch=epoch, state=state, history=history)
        if unit == "train_inits" and epoch == 1:
            raise _Stop

    monkeypatch.setattr(records, "save_checkpoint", save_then_stop)
    with pytest.raises(_Stop):
        _run(tmp_path)
    monkeypatch.setattr(records, "save_checkpoint", save)
    path = os.path.join(tmp_path, "trajectories", "smoke")
    assert records.completed_units(path) == {"train_single"}
    assert _snapshots(path, "train_inits").epochs() == [0]
    run = _run(tmp_path)
    assert "  train_inits: resuming after epoch 1" in run["progress"]
    _assert_equal_arrays(records.load_arrays(path), records.load_arrays(smoke["path"]))
    for unit in TRAIN_UNITS:
        a, b = _snapshots(smoke["path"], unit), _snapshots(path, unit)
        assert a.epochs() == b.epochs()
        for e in a.epochs():
            np.testing.assert_array_equal(a.read(e), b.read(e), err_msg=f"{unit} epoch {e}")


@pytest.mark.slow
def test_sigkill_inside_a_training_unit_then_rerun_equals_an_uninterrupted_run(smoke, tmp_path):
    env = background.environment(jax.config.jax_compilation_cache_dir)  # this session's cache
    command = [sys.executable, "-m", "experiments.trajectories", SMOKE, f"--workdir={tmp_path}", "--noplots"]
    victim = subprocess.Popen(stops.command(stops.AT_CHECKPOINT, command), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**env, "GZONE_TEST_STOP_UNIT": "train_inits"})
    try:
        stops.kill_when_stopped(victim)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.wait() == -signal.SIGKILL
    path = os.path.join(tmp_path, "trajectories", "smoke")
    assert records.completed_units(path) == {"train_single"}
    assert os.path.exists(records.checkpoint_file(path, "train_inits"))
    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "train_inits: resuming after epoch 1" in resumed.stderr
    _assert_equal_arrays(records.load_arrays(path), records.load_arrays(smoke["path"]))


def _main(argv, capsys):
    from experiments import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(trajectories.config_from_argv, lambda c: trajectories.run(c, progress=None),
                 groups=trajectories.GROUPS, argv=argv)
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err.strip()


BAD_INPUTS = {  # flags -> what the one-line error names
    "unknown_group": (["--groups=single,bogus"], "--groups"),
    "clone_epoch_not_before_the_end": (["--clone_epoch=4"], "--clone_epoch"),
    "interp_range_without_0_and_1": (["--interp_range=0.5,1"], "--interp_range"),
    "interp_range_of_three": (["--interp_range=-1,0,2"], "--interp_range"),
    "one_model": (["--num_models=1"], "--num_models"),
    "negative_margin": (["--grid_margin=-0.1"], "--grid_margin"),
    "unknown_flag": (["--nosuchflag=1"], "nosuchflag"),
    "snapshot_every_beyond_an_epoch": (["--snapshot_every=9"], "--snapshot_every"),  # after loading: 8 steps
    "n_eval_beyond_the_data": (["--n_eval=300"], "--n_eval"),  # 256 training examples
    "batch_beyond_the_data": (["--batch_size=300"], "--batch_size"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_run_folder(case, tmp_path, capsys):
    flags, expected = BAD_INPUTS[case]
    workdir = tmp_path / "work"
    code, out, err = _main([SMOKE, f"--workdir={workdir}", *flags], capsys)
    assert code == 2 and out == "", err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert not workdir.exists()


