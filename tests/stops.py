"""Deterministic kill points for the resume tests.

An experiment runs under a wrapper that SIGSTOPs the process right after a chosen record is on disk;
the test waits for the stop, then SIGKILLs it. (Polling the run folder for a file instead races with
the millisecond epochs of the smoke flags.)

    cmd = stops.command(stops.AT_CHECKPOINT, ["-m", "experiments.x", "--flagfile=..."])
    proc = subprocess.Popen(cmd, env={**env, "GZONE_TEST_STOP_UNIT": "train"}, ...)
    stops.kill_when_stopped(proc)
"""

from __future__ import annotations

import os
import signal
import sys
import time

# SIGSTOP after the checkpoint of epoch 1 of unit $GZONE_TEST_STOP_UNIT is written.
AT_CHECKPOINT = """
import os, runpy, signal, sys
from gzone.runs import records
save, target = records.save_checkpoint, os.environ["GZONE_TEST_STOP_UNIT"]
def save_then_stop(path, unit, *, epoch, state, history):
    save(path, unit, epoch=epoch, state=state, history=history)
    if unit == target and epoch == 1:
        os.kill(os.getpid(), signal.SIGSTOP)
records.save_checkpoint = save_then_stop
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""

# SIGSTOP after the $GZONE_TEST_STOP_AFTER_UNITS-th completed unit is written.
AFTER_UNITS = """
import os, runpy, signal, sys
from gzone.runs import records
save, saved, target = records.save_unit, [], int(os.environ["GZONE_TEST_STOP_AFTER_UNITS"])
def save_then_stop(*args, **kwargs):
    save(*args, **kwargs)
    saved.append(1)
    if len(saved) == target:
        os.kill(os.getpid(), signal.SIGSTOP)
records.save_unit = save_then_stop
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def command(wrapper: str, args: list[str]) -> list[str]:
    """The python command running `wrapper` around ``python -m MODULE FLAGS...``
    (args = ["-m", MODULE, *FLAGS];
    a leading sys.executable is dropped)."""
    if args and args[0] == sys.executable:
        args = args[1:]
    assert args[0] == "-m", args
    return [sys.executable, "-c", wrapper, *args[1:]]


def kill_when_stopped(proc, *, timeout: float = 300, describe=lambda: "") -> None:
    """Waits until `proc` stops itself, then SIGKILLs it; fails if it ends or takes longer first."""
    deadline = time.time() + timeout
    while True:
        pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
        if pid:
            break
        assert time.time() < deadline, "the run never reached the stop point"
        time.sleep(0.02)
    assert os.WIFSTOPPED(status), f"the run ended before it could be killed (status {status}) {describe()}"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def kill_at_checkpoint(args: list[str], *, unit: str, folder: str, env: dict) -> None:
    """Runs ``python -m MODULE FLAGS...`` (args as for `command`) until the checkpoint of epoch 1 of `unit`
    is on disk, then SIGKILLs it (its output goes to files in `folder`)."""
    from background import Background

    run = Background(command(AT_CHECKPOINT, args), folder, {**env, "GZONE_TEST_STOP_UNIT": unit})
    try:
        kill_when_stopped(run.proc, describe=lambda: (run.text("stdout")[-2000:], run.text("stderr")[-2000:]))
    finally:
        run.close()
