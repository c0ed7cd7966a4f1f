"""The run engine's contract, on the radius scan (every experiment runs through the same engine): bad
input ends with one line and no run folder, a damaged run folder is refused or repaired, a failed write
corrupts nothing, kills at a seeded schedule of points resume to the same arrays, non-finite points."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import conftest
import numpy as np
import pytest

import gzone
from experiments import cli, radius_scan
from gzone import data, models
from gzone.runs import records

REPO = Path(__file__).resolve().parents[1]
SMOKE = f"--flagfile={REPO}/experiments/flagfiles/smoke.flags"
# The smoke scan at one d (3 units, one per radius): the engine's contract does not depend on how many d there
# are, and every d is one more compiled program for each run here.
SCAN = [SMOKE, "--dims=8"]


def _main(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(
            radius_scan.config_from_argv,
            lambda c: radius_scan.run(c, log=lambda s: None, progress=None),
            groups=radius_scan.GROUPS,
            argv=argv,
        )
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err.strip()


def _run(argv, lines=None):
    config = radius_scan.config_from_argv([*SCAN, "--noplots", *argv])
    return radius_scan.run(config, log=lambda s: None, progress=(lines.append if lines is not None else None))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = tmp_path_factory.mktemp("finished")
    path = _run([f"--workdir={work}"])
    return {"path": path, "arrays": records.load_arrays(path)}


def _copy(finished, tmp_path):
    copy = tmp_path / "radius_scan" / "smoke"
    shutil.copytree(finished["path"], copy)
    return copy


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _toy_data(folder, *, seed=0, **changes):
    """A small uint8 dataset <folder>/toy.npz of 40-feature vectors (MNIST-1D's input shape), 10 classes."""
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 255, (200, 40)).astype(np.uint8),
        "y_train": np.arange(200) % 10,
        "x_test": rng.integers(0, 255, (50, 40)).astype(np.uint8),
        "y_test": np.arange(50) % 10,
    }
    arrays.update({k: f(arrays[k]) for k, f in changes.items()})
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, "toy.npz"), **arrays)
    return os.path.join(folder, "toy.npz")


# ------------------------------------------------------------------ bad input: one line, no run folder


def _data_case(tmp, **changes):
    _toy_data(tmp / "data", **changes)
    return ["--dataset=toy", f"--data_dir={tmp / 'data'}", "--n_train=200"]


