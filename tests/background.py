"""Experiments run as background subprocesses by the tests (shared by the experiment test modules).

run = Background(cmd, folder, environment(cache_dir))   # starts at once
path = finished(run, path)                              # waits; fails with the run's output
"""

from __future__ import annotations

import json
import os
import subprocess

import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def environment(cache_dir=None) -> dict:
    """This environment with the repository on PYTHONPATH, on CPU, and optionally a JAX compilation
    cache shared by a module's runs (a resumed run then loads executables instead of compiling)."""
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = conftest.XLA_FLAGS
    if cache_dir is not None:
        env.update(conftest.cache_env(cache_dir))
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


def check_bad_flags(cases, command, tmp_path, experiment: str) -> None:
    """Each (flags, expected) case, run side by side: exit 2, one stderr line 'error: ...' naming
    `expected`, no traceback, no run folder. `command(workdir, *flags)` builds a run's command;
    '{tmp}' in a flag is replaced by tmp_path."""
    runs = []
    for i, (flags, expected) in enumerate(cases):
        flags = [f.format(tmp=tmp_path) for f in flags]
        workdir = tmp_path / f"w{i}"
        runs.append((
            flags,
            expected,
            workdir,
            Background(command(workdir, *flags), str(tmp_path / f"log{i}"), environment()),
        ))
    for flags, expected, workdir, run in runs:
        rc, out, err = run.wait(timeout=300)
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2, (flags, rc, err[-2000:])
        assert len(lines) == 1, (flags, err)
        assert lines[0].startswith("error: ") and expected in lines[0], (flags, lines[0])
        assert "Traceback" not in out + err
        assert not os.path.exists(workdir / experiment), flags  # no run folder


class PipedRun:
    """A subprocess with piped output, started at once; `result()` waits for it and asserts it
    succeeded: {'path': run folder, 'stdout', 'stderr'}. `close()` kills it if still running."""

    def __init__(self, cmd, path, env):
        self.path = path
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.out = None

    def result(self) -> dict:
        if self.out is None:
            stdout, stderr = self.proc.communicate(timeout=900)
            assert self.proc.returncode == 0, stderr[-3000:]
            self.out = {"path": self.path, "stdout": stdout, "stderr": stderr}
        return self.out

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
