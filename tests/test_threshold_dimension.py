"""The threshold-dimension study end to end, in-process: the command line's records and their semantics,
the numbers of the committed reference, the API on the same settings with a finite d_int checked by hand,
resume from completed units, one-line errors; the SIGKILL in the middle of a training unit is a slow test."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
import references
import stops

import gzone
from experiments import threshold_dimension
from gzone.analysis import dimension
from gzone.runs import records, schema
from gzone.studies import threshold_dimension as study

REPO = Path(__file__).resolve().parents[1]
SMOKE = f"--flagfile={REPO}/experiments/flagfiles/threshold_dimension_smoke.flags"
DATA = REPO / "tests" / "data"
EXPERIMENT = "threshold_dimension"
STARTS = ["t0", "t8", "lottery"]
SEEDS, EPOCHS, TARGET = 4, 2, 0.17  # what the smoke flags ask for
STOP_UNIT = "t0_d8"  # the kill lands after this unit's first epoch (the first subspace unit)
FIGURES = ("success_probability.png", "intrinsic_dimension.png", "threshold_vs_t0.png")
UNIT_ORDER = ["lottery_basis", "baseline", "burnin_t0", "t0_d8", "t0_d64", "burnin_t8", "t8_d8", "lottery_d8"]


def _run(workdir, *flags):
    lines, progress = [], []
    config = threshold_dimension.config_from_argv([SMOKE, f"--workdir={workdir}", *flags])
    path = threshold_dimension.run(config, log=lines.append, progress=progress.append)
    return {"path": path, "log": lines, "progress": progress, "config": config}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("smoke"))


def check_records(path):
    """config.json complete, each unit once, arrays shaped by their named axes, analysis, figures."""
    config = records.read_config(path)
    assert config["status"] == "complete" and config["experiment"] == EXPERIMENT
    assert config["schema"] == schema.VERSION and config["axes"] == schema.threshold_dimension_axes()
    assert config["derived"]["start_names"] == STARTS and config["derived"]["grid"] == [8, 64]
    arrays = records.load_arrays(path)
    assert set(arrays) == set(config["axes"])
    units = [line["unit"] for line in records.read_jsonl(path)]
    assert sorted(units) == sorted(UNIT_ORDER)  # each unit exactly once
    subspace_units = sorted(u for u in units if re.match(r"^(t\d+|lottery)_d\d+$", u))
    dims = sorted({int(u.rsplit("_d", 1)[1]) for u in subspace_units})
    rank = arrays["lottery_singular_values"].shape[1]
    sizes = {"target": 1, "start": 3, "d": len(dims), "seed": SEEDS, "epoch": EPOCHS, "t0": 2, "stat": 3,
             "rank": rank, "grid": 2}
    for key, axes in config["axes"].items():
        assert arrays[key].shape == tuple(sizes[a] for a in axes), (key, axes, arrays[key].shape)
    np.testing.assert_array_equal(arrays["dims"], dims)
    evaluated = {f"{s}_d{d}" for si, s in enumerate(STARTS) for di, d in enumerate(dims)
                 if arrays["evaluated"][si, di]}
    assert evaluated == set(subspace_units)
    for unit in units:
        assert os.path.exists(records.unit_file(path, unit))
    assert not [f for f in os.listdir(os.path.join(path, "units")) if f.endswith(".ckpt.npz")]  # all dropped
    return config, arrays, _analysis(path)


def _analysis(path) -> dict:
    return json.loads(Path(path, "analysis.json").read_text())


def check_semantics(arrays, analysis):
    """P_s, intervals, thresholds and d_int recomputed from the per-seed arrays."""
    acc, ev = arrays["final_test_accuracy"], arrays["evaluated"]
    assert np.all(np.isnan(acc[~ev])) and np.all((acc[ev] >= 0) & (acc[ev] <= 1))
    k = (acc >= TARGET).sum(-1)
    np.testing.assert_array_equal(arrays["successes"][0][ev], k[ev])
    np.testing.assert_allclose(arrays["p_success"][0][ev], k[ev] / SEEDS)
    assert np.all(arrays["p_low"][0][ev] <= arrays["p_success"][0][ev])
    assert np.all(arrays["p_success"][0][ev] <= arrays["p_high"][0][ev])
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
        assert len(search["evaluated"]) <= 2  # a 2-point grid, each point at most once
        assert arrays["search_evaluations"][0, si] == len(search["evaluated"])
        found = search["threshold"]
        assert (found is None and math.isnan(got)) or found == got  # the search and the records agree
        np.testing.assert_array_equal(sorted(search["evaluated"]), d_ev)  # the search trained exactly these
    sv = arrays["lottery_singular_values"]
    assert sv.shape[1] <= 16  # at most the 2 epochs x 8 snapshots
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


def test_records_are_complete_and_consistent(smoke):
    path = smoke["path"]
    config, arrays, analysis = check_records(path)
    settings = config["settings"]
    assert settings["burn_in"] == [0, 8] and settings["lottery"] is True and settings["targets"] == [TARGET]
    assert settings["data"]["n_train"] == 1000 and settings["model"]["class"] == "gzone.models.mlp.MLP"
    assert config["derived"]["dataset"]["name"] == "mnist1d" and config["derived"]["D"] == 826
    assert [line["unit"] for line in records.read_jsonl(path)] == UNIT_ORDER  # the old code's order
    check_semantics(arrays, analysis)
    for figure in FIGURES:
        assert Path(path, figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    flags_text = Path(path, "flags.txt").read_text()
    assert "--burn_in=0,8" in flags_text and "--lottery\n" in flags_text and "--targets=0.17" in flags_text
    out = "\n".join(smoke["log"])
    assert "threshold training dimension d*" in out and "d_int90 = nan" in out and "interpolated" in out
    assert any(line.startswith("[threshold_dimension] unit 8/") and "ETA" in line
               for line in smoke["progress"])


def test_the_numbers_do_not_move(smoke):
    """The arrays equal those the code wrote before the library layout (tests/data/README.md)."""
    got = records.load_arrays(smoke["path"])
    with np.load(DATA / "threshold_dimension_smoke_reference.npz") as archive:
        reference = {k: archive[k] for k in archive.files}
    assert set(got) == set(reference)
    for key, expected in reference.items():
        assert got[key].shape == expected.shape and got[key].dtype == expected.dtype, key
        if expected.dtype.kind in "biu":
            np.testing.assert_array_equal(got[key], expected, err_msg=key)
        else:
            references.assert_close(got[key], expected, key)


def test_the_api_gives_the_command_lines_arrays_and_a_finite_d_int_by_hand(smoke, tmp_path):
    """gzone.threshold_dimension on the smoke settings, with d_int at 60 % of the baseline (reached at
    d = 64, unlike the smoke's 90 %): the same units (so the same arrays but d_int), and d_int, its
    log-linear refinement and its bootstrap from the recorded units by hand."""
    c = smoke["config"]
    dataset = c.data.load()
    options = {**dataclasses.asdict(c.options), "dint_fraction": 0.6}
    result = gzone.threshold_dimension(c.model.build(10), (dataset.x_train, dataset.y_train),
                                       (dataset.x_test, dataset.y_test), log=None, **options)
    cli_arrays = records.load_arrays(smoke["path"])
    assert set(result.arrays) == set(cli_arrays)
    for key, value in cli_arrays.items():
        if key not in ("d_int", "d_int_interp"):
            np.testing.assert_array_equal(result.arrays[key], value, err_msg=key)

    path = smoke["path"]
    base = records.load_unit(path, "baseline")["final_test_accuracy"]  # [S]
    acc = {d: records.load_unit(path, f"t0_d{d}")["final_test_accuracy"] for d in (8, 64)}
    goal = 0.6 * float(np.mean(base))
    means = {d: float(np.mean(a)) for d, a in acc.items()}
    assert means[8] < goal <= means[64]  # so d_int60 = 64, bracketed by 8
    weight = (goal - means[8]) / (means[64] - means[8])
    expected_interp = math.exp(math.log(8) + weight * (math.log(64) - math.log(8)))
    estimate, low, high = result.arrays["d_int"]
    interp, low_i, high_i = result.arrays["d_int_interp"]
    assert estimate == 64 and low <= estimate <= high
    assert interp == pytest.approx(expected_interp, rel=1e-9) and 8 < interp < 64
    assert low_i <= interp <= high_i
    key = jax.random.fold_in(jax.random.split(jax.random.key(0), 4)[2], 1)  # k_data's d_int stream
    stacked = np.stack([acc[d] for d in (8, 64)])
    boot = dimension.bootstrap_intrinsic_dimension(key, [8, 64], stacked, base, fraction=0.6,
                                                   interpolate=True, num_resamples=200)
    np.testing.assert_allclose(result.arrays["d_int_interp"], boot[:3], rtol=1e-12)
    d_int = result.analysis["d_int"]
    assert d_int["goal"] == pytest.approx(goal) and d_int["search"]["threshold"] == 64
    assert d_int["grid"]["estimate"] == 64 and d_int["interpolated"]["found"] == boot.found
    assert "d_int60 = 64 on the grid" in result.table()
    figures = result.plot(str(tmp_path / "figures"))
    assert [os.path.basename(f) for f in figures] == list(FIGURES)


def test_the_analysis_of_synthetic_units_finds_the_planted_thresholds():
    """`analyse` on units written here: P_s steps from 0 to 1 between d = 10 and 100 (so d* = 100), mean
    accuracy crosses 90 % of a perfect baseline between d = 100 (0.865) and 1000 (0.95)."""
    opts = study.ThresholdOptions(burn_in=(0,), targets=(0.5,), num_seeds=4, epochs=1, d_min=10, d_max=1000,
                                  grid_per_decade=1, bootstrap=50)
    acc = {10: [0.3, 0.2, 0.25, 0.3], 100: [0.85, 0.86, 0.87, 0.88], 1000: [0.95, 0.94, 0.96, 0.95]}
    units = {("t0", d): {"final_test_accuracy": np.asarray(a), "final_train_loss": np.full(4, 1.0),
                         "test_accuracy": np.asarray(a)[:, None]} for d, a in acc.items()}
    base = {"final_test_accuracy": np.ones(4), "test_accuracy": np.ones((4, 1)),
            "final_train_loss": np.zeros(4)}
    anchor = {"test_accuracy": np.full(4, 0.1), "train_loss": np.full(4, 2.3)}
    arrays, analysis = study.analyse(opts, np.array([10, 100, 1000]), base, units, [anchor], None, {}, None,
                                     key=jax.random.key(0))
    np.testing.assert_array_equal(arrays["p_success"][0, 0], [0.0, 1.0, 1.0])
    assert arrays["threshold"][0, 0] == 100 and arrays["threshold_below"][0, 0] == 10
    estimate, low, high = arrays["d_int"]
    assert estimate == 1000 and low <= 1000 <= high
    means = {d: np.mean(a) for d, a in acc.items()}
    weight = (0.9 - means[100]) / (means[1000] - means[100])
    assert arrays["d_int_interp"][0] == pytest.approx(100 * 10**weight, rel=1e-12)
    assert arrays["lottery_singular_values"].shape == (4, 0) and arrays["evaluated"].all()
    assert analysis["d_int"]["goal"] == pytest.approx(0.9) and analysis["thresholds"][0]["threshold"] == 100
    assert "d_int90 = 1000 on the grid" in dimension.table(analysis)


def test_resume_computes_only_the_missing_units(smoke, tmp_path):
    copy = tmp_path / EXPERIMENT / "smoke"
    shutil.copytree(smoke["path"], copy)
    metrics = copy / "metrics.jsonl"
    kept = metrics.read_text().splitlines(keepends=True)[:5]
    metrics.write_text("".join(kept) + kept[0][:10])  # as if killed in the middle of the sixth line
    os.remove(copy / "arrays.npz")
    run = _run(tmp_path, "--noplots")
    assert f"resuming: {copy}  (5 units done)" in run["progress"][0]
    computed = [line.split()[3].rstrip(":") for line in run["progress"] if "] unit " in line]
    assert computed == UNIT_ORDER[5:]  # only the missing units, in the order the searches ask for them
    got, expected = records.load_arrays(copy), records.load_arrays(smoke["path"])
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert _analysis(copy) == _analysis(smoke["path"])
    assert [line["unit"] for line in records.read_jsonl(copy)] == UNIT_ORDER


def _main(argv, capsys):
    from experiments import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(threshold_dimension.config_from_argv, lambda c: threshold_dimension.run(c, progress=None),
                 groups=threshold_dimension.GROUPS, argv=argv)
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err.strip()


BAD_INPUTS = {
    "target_above_one": (["--targets=1.5"], "--targets"),
    "zero_delta": (["--delta=0"], "--delta"),
    "d_max_below_d_min": (["--d_max=4"], "--d_max"),
    "negative_burn_in": (["--burn_in=0,-4"], "--burn_in"),
    "nothing_to_train": (["--nosearch"], "--dims"),
    "unknown_flag": (["--no_such_flag=1"], "no_such_flag"),
    "zero_baseline_lr": (["--baseline_lr=0"], "--baseline_lr"),
    "d_max_above_D": (["--d_max=100000"], "--d_max"),  # known after building the model
    "snapshots_longer_than_an_epoch": (["--snapshot_every=1000"], "--snapshot_every"),  # known after loading
    "missing_data_folder": (["--data_dir={tmp}/missing"], "--data_dir"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_run_folder(case, tmp_path, capsys):
    flags, expected = BAD_INPUTS[case]
    workdir = tmp_path / "work"
    code, out, err = _main([SMOKE, f"--workdir={workdir}", *(f.format(tmp=tmp_path) for f in flags)], capsys)
    assert code == 2 and out == "", err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert not workdir.exists()


def test_other_settings_in_an_existing_run_folder_fail_with_one_line(smoke, capsys):
    path = smoke["path"]
    before = sorted(os.listdir(path))
    code, out, err = _main([SMOKE, f"--workdir={Path(path).parents[1]}", "--targets=0.3"], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: --name: ") and "differs in: targets" in err, err
    assert sorted(os.listdir(path)) == before  # the run folder is left as it was


@pytest.mark.slow  # a second training-checkpoint kill test (tests/test_init_selection.py has one too)
def test_sigkill_mid_unit_then_rerun_resumes_and_matches_uninterrupted(smoke, tmp_path, subprocess_env):
    workdir = tmp_path / "killed"
    path = workdir / EXPERIMENT / "smoke"
    cmd = stops.command(stops.AT_CHECKPOINT, ["-m", f"experiments.{EXPERIMENT}", SMOKE,
                                              f"--workdir={workdir}", "--noplots"])
    proc = subprocess.Popen(cmd, cwd=REPO, env={**subprocess_env, "GZONE_TEST_STOP_UNIT": STOP_UNIT},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        stops.kill_when_stopped(proc, timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    # What the kill left: the baseline, lottery basis and init anchors done, t0_d8 after epoch 1.
    assert [line["unit"] for line in records.read_jsonl(path)] == UNIT_ORDER[:3]
    with np.load(records.checkpoint_file(str(path), STOP_UNIT), allow_pickle=False) as archive:
        assert int(archive["epoch"]) == 1 and archive["hist_test_accuracy"].shape == (SEEDS, 1)
    assert not (path / "arrays.npz").exists()
    # The same command again resumes: done units are read back, the stopped one continues at epoch 1.
    run = _run(workdir, "--noplots")
    assert f"resuming: {path}  (3 units done)" in run["progress"][0]
    assert f"  {STOP_UNIT}: resuming after epoch 1" in run["progress"]
    assert not any("baseline:" in line or "lottery_basis:" in line for line in run["progress"])  # not again
    check_records(str(path))
    got, expected = records.load_arrays(str(path)), records.load_arrays(smoke["path"])
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)  # bitwise
    assert _analysis(path) == _analysis(smoke["path"])


@pytest.mark.slow  # a smoke threshold run on the training loss with the quadratic-well prediction: ~1 min
def test_a_run_with_the_gordon_prediction_records_it_beside_the_measured_threshold(tmp_path):
    run = _run(tmp_path, "--target_metric=train_loss", "--targets=1.5,2.0", "--gordon_seeds=2",
               "--gordon_top_k=4", "--gordon_order=12", "--gordon_probes=2", "--nolottery", "--name=gordon")
    config = records.read_config(run["path"])
    assert config["status"] == "complete" and config["axes"] == schema.threshold_dimension_axes(gordon=True)
    arrays = records.load_arrays(run["path"])
    units = [line["unit"] for line in records.read_jsonl(run["path"])]
    assert units.count("gordon_well") == 1
    D = int(config["derived"]["D"])
    for key in ("gordon_epsilon", "gordon_cone", "gordon_larsen", "gordon_beta", "gordon_mu0"):
        a = arrays[key]
        assert a.shape == (2, 2, 2), (key, a.shape)  # [target, t0, seed]
    # The wells sit at the baseline's solutions and are seen from each seed's own start point: the
    # initialisation (t0 = 0) and the point after t0 = 8 full-space steps (the subspaces' anchors).
    unit = lambda name: np.load(Path(run["path"], "units", f"{name}.npz"))  # noqa: E731
    theta_star = unit("baseline")["theta_final"]
    for si, t0 in enumerate((0, 8)):
        anchor = unit(f"burnin_t{t0}")["anchor"][:2]
        np.testing.assert_allclose(arrays["gordon_distance"][si], np.linalg.norm(anchor - theta_star, axis=1),
                                   rtol=1e-5)
    np.testing.assert_allclose(arrays["gordon_loss"], arrays["baseline_train_loss"][:2], rtol=1e-5)
    # the loss along the segment solution -> start ends at the start's own training loss
    np.testing.assert_allclose(arrays["gordon_line_loss"][..., -1], arrays["anchor_train_loss"][:, :2],
                               rtol=1e-4)
    eps = np.asarray([1.5, 2.0])[:, None, None] - arrays["gordon_loss"]  # NaN where the target is below L*
    np.testing.assert_allclose(arrays["gordon_epsilon"], np.where(eps > 0, eps, np.nan)[:, [0, 0]], rtol=1e-6)
    cone = arrays["gordon_cone"]
    print("gordon_cone [target, t0, seed]", cone.tolist(), "solution loss", arrays.get("gordon_loss"))
    assert np.isfinite(cone[1]).all()  # the solutions' training loss is below the looser target
    assert np.all((cone[np.isfinite(cone)] >= 0) & (cone[np.isfinite(cone)] <= D))
    # a looser target leaves a wider well: its predicted threshold is not above the stricter one's
    finite = np.isfinite(cone[0]) & np.isfinite(cone[1])
    assert np.all(cone[1][finite] <= cone[0][finite] + 1e-6)
    analysis = json.loads((Path(run["path"]) / "analysis.json").read_text())
    rows = analysis["gordon"]
    assert {(r["target"], r["start"]) for r in rows} == {(t, s) for t in (1.5, 2.0) for s in ("t0", "t8")}
    for r in rows:
        assert len(r["cone_seeds"]) == 2 and len(r["solution_loss"]) == 2
        assert "measured_threshold" in r and "larsen" in r
        assert len(r["distance"]) == len(r["start_loss"]) == len(r["quadratic_start_loss"]) == 2
    assert Path(run["path"], "gordon_prediction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lr_reference_d_is_inverse_sqrt_d_and_only_a_setting_when_given():
    opts = study.ThresholdOptions(lr=0.1, lr_reference_d=1000)
    assert opts.subspace_lr(1000) == 0.1 and math.isclose(opts.subspace_lr(4000), 0.05)
    assert study.ThresholdOptions(lr=0.1).subspace_lr(4000) == 0.1
    assert "lr_reference_d" not in gzone.options.settings(study.ThresholdOptions())
    assert gzone.options.settings(opts)["lr_reference_d"] == 1000


@pytest.mark.slow  # three small runs: ~15 s
def test_lr_reference_d_scales_the_subspace_learning_rate_as_inverse_sqrt_d(tmp_path):
    """lr 0.3 with lr_reference_d = 4 d trains exactly as lr 0.6 (= 0.3 sqrt(4)) at d, unlike lr 0.3;
    the option is absent from the settings at its default (older run folders stay resumable)."""
    small = ["--nosearch", "--dims=8", "--burn_in=0", "--nolottery", "--num_seeds=2", "--epochs=1",
             "--n_train=500", "--bootstrap=0"]
    arrays = {}
    for name, flags in {"scaled": ["--lr=0.3", "--lr_reference_d=32"], "doubled": ["--lr=0.6"],
                        "plain": ["--lr=0.3"]}.items():
        path = _run(tmp_path / name, *small, *flags)["path"]
        arrays[name] = records.load_unit(path, "t0_d8")
        assert ("lr_reference_d" in records.read_config(path)["settings"]) == (name == "scaled")
    for key, value in arrays["doubled"].items():
        np.testing.assert_array_equal(arrays["scaled"][key], value, err_msg=key)
    assert not np.array_equal(arrays["plain"]["train_loss_curve"], arrays["doubled"]["train_loss_curve"])