def _archive_case(tmp, how):
    path = Path(_toy_data(tmp / "data"))
    raw = bytearray(path.read_bytes())
    raw = raw[: len(raw) // 2] if how == "truncated" else raw[:100] + bytes([raw[100] ^ 0xFF]) + raw[101:]
    path.write_bytes(bytes(raw))
    return ["--dataset=toy", f"--data_dir={tmp / 'data'}", "--n_train=200"]


CASES = {
    "truncated_archive": (lambda t: _archive_case(t, "truncated"), "truncated or corrupt"),
    "corrupt_archive": (lambda t: _archive_case(t, "corrupt"), "truncated or corrupt"),
    "two_d_labels": (lambda t: _data_case(t, y_train=lambda y: np.stack([y, y], 1)), "1-D integer"),
    "float_labels": (lambda t: _data_case(t, y_train=lambda y: y.astype(np.float32)), "1-D integer"),
    "huge_label": (
        lambda t: _data_case(t, y_train=lambda y: np.where(np.arange(200) == 5, 10**6, y)),
        "missing",
    ),
    "label_beyond_num_classes": (lambda t: [*_data_case(t), "--num_classes=5"], "[0, 5)"),
    "nan_inputs": (
        lambda t: _data_case(t, x_train=lambda x: np.where(x > 250, np.nan, x.astype(np.float32))),
        "non-finite",
    ),
    "train_test_shapes": (lambda t: _data_case(t, x_test=lambda x: x[:, :30]), "differ"),
    "radius_beyond_float32": (
        lambda t: ["--log10_r2_over_rx2=", "--radii=1e39"],
        "beyond what float32 holds",
    ),
    "radius_below_float32": (lambda t: ["--log10_r2_over_rx2=", "--radii=1e-40"], "smallest normal"),
    "workdir_cannot_be_created": (
        lambda t: ["--workdir=/proc/gzone_cannot_be_here"],
        "cannot create or write",
    ),
    "workdir_is_a_file": (lambda t: [f"--workdir={_file(t / 'plain')}"], "cannot create or write"),
}


def _file(path):
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_ends_with_one_line_and_no_run_folder(case, tmp_path, capsys):
    make, expected = CASES[case]
    argv = [*SCAN, f"--workdir={tmp_path / 'work'}", *make(tmp_path)]
    code, out, err = _main(argv, capsys)
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert not (tmp_path / "work").exists()
    # the option named first is the one that fixes it (the data cases' paths hold words like "n_test")
    flag = {"workdir_cannot_be_created": "workdir", "workdir_is_a_file": "workdir"}.get(case)
    if flag is None and case in ("train_test_shapes",):
        flag = "dataset"
    if flag is not None:
        assert err.startswith(f"error: --{flag}: "), err


# ---------------------------------------------------- existing runs: refused untouched, or repaired


def test_a_truncated_config_json_is_refused_naming_the_file_and_overwrite(finished, tmp_path, capsys):
    copy = _copy(finished, tmp_path)
    text = (copy / "config.json").read_text()
    (copy / "config.json").write_text(text[: len(text) // 2])
    before = _snapshot(copy)
    code, _, err = _main([*SCAN, f"--workdir={tmp_path}"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "config.json" in err and "--overwrite" in err, err
    assert _snapshot(copy) == before
    _run([f"--workdir={tmp_path}", "--overwrite"])  # the fix the message names works
    np.testing.assert_array_equal(records.load_arrays(copy)["eigvals_d8"], finished["arrays"]["eigvals_d8"])


def test_other_data_under_the_same_flags_is_refused(tmp_path, capsys):
    first, second = _toy_data(tmp_path / "a"), _toy_data(tmp_path / "b", seed=1)
    flags = ["--dataset=toy", "--n_train=200", f"--workdir={tmp_path / 'work'}", "--name=toy"]
    _run([*flags, f"--data_dir={os.path.dirname(first)}"])
    path = tmp_path / "work" / "radius_scan" / "toy"
    before = _snapshot(path)
    code, _, err = _main([*SCAN, *flags, f"--data_dir={os.path.dirname(second)}"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "data" in err and "other settings" in err, err
    assert _snapshot(path) == before


def test_a_damaged_unit_is_computed_again(finished, tmp_path):
    copy = _copy(finished, tmp_path)
    unit = copy / "units" / "r001_d8.npz"
    unit.write_bytes(unit.read_bytes()[:-200])
    os.remove(copy / "arrays.npz")
    lines = []
    _run([f"--workdir={tmp_path}"], lines)
    assert any("r001_d8: its saved arrays are damaged" in line for line in lines), lines
    assert "(2/3 units done)" in lines[1] and sum("unit " in line and "/3 " in line for line in lines) == 1
    got = records.load_arrays(copy)
    for key, value in finished["arrays"].items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_temp_files_of_dead_writers_are_removed_at_start(finished, tmp_path):
    copy = _copy(finished, tmp_path)
    dead = 4_194_400  # above Linux's largest pid (2^22): no such process
    leftovers = [copy / f"config.json.tmp{dead}", copy / "units" / f"r000_d8.npz.tmp{dead}.npz"]
    for path in leftovers:
        path.write_bytes(b"half a write")
    _run([f"--workdir={tmp_path}"])
    assert not any(p.exists() for p in leftovers)


def test_a_write_that_fails_midway_leaves_nothing_corrupt_and_the_rerun_completes(
    finished, tmp_path, capsys, monkeypatch
):
    calls = []
    real = np.savez

    def disk_full_on_the_third_unit(fh, **arrays):
        calls.append(fh.name)
        if len(calls) == 3:
            fh.write(b"PK\x03\x04 half an archive")  # the disk fills in the middle of the archive
            raise OSError(errno.ENOSPC, "No space left on device", fh.name)
        return real(fh, **arrays)

    monkeypatch.setattr(records.np, "savez", disk_full_on_the_third_unit)
    code, _, err = _main([*SCAN, f"--workdir={tmp_path}", "--noplots"], capsys)
    assert (
        code == 2 and len(err.splitlines()) == 1 and "No space left on device" in err and "resume" in err
    ), err
    path = tmp_path / "radius_scan" / "smoke"
    assert (
        records.completed_units(path, verify=True) == records.completed_units(path)
        and len(records.read_jsonl(path)) == 2
    )
    assert records.read_config(path)["status"] == "running"
    assert not list(path.rglob("*.tmp*"))  # the failed write removed its temp file
    monkeypatch.setattr(records.np, "savez", real)
    _run([f"--workdir={tmp_path}"])
    assert not list(path.rglob("*.tmp*"))
    got = records.load_arrays(path)
    for key, value in finished["arrays"].items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


# --------------------------------------------------------------------------- kills at a seeded schedule

# Counts the run folder's write events (each atomic rename and each metrics line) and SIGKILLs itself at
# event $GZONE_KILL_AT: before a rename (the temp file written, the target not yet replaced) or in the
# middle of a metrics line (half of it on disk). Drawn per test from a seeded schedule.
KILLER = """
import os, runpy, signal, sys
from gzone.runs import files, records
target, count = int(os.environ["GZONE_KILL_AT"]), [0]
real_replace, real_append = os.replace, records.append_jsonl
def event():
    count[0] += 1
    return count[0] == target
def replace(src, dst):
    if event():
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
def append(path, record):
    if event():
        line = records.json.dumps(records.to_jsonable(record), sort_keys=True)
        file = os.path.join(path, "metrics.jsonl") if not str(path).endswith(".jsonl") else path
        with open(file, "a") as fh:
            fh.write(line[: len(line) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    real_append(path, record)
class Os:
    def __getattr__(self, name):
        return replace if name == "replace" else getattr(os, name)
files.os = Os()
records.append_jsonl = append
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow  # 7 fresh Python processes (~4 s each); the fast suite kills and resumes in
# test_radius_dynamics.py::test_sigkill_inside_a_unit_then_rerun_resumes_from_its_checkpoint
def test_kills_at_a_seeded_schedule_of_points_resume_to_the_same_arrays(finished, tmp_path):
    kills = 6
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "JAX_PLATFORMS": "cpu",
        **conftest.cache_env(),
    }
    env["XLA_FLAGS"] = conftest.XLA_FLAGS
    cmd = [
        sys.executable,
        "-c",
        KILLER,
        "experiments.radius_scan",
        *SCAN,
        f"--workdir={tmp_path}",
        "--noplots",
    ]
    # A run of the scan makes 4 writes when it opens the folder and finishes, plus 2 per unit (3 units).
    schedule = sorted(np.random.default_rng(20261201).choice(np.arange(1, 11), size=kills, replace=False))
    killed = []
    for k in schedule:  # every run resumes the last one's folder and is killed at its k-th write event
        proc = subprocess.run(
            cmd, cwd=REPO, env={**env, "GZONE_KILL_AT": str(k)}, capture_output=True, text=True, timeout=300
        )
        killed.append(proc.returncode)
    final = subprocess.run(
        cmd, cwd=REPO, env={**env, "GZONE_KILL_AT": "0"}, capture_output=True, text=True, timeout=300
    )
    assert final.returncode == 0, final.stderr[-3000:]
    assert -9 in killed, (schedule, killed)
    path = tmp_path / "radius_scan" / "smoke"
    got = records.load_arrays(path)
    for key, value in finished["arrays"].items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert sorted({line["unit"] for line in records.read_jsonl(path)}) == sorted(
        f"r{r:03d}_d8" for r in range(3)
    )
    assert (
        not list(path.rglob("*.tmp*"))
        and json.loads((path / "config.json").read_text())["status"] == "complete"
    )


# --------------------------------------------------------------------------- non-finite points


def test_extreme_radii_record_the_radius_and_nan_where_the_logits_overflow():
    ds = data.load("mnist1d", n_train=200)
    module = models.build(models.ModelSpec("mlp", (16,), "relu"), 10)
    result = gzone.radius_scan(
        module, ds.x_train[:64], ds.y_train[:64], radii=[1e-30, 1.0, 1e30], dims=[8], num_seeds=2, log=None
    )
    a = result.arrays
    np.testing.assert_allclose(
        a["radius"][:, 0, :], np.array([[1e-30] * 2, [1.0] * 2, [1e30] * 2]), rtol=1e-5
    )
    assert np.all(np.isfinite(a["loss"][:2])) and np.all(np.isfinite(a["eigvals_d8"][:2]))
    for key in (
        "loss",
        "accuracy",
        "grad_norm",
        "grad_radial",
        "frac_pos",
        "trace_over_frob",
        "top",
        "bottom",
    ):
        assert np.all(np.isnan(a[key][2])), key  # logits overflow at 1e30: NaN, never finite garbage
    assert np.all(np.isnan(a["eigvals_d8"][2]))
