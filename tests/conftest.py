"""Shared fixtures: float64 for one test at a time, and what subprocess tests need."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# XLA's CPU backend at optimisation level 0 and with its older (non-MLIR) fusion emitters for the
# tests (set before any JAX backend starts): the suite is small programs compiled once each, and at
# level 0 they compile ~3-10x faster (the smoke radius scan: 15 s -> 5 s), the older emitters another
# ~2.5x (the smoke scan's compiles 3.8-4.3 s -> 1.3-1.5 s), with results equal to the defaults'
# within ~1e-6 relative (the committed references are compared at rtol 1e-5). Real runs and the
# benchmark use XLA's defaults. Subprocesses of the tests get the same flags (`XLA_FLAGS` below), so
# routes compared bitwise agree.
XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
if XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):  # kept beside flags a test's subprocess sets
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_FLAGS}".strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
jax.config.update("jax_numpy_rank_promotion", "raise")  # an implicit broadcast of ranks is a bug here
# One compilation cache per test process (fresh, as in CI; each pytest-xdist worker has its own), lent
# to the tests' subprocesses: the suite runs the same small computations through several routes
# (command line, API, resume), and a cache hit skips XLA's compile (seconds each). JAX's file cache
# takes no lock between processes unless it is given a size limit, and with one its eviction scan
# makes every write slower than the compile it saves (the suite took twice as long shared that way),
# so workers do not share. The folder is removed when the process that made it exits.
CACHE_DIR = tempfile.mkdtemp(prefix="gzone-test-jax-cache-")
atexit.register(shutil.rmtree, CACHE_DIR, ignore_errors=True)


def cache_env(cache_dir: str = CACHE_DIR) -> dict:
    """Environment variables that give a subprocess the session's compilation cache (or ``cache_dir``)."""
    return {
        "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


# Generated data (MNIST-1D) cached once per test session, shared by the pytest-xdist workers and the
# tests' subprocesses (`gzone.data.cache_dir`), not in the user's ~/.cache.
DATA_CACHE_DIR = os.path.join(
    tempfile.gettempdir(), f"gzone-test-data-{os.environ.get('PYTEST_XDIST_TESTRUNUID') or os.getpid()}"
)
os.environ["GZONE_CACHE_DIR"] = DATA_CACHE_DIR
atexit.register(shutil.rmtree, DATA_CACHE_DIR, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _x64_on() -> bool:
    return jnp.zeros(()).dtype == jnp.float64


@pytest.fixture(autouse=True)
def _x64_does_not_leak():
    """Fails a test that leaves jax_enable_x64 switched on (or off) behind it."""
    before = _x64_on()
    yield
    assert _x64_on() == before, "a test changed jax_enable_x64 globally; use the x64 fixture"


@pytest.fixture
def x64():
    """float64 for this test only: jax's `enable_x64` context, undone when the test ends."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def subprocess_env() -> dict:
    """Environment for `python -m experiments...` / scripts: the repository on PYTHONPATH, CPU."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = XLA_FLAGS
    return env


@pytest.fixture(scope="session")
def run_python(subprocess_env):
    """run_python(args, timeout=..., env=...) -> CompletedProcess of `python ARGS` from the repo root."""

    def run(args: list[str], *, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args],
            cwd=REPO,
            env=subprocess_env if env is None else env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


# The test files that take longest (seconds on 2 cores, measured), run first: pytest-xdist hands a
# file to whichever worker is free, so the long ones start early and no worker is left with one at
# the end while the other idles. Files not named keep their order after these.
_LONGEST_FIRST = (
    "test_radius_scan.py", "test_spectral_density.py", "test_radius_dynamics.py", "test_projections.py",
    "test_train.py", "test_api.py", "test_architectures.py", "test_threshold_dimension.py",
    "test_init_selection.py", "test_spectra.py", "test_emergent_geometry.py", "test_gordon.py",
    "test_fullspace.py", "test_curvature.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file kept
