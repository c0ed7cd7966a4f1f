"""Beyond one process, without a cluster: two CPU processes on localhost under jax.distributed share a run
folder and give a single process's arrays; 4 forced host devices (the seed axis sharded over a mesh) give
one device's arrays; the assignment of units to processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import conftest
import numpy as np
import pytest

from experiments import radius_dynamics, radius_scan
from gzone.runs import processes, records

REPO = Path(__file__).resolve().parents[1]
FLAGFILES = REPO / "experiments" / "flagfiles"


def _env(**extra):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "JAX_PLATFORMS": "cpu",
        **conftest.cache_env(),
    }
    env["XLA_FLAGS"] = conftest.XLA_FLAGS
    return {**env, **extra}


def _in_process(module, flagfile, workdir):
    config = module.config_from_argv([
        f"--flagfile={FLAGFILES / flagfile}",
        f"--workdir={workdir}",
        "--noplots",
    ])
    return records.load_arrays(module.run(config, log=lambda s: None, progress=None))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_assignment_is_deterministic_and_balanced():
    units = [(f"u{i}", w) for i, w in enumerate([9, 1, 1, 1, 4, 4, 2, 2])]
    owners = processes.assign(units, 3)
    assert owners == processes.assign(list(reversed(units)), 3)  # order of the plan does not matter
    load = [sum(w for n, w in units if owners[n] == p) for p in range(3)]
    assert (
        sorted(load) == [7, 8, 9] and owners["u0"] == 0
    )  # by hand: 9 | 4 2 1 1 | 4 2 1 (costliest first, least loaded)
    assert processes.assign(units, 1) == {n: 0 for n, _ in units}
    assert processes.owner("r001_d8", 2) == processes.owner("r001_d8", 2) in (0, 1)


@pytest.mark.slow  # two Python processes with jax.distributed: ~30 s per experiment on 2 cores
@pytest.mark.parametrize(
    "experiment, flagfile", [(radius_scan, "smoke.flags"), (radius_dynamics, "radius_dynamics_smoke.flags")]
)
def test_two_processes_on_localhost_give_one_process_arrays(experiment, flagfile, tmp_path):
    expected = _in_process(experiment, flagfile, tmp_path / "one")
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        experiment.__name__,
        f"--flagfile={FLAGFILES / flagfile}",
        f"--workdir={tmp_path / 'two'}",
        "--noplots",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
    ]
    procs = [
        subprocess.Popen(
            [*command, f"--process_id={i}"],
            cwd=REPO,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    path = tmp_path / "two" / experiment.EXPERIMENT / "smoke"
    got = records.load_arrays(path)
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    lines = records.read_jsonl(path)
    assert {line["process"] for line in lines} == {0, 1} and len({line["unit"] for line in lines}) == len(
        lines
    )
    assert "records:" in outputs[0][0] and "process 1 of 2" in outputs[1][0]
    assert records.read_config(path)["status"] == "complete"


SHARDED = """
import sys
import jax
from experiments import radius_dynamics, radius_scan
assert jax.local_device_count() == 4, jax.devices()
for module, flagfile, workdir in zip((radius_scan, radius_dynamics), sys.argv[1:3], sys.argv[3:5]):
    module.run(module.config_from_argv([f"--flagfile={flagfile}", f"--workdir={workdir}", "--noplots"]),
               log=lambda s: None, progress=None)
"""


@pytest.mark.slow  # a subprocess with 4 host devices compiling both experiments: ~30 s on 2 cores
def test_four_forced_host_devices_give_one_device_arrays(tmp_path):
    """The seed axis sharded over a 4-device mesh (the scan's 2 seeds padded to 4; training too): equal to
    float32 rounding (a vmap over 1 seed per device sums in another order than over 2 seeds)."""
    runs = [(radius_scan, "smoke.flags"), (radius_dynamics, "radius_dynamics_smoke.flags")]
    expected = [_in_process(m, f, tmp_path / "one") for m, f in runs]
    env = _env(XLA_FLAGS=f"{conftest.XLA_FLAGS} --xla_force_host_platform_device_count=4")
    args = [*(str(FLAGFILES / f) for _, f in runs), *(str(tmp_path / f"four_{i}") for i in range(2))]
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for i, ((module, _), reference) in enumerate(zip(runs, expected)):
        path = tmp_path / f"four_{i}" / module.EXPERIMENT / "smoke"
        assert records.read_config(path)["derived"].get("devices_used", 4) == 4
        got = records.load_arrays(path)
        for key, value in reference.items():
            np.testing.assert_allclose(
                got[key], value, rtol=1e-4, atol=1e-5 * (np.abs(value).max() or 1), err_msg=key
            )
