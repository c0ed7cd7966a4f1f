"""Experiments run as background subprocesses by the tests (shared by the experiment test modules).

    run = Background(cmd, folder, environment(cache_dir))   # starts at once
    path = finished(run, path)                              # waits; fails with the run's output
"""

from __future__ import annotations

import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def environment(cache_dir=None) -> dict:
    """This environment with the repository on PYTHONPATH, on CPU, and optionally a JAX compilation
    cache shared by a module's runs (a resumed run then loads executables instead of compiling)."""
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    if cache_dir is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


class Background:
    """A subprocess writing stdout/stderr to files in `folder`."""

    def __init__(self, cmd, folder, env):
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        self.out = open(os.path.join(folder, "stdout"), "w+")
        self.err = open(os.path.join(folder, "stderr"), "w+")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.out, stderr=self.err)
        self.result = None

    def wait(self, timeout=600) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) once the process ends (killed after `timeout` seconds)."""
        if self.result is None:
            try:
                rc = self.proc.wait(timeout=timeout)
            finally:
                self.close()
            self.result = rc, self.text("stdout"), self.text("stderr")
        return self.result

    def text(self, name) -> str:
        with open(os.path.join(self.folder, name)) as fh:
            return fh.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.err.close()


def finished(run) -> str:
    """Waits for `run` (a Background with a ``path``), asserts it succeeded, returns its run folder."""
    rc, out, err = run.wait()
    assert rc == 0, f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
    return run.path


def read_jsonl(path):
    with open(os.path.join(path, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]
