"""The emergent-geometry experiment end to end, in-process: records checked against their definitions and
an independent float64 route at two points, the numbers of the committed reference, the API on the same
settings, resume from completed units, one-line errors (exit 2, no run folder) for bad input; the
SIGKILL in the middle of training is a slow test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import background
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references
import stops
from shared_data import generated_once

import gzone
from experiments import emergent_geometry
from gzone import flat
from gzone.analysis import emergent
from gzone.curvature import logits
from gzone.runs import records, schema

REPO = Path(__file__).resolve().parents[1]
SMOKE = f"--flagfile={REPO}/experiments/flagfiles/emergent_smoke.flags"
EXPERIMENT = "emergent_geometry"
S, C, K, N_GRAM = 2, 10, 12, 20  # seeds, classes, top_k, Gram examples (what the smoke flags ask for)
STEPS = [0, 4, 8, 12, 16]
UNITS = ["train"] + [f"ckpt_{i:03d}" for i in range(5)] + [f"radius_{i:03d}" for i in range(3)]
FIGURES = ("gradient_clustering.png", "hessian_outliers.png", "gradient_overlap.png", "logit_variance.png")
SMOKE_OPTIONS = dict(parts=["training", "radius"], log10_r2_over_rx2=[-2.0, 0.0, 2.0], num_seeds=S, epochs=2,
                     batch_size=32, record_every=4, snapshot_every=4, lr=0.01, gram_per_class=2,
                     gram_chunk=10, n_hessian=128, top_k=K, lanczos_order=24)

_data_generated_once = pytest.fixture(scope="module", autouse=True)(generated_once)


def _run(workdir, *flags):
    lines, progress = [], []
    config_ = emergent_geometry.config_from_argv([SMOKE, f"--workdir={workdir}", "--noplots", *flags])
    path = emergent_geometry.run(config_, log=lines.append, progress=progress.append)
    return {"path": path, "log": lines, "progress": progress, "config": config_}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("smoke"))  # the figures: test_*figure*


def test_records_match_their_definitions(smoke):
    path = smoke["path"]
    config_ = records.read_config(path)
    assert config_["status"] == "complete" and config_["experiment"] == EXPERIMENT
    assert config_["schema"] == schema.VERSION
    settings, derived = config_["settings"], config_["derived"]
    assert derived["checkpoint_steps"] == STEPS and derived["steps_per_epoch"] == 8
    assert settings["log10_r2_over_rx2"] == [-2.0, 0.0, 2.0] and settings["parts"] == ["training", "radius"]
    assert settings["model"]["class"] == "gzone.models.mlp.MLP" and settings["seed_mode"] in ("vmap", "map")
    assert len(derived["gram_examples"]) == N_GRAM and len(derived["hessian_examples"]) == 128
    assert [line["unit"] for line in records.read_jsonl(path)] == UNITS
    assert not [f for f in os.listdir(os.path.join(path, "units")) if "ckpt.npz" in f]
    arrays = records.load_arrays(path)
    assert set(arrays) == set(config_["axes"]) == set(schema.emergent_geometry_axes(settings["parts"]))
    sizes = {"checkpoint": 5, "radius": 3, "seed": S, "eigen": K, "logit": C, "class": C, "logit2": C,
             "class2": C, "epoch": 2, "record": 2}
    for key, axes in config_["axes"].items():
        assert arrays[key].shape == tuple(sizes[a] for a in axes), key
    np.testing.assert_array_equal(arrays["checkpoint_step"], STEPS)
    # |theta| at checkpoints 1.. is the radius the trainer recorded at the end of each record block
    # (steps 4, 8, 12, 16).
    np.testing.assert_allclose(arrays["train_radius"][1:], arrays["radius_curve"].reshape(S, -1).T, rtol=1e-5)
    np.testing.assert_allclose(arrays["radius_radius"], np.repeat(arrays["radii"][:, None], S, 1), rtol=1e-5)
    radii = derived["r_x"] * 10 ** (np.asarray([-2.0, 0.0, 2.0]) / 2)
    np.testing.assert_allclose(arrays["radii"], radii, rtol=1e-12)
    for part in ("train", "radius"):
        eigs, overlap = arrays[f"{part}_top_eigs"], arrays[f"{part}_overlap"]
        assert np.all(np.diff(eigs, axis=-1) <= 1e-6 * np.abs(eigs).max())  # largest first
        assert np.all(np.diff(overlap, axis=-1) >= -1e-6) and np.all((overlap >= 0) & (overlap <= 1 + 1e-5))
        for rule, suffix in (("last", ""), ("largest", "_largest")):
            expected = [[emergent.count_outliers(e, min_ratio=1.5, rule=rule) for e in row] for row in eigs]
            np.testing.assert_array_equal(arrays[f"{part}_outliers{suffix}"], expected)
        # Ordered pairs of distinct examples: 2 per (logit, class) same-class; 20 x 19 per logit; 20 x 19 x 90
        assert np.all(arrays[f"{part}_n_slsc"] == C * C * 2)
        assert np.all(arrays[f"{part}_n_sl"] == C * N_GRAM * (N_GRAM - 1))
        assert np.all(arrays[f"{part}_n_dl"] == N_GRAM * (N_GRAM - 1) * C * (C - 1))
        blocks = arrays[f"{part}_block_mean"]
        diag = np.stack([blocks[..., k, c, k, c] for k in range(C) for c in range(C)], -1)
        np.testing.assert_allclose(arrays[f"{part}_q_slsc"], diag.mean(-1), rtol=1e-4)  # equal counts/block
        assert np.all(np.abs(arrays[f"{part}_q_dl"]) < arrays[f"{part}_q_sl"])
        assert np.all(np.abs(arrays[f"{part}_grad_radial"]) <= arrays[f"{part}_grad_norm"] * (1 + 1e-5))
    assert not np.array_equal(arrays["train_q_sl"][:, 0], arrays["train_q_sl"][:, 1])  # seeds differ
    analysis = json.loads(Path(path, "analysis.json").read_text())
    assert [row["step"] for row in analysis["train"]] == STEPS
    for i, row in enumerate(analysis["train"]):
        assert row["q_slsc"] == pytest.approx(float(np.mean(arrays["train_q_slsc"][i])), rel=1e-6)
        assert row["grad_radial"] == pytest.approx(float(np.mean(arrays["train_grad_radial"][i])), rel=1e-6)
        assert row["outliers"] == arrays["train_outliers"][i].tolist()
        assert row["overlap_top_C"] == pytest.approx(arrays["train_overlap"][i, :, C - 1].tolist(), rel=1e-6)
    assert "--gram_per_class=2" in Path(path, "flags.txt").read_text()
    assert smoke["log"][-1] == f"records: {path}" and "q_SLSC" in smoke["log"][0]
    assert len([p for p in smoke["progress"] if p.startswith(f"[{EXPERIMENT}] unit")]) == len(UNITS)


def _two_points(smoke):
    """A training checkpoint from the recorded thetas and a radius point rebuilt from the recorded init
    (seed 1; both parts draw seed s's init direction from the same key): [(part, index, theta [D])], the
    float64 model and its loss on the recorded Hessian examples."""
    derived = records.read_config(smoke["path"])["derived"]
    dataset = smoke["config"].data.load()
    module = smoke["config"].model.build(C)
    index = np.asarray(derived["hessian_examples"])
    thetas = records.load_unit(smoke["path"], "train")["thetas"].astype(np.float64)  # [seed, checkpoint, D]
    at_radius = derived["radii"][2] * thetas[1, 0] / np.linalg.norm(thetas[1, 0])  # xavier_rescaled: r u0
    fm = flat.flat_model(module, (40,), jnp.float64)
    x, y = jnp.asarray(dataset.x_train[index], jnp.float64), jnp.asarray(dataset.y_train[index])
    points = [("radius", 2, jnp.asarray(at_radius)), ("train", 3, jnp.asarray(thetas[1, 3]))]
    return points, fm, x, flat.loss_fn(fm, x, y)


def test_two_points_equal_an_independent_float64_route(smoke, x64):
    """Loss, |g|, the radial gradient, |theta| and the logit variance at two points, recomputed in float64."""
    arrays = records.load_arrays(smoke["path"])
    points, fm, x, loss = _two_points(smoke)

    @jax.jit
    def reference(theta):
        g = jax.grad(loss)(theta)
        return {"loss": loss(theta), "grad_norm": jnp.linalg.norm(g), "radius": jnp.linalg.norm(theta),
                "grad_radial": jnp.vdot(g, theta) / jnp.linalg.norm(theta),
                "logit_var": logits.logit_variance(flat.logits(fm, theta, x))}

    for part, i, theta in points:
        for key, value in reference(theta).items():
            got = arrays[f"{part}_{key}"][i, 1]
            assert got == pytest.approx(float(value), rel=2e-4, abs=1e-6), (part, key)


@pytest.mark.slow
def test_top_eigenvalues_equal_the_dense_float64_hessian(smoke, x64):
    arrays = records.load_arrays(smoke["path"])
    points, _, _, loss = _two_points(smoke)
    hessian = jax.jit(jax.hessian(loss))
    for part, i, theta in points:
        top = np.linalg.eigvalsh(np.asarray(hessian(theta)))[::-1][:2]
        np.testing.assert_allclose(arrays[f"{part}_top_eigs"][i, 1, :2], top, rtol=2e-3)


def test_the_numbers_do_not_move(smoke):
    """The arrays equal those the code wrote before the library layout (tests/data/README.md; the block
    means are kept for logits 0 and 1 only there); grad_radial is new."""
    with np.load(REPO / "tests" / "data" / "emergent_geometry_smoke_reference.npz") as archive:
        reference = {k: archive[k] for k in archive.files}
    arrays = records.load_arrays(smoke["path"])
    assert set(arrays) - set(reference) == {"train_grad_radial", "radius_grad_radial"}
    for key, expected in reference.items():
        got = arrays[key][:, :, :2, :, :2, :] if key.endswith("_block_mean") else arrays[key]
        assert got.shape == expected.shape and got.dtype == expected.dtype, key
        references.assert_close(got, expected, key)


def _assert_equal_arrays(got: dict, expected: dict):
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_the_api_on_the_same_settings_gives_the_command_lines_arrays(smoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = smoke["config"].data.load()
    result = gzone.emergent_geometry(smoke["config"].model.build(C), (dataset.x_train, dataset.y_train),
                                     (dataset.x_test, dataset.y_test), log=None, **SMOKE_OPTIONS)
    assert os.listdir(tmp_path) == [] and result.path is None
    _assert_equal_arrays(result.arrays, records.load_arrays(smoke["path"]))
    assert result.table() in smoke["log"] and result.analysis == schema.read(smoke["path"]).analysis
    data = (dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)
    with pytest.raises(gzone.OptionError, match="log10_r2_over_rx2: the radius part needs radii"):
        gzone.emergent_geometry(smoke["config"].model.build(C), *data, log=None, parts=["radius"])
    with pytest.raises(gzone.OptionError, match="parts: radii given"):
        gzone.emergent_geometry(smoke["config"].model.build(C), *data, log=None, parts=["training"],
                                r_over_rx=[1.0])


def _is_png(path) -> bool:
    return Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_figure_drawn_from_the_records(smoke, tmp_path):
    """One drawer on the run's records (all of them, from the folder and from memory: the slow test below)."""
    from gzone.plots import emergent_geometry as figures

    records_ = schema.read(smoke["path"])
    assert _is_png(figures.draw_overlap(str(tmp_path), records_.config, records_.arrays))


@pytest.mark.slow
def test_figures_drawn_from_the_run_folder_and_from_memory(smoke, tmp_path):
    from gzone import plots

    copy = shutil.copytree(smoke["path"], tmp_path / "run")
    assert [os.path.basename(f) for f in plots.draw(str(copy))] == list(FIGURES)
    assert all(_is_png(copy / name) for name in FIGURES)
    dataset = smoke["config"].data.load()
    result = gzone.emergent_geometry(smoke["config"].model.build(C), (dataset.x_train, dataset.y_train),
                                     (dataset.x_test, dataset.y_test), log=None, **SMOKE_OPTIONS)
    assert [os.path.basename(f) for f in result.plot(str(tmp_path / "figures"))] == list(FIGURES)


def _truncate(path, keep: int) -> None:
    """What a kill after the first `keep` units leaves: their lines and files, no later ones, no arrays."""
    lines = records.read_jsonl(path)
    Path(path, "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines[:keep]))
    for line in lines[keep:]:
        os.remove(records.unit_file(path, line["unit"]))
    for name in ("arrays.npz", "analysis.json"):
        os.remove(os.path.join(path, name))
    records.update_config(path, status="running")


def test_resume_from_completed_units_equals_the_uninterrupted_run(smoke, tmp_path):
    ref = smoke["path"]
    path = os.path.join(tmp_path, EXPERIMENT, "smoke")
    shutil.copytree(ref, path)
    _truncate(path, keep=3)  # train, ckpt_000, ckpt_001 done
    run = _run(tmp_path)
    assert run["progress"][0] == f"resuming: {path}  (3/9 units done)"
    computed = [p.split()[3].rstrip(":") for p in run["progress"] if p.startswith(f"[{EXPERIMENT}] unit")]
    assert computed == UNITS[3:]
    assert [line["unit"] for line in records.read_jsonl(path)] == UNITS
    _assert_equal_arrays(records.load_arrays(path), records.load_arrays(ref))
    assert records.read_config(path)["status"] == "complete"


def _main(argv, capsys):
    from experiments import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(emergent_geometry.config_from_argv, lambda c: emergent_geometry.run(c, progress=None),
                 groups=emergent_geometry.GROUPS, argv=argv)
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err.strip()


BAD_INPUTS = {  # flags -> what the one-line error names
    "unknown_part": (["--parts=training,bogus"], "--parts"),
    "one_example_per_class": (["--gram_per_class=1"], "--gram_per_class"),
    "lanczos_order_below_top_k": (["--lanczos_order=5"], "--lanczos_order"),
    "outlier_ratio_not_above_1": (["--outlier_min_ratio=1"], "--outlier_min_ratio"),
    "malformed_radius_grid": (["--log10_r2_over_rx2=1,2"], "--log10_r2_over_rx2"),
    "radius_part_without_radii": (["--log10_r2_over_rx2="], "--log10_r2_over_rx2"),
    "radii_without_the_radius_part": (["--parts=training"], "--parts"),
    "both_radius_flags": (["--radii=2"], "--log10_r2_over_rx2"),
    "unknown_flag": (["--nosuchflag=1"], "nosuchflag"),
    "gram_chunk_not_dividing_N": (["--gram_chunk=3"], "--gram_chunk"),  # after loading: N = 20 examples
    "snapshot_every_beyond_an_epoch": (["--snapshot_every=9"], "--snapshot_every"),  # 8 steps per epoch
    "n_hessian_beyond_the_data": (["--n_hessian=300"], "--n_hessian"),  # 256 training examples
    "lanczos_order_beyond_D": (["--lanczos_order=900", "--top_k=2"], "--lanczos_order"),  # D = 826
    "more_per_class_than_a_class_has": (["--gram_per_class=200", "--gram_chunk=1"], "--gram_per_class"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_run_folder(case, tmp_path, capsys):
    flags, expected = BAD_INPUTS[case]
    workdir = tmp_path / "work"
    code, out, err = _main([SMOKE, f"--workdir={workdir}", *flags], capsys)
    assert code == 2 and out == "", err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert not workdir.exists()


def test_other_settings_in_an_existing_run_folder_fail_with_one_line(smoke, capsys):
    workdir = Path(smoke["path"]).parents[1]
    code, out, err = _main([SMOKE, f"--workdir={workdir}", "--lr=0.02"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "--name" in err and "lr" in err, err
    assert records.read_config(smoke["path"])["settings"]["lr"] == 0.01  # untouched


@pytest.mark.slow
def test_sigkill_mid_training_then_rerun_resumes_and_matches(smoke, tmp_path):
    env = background.environment(jax.config.jax_compilation_cache_dir)  # this session's cache
    command = [sys.executable, "-m", f"experiments.{EXPERIMENT}", SMOKE, f"--workdir={tmp_path}", "--noplots"]
    proc = subprocess.Popen(stops.command(stops.AT_CHECKPOINT, command), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**env, "GZONE_TEST_STOP_UNIT": "train"})
    try:
        stops.kill_when_stopped(proc, timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.wait() == -signal.SIGKILL
    path = os.path.join(tmp_path, EXPERIMENT, "smoke")
    assert records.read_jsonl(path) == [] and os.path.exists(records.checkpoint_file(path, "train"))
    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "train: resuming after epoch 1" in resumed.stderr
    _assert_equal_arrays(records.load_arrays(path), records.load_arrays(smoke["path"]))


def test_checkpoint_plan_measures_the_init_and_log_spaced_snapshots():
    from gzone.studies import emergent_geometry as study

    opts = study.EmergentOptions(parts=["training"], epochs=2, snapshot_every=4, num_checkpoints=3)
    index, steps = study.checkpoint_plan(opts, steps_per_epoch=8)  # snapshots at steps 4, 8, 12, 16
    assert index.tolist() == [0, 1, 2, 4] and steps.tolist() == [0, 4, 8, 16]
    index, steps = study.checkpoint_plan(opts.replace(num_checkpoints=0, snapshot_every=3), steps_per_epoch=8)
    assert steps.tolist() == [0, 3, 6, 11, 14]  # two per epoch: steps 3, 6 of each 8
