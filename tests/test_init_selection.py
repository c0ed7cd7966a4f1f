"""The init-selection study end to end, in-process: scores, selection and tests checked against the records,
the committed reference, the scores against dense float64 Hessians and their probes, the API on the same
settings, resume from completed units, one-line errors; the SIGKILL in the middle of training is slow."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references
import stops

import gzone
from experiments import init_selection
from gzone import flat, models, projections, seeds, subspace
from gzone.analysis import selection
from gzone.runs import records, schema
from gzone.studies import init_selection as study

REPO = Path(__file__).resolve().parents[1]
SMOKE = f"--flagfile={REPO}/experiments/flagfiles/init_selection_smoke.flags"
DATA = REPO / "tests" / "data"
EXPERIMENT = "init_selection"
K, M, S, D_SUB, PROBES = 6, 2, 2, 4, 4  # inits, selected per group, seeds, subspace d, probes (smoke flags)
UNITS = ["score_b000", "score_b001", "train_top", "train_other"]
FULL = ("score_full_trace", "score_full_trace_over_frob", "score_full_trace_over_frob_se")


def _run(workdir, *flags):
    lines, progress = [], []
    config = init_selection.config_from_argv([SMOKE, f"--workdir={workdir}", *flags])
    path = init_selection.run(config, log=lines.append, progress=progress.append)
    return {"path": path, "log": lines, "progress": progress, "config": config}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("smoke"))


@pytest.fixture(scope="module")
def dataset(smoke):
    return smoke["config"].data.load()


def _analysis(path) -> dict:
    return json.loads(Path(path, "analysis.json").read_text())


def test_records_selection_and_tests(smoke):
    path = smoke["path"]
    config = records.read_config(path)
    assert config["status"] == "complete" and config["experiment"] == EXPERIMENT
    assert config["axes"] == schema.init_selection_axes(schema.selection_scores(full=True))
    assert [line["unit"] for line in records.read_jsonl(path)] == UNITS
    arrays = records.load_arrays(path)
    assert set(arrays) == set(config["axes"])
    sizes = {"init": K, "eigenvalue": D_SUB, "group": 2, "member": M, "seed": S, "epoch": 2, "record": 2}
    for key, axes in config["axes"].items():
        assert arrays[key].shape == tuple(sizes[a] for a in axes), key
    # Scores: subspace statistics from their eigenvalues; points at |theta| ~ r_X (scaled_init of Xavier
    # samples).
    eig = arrays["score_eigvals"].astype(np.float64)
    np.testing.assert_allclose(arrays["score_trace_over_frob"], eig.sum(1) / np.sqrt((eig**2).sum(1)),
                               rtol=1e-4)
    np.testing.assert_array_equal(arrays["score_n_pos"], (eig > 0).sum(1))
    np.testing.assert_allclose(arrays["score_radius"], config["derived"]["r_x"], rtol=0.2)
    assert len(set(np.round(arrays["score_loss"], 6))) == K  # K different inits
    # Selection: the best 2 by trace_over_frob against the worst 2 (worst first).
    order = np.argsort(-arrays["score_trace_over_frob"], kind="stable")
    np.testing.assert_array_equal(arrays["selected"], [order[:M], order[::-1][:M]])
    # Outcomes from the curves, and the tests from the outcomes.
    np.testing.assert_array_equal(arrays["final_test_loss"], arrays["test_loss"][..., -1])
    np.testing.assert_allclose(arrays["mean_train_loss"], arrays["train_loss"].reshape(2, M, S, -1).mean(-1),
                               rtol=1e-6)
    analysis = _analysis(path)
    assert analysis["selected"] == {"top": order[:M].tolist(), "other": order[::-1][:M].tolist()}
    assert analysis["steps"] == 2 * 8
    for name in schema.SELECTION_OUTCOMES:
        expected = selection.mann_whitney(arrays[name][0], arrays[name][1])
        assert analysis["tests"][name] == pytest.approx(expected)
        assert analysis["tests"][name]["n_a"] == M * S
        assert analysis["tests_init_means"][name]["n_a"] == M
        top, other = arrays[name].astype(np.float64).mean(-1)
        effect = analysis["effects"][name]  # top - other on the per-init means, Welch's interval
        assert effect["difference"] == pytest.approx(top.mean() - other.mean(), rel=1e-5, abs=1e-9)
        assert effect["low"] < effect["difference"] < effect["high"] and effect["n_a"] == M
        assert set(analysis["variance_components"][name]) >= {"interaction_var", "between_var"}
    # Runs from one init with different batch orders differ; the seed-s orders are shared by both groups.
    assert not np.array_equal(arrays["train_loss"][0, 0, 0], arrays["train_loss"][0, 0, 1])
    assert Path(path, "init_selection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "--num_inits=6" in Path(path, "flags.txt").read_text()
    assert "rank-biserial" in "\n".join(smoke["log"]) and "ETA" in smoke["progress"][-1]


def test_the_numbers_do_not_move(smoke):
    """The arrays equal those the code wrote before the library layout (tests/data/README.md), except the
    full-space probe estimates: the measurement core draws its probes from the same key by another route
    (`fullspace.estimates` splits it first), so those agree with the old ones within their standard errors."""
    got = records.load_arrays(smoke["path"])
    with np.load(DATA / "init_selection_smoke_reference.npz") as archive:
        reference = {k: archive[k] for k in archive.files}
    assert set(got) == set(reference)
    for key, expected in reference.items():
        if key == "score_n_pos":  # now a float count, so that a non-finite point can record NaN (README.md)
            assert got[key].dtype.kind == "f" and expected.dtype.kind == "i"
            expected = expected.astype(got[key].dtype)
        assert got[key].shape == expected.shape and got[key].dtype == expected.dtype, key
        if key in FULL:
            continue
        if expected.dtype.kind in "biu":
            np.testing.assert_array_equal(got[key], expected, err_msg=key)
        else:
            references.assert_close(got[key], expected, key)
    ratio, old = got["score_full_trace_over_frob"], reference["score_full_trace_over_frob"]
    se = np.hypot(got["score_full_trace_over_frob_se"], reference["score_full_trace_over_frob_se"])
    assert not np.array_equal(ratio, old) and np.all(np.abs(ratio - old) <= 3 * se), (ratio, old, se)


@pytest.mark.slow  # 4-6 s, mostly compiling the score function in float64
def test_scores_equal_dense_references(x64):
    """The score function on a small problem in float64 against jax.hessian: the subspace spectrum
    exactly, the full-space Tr(H)/||H||_F from 400 probes within 4 standard errors."""
    module = models.build(models.ModelSpec("mlp", (5,), "tanh"), 3)
    fm = flat.flat_model(module, (4,), jnp.float64)
    sample = flat.sample_fn(module, (4,), "xavier", jnp.float64)
    x = jax.random.normal(jax.random.key(1), (16, 4), jnp.float64)
    y = jnp.arange(16) % 3
    keys = jax.random.split(jax.random.key(2), 3)
    fn = study.make_score_fn(fm, d=6, projection="dense", num_probes=400, point_fn=sample, dtype=jnp.float64)
    out = jax.jit(fn)(*keys, x, y)
    theta = sample(keys[0])
    f = flat.loss_fn(fm, x, y)
    h = np.asarray(jax.jit(jax.hessian(f))(theta))
    P = np.asarray(projections.todense(projections.make("dense", keys[1], D=fm.D, d=6, dtype=jnp.float64)))
    eig = np.linalg.eigvalsh(P.T @ h @ P)
    np.testing.assert_allclose(out["eigvals"], eig, rtol=1e-8, atol=1e-12)
    assert out["trace_over_frob"] == pytest.approx(eig.sum() / np.sqrt(np.sum(eig**2)), rel=1e-8)
    assert out["frac_pos"] == pytest.approx(np.mean(eig > 0)) and out["n_pos"] == np.sum(eig > 0)
    assert out["loss"] == pytest.approx(float(f(theta)), rel=1e-12)
    assert out["radius"] == pytest.approx(float(jnp.linalg.norm(theta)), rel=1e-12)
    exact = np.trace(h) / np.linalg.norm(h)
    assert abs(out["full_trace_over_frob"] - exact) < 4 * out["full_trace_over_frob_se"] + 1e-3 * abs(exact)
    assert out["full_trace"] == pytest.approx(np.trace(h), rel=0.2)
    no_probes = study.make_score_fn(fm, d=6, projection="dense", num_probes=0, point_fn=sample,
                                    dtype=jnp.float64)
    assert set(jax.eval_shape(no_probes, *keys, x, y)) == {*schema.selection_scores(full=False), "eigvals"}
    with pytest.raises(ValueError):
        study.make_score_fn(fm, d=6, projection="dense", num_probes=1, point_fn=sample)


@pytest.mark.slow  # 10 s: a dense 826 x 826 Hessian, and the sampling compiled once more
def test_recorded_scores_equal_a_dense_float64_hessian_and_its_probes(smoke, dataset):
    """Init 3 recomputed independently: theta and P from the recorded keys, jax.hessian of the loss on the
    recorded score examples in float64; P^T H P's eigenvalues, and the probe statistics of the Rademacher
    vectors the documented key stream gives (fold_in(k_probe, i), split once by `fullspace.estimates`)."""
    c, i = smoke["config"], 3
    derived = records.read_config(smoke["path"])["derived"]
    index = np.asarray(derived["score_examples"])
    module = c.model.build(dataset.num_classes)
    keys = seeds.SeedKeys.from_seed(0)
    _, k_probe, _ = jax.random.split(keys.k_data, 3)
    fm32 = flat.flat_model(module, (40,))
    theta32 = subspace.point_at_radius(keys.init_keys(K)[i], jnp.float32(derived["r_x"]),
                                       convention="scaled_init", sample_fn=flat.sample_fn(module, (40,)),
                                       D=fm32.D, r_x=derived["r_x"])
    P = projections.todense(projections.make("sparse", keys.proj_keys(D_SUB, K)[i], D=fm32.D, d=D_SUB))
    k_full = jax.random.split(jax.random.fold_in(k_probe, i))[0]  # `fullspace.estimates`: (probes, Lanczos)
    split = jax.random.split(k_full, PROBES)
    probes = jax.vmap(lambda k: jax.random.rademacher(k, (fm32.D,), jnp.float32))(split)
    with jax.enable_x64(True):
        fm = flat.flat_model(module, (40,), jnp.float64)
        x, y = jnp.asarray(dataset.x_train[index], jnp.float64), jnp.asarray(dataset.y_train[index])
        H = np.asarray(jax.jit(jax.hessian(flat.loss_fn(fm, x, y)))(jnp.asarray(theta32, jnp.float64)))
    P, V = np.asarray(P, np.float64), np.asarray(probes, np.float64)
    arrays = records.load_arrays(smoke["path"])
    expected = np.linalg.eigvalsh(P.T @ H @ P)
    np.testing.assert_allclose(arrays["score_eigvals"][i], expected, rtol=2e-3,
                               atol=2e-4 * np.abs(expected).max())
    HV = V @ H
    t, f = np.sum(V * HV, axis=1), np.sum(HV * HV, axis=1)
    assert arrays["score_full_trace"][i] == pytest.approx(t.mean(), rel=1e-4)
    assert arrays["score_full_trace_over_frob"][i] == pytest.approx(t.mean() / np.sqrt(f.mean()), rel=1e-4)
    grad = np.array([1 / np.sqrt(f.mean()), -0.5 * t.mean() / f.mean() ** 1.5])
    se = np.sqrt(grad @ (np.cov(np.stack([t, f])) / PROBES) @ grad)
    assert arrays["score_full_trace_over_frob_se"][i] == pytest.approx(se, rel=1e-3)


def test_the_api_on_the_same_settings_gives_the_command_lines_arrays(smoke, dataset):
    c = smoke["config"]
    result = gzone.init_selection(c.model.build(10), (dataset.x_train, dataset.y_train),
                                  (dataset.x_test, dataset.y_test), log=None, **dataclasses.asdict(c.options))
    cli_arrays = records.load_arrays(smoke["path"])
    assert set(result.arrays) == set(cli_arrays)
    for key, value in cli_arrays.items():
        np.testing.assert_array_equal(result.arrays[key], value, err_msg=key)
    assert result.analysis == _analysis(smoke["path"])
    assert result.table() == smoke["log"][0]  # what the command line printed


def _truncate(path, keep: int) -> None:
    """What a kill after the first `keep` units leaves: their lines and files, none later, no arrays.npz."""
    lines = records.read_jsonl(path)
    Path(path, "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines[:keep]))
    for line in lines[keep:]:
        os.remove(records.unit_file(path, line["unit"]))
    for name in ("arrays.npz", "analysis.json", "init_selection.png"):
        os.remove(os.path.join(path, name))
    records.update_config(path, status="running")


def _assert_same_records(path, reference_path):
    got, expected = records.load_arrays(path), records.load_arrays(reference_path)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert _analysis(path) == _analysis(reference_path)


def test_resume_computes_only_the_missing_units(smoke, tmp_path):
    path = tmp_path / EXPERIMENT / "smoke"
    shutil.copytree(smoke["path"], path)
    _truncate(path, keep=1)  # the first score block done
    run = _run(tmp_path, "--noplots")
    assert f"resuming: {path}  (1/4 units done)" in run["progress"][0]
    computed = [line for line in run["progress"] if "] unit " in line]
    assert len(computed) == 3 and "unit 2/4 score_b001" in computed[0]
    assert [line["unit"] for line in records.read_jsonl(path)] == UNITS
    _assert_same_records(path, smoke["path"])


def _main(argv, capsys):
    from experiments import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(init_selection.config_from_argv, lambda c: init_selection.run(c, progress=None),
                 groups=init_selection.GROUPS, argv=argv)
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err.strip()


BAD_INPUTS = {  # flags -> the flag named in the one-line error
    "groups_do_not_fit": (["--num_selected=4"], "--num_selected"),  # two groups of 4 in 6 inits
    "one_probe": (["--num_probes=1"], "--num_probes"),
    "no_probes_for_a_full_space_score": (["--score=full_trace_over_frob", "--num_probes=0"], "--num_probes"),
    "zero_radius": (["--r_over_rx=0"], "--r_over_rx"),
    "unknown_score": (["--score=sharpness"], "score"),
    "unknown_flag": (["--nosuchflag=1"], "nosuchflag"),
    "d_exceeds_D": (["--d=100000"], "--d"),  # found after loading: D = 826
    "too_many_score_examples": (["--n_score=300"], "--n_score"),  # 256 training examples
    "batch_too_large": (["--batch_size=512"], "--batch_size"),
}
AFTER_LOADING = ("too_many_score_examples", "batch_too_large")  # 2 s each (the data are generated again)


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in AFTER_LOADING else c
                                  for c in sorted(BAD_INPUTS)])
def test_bad_input_is_one_line_exit_2_and_no_run_folder(case, tmp_path, capsys):
    flags, expected = BAD_INPUTS[case]
    workdir = tmp_path / "work"
    code, out, err = _main([SMOKE, f"--workdir={workdir}", *flags], capsys)
    assert code == 2 and out == "", err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert not workdir.exists()


@pytest.mark.slow  # the one kill test of a training checkpoint through Engine.fit here
def test_sigkill_mid_training_then_rerun_resumes_and_matches(smoke, tmp_path, subprocess_env):
    cmd = stops.command(stops.AT_CHECKPOINT, ["-m", f"experiments.{EXPERIMENT}", SMOKE,
                                              f"--workdir={tmp_path}", "--noplots"])
    proc = subprocess.Popen(cmd, cwd=REPO, env={**subprocess_env, "GZONE_TEST_STOP_UNIT": "train_other"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        stops.kill_when_stopped(proc, timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    path = tmp_path / EXPERIMENT / "smoke"
    assert [line["unit"] for line in records.read_jsonl(path)] == UNITS[:3]
    run = _run(tmp_path, "--noplots")
    assert "  train_other: resuming after epoch 1" in run["progress"]
    _assert_same_records(path, smoke["path"])
